"""SavedModel export: text generation and explicit-state steps that run with TensorFlow alone.

The vocabulary travels inside the model as lookup tables; the recurrent state is an input and an
output of the `step` signature (a stateful Keras model cannot be served that way).
"""

import os
import shutil
import tempfile

import tensorflow as tf

from tf_charrnn import files, sampling
from tf_charrnn.errors import UserError

_SCALAR_INT = tf.TensorSpec([], tf.int32)
_SCALAR_FLOAT = tf.TensorSpec([], tf.float32)
# prime, length, temperature, seed
_GENERATE_SPEC = [tf.TensorSpec([], tf.string), _SCALAR_INT, _SCALAR_FLOAT, tf.TensorSpec([], tf.int64)]


class CharRNNModule(tf.Module):
    """What the SavedModel holds: the model (its `step` on TensorFlow ops only), the vocabulary, and the
    signature functions."""

    def __init__(self, model, vocab):
        super().__init__(name="char_rnn")
        self.model = model
        # The raw tf.Variables behind the Keras variables, tracked where graph-mode tools (saved_model_cli
        # run) look for them.
        self.raw_variables = [variable.value for variable in model.trainable_variables]
        self.chars = tf.constant(vocab.chars)
        self.char_to_id = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(self.chars, tf.range(len(vocab.chars), dtype=tf.int32)),
            default_value=-1,
        )
        self.space_id = tf.constant(vocab.space_id, tf.int32)
        state_shape = model.initial_state(1).shape.as_list()
        state_shape[2] = None  # any batch
        self.step = tf.function(
            self._step,
            input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec(state_shape, tf.float32)],
        )

    def _generate(self, prime, length, temperature, seed, top_k, top_p):
        prime_ids = self.char_to_id.lookup(tf.strings.unicode_split(prime, "UTF-8"))
        tf.debugging.assert_positive(tf.size(prime_ids), message="prime must hold at least one character")
        tf.debugging.assert_non_negative(prime_ids, message="prime has characters outside the vocabulary")
        tf.debugging.assert_non_negative(length, message="length must be >= 0")
        tf.debugging.assert_positive(temperature, message="temperature must be > 0")
        ids = sampling.generate_ids(
            self.model,
            prime_ids[None, :],
            length,
            tf.cast(seed, tf.int64),
            "sample",
            self.space_id,
            temperature,
            top_k,
            top_p,
        )
        return {"text": tf.strings.reduce_join(tf.gather(self.chars, ids[0]))}

    @tf.function(input_signature=_GENERATE_SPEC)
    def generate(self, prime, length, temperature, seed):
        """prime string, length int32, temperature float32, seed int64 -> {"text": string}."""
        return self._generate(prime, length, temperature, seed, 0, 1.0)

    @tf.function(input_signature=[*_GENERATE_SPEC, _SCALAR_INT, _SCALAR_FLOAT])
    def generate_top_k(self, prime, length, temperature, seed, top_k, top_p):
        """As `generate`, sampling among the top_k (0: all) ids holding top_p (1: all) of the mass."""
        return self._generate(prime, length, temperature, seed, top_k, top_p)

    def _step(self, ids, states):
        """ids int32 [B], states float32 [L, S, B, H] -> {"logits": [B, V], "states": [L, S, B, H]}."""
        logits, states = self.model.step(ids, states)
        return {"logits": logits, "states": states}

    @tf.function(input_signature=[_SCALAR_INT])
    def initial_state(self, batch_size):
        """batch_size int32 -> {"states": zeros float32 [L, S, B, H]}."""
        return {"states": self.model.initial_state(batch_size)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def encode(self, chars):
        """chars string [N] (one character each) -> {"ids": int32 [N]}, -1 for unknown characters."""
        return {"ids": self.char_to_id.lookup(chars)}


def export_run(train_dir, export_dir="", checkpoint=None, best=False, overwrite=False):
    """Writes a run's SavedModel through a temporary folder and a rename.

    Returns:
      The export folder.
    Raises:
      UserError: export_dir is not empty and overwrite is False, or the run has no checkpoint.
    """
    export_dir = os.path.abspath(export_dir or os.path.join(train_dir, "export"))
    if os.path.exists(export_dir) and os.listdir(export_dir) and not overwrite:
        raise UserError(
            f"--export_dir {export_dir} is not empty; pass --overwrite to replace it "
            f"or choose another --export_dir"
        )
    # Without the fused kernels: the SavedModel needs nothing but TensorFlow.
    sampler, vocab = sampling.load_sampler(train_dir, checkpoint, best, fused_kernels=False)
    module = CharRNNModule(sampler.model, vocab)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=".export-")
    try:
        tf.saved_model.save(
            module,
            staging,
            signatures={
                "serving_default": module.generate,
                "generate_top_k": module.generate_top_k,
                "step": module.step,
                "initial_state": module.initial_state,
                "encode": module.encode,
            },
        )
        files.replace_directory(staging, export_dir)
    except (OSError, tf.errors.OpError) as error:
        if not files.is_out_of_space(error):
            raise
        needed = sum(variable.numpy().nbytes for variable in sampler.model.weights)
        raise files.out_of_space("the SavedModel", parent, needed) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export_dir
