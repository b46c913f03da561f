"""The Char-RNN Keras model, its recurrent state, and moving weights between batch sizes.

Shapes: B batch, T time, V vocabulary, E embedding_dim, H rnn_units, L num_layers.
  ids int32 [B, T] -> Embedding [B, T, E] -> L x stateful RNN [B, T, H] (dropout after each)
  -> Dense logits float32 [B, T, V].
"""

import keras

from tf_charrnn.fused_lstm import FusedLSTM

_RNN_LAYERS = {"lstm": FusedLSTM, "gru": keras.layers.GRU, "rnn": keras.layers.SimpleRNN}


def build_model(config, batch_size, seed=None, dtype_policy=None, unroll=False, fused_kernels=True):
    """Builds the stateful Char-RNN.

    The recurrent layers keep Keras defaults (tanh/sigmoid, no recurrent dropout) so that LSTM and
    GRU run on cuDNN on a GPU; `unroll` (which rules cuDNN out) is for CPUs.

    Args:
      config: ModelConfig with vocab_size set.
      batch_size: the static batch size stateful layers need (per replica under a strategy).
      seed: int seed for the dropout layers' generators; None draws from Keras' global seed.
      dtype_policy: Keras dtype policy of every layer but the logits (e.g. mixed_bfloat16); the
        weights stay float32 and the logits are computed in float32.
      unroll: unroll the time loop when it is traced (the time length must then be static, as
        it is in training); on a CPU this saves the loop's per-step overhead. Same weights, same math.
      fused_kernels: run LSTM layers on the fused C++ kernels where they apply (see fused_lstm.py;
        they take precedence over `unroll`); False for XLA, which cannot compile them.

    Returns:
      A keras.Model mapping int32 [B, T] ids to float32 [B, T, V] logits.
    """
    if config.vocab_size < 1:
        raise ValueError("ModelConfig.vocab_size must be set (>= 1) before building the model")
    rnn_layer = _RNN_LAYERS[config.cell]
    ids = keras.Input(batch_shape=(batch_size, None), dtype="int32", name="ids")
    x = keras.layers.Embedding(config.vocab_size, config.embedding_dim, dtype=dtype_policy, name="embedding")(
        ids
    )
    options = {"use_kernels": fused_kernels} if config.cell == "lstm" else {}
    for layer in range(1, config.num_layers + 1):
        x = rnn_layer(
            config.rnn_units,
            return_sequences=True,
            stateful=True,
            unroll=unroll,
            dtype=dtype_policy,
            name=f"{config.cell}_{layer}",
            **options,
        )(x)
        layer_seed = None if seed is None else seed + layer
        x = keras.layers.Dropout(
            config.dropout, seed=layer_seed, dtype=dtype_policy, name=f"dropout_{layer}"
        )(x)
    logits = keras.layers.Dense(config.vocab_size, dtype="float32", name="logits")(x)
    return keras.Model(ids, logits, name="char_rnn")


def recurrent_layers(model):
    """The model's stateful recurrent layers, bottom first."""
    return [layer for layer in model.layers if getattr(layer, "stateful", False)]


def reset_states(model):
    """Zeroes the recurrent state of every layer (epoch start, new text)."""
    for layer in recurrent_layers(model):
        layer.reset_state()


def state_variables(model):
    """The variables holding the recurrent state: per layer, [h] or [h, c], each float32 [B, H]."""
    return [variable for layer in recurrent_layers(model) for variable in layer.states]


def copy_weights(source, target):
    """Copies the learned weights between models of the same config and any batch sizes.

    Recurrent state and dropout generator state are left alone: they belong to one batch size.
    """
    target.set_weights(source.get_weights())
