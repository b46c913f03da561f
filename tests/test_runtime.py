"""The runtime decisions, made once from the config and the machine, and handed to the layers."""

import pytest

from tf_charrnn.config import RunConfig
from tf_charrnn.errors import UserError
from tf_charrnn.inference.sampling import Sampler
from tf_charrnn.model import native
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.runtime import placement

needs_kernels = pytest.mark.skipif(native.load() is None, reason="the fused kernels cannot be built here")


def _resolve(**values):
    return placement.resolve(RunConfig.from_flat({"strategy": "default", **values}))


@needs_kernels
def test_a_cpu_run_unrolls_and_runs_the_kernels():
    decided = _resolve(seq_length=100)
    assert (decided.replicas, decided.replica_batch_size, decided.single_device) == (1, 64, True)
    assert decided.fused_kernels and decided.unroll and decided.is_chief
    assert decided.dtype_policy is None and not decided.loss_scaling and not decided.bfloat16_kernels
    assert not _resolve(seq_length=placement.MAX_UNROLLED_SEQ_LENGTH + 1).unroll


def test_xla_keeps_the_kernels_off_in_training_and_eval_samples():
    decided = _resolve(jit_compile=True)
    assert decided.jit_compile and not decided.fused_kernels
    config = RunConfig.from_flat({"vocab_size": 5, "rnn_units": 64})
    sampler = Sampler(config.model, decided.fused_kernels)
    assert not any(layer.use_kernels for layer in sampler.model.recurrent_layers)
    assert "packed" not in sampler.model.step_weights()


def test_on_a_gpu_nothing_builds_or_calls_the_kernels(monkeypatch):
    monkeypatch.setattr(placement, "on_gpu", lambda: True)
    monkeypatch.setattr(native, "load", lambda: pytest.fail("the kernels were loaded on a GPU"))
    decided = _resolve(seq_length=100)
    assert not decided.fused_kernels and not decided.unroll  # cuDNN wants the loop
    model = CharRNN(
        RunConfig.from_flat({"vocab_size": 5, "rnn_units": 64}).model, 2, fused_kernels=decided.fused_kernels
    )
    assert model.step_weights()["layers"][0].keys() == {"kernel", "recurrent_kernel", "bias"}


def test_precision_policies():
    bfloat16 = _resolve(mixed_precision="bfloat16")
    assert bfloat16.dtype_policy.name == "mixed_bfloat16"
    # The bfloat16 kernels where this CPU has AVX512-BF16, else the float32 ones.
    assert bfloat16.bfloat16_kernels == (bfloat16.fused_kernels and native.bfloat16_kernels())
    assert not _resolve(mixed_precision="bfloat16", jit_compile=True).bfloat16_kernels
    float16 = _resolve(mixed_precision="float16")
    assert float16.dtype_policy.name == "mixed_float16" and float16.loss_scaling


def test_mirrored_replicas_split_the_batch():
    decided = _resolve(strategy="mirrored", batch_size=4)  # two logical CPUs (conftest)
    assert (decided.replicas, decided.replica_batch_size, decided.single_device) == (2, 2, False)
    with pytest.raises(UserError, match="does not divide among 2 replicas"):
        _resolve(strategy="mirrored", batch_size=3)


def test_gpu_memory_grows_on_every_visible_gpu_before_the_strategy_starts(monkeypatch):
    import tensorflow as tf

    calls = []
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: ["GPU:0", "GPU:1"] if kind == "GPU" else []
    )
    monkeypatch.setattr(
        tf.config.experimental, "set_memory_growth", lambda gpu, enable: calls.append(("grow", gpu, enable))
    )
    placement.grow_gpu_memory()
    assert calls == [("grow", "GPU:0", True), ("grow", "GPU:1", True)]
    calls.clear()
    monkeypatch.setattr(placement.native, "load", lambda: None)
    monkeypatch.setattr(
        placement.distribute,
        "make_strategy",
        lambda name, tpu: calls.append(("strategy",)) or tf.distribute.get_strategy(),
    )
    placement.resolve(RunConfig.from_flat({"strategy": "default"}))
    assert calls[:3] == [("grow", "GPU:0", True), ("grow", "GPU:1", True), ("strategy",)]
