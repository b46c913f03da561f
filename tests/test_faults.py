"""Faults of shared machines and long runs, with the real scripts: two trainers on one run directory, and a
disk that fills up at a checkpoint (a real small filesystem where the test may mount one, a simulated
ENOSPC where it may not). Each ends with the losses of an uninterrupted run."""

import contextlib
import os
import shutil
import signal
import subprocess

import pytest

from helpers import (
    QUOTE,
    run_command,
    script_command,
    script_env,
    smoke_train_command,
    snapshot,
    start_command,
    step_losses,
)
from tf_charrnn.run import lock

FAULT_HOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_hooks")
STEPS = 16


def _command(train_dir, corpus):
    return smoke_train_command(
        train_dir,
        corpus,
        f"--max_steps={STEPS}",
        "--ckpt_every=4",
        "--eval_every=4",
        "--log_every=1",
        "--val_fraction=0.2",
        "--dropout=0.2",
        "--deterministic",
    )


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The corpus, the cache, and the per-step losses of the run trained alone and uninterrupted."""
    root = tmp_path_factory.mktemp("faults")
    corpus = root / "corpus.txt"
    corpus.write_text(QUOTE * 200, encoding="utf-8")
    cache = root / "cache"
    whole = run_command(_command(root / "whole", corpus), script_env(cache), timeout=300)
    assert whole.returncode == 0, whole.stderr
    losses = step_losses(str(root / "whole"))
    assert len(losses) == STEPS
    return corpus, cache, losses, root / "whole"


def _wait_for(lines, fragment, timeout=180):
    while fragment not in lines.get(timeout=timeout):
        pass


@pytest.mark.slow
def test_a_second_trainer_is_refused_and_the_first_finishes_as_if_alone(alone, tmp_path):
    corpus, cache, expected, _ = alone
    train_dir = tmp_path / "run"
    command = _command(train_dir, corpus)
    env = script_env(cache)
    first, lines = start_command(command, env)
    try:
        _wait_for(lines, "step 5/")  # ckpt-4 is written
        first.send_signal(signal.SIGSTOP)  # held mid-run, lock and all, for as long as the checks take
        second = run_command(command, env, timeout=300)
        assert second.returncode == 1
        last_line = second.stderr.strip().splitlines()[-1]
        assert last_line.startswith(f"error: {train_dir} is being trained by pid {first.pid} on "), last_line
        assert "use another --train_dir" in last_line
        # Readers do not take the lock: they run beside the trainer.
        for script, arguments in (
            ("sample.py", ["--length=20", "--prime=Know"]),
            ("evaluate.py", []),
            ("export.py", [f"--export_dir={tmp_path / 'export'}"]),
        ):
            reader = run_command(
                script_command(script, f"--train_dir={train_dir}", *arguments), env, timeout=300
            )
            assert reader.returncode == 0, (script, reader.stderr)
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=300) == 0
    finally:
        first.kill()
        first.wait()
    assert step_losses(str(train_dir)) == expected
    with lock.RunLock(str(train_dir)):  # the lock ended with its holder: the directory is free
        pass


@contextlib.contextmanager
def _disk(tmp_path, real):
    """(a folder on a 32 MB tmpfs, its filler file) when `real` and this process may mount one, else
    (a plain folder, None): the fault hook then simulates the full disk."""
    path = tmp_path / "disk"
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(path)]
    may_mount = real and os.geteuid() == 0 and shutil.which("mount")
    mounted = may_mount and subprocess.run(mount, capture_output=True).returncode == 0
    try:
        yield path, (path / "filler") if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


def _listing(folder):
    return sorted(os.listdir(folder))


@pytest.mark.slow
@pytest.mark.parametrize(
    "full_at, newest, real",
    [("ckpt-8", "ckpt-4", True), ("best/ckpt-12", "best/ckpt-8", False)],
    ids=["latest", "best-simulated"],
)
def test_a_full_disk_at_a_checkpoint_loses_nothing_and_the_run_resumes(
    alone, tmp_path, full_at, newest, real
):
    corpus, cache, expected, _ = alone
    with _disk(tmp_path, real) as (folder, filler):
        _fill_disk_then_resume(corpus, cache, expected, folder, filler, full_at, newest)


def _fill_disk_then_resume(corpus, cache, expected, folder, filler, full_at, newest):
    train_dir = folder / "run"
    fault = {"TF_CHARRNN_FULL_DISK_AT": full_at, "PYTHONPATH": FAULT_HOOKS}
    if filler:
        fault["TF_CHARRNN_FILL_FILE"] = str(filler)
    failed = run_command(_command(train_dir, corpus), script_env(cache, **fault), timeout=300)
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    name = os.path.basename(full_at)
    checkpoints = train_dir / "checkpoints" / os.path.dirname(full_at)
    last_line = failed.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        f"error: no space left on device writing checkpoint {name} in {checkpoints}: it needs about "
    ), last_line
    assert last_line.endswith(
        f"free some space and re-run the same command to resume; the newest checkpoint is still "
        f"{os.path.basename(newest)}"
    ), last_line
    if filler:
        assert " MB, 0.0 MB free" in last_line
    # No partial files; the list of checkpoints still ends at the previous one, which is readable.
    assert not [entry for entry in _listing(checkpoints) if entry.startswith(name) or ".tmp" in entry]
    with open(checkpoints / "checkpoint") as state:
        assert f'model_checkpoint_path: "{os.path.basename(newest)}"' in state.read()
    if filler:
        filler.unlink()  # space freed
    resumed = run_command(_command(train_dir, corpus), script_env(cache), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert step_losses(str(train_dir)) == expected


@pytest.mark.slow
def test_an_export_on_a_full_disk_leaves_the_previous_export(alone, tmp_path):
    _, cache, _, trained = alone
    with _disk(tmp_path, real=True) as (folder, filler):
        export_dir = folder / "export"
        command = script_command(
            "export.py", f"--train_dir={trained}", f"--export_dir={export_dir}", "--overwrite"
        )
        first = run_command(command, script_env(cache), timeout=300)
        assert first.returncode == 0, first.stderr
        before = snapshot(folder)
        fault = {"TF_CHARRNN_FULL_DISK_AT": "saved_model", "PYTHONPATH": FAULT_HOOKS}
        if filler:
            fault["TF_CHARRNN_FILL_FILE"] = str(filler)
        failed = run_command(command, script_env(cache, **fault), timeout=300)
        assert failed.returncode == 1
        last_line = failed.stderr.strip().splitlines()[-1]
        assert last_line.startswith(f"error: no space left on device writing the SavedModel in {folder}: "), (
            last_line
        )
        assert last_line.endswith("free some space and re-run the same command"), last_line
        if filler:
            filler.unlink()
        assert snapshot(folder) == before  # the previous export, and no partial folder
