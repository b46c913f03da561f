"""A command's stderr holds its own lines: TensorFlow's start-up notices (oneDNN, CUDA drivers, cuInit
on a machine without a GPU) and its per-checkpoint INFO lines are held back, unless the user sets
TF_CPP_MIN_LOG_LEVEL. Its compiled functions are traced without AutoGraph (whose conversion of the
library's Python cost a command seconds)."""

import glob
import importlib.util
import os
import platform
import re

import pytest

from helpers import (
    QUOTE,
    REPO_ROOT,
    SMOKE_CONFIG,
    pythonpath_without_tensorflow,
    run_command,
    script_command,
    script_env,
    smoke_train_command,
)

# An absl log line, e.g. "I1203 08:22:00.536902 139931988880256 training.py:110] Model: ...".
ABSL_LINE = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\] ")
OUR_FILES = {
    os.path.basename(path)
    for path in glob.glob(os.path.join(REPO_ROOT, "tf_charrnn", "**", "*.py"), recursive=True)
}


@pytest.fixture
def train_quietly(text_file, tmp_path):
    corpus = text_file((QUOTE + "\n") * 200)

    def train(**env):
        environment = script_env(tmp_path / "cache", **env)
        environment.pop("TF_CPP_MIN_LOG_LEVEL")  # as a user's shell has it, unless `env` sets it
        environment.update(env)
        train_dir = tmp_path / f"run{len(os.listdir(tmp_path))}"
        command = smoke_train_command(train_dir, corpus, "--max_steps=10", "--ckpt_every=5", "--eval_every=5")
        result = run_command(command, environment)
        assert result.returncode == 0, result.stderr
        return result.stderr.splitlines()

    return train


def test_a_command_prints_only_its_own_lines(train_quietly):
    lines = train_quietly()
    assert lines, "training logs its progress"
    for line in lines:
        logged_by = ABSL_LINE.match(line)
        assert logged_by and logged_by.group(1) in OUR_FILES, f"not one of ours: {line}"
    assert sum("step 10/10" in line for line in lines) == 1


def test_tf_cpp_min_log_level_set_by_the_user_shows_tensorflow_s_lines(train_quietly):
    lines = "\n".join(train_quietly(TF_CPP_MIN_LOG_LEVEL="0"))
    assert "This TensorFlow binary is optimized" in lines and "Sharding callback" in lines
    # oneDNN is on wherever the user did not turn it off, AVX2 CPUs (Zen 3) included, where TensorFlow
    # alone leaves it off.
    assert ("oneDNN custom operations are on" in lines) == (platform.machine().lower() in ("x86_64", "amd64"))


def test_tf_enable_onednn_opts_set_by_the_user_is_kept(train_quietly):
    lines = "\n".join(train_quietly(TF_CPP_MIN_LOG_LEVEL="0", TF_ENABLE_ONEDNN_OPTS="0"))
    assert "This TensorFlow binary is optimized" in lines and "oneDNN custom operations" not in lines


def test_a_command_keeps_keras_from_importing_ipython_and_matplotlib(train_quietly):
    # Both are installed here (requirements.txt): Keras imports them at its own import where they are.
    assert importlib.util.find_spec("IPython") and importlib.util.find_spec("matplotlib")
    lines = train_quietly(PYTHONPROFILEIMPORTTIME="1")
    imported = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    assert {"tensorflow", "keras.src"} <= imported
    # Keras' attempts fail at the top-level package; an import that went through would list its modules.
    tried = {name for name in imported if name.partition(".")[0] in ("IPython", "matplotlib")}
    assert tried <= {"IPython", "matplotlib", "matplotlib.pyplot"}, sorted(tried)


@pytest.mark.parametrize(
    "script, arguments, error",
    [
        ("train", ["--data_path={root}/missing.txt"], "error: --data_path {root}/missing.txt does not exist"),
        ("train", ["--data_path={root}/empty.txt"], "error: --data_path {root}/empty.txt is empty"),
        ("train", ["--data_path={root}/*.nothing"], "error: --data_path {root}/*.nothing matches no files"),
        ("train", ["--train_dir={root}/garbled"], "error: {root}/garbled/config.json is not a valid config"),
        ("train", ["--train_dir={root}/fresh", "--init_from={root}/none"], "error: {root}/none holds no run"),
        ("train", ["--strategy=multi_worker"], "error: --strategy=multi_worker needs TF_CONFIG"),
        ("train", ["--train_dir={root}/lr[0.01]"], "error: --train_dir {root}/lr[0.01] has a '['"),
        (
            "train",
            ["--data_path={root}/latin1.txt"],
            "error: --data_path {root}/latin1.txt is not valid UTF-8 at byte 3",
        ),
        ("train", ["--data_path={root}/short.txt"], "error: the training split has 2 characters"),
        (
            "train",
            ["--train_dir={root}/run", "--data_path={root}/ab.txt", "--rnn_units=32"],
            "error: {root}/run holds a run with another config (rnn_units 512 -> 32)",
        ),
        (
            "train",
            ["--train_dir={root}/run", "--data_path={root}/abc.txt"],
            "error: the corpus vocabulary (4 characters) differs from the run's in {root}/run (3",
        ),
        (
            "train",
            ["--init_from={root}/run", "--data_path={root}/ab.txt", "--cell=gru"],
            "error: --init_from {root}/run has another model shape (cell 'lstm' there, 'gru' here)",
        ),
        (
            "train",
            ["--train_dir={root}/vocab_only", "--data_path={root}/ab.txt"],
            "error: {root}/vocab_only/config.json is missing but {root}/vocab_only holds a run",
        ),
        ("sample", ["--train_dir={root}/none"], "error: {root}/none holds no run"),
        ("sample", ["--train_dir={root}/run", "--prime=z"], "error: --prime has characters outside"),
        (
            "sample",
            ["--train_dir={root}/run", "--prime_file={root}/empty.txt"],
            "error: --prime_file {root}/empty.txt is empty",
        ),
        ("sample", ["--train_dir={root}/run", "--output={root}"], "error: --output {root} is a folder"),
        ("sample", ["--train_dir={root}/run"], "error: {root}/run holds no checkpoint yet; train it first"),
        (
            "sample",
            ["--train_dir={root}/run", "--checkpoint={root}/run/checkpoints/ckpt-9"],
            "error: checkpoint {root}/run/checkpoints/ckpt-9 not found",
        ),
        ("evaluate", ["--train_dir={root}/run", "--best"], "error: {root}/run holds no best-validation"),
        (
            "evaluate",
            ["--train_dir={root}/saved", "--data_path={root}/latin1.txt"],
            "error: --data_path {root}/latin1.txt is not valid UTF-8 at byte 3",
        ),
        (
            "evaluate",
            ["--train_dir={root}/saved", "--data_path={root}/abc.txt"],
            "error: --data_path {root}/abc.txt has characters outside the run's vocabulary: ['c']",
        ),
        (
            "evaluate",
            ["--train_dir={root}/saved", "--split=test"],
            "error: {root}/saved was trained without a test",
        ),
        (
            "evaluate",
            ["--train_dir={root}/saved", "--data_path={root}/two.txt", "--reset_every=5"],
            "error: the text has 2 character(s); --reset_every=5 needs at least 6",
        ),
        (
            "inspect",
            ["--train_dir={root}/saved", "--cell=512", "--output_dir={root}/o"],
            "error: --cell=512 is out of range: each layer of the run has 512 cells",
        ),
        (
            "inspect",
            ["--train_dir={root}/saved", "--layer=3", "--output_dir={root}/o"],
            "error: --layer=3 is out of range: the run has 2 layer(s)",
        ),
        (
            "inspect",
            ["--train_dir={root}/saved", "--data_path={root}/abc.txt", "--output_dir={root}/o"],
            "error: --data_path {root}/abc.txt has characters outside the run's vocabulary: ['c']",
        ),
        ("export", ["--train_dir={root}/run"], "error: {root}/run holds no checkpoint yet"),
        ("inspect", ["--train_dir={root}/run", "--output_dir={root}/i"], "error: {root}/run holds no"),
        ("export", ["--train_dir={root}/garbled"], "error: {root}/garbled/config.json is not a valid config"),
        ("evaluate", ["--train_dir={root}/run", "--data_path={root}/x"], "error: --data_path {root}/x does"),
        ("inspect", ["--train_dir={root}/none", "--output_dir={root}/o"], "error: {root}/none holds no run"),
        ("inspect", ["--train_dir={root}/run", "--output_dir={root}"], "error: --output_dir {root} is not"),
        ("export", ["--train_dir={root}/run", "--export_dir={root}"], "error: --export_dir {root} is not"),
        (
            "export",
            ["--train_dir={root}/run", "--export_dir={root}/empty.txt"],
            "error: --export_dir {root}/empty.txt is a file; name a folder",
        ),
        (
            "export",
            ["--train_dir={root}/run", "--format=web", "--web_runtime_dir={root}", "--export_dir={root}/w"],
            "error: --web_runtime_dir {root} has no @litertjs/core/package.json",
        ),
    ],
)
def test_paths_and_run_files_are_refused_before_tensorflow_loads(tmp_path, script, arguments, error):
    """These faults need no TensorFlow to find: the command refuses them in a fraction of a second. Here
    importing TensorFlow fails, so only a refusal made before it gives the expected line."""
    from tf_charrnn.config import RunConfig
    from tf_charrnn.data.vocab import Vocab
    from tf_charrnn.run import layout

    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "short.txt").write_text("abc", encoding="utf-8")
    (tmp_path / "ab.txt").write_text("ab\n" * 30_000, encoding="utf-8")  # a batch of the default layout
    (tmp_path / "abc.txt").write_text("abc\n" * 30_000, encoding="utf-8")
    (tmp_path / "vocab_only").mkdir()
    (tmp_path / "vocab_only" / "vocab.json").write_text('{"chars": ["a"]}', encoding="utf-8")
    for run in ("run", "saved"):
        layout.save_run(
            RunConfig.from_flat({"train_dir": str(tmp_path / run), "vocab_size": 3}), Vocab("\nab")
        )
    (tmp_path / "saved" / "checkpoints").mkdir()
    (tmp_path / "saved" / "checkpoints" / "ckpt-1.index").write_bytes(b"")  # a checkpoint's file is there
    (tmp_path / "two.txt").write_text("ab", encoding="utf-8")
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "config.json").write_text('{"model": ', encoding="utf-8")
    env = script_env(tmp_path / "cache", PYTHONPATH=pythonpath_without_tensorflow(tmp_path))
    arguments = [argument.format(root=tmp_path) for argument in arguments]
    if script == "train" and not any(argument.startswith("--train_dir") for argument in arguments):
        arguments.append(f"--train_dir={tmp_path / 'fresh'}")
    result = run_command(script_command(f"{script}.py", *arguments), env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(error.format(root=tmp_path)), result.stderr
    assert not os.path.exists(tmp_path / "fresh")


def test_training_sampling_scoring_and_export_convert_none_of_the_library_with_autograph(
    text_file, corpus_cache, tmp_path, monkeypatch
):
    import tensorflow as tf
    from tensorflow.python.autograph.impl import api as autograph_api

    import tf_charrnn
    from tf_charrnn.export import saved_model

    converted = []
    convert = autograph_api._convert_actual  # every AutoGraph conversion of a function passes here

    def recording_convert(entity, program_ctx):
        converted.append(f"{getattr(entity, '__module__', '?')}.{getattr(entity, '__qualname__', entity)}")
        return convert(entity, program_ctx)

    monkeypatch.setattr(autograph_api, "_convert_actual", recording_convert)
    monkeypatch.setenv("TF_CHARRNN_CACHE", corpus_cache)
    corpus = text_file((QUOTE + "\n") * 40)
    train_dir = tmp_path / "run"
    # Validation (one call for all batches), the sample after it (stop-free loop), a checkpoint.
    tf_charrnn.train(train_dir=train_dir, data_path=corpus, config=SMOKE_CONFIG, max_steps=3, eval_every=3)
    lm = tf_charrnn.CharLM.from_run(str(train_dir))
    texts = [lm.generate("Kno", 30, seed=1), lm.generate("Kno", 30, seed=1, stop_at="e")]
    streamed = "".join(lm.stream("Kno", 30, seed=1))
    score = lm.score(QUOTE)
    saved_model.export_run(str(train_dir), str(tmp_path / "export"))
    exported = tf.saved_model.load(str(tmp_path / "export"))
    generated = exported.generate(
        tf.constant("Kno"), tf.constant(12), tf.constant(1.0), tf.constant(3, tf.int64)
    )
    # The paths ran: a stop ends the text at its first "e", the stream spells the compiled loop's text.
    assert (
        len(texts[0]) == 3 + 30
        and streamed == texts[0]
        and texts[1] == texts[0][: texts[0].index("e", 3) + 1]
    )
    assert score.nats_per_char > 0 and len(generated["text"].numpy().decode()) == 12
    assert [name for name in converted if name.startswith("tf_charrnn")] == []
