"""Trains a Char-RNN: python scripts/train.py --flagfile=configs/shakespeare.cfg [--flag=value ...].

Re-running the same command resumes from the run's latest checkpoint.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import logging  # noqa: E402

import flag_config  # noqa: E402
from tf_charrnn import config as config_lib  # noqa: E402
from tf_charrnn import train as train_lib  # noqa: E402

flag_config.define_flags(config_lib.DataConfig)
flag_config.define_flags(config_lib.ModelConfig, skip=("vocab_size",))
flag_config.define_flags(config_lib.TrainConfig)


def main(argv):
    del argv  # flag_config.run refuses positional arguments
    config = config_lib.RunConfig(
        data=flag_config.config_from_flags(config_lib.DataConfig),
        model=flag_config.config_from_flags(config_lib.ModelConfig, skip=("vocab_size",)),
        train=flag_config.config_from_flags(config_lib.TrainConfig),
    )
    result = train_lib.train(config)
    logging.info(
        "Done at step %d; best val loss %.4f nats/char; checkpoint %s",
        result.step,
        result.best_val_loss,
        result.last_checkpoint,
    )
    if result.stopped_by_signal:
        sys.exit(128 + result.stopped_by_signal)


if __name__ == "__main__":
    flag_config.run(main)
