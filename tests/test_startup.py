"""A command's stderr holds its own lines: TensorFlow's start-up notices (oneDNN, CUDA drivers, cuInit
on a machine without a GPU) and its per-checkpoint INFO lines are held back, unless the user sets
TF_CPP_MIN_LOG_LEVEL."""

import glob
import os
import re

import pytest

from helpers import QUOTE, REPO_ROOT, run_command, script_env, smoke_train_command

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
    assert "oneDNN custom operations" in lines and "Sharding callback" in lines
