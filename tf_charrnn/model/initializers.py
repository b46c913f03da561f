"""The weights a new run starts from, by --embedding_initializer and --weight_initializer.

Keras' defaults (embedding U(-0.05, 0.05); glorot-uniform input kernels, orthogonal recurrent kernels,
zero biases with the LSTM's forget gate at 1) or PyTorch's (embedding N(0, 1); every recurrent and logit
weight U(-1/sqrt(fan), 1/sqrt(fan)), the recurrent layer's two biases b_ih + b_hh likewise). The scale
of the embedding decides how much the first layer's gates hear of the characters at all: see
docs/learning.md for what each choice learns.
"""

import math
from typing import Any

import keras


@keras.saving.register_keras_serializable(package="tf_charrnn")
class UniformSum(keras.initializers.Initializer):
    """The sum of `terms` independent U(-limit, limit) draws: PyTorch's two biases b_ih + b_hh of a
    recurrent layer, held as one bias as Keras does."""

    def __init__(self, limit: float, terms: int) -> None:
        self.limit, self.terms = limit, terms
        self._draws = [keras.initializers.RandomUniform(-limit, limit) for _ in range(terms)]

    def __call__(self, shape: tuple[int, ...], dtype: str | None = None) -> Any:
        return sum(draw(shape, dtype) for draw in self._draws)

    def get_config(self) -> dict[str, Any]:
        return {"limit": self.limit, "terms": self.terms}


def embedding(name: str) -> keras.initializers.Initializer | str:
    """The embedding table's initialiser: normal N(0, 1) (PyTorch's nn.Embedding) or uniform
    U(-0.05, 0.05) (Keras' Embedding default, by its name, so that its seed is drawn as before)."""
    if name == "normal":
        return keras.initializers.RandomNormal(stddev=1.0)
    return "uniform"


def recurrent(name: str, cell: str, units: int) -> dict[str, Any]:
    """Keyword arguments of a recurrent layer (LSTM, GRU or SimpleRNN) of `units` for `name`: {} keeps
    Keras' defaults."""
    if name == "keras":
        return {}
    limit = 1.0 / math.sqrt(units)
    # Keras' GRU (reset_after) keeps the input and recurrent biases apart, as PyTorch does; LSTM and
    # SimpleRNN hold their sum.
    bias = keras.initializers.RandomUniform(-limit, limit) if cell == "gru" else UniformSum(limit, 2)
    arguments = {
        "kernel_initializer": keras.initializers.RandomUniform(-limit, limit),
        "recurrent_initializer": keras.initializers.RandomUniform(-limit, limit),
        "bias_initializer": bias,
    }
    if cell == "lstm":
        arguments["unit_forget_bias"] = False
    return arguments


def logits(name: str, fan_in: int) -> dict[str, Any]:
    """Keyword arguments of the logits' Dense layer for `name`: {} keeps Keras' defaults (glorot-uniform
    kernel, zero bias); pytorch: nn.Linear's U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for both."""
    if name == "keras":
        return {}
    limit = 1.0 / math.sqrt(fan_in)
    return {
        "kernel_initializer": keras.initializers.RandomUniform(-limit, limit),
        "bias_initializer": keras.initializers.RandomUniform(-limit, limit),
    }
