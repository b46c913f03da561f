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

# The same main as the `tf_charrnn.cli.export` module: flags, config, one library call.
from tf_charrnn.cli import export

if __name__ == "__main__":
    export.run()
