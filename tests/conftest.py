"""Fixtures and pytest hooks: TensorFlow imported quietly, two logical CPUs, a corpus cache, tiny-shakespeare
wherever this machine has it, the web page's runtime and browser, text files. Plain helpers live in
helpers.py."""

import fcntl
import os
import shutil
import subprocess

from tf_charrnn import startup

# The bfloat16 kernels wherever the library has them (AVX512-BF16), so that every such CPU tests them, the
# Intel ones without AMX included, where training's automatic choice is the float32 kernels
# (`native.bfloat16_kernels`; its own test sets the variable it checks). Commands the tests start inherit it.
os.environ.setdefault("TF_CHARRNN_BF16_KERNELS", "1")
startup.import_tensorflow()  # TensorFlow's start-up notices held back, as the commands do

import pytest  # noqa: E402

from helpers import REPO_ROOT, SHARED_CORPUS  # noqa: E402

NODE_MODULES = os.path.join(REPO_ROOT, "web", "node_modules")


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


def _shakespeare_corpus():
    """tiny-shakespeare where this machine has it: ../shared/data (the project's machines), else the
    user's corpus cache (where the first training run downloaded it), else downloaded into that cache
    now, checked against its SHA-256, as training would. Skips, saying why, where it cannot be had."""
    if os.path.isfile(SHARED_CORPUS):
        return SHARED_CORPUS
    from tf_charrnn import files
    from tf_charrnn.data import sources
    from tf_charrnn.errors import UserError

    try:
        return sources.download_shakespeare(files.cache_dir())
    except UserError as error:
        pytest.skip(f"tiny-shakespeare is neither in ../shared/data nor in the corpus cache: {error}")


@pytest.fixture
def shakespeare_cache(corpus_cache):
    """A cache already holding tiny-shakespeare (see `_shakespeare_corpus`)."""
    target = os.path.join(corpus_cache, "data", "tinyshakespeare")
    os.makedirs(target)
    shutil.copy(_shakespeare_corpus(), target)
    return corpus_cache


@pytest.fixture(scope="session")
def web_runtime():
    """web/node_modules, holding the LiteRT.js that web/package-lock.json pins: installed with `npm ci`
    where it is missing (one process at a time). Skips, saying why, where npm is not installed."""
    if not os.path.isdir(NODE_MODULES):
        npm = shutil.which("npm") or pytest.skip(
            "no npm, which the web page's tests need: apt-get install -y npm"
        )
        with open(os.path.join(REPO_ROOT, "web", ".npm-ci.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not os.path.isdir(NODE_MODULES):
                command = [npm, "ci", "--prefix", os.path.join(REPO_ROOT, "web"), "--no-audit", "--no-fund"]
                result = subprocess.run(command, capture_output=True, text=True)
                assert result.returncode == 0, f"npm ci in web/ failed: {result.stderr.strip()[-2000:]}"
    return NODE_MODULES


@pytest.fixture(scope="session")
def chromium():
    """The system's Chromium, which Playwright drives (it downloads no browser). Skips, saying why, where
    it is not installed."""
    from tf_charrnn.export import browser

    if not os.path.isfile(browser.CHROMIUM):
        pytest.skip(f"no Chromium at {browser.CHROMIUM}: apt-get install -y chromium (.ci/run does)")
    return browser.CHROMIUM


@pytest.fixture
def text_file(tmp_path):
    """Writes a UTF-8 text file and returns its path."""

    def write(text, name="corpus.txt"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write
