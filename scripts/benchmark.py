"""Measures training and sampling throughput on synthetic ids: python scripts/benchmark.py --preset=large.

Prints one JSON line per measurement. With --peer_python (a Python that has torch), each measurement
is bracketed by the same measurement of ../shared/peers/torch_charlstm.py (peer, project, peer) and a
line with the ratio to the peers' mean follows: absolute times drift on shared machines.
"""

import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from tf_charrnn import benchmark  # noqa: E402
from tf_charrnn.cli import flags as cli_flags  # noqa: E402
from tf_charrnn.config import CELLS, MIXED_PRECISION_POLICIES, RunConfig  # noqa: E402

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
    ["train", "sample", "all", "memory"],
    "what to measure; all: train and sample; memory: peak RSS of encoding a synthetic corpus of each "
    "--corpus_mb and of a short real run on it",
)
flags.DEFINE_list(
    "corpus_mb", ["1", "100", "1024"], "--task=memory: synthetic corpus sizes in MiB, each in a fresh process"
)
flags.DEFINE_enum("cell", "lstm", CELLS, "recurrent cell")
flags.DEFINE_integer("vocab_size", 65, "synthetic vocabulary size (tiny-shakespeare has 65)")
flags.DEFINE_float("dropout", 0.2, "dropout, as in training")
for _name in PRESETS["large"]:
    flags.DEFINE_integer(_name, None, f"override the preset's {_name}")
flags.DEFINE_integer("steps", 8, "timed training steps (after 2 warm-up steps)")
flags.DEFINE_integer("length", 2000, "characters generated per sampling measurement")
flags.DEFINE_list("sample_batch_sizes", ["1", "64"], "sampling batch sizes")
flags.DEFINE_bool("jit_compile", False, "compile the train step with XLA")
flags.DEFINE_enum("mixed_precision", "none", list(MIXED_PRECISION_POLICIES), "training precision policy")
flags.DEFINE_string("peer_python", "", "a Python with torch: bracket each measurement by the torch peer's")
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


def _peer(mode, sizes, batch_size):
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
    ]
    command += (
        [f"--seq={sizes['seq_length']}", f"--steps={FLAGS.steps}"]
        if mode == "train"
        else [f"--length={FLAGS.length}"]
    )
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _measure(record, measure, peer_mode=None, sizes=None, batch_size=None):
    """Prints the measurement's JSON line; with a peer, brackets it and prints the ratio."""
    bracket = bool(FLAGS.peer_python) and peer_mode is not None
    peers = []
    if bracket:
        peers.append(_peer(peer_mode, sizes, batch_size))
        print(json.dumps(peers[-1]), flush=True)
    result = {**record, **measure(), "peak_rss_mb": benchmark.peak_rss_mb()}
    print(json.dumps(result), flush=True)
    if bracket:
        peers.append(_peer(peer_mode, sizes, batch_size))
        print(json.dumps(peers[-1]), flush=True)
        peer_mean = sum(peer["chars_per_sec"] for peer in peers) / len(peers)
        print(
            json.dumps(
                {
                    **record,
                    "ratio_vs_peer": result["chars_per_sec"] / peer_mean,
                    "peer_chars_per_sec": [peer["chars_per_sec"] for peer in peers],
                }
            ),
            flush=True,
        )


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
        result = benchmark.measure_memory(config, float(FLAGS.corpus_mb[0]))
        print(json.dumps({"task": "memory", **common, **result}), flush=True)
        return
    if FLAGS.task in ("train", "all"):
        _measure(
            {"task": "train", **common, "mixed_precision": FLAGS.mixed_precision},
            lambda: benchmark.measure_train(config, steps=FLAGS.steps),
            "train",
            sizes,
            sizes["batch_size"],
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
                    },
                    lambda b=batch_size, s=streamed: benchmark.measure_sample(model, b, FLAGS.length, s),
                    None if streamed else "sample",  # the peer's best loop, against our compiled one
                    sizes,
                    batch_size,
                )


if __name__ == "__main__":
    cli_flags.run(main)
