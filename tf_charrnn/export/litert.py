"""LiteRT (formerly TensorFlow Lite): the model's `step` converted to a .tflite flatbuffer of LiteRT builtin
ops only, its weights optionally float16 or int8, and a stateful pass through it with the LiteRT
interpreter (the `ai-edge-litert` package: `pip install ".[litert]"`).

The export folder holds model.tflite, whose one signature `step` takes ids int32 [B] and states float32
[L, S, B, H] and returns logits float32 [B, V] and states (B is any batch: resize the inputs), and the
run's vocab.json. examples/litert_generate.py generates text from it with numpy and LiteRT alone.
"""

import math
import os
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tf_charrnn.config import QUANTIZATIONS
from tf_charrnn.data.vocab import Vocab

if TYPE_CHECKING:  # saved_model imports this module
    from tf_charrnn.export.saved_model import StepModule

MODEL_FILE = "model.tflite"
VOCAB_FILE = "vocab.json"
SIGNATURE = "step"


def convert(step_module: "StepModule", quantize: str = "none") -> bytes:
    """Converts a step module's `step` to a LiteRT model.

    The conversion goes through a SavedModel of the step alone (the vocabulary's lookup table is no LiteRT
    builtin op), with builtin ops only: an op LiteRT lacks fails here, not on the phone.

    Args:
      step_module: export.StepModule (the model and its `step` tf.function).
      quantize: "none" (float32 weights), "float16" (float16 weights, computed in float32) or "int8"
        (dynamic range: int8 weights, activations quantized per call where a kernel supports it, else
        float32).

    Returns:
      The .tflite flatbuffer, bytes.
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantize!r}; use one of {', '.join(QUANTIZATIONS)}")
    with tempfile.TemporaryDirectory(prefix="tf_charrnn_litert-") as saved_model:
        tf.saved_model.save(step_module, saved_model, signatures={SIGNATURE: step_module.step})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


def write_model(folder: str, step_module: "StepModule", vocab: Vocab, quantize: str = "none") -> None:
    """Writes `folder`/model.tflite (see `convert`) and `folder`/vocab.json."""
    with open(os.path.join(folder, MODEL_FILE), "wb") as f:
        f.write(convert(step_module, quantize))
    vocab.save(os.path.join(folder, VOCAB_FILE))


def step_runner(model_path: str, num_threads: int | None = None) -> Any:
    """The `step` signature of a LiteRT model, ready to call: runner(ids=..., states=...) -> {"logits",
    "states"} numpy arrays; a new batch size resizes the inputs on the call.

    Raises:
      ImportError: ai-edge-litert is not installed (pip install ".[litert]").
    """
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=model_path, num_threads=num_threads).get_signature_runner(SIGNATURE)


def state_shape(runner: Any, batch_size: int) -> list[int]:
    """The [L, S, B, H] state shape of a step runner's model at `batch_size`."""
    shape = list(runner.get_input_details()["states"]["shape_signature"])
    shape[2] = batch_size
    return shape


def nats_per_char(model_path: str, ids: np.ndarray, streams: int = 1) -> float:
    """Mean cross-entropy of predicting each id from those before it, in one stateful pass through the
    LiteRT step: `ids` cut into `streams` contiguous streams stepped as one batch, each from a zero state
    (the remainder that does not fill a stream is left out).

    Args:
      model_path: a model.tflite.
      ids: int [N] ids, N > streams.
      streams: batch size of the pass.

    Returns:
      float nats per predicted character.
    """
    runner = step_runner(model_path)
    length = len(ids) // streams
    rows = np.asarray(ids[: length * streams], np.int32).reshape(streams, length)
    states = np.zeros(state_shape(runner, streams), np.float32)
    total = 0.0
    for position in range(length - 1):
        out = runner(ids=rows[:, position], states=states)
        logits, states = out["logits"].astype(np.float64), out["states"]
        peak = logits.max(axis=1, keepdims=True)
        log_norm = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=1))
        total += float(np.sum(log_norm - logits[np.arange(streams), rows[:, position + 1]]))
    count = streams * (length - 1)
    if count < 1 or not math.isfinite(total):
        raise ValueError(f"no finite loss over {len(ids)} ids in {streams} streams")
    return total / count
