"""Trains a Char-RNN: scripts/train.py --flagfile=configs/shakespeare.cfg [--flag=value ...].

Re-running the same command resumes from the run's latest checkpoint; so does --train_dir=DIR alone,
with the run's own configuration. Flags given on resume may change the run's length and cadences; the
runtime (--strategy, --jit_compile, --deterministic, --tpu) is this launch's, given or default; a
different model, data layout, precision or optimisation is refused. --init_from=RUN_DIR starts a new run
from another's weights, with that run's model flags unless given (its corpus may add characters).
"""

import sys

from absl import logging

from tf_charrnn import startup
from tf_charrnn.cli import flags
from tf_charrnn.config import RunConfig
from tf_charrnn.data import corpus_files
from tf_charrnn.run import resume
from tf_charrnn.runtime import tf_config
from tf_charrnn.training import preflight


def main(argv: list[str]) -> None:
    del argv  # flags.run refuses positional arguments
    config = flags.config_from_flags(RunConfig)
    # A run already there: its own config, the flags given now (train refuses those that must match) and
    # this launch's runtime; a new run from --init_from: that run's model flags unless given.
    config = resume.config_to_train(config, flags.given_values(RunConfig))
    if config.data.data_path:
        corpus_files.check_names(config.data.data_path)
    if config.runtime.strategy == "multi_worker":
        tf_config.check_tf_config()
    # The corpus read and split, and (but on several workers, where the chief alone checks) whether the run
    # may continue: all before TensorFlow loads, so that those faults are refused in a fraction of a second.
    config, splits = preflight.prepare(config, check_run=config.runtime.strategy != "multi_worker")
    try:
        startup.import_tensorflow(for_command=True)
        from tf_charrnn.training import trainer
    except BaseException:
        splits.discard_cache()
        raise
    result = trainer.train(config, splits=splits)
    logging.info(
        "Done at step %d; best val loss %.4f nats/char; checkpoint %s",
        result.step,
        result.best_val_loss,
        result.last_checkpoint,
    )
    if result.stopped_by_signal:
        sys.exit(128 + result.stopped_by_signal)


def run() -> None:
    flags.define_flags(RunConfig)
    flags.run(main)
