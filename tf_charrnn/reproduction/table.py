"""The grid's results beside the paper's: a Markdown table and a plot of loss against size."""

import math
from collections.abc import Mapping
from typing import Any

from tf_charrnn.config import CELLS
from tf_charrnn.reproduction.grid import Cell
from tf_charrnn.reproduction.paper import PaperTable


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown_table(table: PaperTable, cells: list[Cell], results: Mapping[str, Any]) -> str:
    """The Markdown table of `results` (run_grid's) beside `table`'s figures, one row per cell."""
    lines = [
        f"Test-set cross-entropy (nats/char) beside {table.title}. Paper: the figure read in the paper "
        "for that cell, n/a where none was found (docs/reproduction.md).",
        "",
        "| cell | layers | units | ours | paper | ours - paper | steps | epochs | wall time | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for cell in cells:
        result = results["cells"][cell.name]
        ours = result["test_loss"]
        theirs = table.figures.get((cell.cell, cell.num_layers, cell.rnn_units))
        difference = "n/a" if theirs is None else f"{ours - theirs:+.3f}"
        note = (
            f"capped: {result['step']} of the protocol's {result['protocol_steps']} steps"
            if result["capped"]
            else ""
        )
        lines.append(
            f"| {cell.cell.upper()} | {cell.num_layers} | {cell.rnn_units} | {ours:.3f} | {_figure(theirs)} "
            f"| {difference} | {result['step']} | {result['epochs']:.2f} | {result['wall_s'] / 60:.1f} min "
            f"| {note} |"
        )
    ngram = results["ngram"]
    lines += [
        "",
        "| baseline | ours | paper | ours - paper |",
        "| --- | ---: | ---: | ---: |",
        f"| {ngram['order']}-gram, interpolated Kneser-Ney | {ngram['test_loss']:.3f} | {table.ngram:.3f} "
        f"| {ngram['test_loss'] - table.ngram:+.3f} |",
        f"| best LSTM | {_best(cells, results, 'lstm')} | {table.best_lstm:.3f} | |",
    ]
    return "\n".join(lines) + "\n"


def _best(cells: list[Cell], results: Mapping[str, Any], cell_type: str) -> str:
    losses = [results["cells"][cell.name]["test_loss"] for cell in cells if cell.cell == cell_type]
    return f"{min(losses):.3f}" if losses else "n/a"


def plot(table: PaperTable, cells: list[Cell], results: Mapping[str, Any], path: str) -> None:
    """Writes a PNG: test loss against units, one panel per cell type, a line per layer count (ours solid,
    the paper's dashed), the paper's n-gram and best LSTM as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    types = sorted({cell.cell for cell in cells}, key=CELLS.index)
    figure, axes = pyplot.subplots(1, len(types), figsize=(5 * len(types), 4), squeeze=False, sharey=True)
    for axis, cell_type in zip(axes[0], types, strict=True):
        for layers in sorted({cell.num_layers for cell in cells if cell.cell == cell_type}):
            row = [cell for cell in cells if cell.cell == cell_type and cell.num_layers == layers]
            units = [cell.rnn_units for cell in row]
            line = axis.plot(
                units,
                [results["cells"][cell.name]["test_loss"] for cell in row],
                "o-",
                label=f"ours, {layers}L",
            )
            theirs = [table.figures.get((cell_type, layers, size), math.nan) for size in units]
            if not all(math.isnan(value) for value in theirs):
                axis.plot(units, theirs, "s--", color=line[0].get_color(), label=f"paper, {layers}L")
        axis.axhline(table.ngram, color="grey", linestyle=":", label=f"paper {table.ngram_order}-gram")
        axis.axhline(table.best_lstm, color="black", linestyle=":", label="paper best LSTM")
        axis.axhline(results["ngram"]["test_loss"], color="grey", linestyle="-.", label="our n-gram")
        axis.set_xscale("log", base=2)
        axis.set_title(cell_type.upper())
        axis.set_xlabel("units per layer")
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("test nats/char")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
