"""The Char-RNN model: a sequence call for training on stateful layers, and a one-character step with
explicit state for sampling and export.

Shapes: B batch, T time, V vocabulary, E embedding_dim, H rnn_units, L num_layers, S state tensors per
layer (2 for LSTM's h and c, 1 for GRU and RNN).
  ids int32 [B, T] -> Embedding [B, T, E] (embedding dropout, where set) -> L x stateful RNN [B, T, H]
  (dropout after each)
  -> Dense logits float32 [B, T, V] of the last layer's output [B, T, H] (with skip_connections: of every
  layer's, concatenated [B, T, L x H]).
  step: ids int32 [B], state float32 [L, S, B, H] -> logits float32 [B, V], state [L, S, B, H].
"""

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tf_charrnn.config import ModelConfig
from tf_charrnn.model import fused_lstm, initializers, native, recurrent
from tf_charrnn.model.dropout import FusedDropout


class CharRNN(keras.Model):
    """The stateful Char-RNN, its layers as attributes.

    `model(ids)` runs a [B, T] window on the layers' own [B, H] state variables (training, evaluation);
    `step(ids, state)` advances any batch by one character on a state it is given (sampling, export).

    The recurrent layers keep Keras defaults (tanh/sigmoid, no recurrent dropout) so that LSTM and
    GRU run on cuDNN on a GPU; `unroll` (which rules cuDNN out) is for CPUs.

    Args:
      config: ModelConfig with vocab_size set.
      batch_size: the static batch size the stateful layers need (per replica under a strategy).
      seed: int seed for the dropout layers' generators (the embedding's `seed`, layer l's `seed + l`); None
        draws from Keras' global seed.
      dtype_policy: Keras dtype policy of every layer but the logits (e.g. mixed_bfloat16); the
        weights stay float32 and the logits are computed in float32.
      unroll: unroll the time loop when it is traced (the time length must then be static, as
        it is in training); on a CPU this saves the loop's per-step overhead. Same weights, same math.
      fused_kernels: LSTM layers run on the fused C++ kernels where they apply (see fused_lstm.py;
        they take precedence over `unroll`), in the sequence call and in `step`, and so does dropout
        (dropout.py: the same values as Keras'); the runtime decides.
    """

    def __init__(
        self,
        config: ModelConfig,
        batch_size: int | None,
        seed: int | None = None,
        dtype_policy: keras.DTypePolicy | None = None,
        unroll: bool = False,
        fused_kernels: bool = False,
    ) -> None:
        if config.vocab_size < 1:
            raise ValueError("ModelConfig.vocab_size must be set (>= 1) before building the model")
        ids = keras.Input(batch_shape=(batch_size, None), dtype="int32", name="ids")
        embedding = keras.layers.Embedding(
            config.vocab_size,
            config.embedding_dim,
            embeddings_initializer=initializers.embedding(config.embedding_initializer),
            dtype=dtype_policy,
            name="embedding",
        )
        x = embedding(ids)
        if config.embedding_dropout > 0:  # no layer at 0: the checkpoints of runs without it stay the same
            x = FusedDropout(
                config.embedding_dropout,
                use_kernels=fused_kernels,
                seed=seed,
                dtype=dtype_policy,
                name="embedding_dropout",
            )(x)
        recurrent_layers, outputs = [], []
        for layer in range(1, config.num_layers + 1):
            rnn = recurrent.make_layer(
                config.cell,
                config.rnn_units,
                use_kernels=fused_kernels,
                return_sequences=True,
                stateful=True,
                unroll=unroll,
                dtype=dtype_policy,
                name=f"{config.cell}_{layer}",
                **initializers.recurrent(config.weight_initializer, config.cell, config.rnn_units),
            )
            x = rnn(x)
            layer_seed = None if seed is None else seed + layer
            x = FusedDropout(
                config.dropout,
                use_kernels=fused_kernels,
                seed=layer_seed,
                dtype=dtype_policy,
                name=f"dropout_{layer}",
            )(x)
            recurrent_layers.append(rnn)
            outputs.append(x)
        if config.skip_connections and len(outputs) > 1:
            x = keras.layers.Concatenate(dtype=dtype_policy, name="skip_connections")(outputs)
        head = keras.layers.Dense(
            config.vocab_size,
            dtype="float32",
            name="logits",
            **initializers.logits(config.weight_initializer, x.shape[-1]),
        )
        super().__init__(ids, head(x), name="char_rnn")
        self.config = config
        self.embedding = embedding
        self.recurrent_layers = recurrent_layers
        self.head = head

    @property
    def state_variables(self) -> list[tf.Variable]:
        """The variables of the sequence call's recurrent state: per layer, [h] or [h, c], each [B, H]."""
        return [variable for layer in self.recurrent_layers for variable in layer.states]

    def reset_state(self) -> None:
        """Zeroes the sequence call's recurrent state (epoch start, new text)."""
        for layer in self.recurrent_layers:
            layer.reset_state()

    def initial_state(self, batch_size: int | tf.Tensor) -> tf.Tensor:
        """Zero state for `step`, float32 [L, S, B, H]."""
        first = self.recurrent_layers[0]
        return tf.zeros([len(self.recurrent_layers), first.num_states, batch_size, first.units])

    def step_implementation(self, precision: str = "float32") -> str:
        """What runs `step` on `step_weights(precision)`: fused_lstm's FUSED_FLOAT32, FUSED_BFLOAT16 or
        FUSED_INT8 (all layers and the logits in one step kernel call, weights in that precision) or
        KERAS_OPS."""
        return self.recurrent_layers[0].step_implementation(precision)

    def step_weights(self, precision: str = "float32") -> dict[str, Any]:
        """The weights `step` reads, as tensors: read them once before a loop of steps (a variable read
        inside a while loop happens at every step). Where the step kernel runs, the layers' weights are
        packed for it in `precision` ("float32"; "bfloat16": half the bytes a character reads, the
        products' inputs rounded to bfloat16 as in bfloat16 training; "int8": a quarter of the bytes,
        each column of [W; U] in int8 with a float32 scale; see `step_implementation`)."""
        weights = {
            "embedding": tf.convert_to_tensor(self.embedding.embeddings),
            "head_kernel": tf.convert_to_tensor(self.head.kernel),
            "head_bias": tf.convert_to_tensor(self.head.bias),
        }
        if self.step_implementation(precision) == fused_lstm.KERAS_OPS:
            return {**weights, "layers": [layer.step_weights() for layer in self.recurrent_layers]}
        padding = self.recurrent_layers[0].step_padding()  # every layer has the same units
        packed = [
            layer.packed_step_weights(precision, input_padding=padding if index else 0)
            for index, layer in enumerate(self.recurrent_layers)
        ]
        if padding:  # zero rows of the head for each layer's padded units it reads
            head_kernel = tf.reshape(
                weights["head_kernel"], [-1, self.config.rnn_units, self.config.vocab_size]
            )
            head_kernel = tf.pad(head_kernel, [[0, 0], [0, padding], [0, 0]])
            weights["head_kernel"] = tf.reshape(head_kernel, [-1, self.config.vocab_size])
        return {**weights, **{name: [layer[name] for layer in packed] for name in packed[0]}}

    def step(
        self, ids: tf.Tensor, state: tf.Tensor, weights: dict[str, Any] | None = None
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Advances every row by one character; traceable, any batch size, no dropout.

        Args:
          ids: int32 [B] current characters.
          state: float32 [L, S, B, H], or as `loop_state` pads it for these weights.
          weights: `step_weights()`, read once outside a loop; None reads them here.

        Returns:
          (logits float32 [B, V] for the next character, new state float32 [L, S, B, H], or padded as
          it came).
        """
        weights = weights or self.step_weights()
        if "packed" in weights:
            return self._kernel_step(ids, state, weights)
        x = tf.gather(weights["embedding"], ids)
        new_state, outputs = [], []
        for index, layer in enumerate(self.recurrent_layers):
            x, layer_state = layer.step(x, state[index], weights["layers"][index])
            new_state.append(layer_state)
            outputs.append(x)
        if self.config.skip_connections:
            x = tf.concat(outputs, axis=-1)
        return tf.matmul(x, weights["head_kernel"]) + weights["head_bias"], tf.stack(new_state)

    def loop_state(self, state: tf.Tensor, weights: dict[str, Any]) -> tf.Tensor:
        """`state` [L, S, B, H] as a loop of `step` on `weights` carries it: where the step kernel pads the
        units (`step_weights`), padded with zeros once before the loop, so that each step need not pad
        and cut it (`step` returns it padded; `caller_state` cuts it after the loop); else as it is."""
        padding = self.recurrent_layers[0].step_padding() if "packed" in weights else 0
        return tf.pad(state, [[0, 0], [0, 0], [0, 0], [0, padding]]) if padding else state

    def caller_state(self, state: tf.Tensor) -> tf.Tensor:
        """A state from `loop_state` and `step` cut to the layers' own units [L, S, B, H]."""
        return state if state.shape[-1] == self.config.rnn_units else state[..., : self.config.rnn_units]

    def _kernel_step(
        self, ids: tf.Tensor, state: tf.Tensor, weights: dict[str, Any]
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """`step` in one step kernel call, on packed weights (units padded as `step_weights` padded them);
        the state is returned in the width it came in (see `loop_state`)."""
        kernels = native.load()
        assert kernels is not None  # weights are packed only where the step kernel runs
        padding = self.recurrent_layers[0].step_padding()
        padded_in_loop = padding > 0 and state.shape[-1] == self.config.rnn_units + padding
        state = state if padded_in_loop else self.loop_state(state, weights)
        inputs = (tf.cast(ids, tf.int32), state, weights["embedding"], weights["packed"])
        head = (weights["head_kernel"], weights["head_bias"])
        if "scale" in weights:
            logits, state = kernels.char_rnn_model_step_int8(
                *inputs, weights["scale"], weights["bias"], *head
            )
        else:
            logits, state = kernels.char_rnn_model_step(*inputs, weights["bias"], *head)
        return logits, state if padded_in_loop else self.caller_state(state)

    def copy_weights_from(self, source: "CharRNN") -> None:
        """Copies the learned weights of a model of the same config and any batch size. Recurrent state
        and dropout generator state are left alone: they belong to one batch size."""
        self.set_weights(source.get_weights())

    def copy_weights_extending_vocab(self, source: "CharRNN") -> None:
        """Copies the learned weights of a model of the same shape whose vocabulary this model's extends
        (the source's characters first, in its order, then new ones: fine-tuning on a text with new
        characters). The source's characters keep their embedding rows and logit columns, so on text made
        of them the logits of the source's characters are the source's. A new character's embedding row
        is the mean of the source's rows (an average character to the recurrent layers), its logit column
        is zero with the source's lowest bias (as unlikely as the source's rarest character, until
        training says otherwise).

        Args:
          source: CharRNN, any batch size, with config.vocab_size <= this model's.
        """
        old, new = source.config.vocab_size, self.config.vocab_size - source.config.vocab_size
        embedding = source.embedding.embeddings.numpy()
        self.embedding.embeddings.assign(
            np.concatenate([embedding, np.tile(embedding.mean(axis=0, keepdims=True), (new, 1))])
        )
        for layer, source_layer in zip(self.recurrent_layers, source.recurrent_layers, strict=True):
            for weight, source_weight in zip(
                layer.trainable_weights, source_layer.trainable_weights, strict=True
            ):
                weight.assign(source_weight)
        kernel, bias = source.head.kernel.numpy(), source.head.bias.numpy()
        self.head.kernel.assign(
            np.concatenate([kernel, np.zeros([kernel.shape[0], new], kernel.dtype)], axis=1)
        )
        self.head.bias.assign(np.concatenate([bias, np.full([new], bias[:old].min(), bias.dtype)]))
