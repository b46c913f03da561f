"""Exports a run: a SavedModel (text generation and explicit-state steps that run with TensorFlow
alone), the step alone for LiteRT (see litert.py), or a static web page running that step in a browser
(see web.py), each written through a temporary folder.

In the SavedModel the vocabulary travels as lookup tables; the recurrent state is an input and an
output of the `step` signature (a stateful Keras model cannot be served that way).
"""

import os

import tensorflow as tf

from tf_charrnn import files
from tf_charrnn.config import EXPORT_FORMATS, resolve_quantization
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.export import litert, web, web_runtime
from tf_charrnn.inference import sampling
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.run import layout

_SCALAR_INT = tf.TensorSpec([], tf.int32)
_SCALAR_FLOAT = tf.TensorSpec([], tf.float32)
# prime, length, temperature, seed
_GENERATE_SPEC = [tf.TensorSpec([], tf.string), _SCALAR_INT, _SCALAR_FLOAT, tf.TensorSpec([], tf.int64)]


class StepModule(tf.Module):
    """The model and its `step` signature function (TensorFlow ops only): what the LiteRT conversion
    reads, without the vocabulary's lookup table (no LiteRT builtin op). `batch_size` fixes the
    signature's batch (LiteRT.js in a browser wants static shapes); None: any batch."""

    def __init__(self, model: CharRNN, batch_size: int | None = None) -> None:
        super().__init__(name="char_rnn")
        self.model = model
        # The raw tf.Variables behind the Keras variables, tracked where graph-mode tools (saved_model_cli
        # run, the LiteRT converter, which freezes them into constants) look for them.
        self.raw_variables = [variable.value for variable in model.trainable_variables]
        state_shape = model.initial_state(1).shape.as_list()
        state_shape[2] = batch_size  # None: any batch
        self.step = tf.function(
            self._step,
            input_signature=[tf.TensorSpec([batch_size], tf.int32), tf.TensorSpec(state_shape, tf.float32)],
            autograph=False,
        )

    def _step(self, ids: tf.Tensor, states: tf.Tensor) -> dict[str, tf.Tensor]:
        """ids int32 [B], states float32 [L, S, B, H] -> {"logits": [B, V], "states": [L, S, B, H]}."""
        logits, states = self.model.step(ids, states)
        return {"logits": logits, "states": states}


class CharRNNModule(StepModule):
    """What the SavedModel holds: the step module, the vocabulary, and the generation signatures."""

    def __init__(self, model: CharRNN, vocab: Vocab) -> None:
        super().__init__(model)
        self.chars = tf.constant(vocab.chars)
        self.char_to_id = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.chars, tf.range(len(vocab.chars), dtype=tf.int32)),
            default_value=-1,
        )
        self.space_id = tf.constant(vocab.space_id, tf.int32)

    def _generate(
        self,
        prime: tf.Tensor,
        length: tf.Tensor,
        temperature: tf.Tensor,
        seed: tf.Tensor,
        top_k: int | tf.Tensor,
        top_p: float | tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        prime_ids = self.char_to_id.lookup(tf.strings.unicode_split(prime, "UTF-8"))
        tf.debugging.assert_positive(tf.size(prime_ids), message="prime must hold at least one character")
        tf.debugging.assert_non_negative(prime_ids, message="prime has characters outside the vocabulary")
        tf.debugging.assert_non_negative(length, message="length must be >= 0")
        tf.debugging.assert_positive(temperature, message="temperature must be > 0")
        decoding = sampling.Decoding("sample", seed, temperature, top_k, top_p).as_tensors()
        ids = sampling.generate_ids(self.model, prime_ids[None, :], length, decoding, self.space_id)
        return {"text": tf.strings.reduce_join(tf.gather(self.chars, ids[0]))}

    @tf.function(input_signature=_GENERATE_SPEC, autograph=False)
    def generate(
        self, prime: tf.Tensor, length: tf.Tensor, temperature: tf.Tensor, seed: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """prime string, length int32, temperature float32, seed int64 -> {"text": string}."""
        return self._generate(prime, length, temperature, seed, 0, 1.0)

    @tf.function(input_signature=[*_GENERATE_SPEC, _SCALAR_INT, _SCALAR_FLOAT], autograph=False)
    def generate_top_k(
        self,
        prime: tf.Tensor,
        length: tf.Tensor,
        temperature: tf.Tensor,
        seed: tf.Tensor,
        top_k: tf.Tensor,
        top_p: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        """As `generate`, sampling among the top_k (0: all) ids holding top_p (1: all) of the mass."""
        return self._generate(prime, length, temperature, seed, top_k, top_p)

    @tf.function(input_signature=[_SCALAR_INT], autograph=False)
    def initial_state(self, batch_size: tf.Tensor) -> dict[str, tf.Tensor]:
        """batch_size int32 -> {"states": zeros float32 [L, S, B, H]}."""
        return {"states": self.model.initial_state(batch_size)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def encode(self, chars: tf.Tensor) -> dict[str, tf.Tensor]:
        """chars string [N] (one character each) -> {"ids": int32 [N]}, -1 for unknown characters."""
        return {"ids": self.char_to_id.lookup(chars)}


def _write_saved_model(folder: str, model: CharRNN, vocab: Vocab) -> None:
    module = CharRNNModule(model, vocab)
    tf.saved_model.save(
        module,
        folder,
        signatures={
            "serving_default": module.generate,
            "generate_top_k": module.generate_top_k,
            "step": module.step,
            "initial_state": module.initial_state,
            "encode": module.encode,
        },
    )


def export_run(
    train_dir: str,
    export_dir: str = "",
    checkpoint: str | None = None,
    best: bool = False,
    overwrite: bool = False,
    format: str = "saved_model",
    quantize: str = "auto",
    web_runtime_dir: str = "",
) -> str:
    """Writes a run's SavedModel, its LiteRT model and vocabulary, or its web page, through a temporary
    folder and a rename.

    Args:
      train_dir: the run directory.
      export_dir: the folder to write; empty: TRAIN_DIR/export (saved_model), TRAIN_DIR/export_litert,
        TRAIN_DIR/export_web.
      checkpoint, best: which checkpoint (see `checkpoints.restore_weights`).
      overwrite: replace a non-empty `export_dir`.
      format: "saved_model", "litert" or "web" (config.EXPORT_FORMATS).
      quantize: a LiteRT or web export's weights: "none", "float16" or "int8" (config.QUANTIZATIONS);
        "auto": the format's default (config.resolve_quantization: int8 for web, none otherwise).
      web_runtime_dir: a web export's node_modules folder holding LiteRT.js, copied into the page (see
        web.write_page); empty: the page loads LiteRT.js from a CDN.

    Returns:
      The export folder.
    Raises:
      UserError: export_dir is not empty and overwrite is False, the run has no checkpoint, or
        web_runtime_dir lacks LiteRT.js.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; use one of {', '.join(EXPORT_FORMATS)}")
    quantize = resolve_quantization(quantize, format)
    export_dir = files.check_output_folder(
        layout.export_folder(train_dir, format, export_dir), "export_dir", overwrite
    )
    if web_runtime_dir:
        web_runtime.check_runtime(web_runtime_dir)
    # Without the fused kernels: the export needs nothing but TensorFlow (or LiteRT's builtin ops).
    sampler, vocab = sampling.load_sampler(train_dir, checkpoint, best, fused_kernels=False)
    what = {"saved_model": "the SavedModel", "litert": "the LiteRT model", "web": "the web page"}[format]

    def needed() -> int:
        return sum(variable.numpy().nbytes for variable in sampler.model.weights)

    with files.full_disk_is_user_error(what, os.path.dirname(export_dir), needed):
        with files.replace_folder_atomic(export_dir, prefix=".export-") as staging:
            if format == "litert":
                litert.write_model(staging, StepModule(sampler.model), vocab, quantize)
            elif format == "web":
                title = os.path.basename(os.path.normpath(os.path.abspath(train_dir)))
                step = StepModule(sampler.model, batch_size=1)
                web.write_page(staging, step, vocab, quantize, web_runtime_dir, title)
            else:
                _write_saved_model(staging, sampler.model, vocab)
    return export_dir
