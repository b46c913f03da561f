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


def assert_models_agree(got_model, want_model, ids, calls=2):
    """Calls two stateful Char-RNN models on the same ids `calls` times in a row (each call starts from
    the state the last one left) and checks their logits and weight gradients agree to 1e-5. Traced,
    so the time length is static, as in training."""
    import numpy as np
    import tensorflow as tf

    @tf.function
    def logits_and_gradients(model):
        with tf.GradientTape() as tape:
            logits = model(ids)
            loss = tf.reduce_mean(logits**2)
        return logits, tape.gradient(loss, model.trainable_variables)

    for _ in range(calls):
        got_logits, got_grads = logits_and_gradients(got_model)
        want_logits, want_grads = logits_and_gradients(want_model)
        np.testing.assert_allclose(got_logits, want_logits, rtol=0, atol=1e-5)
        for got, want in zip(got_grads, want_grads, strict=True):
            np.testing.assert_allclose(
                tf.convert_to_tensor(got), tf.convert_to_tensor(want), rtol=0, atol=1e-5
            )
