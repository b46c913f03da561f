"""The inspection's PNG plots, drawn with matplotlib's Agg backend (no display): gate saturation per layer
as the paper plots it, and one cell's activation over a stretch of text."""

import io
from typing import Any

import numpy as np

from tf_charrnn.inspection.saturation import LEFT, RIGHT

VISIBLE = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5"}  # characters that would not show in a tick label
_GATE_COLOURS = {"input": "tab:blue", "forget": "tab:green", "output": "tab:red", "update": "tab:purple"}
_GATE_COLOURS["reset"] = "tab:orange"


def _figure(width: float, height: float) -> Any:
    # The Figure class alone: no pyplot, no global figure registry, no display backend.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def saturation_png(
    stats: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], layers: tuple[str, ...]
) -> bytes:
    """Gate saturation, one panel per layer: a point per gate unit at (fraction of characters with the gate
    below LEFT, fraction above RIGHT); the diagonal is "always saturated".

    Args:
      stats: `saturation.gate_saturation`'s result.
      layers: the layers, in order.

    Returns:
      PNG bytes.
    """
    figure = _figure(4.2 * len(layers), 4.4)
    axes = figure.subplots(1, len(layers), squeeze=False)[0]
    for axis, layer in zip(axes, layers, strict=True):
        for (name, gate), (left, right) in stats.items():
            if name == layer:
                axis.scatter(left, right, s=8, alpha=0.6, color=_GATE_COLOURS.get(gate), label=f"{gate} gate")
        axis.plot([0, 1], [1, 0], color="grey", linewidth=0.8, linestyle="--")
        axis.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), title=layer, aspect="equal")
        axis.set_xlabel(f"fraction left-saturated (< {LEFT})")
        axis.set_ylabel(f"fraction right-saturated (> {RIGHT})")
        axis.legend(loc="upper right", fontsize="small")
    figure.suptitle("Gate saturation: one point per gate unit")
    return _png(figure)


def activation_png(values: np.ndarray, text: str, title: str, feature: np.ndarray | None = None) -> bytes:
    """One cell's activation after each character of `text`, the characters along the axis, and the
    feature it follows (scaled to the activation's range) dashed behind it.

    Args:
      values: float [n], the activation after each character.
      text: n characters.
      title: e.g. "lstm_2/c/137: position in the line, r = 0.91".
      feature: float [n] or None.

    Returns:
      PNG bytes.
    """
    count = len(text)
    figure = _figure(max(6.0, 0.11 * count), 3.2)
    axis = figure.subplots()
    positions = np.arange(count)
    if feature is not None and np.ptp(feature) > 0:
        low, high = float(np.min(values)), float(np.max(values))
        scaled = low + (feature - feature.min()) / np.ptp(feature) * (high - low)
        axis.plot(positions, scaled, color="grey", linestyle="--", linewidth=1, label="feature (scaled)")
    axis.plot(positions, values, color="tab:red", linewidth=1.4, label="activation")
    axis.set_xticks(positions, [VISIBLE.get(char, char) for char in text], fontsize=7, fontfamily="monospace")
    axis.tick_params(axis="x", length=0)
    axis.set_xlim(-0.5, count - 0.5)
    axis.set_title(title)
    axis.legend(loc="upper right", fontsize="small")
    return _png(figure)


def message_png(message: str) -> bytes:
    """A plot holding one line of text (where there is nothing to plot: a simple RNN has no gates)."""
    figure = _figure(4, 1)
    figure.text(0.5, 0.5, message, ha="center", va="center")
    return _png(figure)
