"""Measures training and sampling throughput on synthetic ids: python scripts/benchmark.py --preset=large.

Prints one JSON line per measurement. Compare against ../shared/peers/torch_charlstm.py run in the
same sitting (peer, project, peer): absolute times drift on shared machines.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

import flag_config  # noqa: E402
from tf_charrnn import benchmark  # noqa: E402
from tf_charrnn.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402

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
    "what to measure; all: train and sample; memory: peak RSS of a short real run on a synthetic "
    "corpus of --corpus_mb (run it alone: the peak covers the whole process)",
)
flags.DEFINE_float("corpus_mb", 100.0, "--task=memory: synthetic corpus size in MiB")
flags.DEFINE_string("cell", "lstm", "recurrent cell")
flags.DEFINE_integer("vocab_size", 65, "synthetic vocabulary size (tiny-shakespeare has 65)")
flags.DEFINE_float("dropout", 0.2, "dropout, as in training")
for _name in PRESETS["large"]:
    flags.DEFINE_integer(_name, None, f"override the preset's {_name}")
flags.DEFINE_integer("steps", 8, "timed training steps (after 2 warm-up steps)")
flags.DEFINE_integer("length", 2000, "characters generated per sampling measurement")
flags.DEFINE_list("sample_batch_sizes", ["1", "64"], "sampling batch sizes")
flags.DEFINE_bool("jit_compile", False, "compile the train step with XLA")
FLAGS = flags.FLAGS


def main(argv):
    del argv  # flag_config.run refuses positional arguments
    sizes = {
        name: FLAGS[name].value if FLAGS[name].value is not None else value
        for name, value in PRESETS[FLAGS.preset].items()
    }
    model = ModelConfig(
        vocab_size=FLAGS.vocab_size,
        embedding_dim=sizes["embedding_dim"],
        rnn_units=sizes["rnn_units"],
        num_layers=sizes["num_layers"],
        dropout=FLAGS.dropout,
        cell=FLAGS.cell,
    )
    config = RunConfig(
        data=DataConfig(batch_size=sizes["batch_size"], seq_length=sizes["seq_length"]),
        model=model,
        train=TrainConfig(jit_compile=FLAGS.jit_compile),
    )
    common = {"preset": FLAGS.preset, "cell": FLAGS.cell, **sizes}
    if FLAGS.task == "memory":
        result = benchmark.measure_memory(config, FLAGS.corpus_mb)
        print(json.dumps({"task": "memory", **common, **result}), flush=True)
        return
    if FLAGS.task in ("train", "all"):
        result = benchmark.measure_train(config, steps=FLAGS.steps)
        print(
            json.dumps({"task": "train", **common, **result, "peak_rss_mb": benchmark.peak_rss_mb()}),
            flush=True,
        )
    if FLAGS.task in ("sample", "all"):
        for batch_size in map(int, FLAGS.sample_batch_sizes):
            for streamed in (False, True):
                result = benchmark.measure_sample(model, batch_size, FLAGS.length, streamed)
                print(
                    json.dumps(
                        {
                            "task": "sample",
                            **common,
                            "batch_size": batch_size,
                            "length": FLAGS.length,
                            "mode": "streamed" if streamed else "compiled",
                            **result,
                            "peak_rss_mb": benchmark.peak_rss_mb(),
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    flag_config.run(main)
