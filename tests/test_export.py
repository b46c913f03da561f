"""SavedModel export: loads and generates in a process that cannot import tf_charrnn."""

import json
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow as tf

from helpers import run_command, train_tiny_run
from tf_charrnn.errors import UserError
from tf_charrnn.export import saved_model
from tf_charrnn.inference import sampling

SETTINGS = dict(prime="Willing ", length=80, temperature=0.8, seed=7)

# Runs outside the repo, with tf_charrnn made unimportable, and prints what the SavedModel generates.
LOAD_ELSEWHERE = r"""
import json, sys
sys.modules["tf_charrnn"] = None
try:
    import tf_charrnn
    raise SystemExit("tf_charrnn was importable")
except ImportError:
    pass
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
settings = json.loads(sys.argv[2])
out = loaded.signatures["serving_default"](
    prime=tf.constant(settings["prime"]), length=tf.constant(settings["length"]),
    temperature=tf.constant(settings["temperature"]), seed=tf.constant(settings["seed"], tf.int64))
print(json.dumps(out["text"].numpy().decode("utf-8")))
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("export"), embedding_dim=8, rnn_units=24)


@pytest.fixture(scope="module")
def exported(run_dir):
    return saved_model.export_run(run_dir)


def _in_process_text(run_dir):
    sampler, vocab = sampling.load_sampler(run_dir, fused_kernels=True)
    decoding = sampling.Decoding(seed=SETTINGS["seed"], temperature=SETTINGS["temperature"])
    return sampler.generate(vocab, SETTINGS["prime"], SETTINGS["length"], decoding)[0]


def test_saved_model_in_a_fresh_process_matches_in_process_text(run_dir, exported, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = run_command(
        [sys.executable, "-c", LOAD_ELSEWHERE, exported, json.dumps(SETTINGS)], env, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    text = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(text) == SETTINGS["length"]
    assert text == _in_process_text(run_dir)


def test_step_and_initial_state_signatures_drive_generation(run_dir, exported):
    loaded = tf.saved_model.load(exported)
    states = loaded.signatures["initial_state"](batch_size=tf.constant(3))["states"]
    assert states.shape == (2, 2, 3, 24)
    ids = loaded.signatures["encode"](chars=tf.constant(list("Will")))["ids"]
    # The sampler's text comes from its step on the fused kernel where it applies; the SavedModel's
    # logits from TensorFlow ops only, as a sampler without the kernels steps.
    sampler, vocab = sampling.load_sampler(run_dir, fused_kernels=True)
    tensorflow_sampler, _ = sampling.load_sampler(run_dir, fused_kernels=False)
    assert ids.numpy().tolist() == vocab.encode("Will").tolist()
    for position in range(4):
        out = loaded.signatures["step"](ids=tf.fill([3], ids[position]), states=states)
        states = out["states"]
    expected_logits, _ = sampling.feed_prime(
        tensorflow_sampler.model, tf.constant([vocab.encode("Will")] * 3)
    )
    np.testing.assert_allclose(out["logits"].numpy(), expected_logits.numpy(), rtol=1e-5, atol=1e-5)
    top_k = loaded.signatures["generate_top_k"](
        prime=tf.constant("W"),
        length=tf.constant(30),
        temperature=tf.constant(1.0),
        seed=tf.constant(1, tf.int64),
        top_k=tf.constant(1),
        top_p=tf.constant(1.0),
    )["text"]
    assert top_k.numpy().decode() == sampler.generate(vocab, "W", 30, sampling.Decoding("greedy"))[0]


def test_unknown_prime_characters_fail_inside_the_saved_model(exported):
    loaded = tf.saved_model.load(exported)
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside the vocabulary"):
        loaded.signatures["serving_default"](
            prime=tf.constant("Zzz"),
            length=tf.constant(5),
            temperature=tf.constant(1.0),
            seed=tf.constant(1, tf.int64),
        )


def test_saved_model_cli_shows_and_runs(exported):
    cli = shutil.which("saved_model_cli") or pytest.skip("saved_model_cli is not on PATH")
    shown = run_command([cli, "show", "--dir", exported, "--all"], timeout=300)
    assert shown.returncode == 0, shown.stderr
    for name in ("serving_default", "generate_top_k", "step", "initial_state"):
        assert f"signature_def['{name}']" in shown.stdout
    run = run_command(
        [
            cli,
            "run",
            "--dir",
            exported,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--input_exprs",
            'prime="Knowing";length=40;temperature=0.8;seed=7',
        ],
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "Result for output key text" in run.stdout


def test_export_refuses_a_non_empty_dir_and_replaces_with_overwrite(run_dir, tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(UserError, match="--overwrite"):
        saved_model.export_run(run_dir, str(target))
    assert os.listdir(target) == ["keep.txt"]
    saved_model.export_run(run_dir, str(target), overwrite=True)
    assert "saved_model.pb" in os.listdir(target) and "keep.txt" not in os.listdir(target)
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []  # no staging left
