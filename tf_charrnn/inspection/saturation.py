"""Gate saturation as the paper plots it: for each gate unit, the fraction of characters on which the gate
is left-saturated (below 0.1) and right-saturated (above 0.9)."""

import numpy as np

from tf_charrnn.inference.activations import SIGMOID_GATES, Activations

LEFT, RIGHT = 0.1, 0.9


def gate_saturation(activations: Activations) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """The saturation of every sigmoid gate unit of every layer.

    Returns:
      {(layer, gate): (left float64 [H], right float64 [H])}: the fraction of characters with the gate
      below LEFT and above RIGHT; gates in SIGMOID_GATES[cell] order ("input", "forget", "output" for an
      LSTM).
    """
    result = {}
    for layer in activations.layers:
        for gate in SIGMOID_GATES[activations.cell]:
            values = activations[f"{layer}/{gate}"]
            result[layer, gate] = ((values < LEFT).mean(axis=0), (values > RIGHT).mean(axis=0))
    return result
