"""End-to-end: the real scripts in subprocesses, with the shipped smoke config."""
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import QUOTE, REPO_ROOT


def _run_script(name, args, cache, **kwargs):
    env = {**os.environ, "TF_CHARRNN_CACHE": cache, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "scripts", name), *args],
                          capture_output=True, text=True, env=env, timeout=600, **kwargs)


def _smoke_args(train_dir, *extra):
    return [f"--flagfile={os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')}", f"--train_dir={train_dir}", *extra]


@pytest.mark.slow
def test_train_smoke_config_on_shakespeare_and_resume(shakespeare_cache, tmp_path):
    train_dir = tmp_path / "run"
    first = _run_script("train.py", _smoke_args(train_dir, "--max_steps=10"), shakespeare_cache)
    assert first.returncode == 0, first.stderr
    config = json.load(open(train_dir / "config.json"))
    assert config["train"]["max_steps"] == 10  # the override wins over the flagfile's 20
    assert config["data"]["batch_size"] == 4 and config["model"]["vocab_size"] == 65
    assert (train_dir / "checkpoints" / "ckpt-10.index").exists()
    assert (train_dir / "checkpoints" / "best" / "checkpoint").exists()
    assert os.listdir(train_dir / "logs" / "train") and os.listdir(train_dir / "logs" / "val")
    assert "val loss" in first.stderr and "chars/s" in first.stderr

    second = _run_script("train.py", _smoke_args(train_dir), shakespeare_cache)  # max_steps 20 from the file
    assert second.returncode == 0, second.stderr
    assert "Resumed" in second.stderr and "from step 10" in second.stderr
    assert (train_dir / "checkpoints" / "ckpt-20.index").exists()


def test_bad_flag_value_gives_one_line_and_no_traceback(text_file, corpus_cache, tmp_path):
    result = _run_script("train.py", _smoke_args(tmp_path / "run", "--rnn_units=0",
                                                 f"--data_path={text_file(QUOTE * 10)}"), corpus_cache)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: --rnn_units must be an integer >= 1, got 0"
    assert not (tmp_path / "run").exists()


def test_missing_corpus_names_the_path(corpus_cache, tmp_path):
    result = _run_script("train.py", _smoke_args(tmp_path / "run", f"--data_path={tmp_path}/none.txt"),
                         corpus_cache)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --data_path {tmp_path}/none.txt does not exist")


def test_sigterm_saves_a_checkpoint_that_resumes(text_file, corpus_cache, tmp_path):
    train_dir = tmp_path / "run"
    env = {**os.environ, "TF_CHARRNN_CACHE": corpus_cache}
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO_ROOT, "scripts", "train.py"),
         *_smoke_args(train_dir, f"--data_path={text_file(QUOTE * 200)}", "--max_steps=100000",
                      "--log_every=1", "--ckpt_every=100000", "--eval_every=100000")],
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in process.stderr:
            if "step 3/" in line:
                break
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM
    assert "re-run the same command to resume" in rest
    saved = [f for f in os.listdir(train_dir / "checkpoints") if f.endswith(".index")]
    assert len(saved) == 1 and int(saved[0][len("ckpt-"):-len(".index")]) >= 3
