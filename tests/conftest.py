"""Fixtures and pytest hooks: quiet TensorFlow, two logical CPUs, a corpus cache seeded from ../shared
when it is there, text files. Plain helpers live in helpers.py."""

import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from helpers import SHARED_CORPUS  # noqa: E402


def pytest_configure(config):
    """Splits the CPU into two logical devices, so MirroredStrategy has two replicas to test."""
    del config
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture
def corpus_cache(tmp_path):
    """An empty cache directory, isolated from the user's."""
    path = tmp_path / "cache"
    path.mkdir()
    return str(path)


@pytest.fixture
def shakespeare_cache(corpus_cache):
    """A cache already holding tiny-shakespeare (copied from ../shared/data); skips when absent."""
    if not os.path.isfile(SHARED_CORPUS):
        pytest.skip("../shared/data/tinyshakespeare/input.txt is not present")
    target = os.path.join(corpus_cache, "data", "tinyshakespeare")
    os.makedirs(target)
    shutil.copy(SHARED_CORPUS, target)
    return corpus_cache


@pytest.fixture
def text_file(tmp_path):
    """Writes a UTF-8 text file and returns its path."""

    def write(text, name="corpus.txt"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write
