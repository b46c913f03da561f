"""The tests of every command and Python API entry on a trained run, each in a fresh process, for each
precision (float32, bfloat16) and each recurrent implementation this machine runs (the fused kernels,
Keras' ops). test_commands_float32.py and test_commands_bfloat16.py collect them, one precision each (two
files, so that `--dist loadfile` runs them side by side), with a `trained` fixture from `train_run`.

The model is configs/smoke.cfg's 2 x 64 LSTM, a size the fused kernels take, so in a fresh process the
first call into the kernels is the command's own: sample's compiled loop, evaluate's and `score`'s traced
loss, the exports' traced step. (A bfloat16 run once crashed evaluate and `score` there, because the
kernels were first asked what they run on from inside a traced function.)
"""

import json
import math
import os
import shutil
import sys

import pytest

from helpers import QUOTE, REPO_ROOT, run_command, script_command, script_env, smoke_args
from tf_charrnn.model import native

IMPLEMENTATIONS = {
    "fused": ({}, "the fused C++ kernels"),
    "keras": ({"TF_CHARRNN_NATIVE": "0"}, "TensorFlow's ops"),
}
PRECISIONS = {"float32": "none", "bfloat16": "bfloat16"}
TEXT = "Knowing is not enough; we must apply."


def train_run(precision, implementation, tmp_path_factory):
    """A smoke-config run trained in its own process: (run dir, corpus, environment, training's stderr)."""
    extra_env, implementation_line = IMPLEMENTATIONS[implementation]
    if implementation == "fused" and native.load() is None:
        pytest.skip(f"the fused kernels cannot be built here: {native.build_error()}")
    root = tmp_path_factory.mktemp(f"{precision}-{implementation}")
    corpus = root / "corpus.txt"
    corpus.write_text((QUOTE + "\n") * 300, encoding="utf-8")
    env = script_env(root / "cache", **extra_env)
    run = root / "run"
    flags = [f"--data_path={corpus}", f"--mixed_precision={PRECISIONS[precision]}", "--seed=3"]
    result = run_command(script_command("train.py", *smoke_args(run, *flags)), env)
    assert result.returncode == 0, result.stderr
    kernels = implementation_line
    if implementation == "fused" and precision == "bfloat16" and native.bfloat16_kernels():
        kernels += " (bfloat16 products)"
    assert f"recurrent layers on {kernels}" in result.stderr  # the run is the combination it is named
    return run, corpus, env, result.stderr


def _script(trained, name, *args):
    run, _, env, _ = trained
    result = run_command(script_command(name, f"--train_dir={run}", *args), env)
    assert result.returncode == 0, result.stderr
    return result


def _python(trained, code):
    """Runs `code` after `lm = tf_charrnn.CharLM.from_run(RUN)` in a fresh Python; its stdout as JSON."""
    run, _, env, _ = trained
    program = f"import json, tf_charrnn\nlm = tf_charrnn.CharLM.from_run({str(run)!r})\n{code}"
    result = run_command([sys.executable, "-c", program], env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _best_val_loss(training_log):
    return float(training_log.split("best val loss ")[1].split()[0])


def test_sample(trained):
    result = _script(trained, "sample.py", "--prime=Kno", "--length=60", "--seed=2")
    assert result.stdout.startswith("Kno") and len(result.stdout.rstrip("\n")) == 63


@pytest.mark.parametrize("best", [False, True])
def test_evaluate(trained, best):
    result = _script(trained, "evaluate.py", "--json", *(["--best"] if best else []))
    scored = json.loads(result.stdout)
    # The run's own validation split from a zero state, as training's validation scores it.
    assert scored["nats_per_char"] == pytest.approx(_best_val_loss(trained[3]), abs=1e-3)
    assert scored["checkpoint"].endswith(os.path.join("best", "ckpt-20") if best else "ckpt-20")


def test_evaluate_a_text(trained):
    corpus = trained[1]
    scored = json.loads(_script(trained, "evaluate.py", f"--data_path={corpus}", "--json").stdout)
    assert 0 < scored["nats_per_char"] < math.log(40) and scored["characters"] > 10_000


SERVE = """
import json, sys
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
out = loaded.signatures["serving_default"](prime=tf.constant("Kno"), length=tf.constant(30),
    temperature=tf.constant(1.0), seed=tf.constant(1, tf.int64))
print(json.dumps(out["text"].numpy().decode("utf-8")))
"""


@pytest.mark.parametrize("export_format", ["saved_model", "litert", "web"])
def test_export(trained, export_format, tmp_path):
    export_dir = tmp_path / export_format
    _script(trained, "export.py", f"--format={export_format}", f"--export_dir={export_dir}")
    if export_format == "saved_model":  # generates in another fresh process, TensorFlow alone
        command = [sys.executable, "-c", SERVE, str(export_dir)]
    elif export_format == "litert":  # generates with the LiteRT interpreter, without TensorFlow
        example = os.path.join(REPO_ROOT, "examples", "litert_generate.py")
        command = [sys.executable, example, f"--model_dir={export_dir}", "--prime=Kno", "--length=30"]
    else:  # the page and its model; test_web.py drives such a page in Chromium
        assert "<html" in (export_dir / "index.html").read_text(encoding="utf-8").lower()
        assert os.path.getsize(export_dir / "model.tflite") > 0
        return
    generated = run_command(command, trained[2], cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    if export_format == "saved_model":  # the generated characters, after the prime
        assert len(json.loads(generated.stdout.strip().splitlines()[-1])) == 30
    else:
        text = generated.stdout.rstrip("\n")
        assert text.startswith("Kno") and len(text) == 33


def test_resume(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    result = run_command(script_command("train.py", f"--train_dir={run}", "--max_steps=25"), trained[2])
    assert result.returncode == 0, result.stderr
    assert "from step 20" in result.stderr and (run / "checkpoints" / "ckpt-25.index").exists()


def test_init_from(trained, tmp_path):
    run, corpus, env, _ = trained
    tuned = tmp_path / "tuned"
    command = script_command(
        "train.py",
        f"--train_dir={tuned}",
        f"--init_from={run}",
        f"--data_path={corpus}",
        "--max_steps=5",
        "--batch_size=4",
        "--seq_length=16",
    )
    result = run_command(command, env)
    assert result.returncode == 0, result.stderr
    assert (tuned / "checkpoints" / "ckpt-5.index").exists()
    assert json.load(open(tuned / "config.json"))["model"]["rnn_units"] == 64


def test_charlm_generate(trained):
    texts = _python(trained, "print(json.dumps(lm.generate('Kno', length=40, num_samples=2, seed=5)))")
    assert len(texts) == 2 and all(text.startswith("Kno") and len(text) == 43 for text in texts)


def test_charlm_stream(trained):
    pieces = _python(trained, "print(json.dumps(list(lm.stream('Kno', length=40, seed=5))))")
    assert "".join(pieces).startswith("Kno") and len("".join(pieces)) == 43


def test_charlm_score(trained):
    scored = _python(trained, f"print(json.dumps(lm.score({TEXT!r}).nats_per_char))")
    assert 0 < scored < math.log(40)


def test_charlm_next_chars(trained):
    ranked = _python(trained, "print(json.dumps(lm.next_chars('Knowing is not enoug', k=3)))")
    probabilities = [probability for _, probability in ranked]
    assert len(ranked) == 3 and probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1 + 1e-6
