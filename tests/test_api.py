"""tf_charrnn.train and the package's lazy names: the CLI's losses and run-directory rules from Python
(each resumes the other's run), a progress bar, bad settings raised as UserError naming the argument and
writing nothing; `import tf_charrnn` loads no TensorFlow."""

import json
import os
import pkgutil
import sys

import numpy as np
import pytest

import tf_charrnn
from helpers import QUOTE, SMOKE_CONFIG, run_command, run_script, smoke_args, snapshot, step_losses
from tf_charrnn import api

CADENCE = ["--log_every=1", "--eval_every=3", "--ckpt_every=3"]


@pytest.mark.parametrize("log_level", [None, "2"])  # a user's shell; TensorFlow's C++ lines quiet
def test_import_loads_no_tensorflow_until_a_name_is_used(log_level):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env.update({"TF_CPP_MIN_LOG_LEVEL": log_level} if log_level else {})
    code = (
        "import sys, tf_charrnn\n"
        "tf_charrnn.UserError\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'numpy')))\n"
        "tf_charrnn.CharLM\n"
        "print('tensorflow' in sys.modules)\n"
    )
    result = run_command([sys.executable, "-c", code], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "True"]


def test_exported_names_are_no_submodules():
    # A submodule named like an export (say tf_charrnn/train.py) would replace the export once imported.
    submodules = {module.name for module in pkgutil.iter_modules(tf_charrnn.__path__)}
    assert not submodules & set(tf_charrnn.__all__)
    from tf_charrnn.training import trainer  # noqa: F401 - imports every module the training call needs

    assert tf_charrnn.train is api.train and tf_charrnn.TrainResult is trainer.TrainResult
    assert set(dir(tf_charrnn)) >= {"train", "CharLM", "TrainResult", "UserError"}


@pytest.mark.slow
def test_train_gives_the_clis_losses_and_each_resumes_the_others_run(
    text_file, corpus_cache, tmp_path, monkeypatch, capsys
):
    corpus = text_file((QUOTE + "\n") * 20)
    cli_dir, api_dir = tmp_path / "cli", tmp_path / "api"
    cli = run_script(
        "train.py",
        smoke_args(cli_dir, f"--data_path={corpus}", "--deterministic", "--max_steps=6", *CADENCE),
        corpus_cache,
    )
    assert cli.returncode == 0, cli.stderr
    monkeypatch.setenv("TF_CHARRNN_CACHE", corpus_cache)
    result = tf_charrnn.train(
        train_dir=api_dir,
        data_path=corpus,
        config=SMOKE_CONFIG,
        deterministic=True,
        max_steps=6,
        log_every=1,
        eval_every=3,
        ckpt_every=3,
    )
    bar = capsys.readouterr().out
    assert "6/6" in bar and "loss: " in bar and f"val_loss: {result.last_val_loss:.4f}" in bar
    assert result.step == 6 and len(result.losses) == 6 and result.train_dir == str(api_dir)
    assert [step for step, _ in result.val_losses] == [3, 6] and result.best_val_loss == min(
        loss for _, loss in result.val_losses
    )
    assert step_losses(cli_dir) == list(np.float32(result.losses)) == step_losses(api_dir)
    configs = [json.load(open(folder / "config.json")) for folder in (cli_dir, api_dir)]
    for config in configs:
        del config["directory"]["train_dir"]
    assert configs[0] == configs[1]

    # Python resumes the CLI's run, the CLI resumes Python's: the same three next steps.
    resumed = tf_charrnn.train(train_dir=cli_dir, max_steps=9)
    assert "Resuming at step 6 of 9" in capsys.readouterr().out
    cli = run_script("train.py", [f"--train_dir={api_dir}", "--max_steps=9"], corpus_cache)
    assert cli.returncode == 0, cli.stderr
    assert "from step 6" in cli.stderr and resumed.step == 9
    assert step_losses(api_dir)[6:] == list(np.float32(resumed.losses)) and len(resumed.losses) == 3
    assert step_losses(cli_dir) == step_losses(api_dir)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(batch_sizee=4), "unknown setting batch_sizee=; did you mean batch_size=?"),
        (dict(vocab_size=5), "vocab_size= is no setting: it is derived from the corpus"),
        (dict(dropout=1.0), "dropout= must be in [0, 1), got 1.0"),
        (dict(max_steps="10"), "max_steps= must be an int, got '10'"),
        (dict(random_offset=1), "random_offset= must be True or False, got 1"),
        (dict(cell="transformer"), "cell= must be one of lstm, gru, rnn, got 'transformer'"),
        (dict(config="{root}/missing.cfg"), "config={root}/missing.cfg: Unable to open flagfile"),
        (dict(config="{root}/bad.cfg"), "seq_length= must be an integer >= 1, got 0"),
        (dict(data_path="{root}/missing.txt"), "data_path= {root}/missing.txt does not exist"),
        (dict(train_dir="{root}/run", rnn_units=32), "{root}/run holds a run with another config (rnn_units"),
    ],
)
def test_bad_settings_raise_user_error_naming_the_argument_and_write_nothing(
    settings, message, text_file, corpus_cache, tmp_path, monkeypatch
):
    monkeypatch.setenv("TF_CHARRNN_CACHE", corpus_cache)
    corpus = text_file((QUOTE + "\n") * 20)
    (tmp_path / "bad.cfg").write_text("--seq_length=0\n")
    if "rnn_units" in settings:
        tf_charrnn.train(
            train_dir=tmp_path / "run", data_path=corpus, config=SMOKE_CONFIG, max_steps=1, progress=False
        )
    settings = {
        name: value.format(root=tmp_path) if isinstance(value, str) else value
        for name, value in settings.items()
    }
    arguments = dict(train_dir=str(tmp_path / "new"), data_path=corpus, max_steps=2, progress=False)
    before = snapshot(tmp_path)
    with pytest.raises(tf_charrnn.UserError) as raised:
        tf_charrnn.train(**{**arguments, **settings})
    assert str(raised.value).startswith(message.format(root=tmp_path)), str(raised.value)
    assert "--" not in str(raised.value)
    assert snapshot(tmp_path) == before
