"""LiteRT export: the step of LiteRT builtin ops matches the Keras step, quantized models stay within
0.02 nats/char of float32 and int8 is under 30% of its size, and examples/litert_generate.py generates
sample.py's greedy text in a process that cannot import TensorFlow."""

import importlib.util
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from helpers import QUOTE, REPO_ROOT, run_command, run_script, train_tiny_run
from tf_charrnn.config import ExportConfig, ModelConfig
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.errors import UserError
from tf_charrnn.export import litert, saved_model
from tf_charrnn.inference import sampling
from tf_charrnn.model.char_rnn import CharRNN

EXAMPLE = os.path.join(REPO_ROOT, "examples", "litert_generate.py")
PRIME = "Willing "

# Runs a script (argv[1:]) with every import of tensorflow, keras or tf_charrnn refused.
WITHOUT_TENSORFLOW = r"""
import importlib.abc, runpy, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_charrnn"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Refuse())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained LSTM run, wide enough (H=128) that its weight matrices get int8 (LiteRT leaves
    tensors under 1,024 elements in float)."""
    return train_tiny_run(tmp_path_factory.mktemp("litert"), embedding_dim=16, rnn_units=128)


@pytest.fixture(scope="module")
def exports(run_dir, tmp_path_factory):
    """{quantize: export folder} for each quantization."""
    root = tmp_path_factory.mktemp("litert_exports")
    return {
        quantize: saved_model.export_run(run_dir, str(root / quantize), format="litert", quantize=quantize)
        for quantize in ("none", "float16", "int8")
    }


@pytest.fixture(scope="module")
def example():
    """examples/litert_generate.py as a module."""
    spec = importlib.util.spec_from_file_location("litert_generate", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model_path(folder):
    return os.path.join(folder, litert.MODEL_FILE)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_float32_step_matches_the_keras_step_over_chained_steps(run_dir, exports, batch_size):
    runner = litert.step_runner(_model_path(exports["none"]))
    signature = runner.get_input_details(), runner.get_output_details()
    assert sorted(signature[0]) == ["ids", "states"] and sorted(signature[1]) == ["logits", "states"]
    sampler, vocab = sampling.load_sampler(run_dir, fused_kernels=False)
    model = sampler.model
    ids = np.stack([vocab.encode(QUOTE[row : row + 6]) for row in range(batch_size)])
    want_states = model.initial_state(batch_size)
    got_states = np.zeros(litert.state_shape(runner, batch_size), np.float32)
    assert got_states.shape == tuple(want_states.shape) == (2, 2, batch_size, 128)
    for position in range(ids.shape[1]):
        want_logits, want_states = model.step(tf.constant(ids[:, position]), want_states)
        out = runner(ids=ids[:, position].astype(np.int32), states=got_states)
        got_states = out["states"]
        np.testing.assert_allclose(out["logits"], want_logits.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(got_states, want_states.numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_every_cell_converts_to_builtin_ops(cell, tmp_path):
    # GRU and RNN step through their Keras cells: their variables must freeze into the model as well.
    config = ModelConfig(vocab_size=12, embedding_dim=8, rnn_units=16, num_layers=2, dropout=0.0, cell=cell)
    model = CharRNN(config, batch_size=1)
    path = tmp_path / litert.MODEL_FILE
    path.write_bytes(litert.convert(saved_model.StepModule(model)))
    runner = litert.step_runner(str(path))
    ids = np.array([3, 7], np.int32)
    states = np.random.default_rng(0).normal(size=litert.state_shape(runner, 2)).astype(np.float32)
    out = runner(ids=ids, states=states)
    want_logits, want_states = model.step(tf.constant(ids), tf.constant(states))
    np.testing.assert_allclose(out["logits"], want_logits.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(out["states"], want_states.numpy(), rtol=0, atol=1e-4)


def test_quantized_models_are_smaller_and_lose_under_002_nats(exports):
    sizes = {quantize: os.path.getsize(_model_path(folder)) for quantize, folder in exports.items()}
    assert sizes["int8"] <= 0.3 * sizes["none"], sizes
    assert sizes["float16"] <= 0.55 * sizes["none"], sizes
    vocab = Vocab.load(os.path.join(exports["none"], litert.VOCAB_FILE))
    ids = vocab.encode((QUOTE + " ") * 40)  # 3,000 characters
    losses = {
        quantize: litert.nats_per_char(_model_path(folder), ids) for quantize, folder in exports.items()
    }
    # Well below a uniform guess's ln V (3.04 here): the model has learned, so the comparison means something.
    assert losses["none"] < np.log(len(vocab)) - 0.5, losses
    for quantize in ("float16", "int8"):
        assert abs(losses[quantize] - losses["none"]) <= 0.02, losses


def test_nats_per_char_in_streams_scores_each_stream_from_a_zero_state(exports):
    path = _model_path(exports["none"])
    vocab = Vocab.load(os.path.join(exports["none"], litert.VOCAB_FILE))
    text = QUOTE + " " + QUOTE
    halves = [vocab.encode(text[:40]), vocab.encode(text[40:80])]
    both = litert.nats_per_char(path, np.concatenate(halves), streams=2)
    assert both == pytest.approx(np.mean([litert.nats_per_char(path, half) for half in halves]), abs=1e-5)


def test_example_prints_sample_py_greedy_text_without_tensorflow(run_dir, exports, tmp_path):
    settings = [f"--prime={PRIME}", "--length=200", "--sampling=greedy"]
    sampled = run_script("sample.py", [f"--train_dir={run_dir}", *settings], tmp_path / "cache", timeout=300)
    assert sampled.returncode == 0, sampled.stderr
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    command = [sys.executable, "-c", WITHOUT_TENSORFLOW, EXAMPLE, f"--model_dir={exports['none']}", *settings]
    generated = run_command(command, env, timeout=120, cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith(PRIME) and len(generated.stdout) == len(PRIME) + 200 + 1
    assert generated.stdout == sampled.stdout
    assert "chars/s (batch 1)" in generated.stderr


def test_example_refuses_a_prime_outside_the_vocabulary(exports, tmp_path):
    command = [sys.executable, EXAMPLE, f"--model_dir={exports['int8']}", "--prime=Zebra"]
    result = run_command(command, timeout=120, cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert (
        result.stderr.strip().splitlines()[-1]
        == "error: --prime: characters outside the vocabulary: ['Z', 'b', 'r']"
    )


def test_example_sampling_is_seeded_and_top_k_1_is_greedy(example, exports):
    model = example.CharModel(exports["int8"])

    def text(seed, **options):
        return "".join(model.generate(PRIME, 60, np.random.default_rng(seed), **options))

    assert text(3, temperature=0.8) == text(3, temperature=0.8)
    assert text(3, temperature=5.0) != text(4, temperature=5.0)
    assert text(0, top_k=1, temperature=5.0) == text(1, greedy=True)


def test_choose_next_masks_all_but_the_top_k(example):
    logits = np.array([0.0, 3.0, 1.0, 2.0], np.float32)
    draws = {example.choose_next(logits, np.random.default_rng(seed), top_k=2) for seed in range(200)}
    assert draws == {1, 3}
    assert example.choose_next(logits, None, greedy=True) == 1


def test_litert_export_is_atomic_and_refuses_a_non_empty_dir(run_dir, tmp_path):
    default = saved_model.export_run(run_dir, format="litert")
    assert default == os.path.join(run_dir, "export_litert")
    assert sorted(os.listdir(default)) == ["model.tflite", "vocab.json"]
    assert Vocab.load(os.path.join(default, "vocab.json")) == Vocab.load(os.path.join(run_dir, "vocab.json"))
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match="--overwrite"):
        saved_model.export_run(run_dir, str(target), format="litert")
    assert os.listdir(target) == ["keep.txt"]
    saved_model.export_run(run_dir, str(target), overwrite=True, format="litert", quantize="int8")
    assert sorted(os.listdir(target)) == ["model.tflite", "vocab.json"]
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []  # no staging left


def test_quantize_needs_the_litert_format():
    with pytest.raises(
        UserError, match="--quantize=int8 applies to LiteRT exports only; add --format=litert"
    ):
        ExportConfig(quantize="int8")
    assert ExportConfig(format="litert", quantize="float16").quantize == "float16"


def test_litert_is_an_extra_the_requirements_install():
    import tomllib

    with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    assert extras["litert"] == ["ai-edge-litert"]
    with open(os.path.join(REPO_ROOT, "requirements.txt"), encoding="utf-8") as f:
        assert "-e .[litert]" in f.read().split("\n")
