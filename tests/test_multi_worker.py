"""MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1, configured by TF_CONFIG."""

import json
import os
import re
import signal
import socket
import sys
import textwrap
import time

import numpy as np
import pytest

from helpers import QUOTE, REPO_ROOT, run_command, script_env, smoke_train_command, start_command, step_losses

TIMEOUT = 240  # seconds any one process may take
# The README's run validates on all of tiny-shakespeare's validation split in batches of 4 x 16.
README_TIMEOUT = 900
FAULT_HOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_hooks")
PYTHONPATH = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _command(train_dir, corpus, *extra):
    return smoke_train_command(
        train_dir,
        corpus,
        "--dropout=0",
        "--ckpt_every=3",
        "--eval_every=3",
        "--log_every=1",
        "--random_offset",
        *extra,
    )


def _run(command, env):
    result = run_command(command, env, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _start_workers(train_dir, corpus, env, *extra, envs=({}, {})):
    """Starts two workers on 127.0.0.1 (worker i with `envs[i]` added to `env`) and returns them, each as
    (the process, a queue of its stderr lines, its environment)."""
    addresses = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    workers = []
    for index in range(2):
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        worker_env = {**env, **envs[index], "TF_CONFIG": json.dumps(tf_config)}
        command = _command(train_dir, corpus, "--strategy=multi_worker", *extra)
        workers.append((*start_command(command, worker_env), worker_env))
    return workers


def _drain(lines):
    text = []
    while not lines.empty():
        text.append(lines.get())
    return "".join(text)


@pytest.fixture
def env(corpus_cache):
    return script_env(corpus_cache)


@pytest.mark.slow
def test_sigterm_to_one_worker_stops_both_after_the_same_step(text_file, env, tmp_path):
    corpus = text_file((QUOTE + " ") * 12)
    workers = _start_workers(tmp_path / "run", corpus, env, "--max_steps=1000")
    try:
        chief, chief_lines, _ = workers[0]
        while "step 3/1000" not in chief_lines.get(timeout=TIMEOUT):
            pass
        workers[1][0].send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=TIMEOUT) for process, *_ in workers]
    finally:
        for process, *_ in workers:
            process.kill()
            process.wait()
    assert codes == [128 + signal.SIGTERM] * 2, [_drain(lines)[-2000:] for _, lines, _ in workers]
    chief_log = _drain(chief_lines)
    assert "Another worker was stopped by a signal" in chief_log
    stopped_at = int(re.search(r"Stopped by signal 15 at step (\d+)", chief_log).group(1))
    assert f"Stopped by signal 15 at step {stopped_at}" in _drain(workers[1][1])
    with open(tmp_path / "run" / "checkpoints" / "checkpoint") as state:
        assert f'model_checkpoint_path: "ckpt-{stopped_at}"' in state.read()


@pytest.mark.slow
def test_two_workers_train_together_and_the_chief_checkpoint_resumes_alone(text_file, env, tmp_path):
    corpus = text_file((QUOTE + " ") * 12)
    shared_dir = tmp_path / "two_workers"
    workers = _start_workers(shared_dir, corpus, env, "--max_steps=6")
    try:
        codes = [process.wait(timeout=TIMEOUT) for process, *_ in workers]
    finally:
        for process, *_ in workers:
            process.kill()
            process.wait()
    outputs = [_drain(lines) for _, lines, _ in workers]
    assert codes == [0, 0], [output[-3000:] for output in outputs]
    assert "with 2 replica(s) (--strategy=multi_worker)" in outputs[0]
    for output in outputs:  # both name the checkpoint in the run directory
        assert f"checkpoint {shared_dir}/checkpoints/ckpt-6" in output
    # Only the chief wrote the run; the other worker's scratch checkpoints are gone.
    assert sorted(os.listdir(shared_dir / "checkpoints")) == [
        "best",
        "checkpoint",
        "ckpt-3.data-00000-of-00001",
        "ckpt-3.index",
        "ckpt-6.data-00000-of-00001",
        "ckpt-6.index",
    ]
    # The chief's checkpoint resumes on one worker and continues exactly as one worker from the start.
    _run(_command(shared_dir, corpus, "--strategy=default", "--max_steps=9"), env)
    alone_dir = tmp_path / "one_worker"
    _run(_command(alone_dir, corpus, "--strategy=default", "--max_steps=9"), env)
    together = step_losses(shared_dir)
    assert len(together) == 9
    np.testing.assert_allclose(together, step_losses(alone_dir), rtol=0, atol=1e-5)


def _readme_two_worker_commands():
    """The README's two-worker example and its one-machine continuation, as written there."""
    with open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    block = re.search(r"\n\n(    for index in 0 1; do\n.*?\n    wait)\n", readme, re.S).group(1)
    continuation = re.search(
        r"`(python scripts/train\.py --flagfile=configs/smoke\.cfg --train_dir=runs/two\s+--max_steps=30)`",
        readme,
    ).group(1)
    return textwrap.dedent(block), " ".join(continuation.split())


@pytest.mark.slow
def test_the_readme_two_worker_run_continues_on_one_machine_as_written(shakespeare_cache, tmp_path):
    workers, continuation = _readme_two_worker_commands()
    # The README's commands in a folder of their own (runs/two is relative), with free ports (tests run
    # in parallel) and this Python as `python`; nothing else changed.
    for name in ("scripts", "configs"):
        os.symlink(os.path.join(REPO_ROOT, name), tmp_path / name)
    for readme_port, port in zip(("12345", "12346"), _free_ports(2), strict=True):
        workers = workers.replace(readme_port, str(port))
    env = script_env(
        shakespeare_cache, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    )
    together = run_command(["bash", "-c", workers], env, timeout=README_TIMEOUT, cwd=tmp_path)
    assert together.returncode == 0, together.stderr[-3000:]
    assert "with 2 replica(s) (--strategy=multi_worker)" in together.stderr
    alone = run_command(["bash", "-c", continuation], env, timeout=README_TIMEOUT, cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "Resumed runs/two/checkpoints/ckpt-20 at step 20" in alone.stderr
    assert "Training 30 steps" in alone.stderr and "with 1 replica(s) (--strategy=auto)" in alone.stderr
    assert "Done at step 30" in alone.stderr
    # The run directory records the launch that wrote it last: this one, on one machine.
    with open(tmp_path / "runs" / "two" / "config.json") as f:
        assert json.load(f)["runtime"]["strategy"] == "auto"


@pytest.mark.slow
def test_a_lost_worker_is_named_in_one_line_and_both_commands_resume(text_file, env, tmp_path):
    corpus = text_file((QUOTE + " ") * 12)
    train_dir = tmp_path / "run"
    # Worker 1 is killed (SIGKILL) in the middle of saving its checkpoint 6 (the best one, when step 6
    # brings a new best validation loss: then the chief stops before its own ckpt-6, and resumes from 3).
    fault = {"TF_CHARRNN_KILL_IN_SAVE": "6", "PYTHONPATH": os.pathsep.join([FAULT_HOOKS, *PYTHONPATH])}
    workers = _start_workers(train_dir, corpus, env, "--max_steps=12", envs=[{}, fault])
    try:
        assert workers[1][0].wait(timeout=TIMEOUT) == -signal.SIGKILL
        killed_at = time.monotonic()
        code = workers[0][0].wait(timeout=TIMEOUT)
        survivor_seconds = time.monotonic() - killed_at
    finally:
        for process, *_ in workers:
            process.kill()
            process.wait()
    chief_log = _drain(workers[0][1])
    assert code == 1, chief_log[-3000:]
    assert survivor_seconds < 60
    assert "Traceback" not in chief_log
    address = json.loads(workers[1][2]["TF_CONFIG"])["cluster"]["worker"][1]
    # The line names the newest complete checkpoint; the resume below must start from that one.
    newest = re.search(r"/checkpoints/(ckpt-\d+): re-run", chief_log.strip().splitlines()[-1]).group(1)
    assert newest in ("ckpt-3", "ckpt-6")
    assert os.path.isfile(train_dir / "checkpoints" / f"{newest}.index")
    assert chief_log.strip().splitlines()[-1] == (
        f"error: worker 1 ({address}) stopped answering, so worker 0 (this one) stopped too; the run will "
        f"resume from {train_dir}/checkpoints/{newest}: re-run every worker's command (all 2 of them) to "
        f"resume"
    )
    # Both commands again: the run resumes from that checkpoint and ends with an uninterrupted run's losses.
    workers = _start_workers(train_dir, corpus, env, "--max_steps=12")
    try:
        codes = [process.wait(timeout=TIMEOUT) for process, *_ in workers]
    finally:
        for process, *_ in workers:
            process.kill()
            process.wait()
    outputs = [_drain(lines) for _, lines, _ in workers]
    assert codes == [0, 0], [output[-3000:] for output in outputs]
    assert f"Resumed {train_dir}/checkpoints/{newest} at step {newest[len('ckpt-') :]}" in outputs[0]
    alone_dir = tmp_path / "alone"
    _run(_command(alone_dir, corpus, "--strategy=default", "--max_steps=12"), env)
    resumed = step_losses(train_dir)
    assert len(resumed) == 12
    np.testing.assert_allclose(resumed, step_losses(alone_dir), rtol=0, atol=1e-5)
