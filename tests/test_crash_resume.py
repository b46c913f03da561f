"""Never lose a run: SIGKILL at several points, one of them inside a checkpoint save, then resume."""

import os
import signal

import numpy as np
import pytest

from helpers import QUOTE, run_command, script_env, smoke_train_command, start_command, step_losses

FAULT_HOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_hooks")


def _command(train_dir, corpus):
    return smoke_train_command(
        train_dir,
        corpus,
        "--max_steps=16",
        "--ckpt_every=4",
        "--log_every=1",
        "--eval_every=1000",
        "--dropout=0.2",
        "--random_offset",
        "--state_reset_probability=0.2",
        "--deterministic",
    )


def _run_until(command, env, line_fragment, timeout=180):
    """Starts training, SIGKILLs it once a stderr line holds `line_fragment`; returns the exit code."""
    process, lines = start_command(command, env)
    try:
        while True:
            line = lines.get(timeout=timeout)
            if line_fragment in line:
                process.send_signal(signal.SIGKILL)
                break
        return process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_losses(text_file, corpus_cache, tmp_path):
    corpus = text_file(QUOTE * 200)
    whole = run_command(_command(tmp_path / "whole", corpus), script_env(corpus_cache), timeout=300)
    assert whole.returncode == 0, whole.stderr
    expected = step_losses(str(tmp_path / "whole"))
    assert len(expected) == 16

    killed = tmp_path / "killed"
    command = _command(killed, corpus)
    env = script_env(corpus_cache)
    assert _run_until(command, env, "step 3/16") == -signal.SIGKILL  # before any checkpoint
    assert _run_until(command, env, "step 10/16") == -signal.SIGKILL  # after ckpt-8
    in_save = run_command(
        command, script_env(corpus_cache, TF_CHARRNN_KILL_IN_SAVE="12", PYTHONPATH=FAULT_HOOKS), timeout=300
    )
    assert in_save.returncode == -signal.SIGKILL  # died while writing ckpt-12
    with open(killed / "checkpoints" / "checkpoint") as state:
        assert 'model_checkpoint_path: "ckpt-8"' in state.read()

    final = run_command(command, env, timeout=300)
    assert final.returncode == 0, final.stderr
    assert "Resumed" in final.stderr and "ckpt-8 at step 8" in final.stderr
    assert step_losses(str(killed)) == expected  # bit for bit
    assert np.isfinite(expected).all()
