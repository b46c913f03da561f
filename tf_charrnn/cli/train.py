"""Trains a Char-RNN: scripts/train.py --flagfile=configs/shakespeare.cfg [--flag=value ...].

Re-running the same command resumes from the run's latest checkpoint; so does --train_dir=DIR alone,
with the run's own configuration. Flags given on resume may change the run's length and cadences; the
runtime (--strategy, --jit_compile, --deterministic, --tpu) is this launch's, given or default; a
different model, data layout, precision or optimisation is refused. --init_from=RUN_DIR starts a new run
from another's weights, with that run's model flags unless given (its corpus may add characters).
"""

import sys

from absl import logging

from tf_charrnn.cli import flags
from tf_charrnn.config import RunConfig


def main(argv):
    del argv  # flags.run refuses positional arguments
    config = flags.config_from_flags(RunConfig)
    # Imported once the flags are valid: a bad flag is refused before TensorFlow loads (seconds).
    from tf_charrnn import run_directory
    from tf_charrnn import train as train_lib

    if run_directory.has_run(config.length.train_dir):
        # The run's own configuration, the flags given now (train refuses those that must match), and
        # this launch's runtime (--strategy, --jit_compile, ...: given now or their defaults).
        stored, _ = run_directory.load_run(config.length.train_dir)
        given = {**flags.given_values(RunConfig), "train_dir": config.length.train_dir}
        config = stored.continued_by(config, given)
    elif config.length.init_from:
        # A new run from another's weights: the model flags not given are that run's.
        source, _ = run_directory.load_run(config.length.init_from)
        config = config.with_model_of(source, flags.given_values(RunConfig))
    result = train_lib.train(config)
    logging.info(
        "Done at step %d; best val loss %.4f nats/char; checkpoint %s",
        result.step,
        result.best_val_loss,
        result.last_checkpoint,
    )
    if result.stopped_by_signal:
        sys.exit(128 + result.stopped_by_signal)


def run():
    flags.define_flags(RunConfig)
    flags.run(main)
