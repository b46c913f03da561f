"""Shared fixtures: quiet TensorFlow, a corpus cache seeded from ../shared when it is there, tiny configs."""

import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CORPUS = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "tinyshakespeare", "input.txt")
QUOTE = "Knowing is not enough; we must apply. Willing is not enough; we must do."


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


def smoke_train_command(train_dir, corpus, *flags):
    """The command line of scripts/train.py with configs/smoke.cfg on `corpus`, then `flags`."""
    return [
        sys.executable,
        os.path.join(REPO_ROOT, "scripts", "train.py"),
        f"--flagfile={os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')}",
        f"--train_dir={train_dir}",
        f"--data_path={corpus}",
        *flags,
    ]


def step_losses(train_dir):
    """The last logged training loss of every step, read back from the run's TensorBoard events."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    accumulator = event_accumulator.EventAccumulator(
        os.path.join(train_dir, "logs", "train"), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    losses = {}
    for event in accumulator.Tensors("loss"):
        losses[event.step] = float(tensor_util.make_ndarray(event.tensor_proto))
    return [losses[step] for step in sorted(losses)]
