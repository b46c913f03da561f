"""End-to-end: the real scripts in subprocesses, with the shipped smoke config."""

import json
import os
import signal
import subprocess
import sys

import pytest

from helpers import (
    QUOTE,
    REPO_ROOT,
    make_config,
    pythonpath_without_tensorflow,
    run_command,
    run_script,
    script_command,
    script_env,
    smoke_args,
    smoke_train_command,
)
from tf_charrnn.model import native


@pytest.mark.slow
def test_train_smoke_config_on_shakespeare_and_resume(shakespeare_cache, tmp_path):
    train_dir = tmp_path / "run"
    first = run_script("train.py", smoke_args(train_dir, "--max_steps=10"), shakespeare_cache)
    assert first.returncode == 0, first.stderr
    config = json.load(open(train_dir / "config.json"))
    assert config["length"]["max_steps"] == 10  # the override wins over the flagfile's 20
    assert config["layout"]["batch_size"] == 4 and config["model"]["vocab_size"] == 65
    assert (train_dir / "checkpoints" / "ckpt-10.index").exists()
    assert (train_dir / "checkpoints" / "best" / "checkpoint").exists()
    assert os.listdir(train_dir / "logs" / "train") and os.listdir(train_dir / "logs" / "val")
    assert "val loss" in first.stderr and "chars/s" in first.stderr

    second = run_script("train.py", smoke_args(train_dir), shakespeare_cache)  # max_steps 20 from the file
    assert second.returncode == 0, second.stderr
    assert "Resumed" in second.stderr and "from step 10" in second.stderr
    assert (train_dir / "checkpoints" / "ckpt-20.index").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_that_resumes(signum, text_file, corpus_cache, tmp_path):
    train_dir = tmp_path / "run"
    env = script_env(corpus_cache)
    process = subprocess.Popen(
        smoke_train_command(
            train_dir,
            text_file(QUOTE * 200),
            "--max_steps=100000",
            "--log_every=1",
            "--ckpt_every=100000",
            "--eval_every=100000",
        ),
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        for line in process.stderr:
            if "step 3/" in line:
                break
        process.send_signal(signum)
        _, rest = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signum
    assert "re-run the same command to resume" in rest
    saved = [f for f in os.listdir(train_dir / "checkpoints") if f.endswith(".index")]
    assert len(saved) == 1
    stopped_at = int(saved[0][len("ckpt-") : -len(".index")])
    assert stopped_at >= 3
    resumed = run_script(
        "train.py",
        smoke_args(train_dir, f"--data_path={text_file(QUOTE * 200)}", f"--max_steps={stopped_at + 2}"),
        corpus_cache,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"from step {stopped_at}" in resumed.stderr
    assert (train_dir / "checkpoints" / f"ckpt-{stopped_at + 2}.index").exists()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A small run trained through the library (the script path is covered above)."""
    from tf_charrnn.training import trainer

    root = tmp_path_factory.mktemp("scripts")
    corpus = root / "corpus.txt"
    corpus.write_text((QUOTE + "\n") * 10, encoding="utf-8")
    trainer.train(
        make_config(
            corpus,
            root / "cache",
            root / "run",
            batch_size=4,
            seq_length=12,
            embedding_dim=8,
            rnn_units=24,
            num_layers=2,
            dropout=0.0,
            max_steps=30,
            learning_rate=0.01,
            eval_every=15,
            sample_length=0,
        )
    )
    return str(root / "run"), str(root / "cache")


def test_sample_streamed_compiled_and_saved_model_print_the_same_text(trained_run, tmp_path):
    train_dir, cache = trained_run
    common = [f"--train_dir={train_dir}", "--prime=Willing", "--length=60", "--seed=7", "--temperature=0.8"]
    compiled = run_script("sample.py", common, cache)
    streamed = run_script("sample.py", [*common, "--stream"], cache)
    assert compiled.returncode == 0 and streamed.returncode == 0, compiled.stderr + streamed.stderr
    assert compiled.stdout == streamed.stdout
    assert compiled.stdout.startswith("Willing") and len(compiled.stdout) == len("Willing") + 60 + 1

    exported = run_script(
        "export.py", [f"--train_dir={train_dir}", f"--export_dir={tmp_path / 'model'}"], cache
    )
    assert exported.returncode == 0, exported.stderr
    import tensorflow as tf

    text = (
        tf.saved_model.load(str(tmp_path / "model"))
        .signatures["serving_default"](
            prime=tf.constant("Willing"),
            length=tf.constant(60),
            temperature=tf.constant(0.8),
            seed=tf.constant(7, tf.int64),
        )["text"]
        .numpy()
        .decode("utf-8")
    )
    assert compiled.stdout == "Willing" + text + "\n"

    again = run_script("export.py", [f"--train_dir={train_dir}", f"--export_dir={tmp_path / 'model'}"], cache)
    assert again.returncode != 0 and "--overwrite" in again.stderr.strip().splitlines()[-1]


def test_sample_several_at_once_with_every_mode(trained_run):
    train_dir, cache = trained_run
    for mode in ("greedy", "sample", "sample_at_space"):
        result = run_script(
            "sample.py",
            [
                f"--train_dir={train_dir}",
                "--num_samples=3",
                "--length=20",
                f"--sampling={mode}",
                "--top_k=5",
                "--top_p=0.9",
                "--best",
            ],
            cache,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("--- sample ") == 3


def test_sample_prime_file_stop_at_and_output_compiled_and_streamed(trained_run, tmp_path):
    train_dir, cache = trained_run
    (tmp_path / "prime.txt").write_text("we must\n", encoding="utf-8")
    common = [
        f"--train_dir={train_dir}",
        f"--prime_file={tmp_path / 'prime.txt'}",
        "--stop_at=\\n",  # the flag's escape: a newline
        "--num_samples=3",
        "--length=200",
        "--seed=5",
    ]
    for name, extra in (("compiled", []), ("streamed", ["--stream"])):
        result = run_script("sample.py", [*common, f"--output={tmp_path / name}.txt", *extra], cache)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "" and f"Wrote 3 sample(s) to {tmp_path / name}.txt" in result.stderr
    written = (tmp_path / "compiled.txt").read_text(encoding="utf-8")
    assert written == (tmp_path / "streamed.txt").read_text(encoding="utf-8")
    samples = written.split("--- sample ")[1:]
    assert [sample[: len("1 ---\nwe must\n")] for sample in samples] == [
        f"{index} ---\nwe must\n" for index in (1, 2, 3)
    ]
    for sample in samples:  # each ends at its first generated newline (or has all 200 characters)
        generated = sample[len("1 ---\nwe must\n") : -1]
        assert generated.find("\n") in (len(generated) - 1, -1)
        assert generated.endswith("\n") or len(generated) == 200
    printed = run_script("sample.py", common, cache)
    assert printed.returncode == 0 and printed.stdout == written


# The benchmark's `small` preset shrunk to seconds.
TINY_BENCHMARK = ["--preset=small", "--rnn_units=8", "--embedding_dim=4", "--batch_size=3", "--seq_length=5"]


def test_benchmark_prints_one_json_line_per_measurement(corpus_cache):
    result = run_script(
        "benchmark.py",
        [
            *TINY_BENCHMARK,
            "--steps=2",
            "--length=10",
            "--sample_batch_sizes=1,2",
        ],
        corpus_cache,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [(line["task"], line["batch_size"], line.get("mode")) for line in lines] == [
        ("train", 3, None),
        ("sample", 1, "compiled"),
        ("sample", 1, "streamed"),
        ("sample", 2, "compiled"),
        ("sample", 2, "streamed"),
    ]
    # 8 units: no sequence kernel takes them in float32; the sampling step kernel pads them to 16
    step = "fused kernels, float32" if native.load() is not None else "keras ops"
    for line in lines:
        assert line["preset"] == "small" and line["rnn_units"] == 8
        assert line["chars_per_sec"] > 0 and line["peak_rss_mb"] > 0
        assert line["recurrent"] == ("keras ops" if line["task"] == "train" else step)


def test_benchmark_memory_task_trains_on_a_synthetic_corpus(corpus_cache):
    result = run_script(
        "benchmark.py",
        [
            "--task=memory",
            "--corpus_mb=2",
            *TINY_BENCHMARK,
        ],
        corpus_cache,
    )
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert line["task"] == "memory" and line["corpus_mb"] == 2.0
    assert line["ids_mb"] == 2.0  # one byte per character: 65 distinct characters fit uint8
    assert line["peak_rss_mb"] >= line["peak_rss_encode_mb"] > line["ids_mb"]
    assert line["cached_load_seconds"] > 0 and line["cache_check_seconds"] > 0


def test_benchmark_memory_task_on_a_folder_of_files(corpus_cache):
    result = run_script(
        "benchmark.py",
        ["--task=memory", "--corpus_mb=1", "--corpus_files=200", *TINY_BENCHMARK],
        corpus_cache,
    )
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert line["num_files"] == 200
    # One byte per character, and the separator's two newlines between two of the 200 files.
    assert line["ids_mb"] == (2**20 + 199 * 2) / 2**20
    assert line["peak_rss_mb"] >= line["peak_rss_encode_mb"] > line["ids_mb"]


# A peer that logs its arguments and reports 10, 20, 30, ... chars/s on its 1st, 2nd, 3rd, ... call.
FAKE_PEER = """
import json, sys
with open({log!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
with open({log!r}) as log:
    calls = len(log.readlines())
print(json.dumps({{"peer": "fake", "chars_per_sec": 10.0 * calls}}))
"""


def test_benchmark_alternates_with_the_peer_at_the_same_precision_and_reports_the_median_ratio(
    corpus_cache, tmp_path
):
    log = tmp_path / "peer_calls.txt"
    peer = tmp_path / "fake_peer.py"
    peer.write_text(FAKE_PEER.format(log=str(log)))
    result = run_script(
        "benchmark.py",
        [
            "--task=train",
            *TINY_BENCHMARK,
            "--steps=2",
            "--mixed_precision=bfloat16",
            "--rounds=3",
            f"--peer_python={sys.executable}",
            f"--peer_script={peer}",
        ],
        corpus_cache,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [("peer_chars_per_sec" in line, "chars_per_sec" in line) for line in lines[:6]] == [
        (True, False),
        (False, True),
    ] * 3  # peer, project, alternated
    calls = log.read_text().splitlines()
    assert len(calls) == 3 and all("train" in call and "--precision=bfloat16" in call for call in calls)
    summary = lines[6]
    assert summary["peer_chars_per_sec"] == [10.0, 20.0, 30.0] and summary["peer_precision"] == "bfloat16"
    # 8 units run padded on the bfloat16 kernels where the CPU has them (fused_lstm.pad_units)
    bfloat16 = f"fused kernels, bfloat16 ({native.bf16_products()})" if native.bfloat16_kernels() else None
    assert summary["recurrent"] == (bfloat16 or "keras ops")
    ours = sorted(summary["chars_per_sec"])
    assert summary["ratio_vs_peer"] == pytest.approx(ours[1] / 20.0)


def _fake_peer(tmp_path):
    """(the fake peer's script, the log of its calls)."""
    log = tmp_path / "peer_calls.txt"
    peer = tmp_path / "fake_peer.py"
    peer.write_text(FAKE_PEER.format(log=str(log)))
    return peer, log


def test_benchmark_refuses_to_compare_with_the_peer_where_the_kernels_failed_to_build(corpus_cache, tmp_path):
    peer, log = _fake_peer(tmp_path)
    arguments = [
        "--task=train",
        *TINY_BENCHMARK,
        "--rnn_units=64",  # units the kernels would run
        "--steps=1",
        "--rounds=1",
        f"--peer_python={sys.executable}",
        f"--peer_script={peer}",
    ]
    env = script_env(corpus_cache, CXX="false")  # a compiler that fails: no kernels
    refused = run_command(script_command("benchmark.py", *arguments), env)
    assert refused.returncode == 1
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: the fused LSTM kernels failed to build here (compiling the fused kernels failed"
    )
    assert last.endswith("or pass --compare_without_kernels") and refused.stdout == ""
    assert not log.exists()  # the peer never ran

    compared = run_command(script_command("benchmark.py", *arguments, "--compare_without_kernels"), env)
    assert compared.returncode == 0, compared.stderr
    lines = [json.loads(line) for line in compared.stdout.strip().splitlines()]
    assert [line.get("recurrent") for line in lines] == [
        None,
        "keras ops",
        "keras ops",
    ]  # peer, ours, summary
    assert len(log.read_text().splitlines()) == 1


def test_benchmark_sweep_alternates_sizes_and_precisions_with_the_peer_and_writes_table_and_plot(
    corpus_cache, tmp_path
):
    peer, log = _fake_peer(tmp_path)
    output = tmp_path / "sweep"
    result = run_script(
        "benchmark.py",
        [
            "--task=sweep",
            *TINY_BENCHMARK,
            "--sweep_units=64",
            "--sweep_precisions=none,bfloat16",
            "--steps=1",
            "--rounds=1",
            f"--peer_python={sys.executable}",
            f"--peer_script={peer}",
            f"--sweep_output={output}",
        ],
        corpus_cache,
    )
    assert result.returncode == 0, result.stderr
    header, *lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert header["task"] == "sweep" and header["cpu"]
    assert set(header["matmul_peak_gflops"]) == {"none", "bfloat16"}
    assert all(gflops > 0 for gflops in header["matmul_peak_gflops"].values())
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and "--units=64" in calls[0]
    assert "--precision=float32" in calls[0] and "--precision=bfloat16" in calls[1]
    rows = [line for line in lines if "ratio_vs_peer" in line]
    assert len(lines) == 6 and [row["precision"] for row in rows] == ["float32", "bfloat16"]
    # 2 layers of 64 units on a 4-wide embedding, 65 characters: 3 x (2 (4 + 64) 256 + 2 (64 + 64) 256 +
    # 2 x 64 x 65) = 326,016 FLOPs a character, forward and backward.
    for row, peer_rate in zip(rows, [10.0, 20.0], strict=True):
        assert row["median_peer_chars_per_sec"] == peer_rate
        assert row["peer_gflops"] == pytest.approx(peer_rate * 326_016 / 1e9)
        assert row["gflops"] == pytest.approx(row["median_chars_per_sec"] * 326_016 / 1e9)
        assert row["ratio_vs_peer"] == pytest.approx(row["median_chars_per_sec"] / peer_rate)
        assert row["matmul_peak_gflops"] == header["matmul_peak_gflops"][row["mixed_precision"]]
    if native.load() is not None:
        assert rows[0]["recurrent"] == "fused kernels, float32"
        bfloat16 = (
            f"fused kernels, bfloat16 ({native.bf16_products()})" if native.bfloat16_kernels() else None
        )
        assert rows[1]["recurrent"] == (bfloat16 or "fused kernels, float32")
    table = (tmp_path / "sweep.md").read_text().splitlines()
    assert table[0] == f"CPU: {header['cpu']}" and len(table) == 6
    assert table[4].startswith("| 64 | float32 |") and table[5].startswith("| 64 | bfloat16 |")
    assert (tmp_path / "sweep.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--sweep_units=64"], "error: --task=sweep compares with the peer: pass --peer_python="),
        (
            ["--sweep_units=64", "--peer_python=python", "--sweep_precisions=none,float8"],
            "error: --sweep_precisions must be among none, bfloat16, float16, got float8",
        ),
        (["--sweep_units=64,many", "--peer_python=python"], "error: --sweep_units must be whole numbers"),
        (
            ["--peer_python=python", "--peer_script=/nonexistent/peer.py"],
            "error: no peer script /nonexistent/peer.py",
        ),
        (
            ["--sweep_units=64", "--peer_python=python", "--sweep_output=/nonexistent/sweep"],
            "error: --sweep_output: no folder /nonexistent",
        ),
    ],
)
def test_benchmark_sweep_refuses_bad_arguments_before_tensorflow_loads(arguments, message, tmp_path):
    # A peer script that exists (a case's own --peer_script comes later and wins). Importing TensorFlow
    # fails here, so only a refusal made before it gives the expected line.
    env = script_env(tmp_path / "cache", PYTHONPATH=pythonpath_without_tensorflow(tmp_path))
    command = script_command("benchmark.py", "--task=sweep", f"--peer_script={__file__}", *arguments)
    result = run_command(command, env, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith(message)


def test_benchmark_profile_task_sums_the_time_of_each_op_type_and_keeps_the_trace(corpus_cache, tmp_path):
    profile_dir = tmp_path / "profile"
    result = run_script(
        "benchmark.py",
        ["--task=profile", *TINY_BENCHMARK, "--rnn_units=64", "--steps=2", f"--profile_dir={profile_dir}"],
        corpus_cache,
    )
    assert result.returncode == 0, result.stderr
    (line,) = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert line["task"] == "profile" and line["ms_per_step"] > 0
    ops = line["host_ops"]
    assert "MatMul" in ops and all(ms > 0 for ms in ops.values())
    if native.load() is not None:  # the LSTM runs as the fused kernels' forward and backward ops
        assert {"CharRnnLstmSequence", "CharRnnLstmSequenceGrad"} <= set(ops)
    assert line["device_kernels"] == {}  # no GPU here
    assert list(profile_dir.glob("plugins/profile/*/*.xplane.pb"))  # the trace, for TensorBoard


def test_gpu_check_without_tensorflow_says_so_in_one_line_and_writes_nothing(tmp_path):
    results = tmp_path / "results"
    result = subprocess.run(
        ["bash", os.path.join(REPO_ROOT, "scripts", "gpu_check.sh")],
        env={**os.environ, "PYTHON": "false", "RESULTS": str(results)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: false cannot import tensorflow")
    assert not results.exists()
