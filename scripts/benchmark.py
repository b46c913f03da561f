"""Measures training and sampling throughput on synthetic ids: python scripts/benchmark.py --preset=large.

Prints one JSON line per measurement; each of the project's says what ran the LSTM ("recurrent": the
fused kernels in float32 or bfloat16, or Keras ops). With --peer_python (a Python that has torch), the
same measurement of ../shared/peers/torch_charlstm.py alternates with the project's --rounds times, at
the project's precision or --peer_precision, and a line with the ratio of the medians follows: absolute
times drift on shared machines. A comparison is refused where the fused kernels failed to build here
(it would measure Keras ops) unless --compare_without_kernels. Best against best, e.g. on this CPU:
  python scripts/benchmark.py --task=train --mixed_precision=bfloat16 --peer_python=/tmp/peer/bin/python
The size sweep (--task=sweep): training at each --sweep_units in float32 and bfloat16 against the peer,
chars/s, ratio and GFLOP/s beside this CPU's matmul peak; --sweep_output=PREFIX writes PREFIX.md (the
table) and PREFIX.png (the plot):
  python scripts/benchmark.py --task=sweep --peer_python=/tmp/peer/bin/python --sweep_output=/tmp/sweep
"""

import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import flags

from tf_charrnn import startup
from tf_charrnn.cli import flags as cli_flags
from tf_charrnn.config import CELLS, MIXED_PRECISION_POLICIES, STEP_PRECISIONS, RunConfig
from tf_charrnn.errors import UserError

PRESETS = {
    "large": dict(rnn_units=512, num_layers=2, embedding_dim=64, batch_size=64, seq_length=100),
    "small": dict(rnn_units=128, num_layers=2, embedding_dim=64, batch_size=50, seq_length=50),
}
flags.DEFINE_enum(
    "preset", "large", list(PRESETS), "large: 2x512, batch 64, seq 100; small: 2x128, batch 50, seq 50"
)
flags.DEFINE_enum(
    "task",
    "all",
    ["train", "sample", "all", "memory", "profile", "sweep"],
    "what to measure; all: train and sample; memory: peak RSS of encoding a synthetic corpus of each "
    "--corpus_mb and of a short real run on it; profile: time per op type of --steps training steps; "
    "sweep: training at each --sweep_units and --sweep_precisions against the peer",
)
flags.DEFINE_list("sweep_units", ["64", "128", "256", "512", "1024"], "--task=sweep: the rnn_units measured")
flags.DEFINE_list(
    "sweep_precisions",
    ["none", "bfloat16"],
    "--task=sweep: the --mixed_precision values measured (none: float32)",
)
flags.DEFINE_string(
    "sweep_output",
    "",
    "--task=sweep: write the table to PREFIX.md and the plot to PREFIX.png (needs matplotlib)",
)
flags.DEFINE_list(
    "corpus_mb", ["1", "100", "1024"], "--task=memory: synthetic corpus sizes in MiB, each in a fresh process"
)
flags.DEFINE_integer(
    "corpus_files", 1, "--task=memory: > 1 writes each synthetic corpus as a folder of this many files"
)
flags.DEFINE_enum("cell", "lstm", CELLS, "recurrent cell")
flags.DEFINE_integer("vocab_size", 65, "synthetic vocabulary size (tiny-shakespeare has 65)")
flags.DEFINE_float("dropout", 0.2, "dropout, as in training")
for _name in PRESETS["large"]:
    flags.DEFINE_integer(_name, None, f"override the preset's {_name}")
flags.DEFINE_integer("steps", 8, "timed training steps (after 2 warm-up steps)")
flags.DEFINE_integer("length", 2000, "characters generated per sampling measurement")
flags.DEFINE_list("sample_batch_sizes", ["1", "64"], "sampling batch sizes")
flags.DEFINE_enum(
    "step_precision",
    "float32",
    list(STEP_PRECISIONS),
    "sampling: the weights' precision (sample.py's flag)",
)
flags.DEFINE_bool("jit_compile", False, "compile the train step with XLA")
flags.DEFINE_enum("mixed_precision", "none", list(MIXED_PRECISION_POLICIES), "training precision policy")
flags.DEFINE_string("peer_python", "", "a Python with torch: alternate each measurement with the peer's")
flags.DEFINE_enum(
    "peer_precision",
    "",
    ["", "float32", "bfloat16", "float16"],
    "the peer's precision (torch.autocast); empty: the project's (--mixed_precision in training, float32 "
    "in sampling)",
)
flags.DEFINE_string(
    "profile_dir",
    "",
    "--task=profile: where the trace stays (TensorBoard's profile plugin); empty: a temporary folder",
)
flags.DEFINE_integer("rounds", 3, "with --peer_python: peer and project measurements alternated this often")
flags.DEFINE_bool(
    "compare_without_kernels",
    False,
    "with --peer_python: compare even where the fused kernels failed to build here (the project's rows then "
    "measure Keras ops)",
)
flags.DEFINE_string(
    "peer_script",
    os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "..",
        "shared",
        "peers",
        "torch_charlstm.py",
    ),
    "the peer script",
)
FLAGS = flags.FLAGS


def _peer_precision(mode, mixed_precision):
    """The peer's precision: --peer_precision, else the project's (training under `mixed_precision`, the
    sampler's steps in --step_precision)."""
    if FLAGS.peer_precision:
        return FLAGS.peer_precision
    if mode == "sample":
        return FLAGS.step_precision
    return "float32" if mixed_precision == "none" else mixed_precision


def _peer(mode, sizes, batch_size, precision):
    """Runs the torch peer's measurement of the same work; its parsed JSON line."""
    command = [
        FLAGS.peer_python,
        FLAGS.peer_script,
        mode,
        f"--vocab={FLAGS.vocab_size}",
        f"--embed={sizes['embedding_dim']}",
        f"--units={sizes['rnn_units']}",
        f"--layers={sizes['num_layers']}",
        f"--dropout={FLAGS.dropout}",
        f"--batch={batch_size}",
        f"--precision={precision}",
    ]
    command += (
        [f"--seq={sizes['seq_length']}", f"--steps={FLAGS.steps}"]
        if mode == "train"
        else [f"--length={FLAGS.length}"]
    )
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"the peer failed ({FLAGS.peer_python} {FLAGS.peer_script}): {last}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _measure(
    record, measure, peer_mode=None, sizes=None, batch_size=None, mixed_precision="none", extend=None
):
    """Prints the measurement's JSON line. With a peer, peer and project alternate --rounds times, each
    measurement printed, then a line with the ratio of the medians (and what `extend` adds to it), which
    is returned."""
    import benchmark_lib

    if not (FLAGS.peer_python and peer_mode):
        print(json.dumps({**record, **measure(), "peak_rss_mb": benchmark_lib.peak_rss_mb()}), flush=True)
        return None
    peer_precision = _peer_precision(peer_mode, mixed_precision)
    ours, peers = [], []
    for _ in range(FLAGS.rounds):
        peers.append(_peer(peer_mode, sizes, batch_size, peer_precision)["chars_per_sec"])
        print(json.dumps({**record, "peer_chars_per_sec": peers[-1]}), flush=True)
        measured = measure()
        ours.append(measured["chars_per_sec"])
        print(json.dumps({**record, **measured}), flush=True)
    summary = {
        **record,
        "recurrent": measured["recurrent"],
        "peer_precision": peer_precision,
        "ratio_vs_peer": statistics.median(ours) / statistics.median(peers),
        "chars_per_sec": ours,
        "peer_chars_per_sec": peers,
    }
    if extend is not None:
        summary.update(extend(summary))
    print(json.dumps(summary), flush=True)
    return summary


def _check_arguments():
    """Refuses (UserError) what the flags and files alone show, before TensorFlow loads: a missing peer
    script, and a sweep without a peer, with unknown precisions or sizes, or with nowhere to write."""
    if FLAGS.peer_python and not os.path.isfile(FLAGS.peer_script):
        raise UserError(f"no peer script {FLAGS.peer_script}: pass --peer_script=PATH/torch_charlstm.py")
    if FLAGS.task != "sweep":
        return
    if not FLAGS.peer_python:
        raise UserError("--task=sweep compares with the peer: pass --peer_python=A_PYTHON_WITH_TORCH")
    unknown = [p for p in FLAGS.sweep_precisions if p not in MIXED_PRECISION_POLICIES]
    if unknown:
        choices = ", ".join(MIXED_PRECISION_POLICIES)
        raise UserError(f"--sweep_precisions must be among {choices}, got {', '.join(unknown)}")
    if not all(units.isdigit() for units in FLAGS.sweep_units):
        raise UserError(f"--sweep_units must be whole numbers, got {','.join(FLAGS.sweep_units)}")
    if FLAGS.sweep_output:
        folder = os.path.dirname(os.path.abspath(FLAGS.sweep_output))
        if not os.path.isdir(folder):
            raise UserError(f"--sweep_output: no folder {folder}; create it or choose another prefix")
        try:
            import matplotlib  # noqa: F401
        except ImportError as error:
            message = "--sweep_output draws its plot with matplotlib: pip install matplotlib"
            raise UserError(message) from error


def _refuse_a_comparison_without_kernels():
    """A comparison with the peer where the kernels would run here but failed to build measures Keras
    ops, not the project: refused (UserError) unless --compare_without_kernels."""
    from tf_charrnn.model import native
    from tf_charrnn.runtime import placement

    if not FLAGS.peer_python or FLAGS.compare_without_kernels or FLAGS.jit_compile or placement.on_gpu():
        return
    error = native.build_error()
    if error is not None:
        first, *rest = error.splitlines()
        reason = " ".join([first.rstrip(":"), *[line.strip() for line in rest if "error" in line][:1]])
        raise UserError(
            f"the fused LSTM kernels failed to build here ({reason}), so the comparison with "
            "the peer would measure Keras ops: fix the build (python -m tf_charrnn.model.native shows the "
            "compiler's error) or pass --compare_without_kernels"
        )


def _sweep_configs(config):
    """--task=sweep: the config of each --sweep_units and --sweep_precisions, all made before the first
    measurement, so that a bad one is refused at once."""
    return [
        config.replace(rnn_units=int(units), mixed_precision=precision)
        for units in FLAGS.sweep_units
        for precision in FLAGS.sweep_precisions
    ]


def _sweep(row_configs, sizes):
    """--task=sweep: training at each of `row_configs`, alternated with the peer; one JSON line per
    measurement and per size, and the table and plot at --sweep_output."""
    import benchmark_lib

    peaks = {p: benchmark_lib.matmul_gflops(benchmark_lib.SWEEP_DTYPES[p]) for p in FLAGS.sweep_precisions}
    cpu = benchmark_lib.cpu_description()
    print(json.dumps({"task": "sweep", "cpu": cpu, "matmul_peak_gflops": peaks}), flush=True)
    rows = []
    for row_config in row_configs:
        precision = row_config.precision.mixed_precision
        sized = {**sizes, "rnn_units": row_config.model.rnn_units}
        measure = functools.partial(benchmark_lib.measure_train, row_config, steps=FLAGS.steps)
        figures = functools.partial(
            benchmark_lib.sweep_figures, model_config=row_config.model, peak_gflops=peaks[precision]
        )
        record = {"task": "sweep", **sized, "mixed_precision": precision}
        rows.append(_measure(record, measure, "train", sized, sized["batch_size"], precision, figures))
    if FLAGS.sweep_output:
        benchmark_lib.write_sweep(FLAGS.sweep_output, rows, cpu)


def main(argv):
    del argv  # cli_flags.run refuses positional arguments
    sizes = {
        name: FLAGS[name].value if FLAGS[name].value is not None else value
        for name, value in PRESETS[FLAGS.preset].items()
    }
    config = RunConfig.from_flat(
        dict(
            sizes,
            vocab_size=FLAGS.vocab_size,
            dropout=FLAGS.dropout,
            cell=FLAGS.cell,
            jit_compile=FLAGS.jit_compile,
            mixed_precision=FLAGS.mixed_precision,
        )
    )
    _check_arguments()
    row_configs = _sweep_configs(config) if FLAGS.task == "sweep" else []
    # Imported once the flags and files are valid: those faults are refused before TensorFlow loads, and it
    # loads quietly, without the imports Keras makes for notebooks.
    startup.import_tensorflow(for_command=True)
    import benchmark_lib  # beside this script: the measurements

    model = config.model
    common = {"preset": FLAGS.preset, "cell": FLAGS.cell, **sizes}
    if FLAGS.task == "memory":
        if len(FLAGS.corpus_mb) > 1:  # one fresh process per size: a peak covers the whole process
            arguments = [argument for argument in sys.argv[1:] if not argument.startswith("--corpus_mb")]
            for corpus_mb in FLAGS.corpus_mb:
                measured = subprocess.run([sys.executable, __file__, *arguments, f"--corpus_mb={corpus_mb}"])
                if measured.returncode:
                    sys.exit(measured.returncode)
            return
        result = benchmark_lib.measure_memory(config, float(FLAGS.corpus_mb[0]), num_files=FLAGS.corpus_files)
        print(json.dumps({"task": "memory", **common, **result}), flush=True)
        return
    if FLAGS.task in ("train", "sample", "all", "sweep"):
        _refuse_a_comparison_without_kernels()
    if FLAGS.task == "sweep":
        _sweep(row_configs, sizes)
        return
    if FLAGS.task == "profile":
        with tempfile.TemporaryDirectory() as folder:
            result = benchmark_lib.profile_train(config, FLAGS.profile_dir or folder, steps=FLAGS.steps)
        print(json.dumps({"task": "profile", **common, "mixed_precision": FLAGS.mixed_precision, **result}))
        return
    if FLAGS.task in ("train", "all"):
        _measure(
            {"task": "train", **common, "mixed_precision": FLAGS.mixed_precision},
            lambda: benchmark_lib.measure_train(config, steps=FLAGS.steps),
            "train",
            sizes,
            sizes["batch_size"],
            FLAGS.mixed_precision,
        )
    if FLAGS.task in ("sample", "all"):
        for batch_size in map(int, FLAGS.sample_batch_sizes):
            for streamed in (False, True):
                _measure(
                    {
                        **common,
                        "task": "sample",
                        "batch_size": batch_size,
                        "length": FLAGS.length,
                        "mode": "streamed" if streamed else "compiled",
                        "step_precision": FLAGS.step_precision,
                    },
                    lambda b=batch_size, s=streamed: benchmark_lib.measure_sample(
                        model, b, FLAGS.length, s, FLAGS.step_precision
                    ),
                    None if streamed else "sample",  # the peer's best loop, against our compiled one
                    sizes,
                    batch_size,
                )


if __name__ == "__main__":
    cli_flags.run(main)
