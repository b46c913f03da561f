"""Exports a trained run as a SavedModel: scripts/export.py --train_dir=runs/shakespeare_cpu.

The SavedModel needs only TensorFlow:
  tf.saved_model.load(DIR).signatures["serving_default"](prime=tf.constant("ROMEO:"),
      length=tf.constant(200), temperature=tf.constant(0.8), seed=tf.constant(7, tf.int64))
With --format=litert (and --quantize=none|float16|int8) it writes model.tflite and vocab.json for the
LiteRT interpreter, no TensorFlow needed: examples/litert_generate.py --model_dir=DIR --prime="ROMEO:"
With --format=web it writes a static page that generates text in the browser (int8 weights by default):
  scripts/export.py --train_dir=runs/shakespeare_cpu --format=web --web_runtime_dir=web/node_modules \
      --export_dir=/tmp/charrnn_web && python -m http.server -d /tmp/charrnn_web 8000
"""

from absl import logging

from tf_charrnn import files, startup
from tf_charrnn.cli import flags
from tf_charrnn.config import ExportConfig
from tf_charrnn.export import web_runtime
from tf_charrnn.run import layout


def main(argv: list[str]) -> None:
    del argv  # flags.run refuses positional arguments
    config = flags.config_from_flags(ExportConfig)
    layout.load_run(config.train_dir)
    export_dir = layout.export_folder(config.train_dir, config.format, config.export_dir)
    files.check_output_folder(export_dir, "export_dir", config.overwrite)
    if config.web_runtime_dir:
        web_runtime.check_runtime(config.web_runtime_dir)
    layout.check_checkpoint_present(config.train_dir, config.checkpoint, config.best)
    # Imported once the flags, the run directory's files, the export folder, LiteRT.js's files and the
    # checkpoint's files are valid: those faults are refused before TensorFlow loads (seconds).
    startup.import_tensorflow(for_command=True)
    from tf_charrnn.export import saved_model
    from tf_charrnn.runtime import placement

    placement.grow_gpu_memory()
    path = saved_model.export_run(
        config.train_dir,
        config.export_dir,
        config.checkpoint,
        config.best,
        config.overwrite,
        config.format,
        config.quantize,
        config.web_runtime_dir,
    )
    logging.info("Exported %s", path)
    print(path)


def run() -> None:
    flags.define_flags(ExportConfig)
    flags.run(main)
