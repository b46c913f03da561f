"""Features of a text, one number per character, and the cells whose activation follows each most closely
(Pearson correlation over the text).

Each feature is the value after reading character t, as the activations are: an opening quote is inside
the quotation, the closing one outside; a line break is at position 0 of the new line.
"""

import dataclasses

import numpy as np

# name -> what it measures (the page and the README say this).
FEATURES = {
    "in_quote": 'inside a quotation ("...", \u201c...\u201d)',
    "line_position": "position in the line (characters since the last line break)",
    "bracket_depth": "depth inside brackets and parentheses ( [ {",
    "word_position": "position in the word (letters, digits, ' since the word began; 0 between words)",
    "line_start": "start of a line (1 on a line break: the next character begins a line)",
}
_OPEN, _CLOSE = "([{", ")]}"


def text_features(text: str) -> dict[str, np.ndarray]:
    """Every feature of FEATURES for `text`.

    Returns:
      {name: float32 [N]}.
    """
    count = len(text)
    values = {name: np.zeros(count, np.float32) for name in FEATURES}
    quoted = False
    line = depth = word = 0
    for t, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char == "\u201c":
            quoted = True
        elif char == "\u201d":
            quoted = False
        line = 0 if char == "\n" else line + 1
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth = max(0, depth - 1)
        word = word + 1 if (char.isalnum() or (char == "'" and word)) else 0
        values["in_quote"][t] = quoted
        values["line_position"][t] = line
        values["bracket_depth"][t] = depth
        values["word_position"][t] = word
        values["line_start"][t] = char == "\n"
    return values


@dataclasses.dataclass(frozen=True)
class CellScore:
    """How closely one cell follows one feature."""

    feature: str
    layer: str  # e.g. "lstm_2"
    state: str  # "h" or "c"
    cell: int  # the unit, 0 to H - 1
    correlation: float  # Pearson's r over the text (the sign says which way the cell moves)

    @property
    def name(self) -> str:
        return f"{self.layer}/{self.state}/{self.cell}"


def correlations(values: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Pearson's r of each column of `values` (float [N, H]) with each row of `features` (float [F, N]);
    0 for a constant column or a constant feature.

    Returns:
      float64 [F, H].
    """
    features = np.asarray(features, np.float64)
    centred_features = features - features.mean(axis=1, keepdims=True)
    feature_norms = np.sqrt(np.einsum("fn,fn->f", centred_features, centred_features))
    centred = np.asarray(values, np.float64)
    scale = np.abs(centred).max(axis=0, initial=0.0)
    centred -= centred.mean(axis=0)
    spread = np.sqrt(np.einsum("nh,nh->h", centred, centred))
    # A column that only moves by float32 round-off around a constant has no correlation to report.
    moving = (spread > 1e-6 * np.sqrt(len(centred)) * (1.0 + scale))[None, :] & (feature_norms > 0)[:, None]
    norms = np.where(moving, feature_norms[:, None] * spread[None, :], 1.0)
    return np.where(moving, (centred_features @ centred) / norms, 0.0)


def rank_cells(states: dict[tuple[str, str], np.ndarray], features: dict[str, np.ndarray], top: int) -> dict:
    """The cells that follow each feature most closely, by |r|.

    Args:
      states: {(layer, state): float32 [N, H]}, e.g. {("lstm_1", "c"): ...}.
      features: {name: float32 [N]} (see `text_features`).
      top: how many cells to list per feature.

    Returns:
      {feature: [CellScore, ...] best first}; [] for a feature constant over the text (nothing to follow).
    """
    names = [name for name, feature in features.items() if len(feature) and np.ptp(feature) > 0]
    scores: dict[str, list[CellScore]] = {name: [] for name in features}
    if names:
        matrix = np.stack([features[name] for name in names])
        for (layer, state), values in states.items():
            for name, row in zip(names, correlations(values, matrix), strict=True):
                scores[name].extend(
                    CellScore(name, layer, state, cell, float(r)) for cell, r in enumerate(row)
                )
    return {
        name: sorted(found, key=lambda score: -abs(score.correlation))[:top] for name, found in scores.items()
    }
