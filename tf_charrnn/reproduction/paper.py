"""The published figures a grid is compared with (docs/reproduction.md says where each comes from)."""

import dataclasses

from tf_charrnn.config import CELLS


@dataclasses.dataclass(frozen=True)
class PaperTable:
    """A paper's table: its default grid, and the test-set figures (nats/char) found for it."""

    title: str
    cells: tuple[str, ...]
    layers: tuple[int, ...]
    sizes: tuple[int, ...]  # units per layer
    # {(cell, num_layers, rnn_units): test nats/char}; only figures read in a source, none guessed.
    figures: dict[tuple[str, int, int], float]
    best_lstm: float  # the best LSTM figure the paper states
    ngram_order: int
    ngram: float  # its n-gram baseline's test nats/char


TABLES = {
    "karpathy2015": PaperTable(
        title="Karpathy, Johnson, Fei-Fei (2015), Table 1, War and Peace",
        cells=CELLS,
        layers=(1, 2, 3),
        sizes=(64, 128, 256, 512),
        figures={},
        best_lstm=1.077,
        ngram_order=20,
        ngram=1.195,
    )
}
