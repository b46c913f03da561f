"""Exports a trained run as a SavedModel: python scripts/export.py --train_dir=runs/shakespeare_cpu.

The SavedModel needs only TensorFlow:
  tf.saved_model.load(DIR).signatures["serving_default"](prime=tf.constant("ROMEO:"),
      length=tf.constant(200), temperature=tf.constant(0.8), seed=tf.constant(7, tf.int64))
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import logging  # noqa: E402

import flag_config  # noqa: E402
from tf_charrnn import config as config_lib  # noqa: E402
from tf_charrnn import export  # noqa: E402

flag_config.define_flags(config_lib.ExportConfig)


def main(argv):
    del argv  # flag_config.run refuses positional arguments
    config = flag_config.config_from_flags(config_lib.ExportConfig)
    path = export.export_run(
        config.train_dir, config.export_dir, config.checkpoint, config.best, config.overwrite
    )
    logging.info("Exported %s", path)
    print(path)


if __name__ == "__main__":
    flag_config.run(main)
