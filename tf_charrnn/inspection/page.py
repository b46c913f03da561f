"""The inspection's self-contained HTML page: the text coloured by a chosen cell (the paper's figure), the
cells ranked by each feature, a way to switch cells, and the plots inline. The text enters the page as
JSON data and becomes characters (textContent), never markup."""

import base64
import html
import json
import re
from importlib import resources
from typing import Any

import numpy as np

from tf_charrnn.inspection.features import FEATURES, CellScore

_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


def script_json(value: Any) -> str:
    """`value` as JSON safe inside a <script> element: no "<", ">" or "&" (escaped as \\u003c ...), so the
    data cannot close the element ("</script>") or open a comment, whatever text it holds."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def scaled(values: np.ndarray) -> list[int]:
    """Values as integers in [-100, 100], scaled by their largest magnitude (all 0 for all-zero values)."""
    peak = float(np.max(np.abs(values))) if len(values) else 0.0
    if peak == 0:
        return [0] * len(values)
    return np.rint(np.asarray(values, np.float64) / peak * 100).astype(int).tolist()


def _ranking_table(ranking: dict[str, list[CellScore]]) -> str:
    rows = []
    for feature, scores in ranking.items():
        label = html.escape(FEATURES.get(feature, feature))
        if not scores:
            rows.append(
                f'<tr><td>{label}</td><td colspan="4">constant over this text: nothing to follow</td></tr>'
            )
        for rank, score in enumerate(scores, 1):
            name = html.escape(score.name, quote=True)
            rows.append(
                f'<tr data-cell="{name}" data-feature="{html.escape(feature, quote=True)}">'
                f"<td>{label if rank == 1 else ''}</td><td>{rank}</td><td>{name}</td>"
                f'<td class="r">r = {score.correlation:+.3f}</td>'
                f'<td><button type="button" class="show" data-cell="{name}">show</button></td></tr>'
            )
    return (
        '<table id="ranking"><thead><tr><th>feature</th><th>rank</th><th>cell (layer/state/index)</th>'
        "<th>correlation</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def render_page(
    title: str,
    about: str,
    text: str,
    cells: dict[str, np.ndarray],
    descriptions: dict[str, str],
    ranking: dict[str, list[CellScore]],
    shown: str,
    characters: int,
    saturation_png: bytes,
    activation_png: bytes,
) -> str:
    """The page.

    Args:
      title: the run's name (any text: escaped).
      about: one line on what was inspected (escaped).
      text: the characters the page colours (any text: JSON data).
      cells: {"LAYER/STATE/INDEX": float [len(text)]}: the cells one can switch to, in the menu's order.
      descriptions: {name: what the cell follows}, shown beside the menu.
      ranking: `features.rank_cells`' result.
      shown: the cell shown first (a key of `cells`).
      characters: how many characters the ranking was computed over.
      saturation_png, activation_png: the plots, embedded as data: URLs.

    Returns:
      The HTML, one self-contained file.
    """
    options = "".join(
        f'<option value="{html.escape(name, quote=True)}">{html.escape(name)}'
        f"{' (' + html.escape(descriptions[name]) + ')' if descriptions.get(name) else ''}</option>"
        for name in cells
    )
    data = {
        "text": text,
        "cells": {name: scaled(values) for name, values in cells.items()},
        "descriptions": descriptions,
        "shown": shown,
    }
    values = {
        "TITLE": html.escape(title),
        "ABOUT": html.escape(about),
        "OPTIONS": options,
        "CHARACTERS": f"{characters:,}",
        "RANKING": _ranking_table(ranking),
        "SATURATION_PNG": base64.b64encode(saturation_png).decode("ascii"),
        "ACTIVATION_PNG": base64.b64encode(activation_png).decode("ascii"),
        "DATA": script_json(data),
    }
    template = resources.files("tf_charrnn.inspection").joinpath("page_template.html").read_text("utf-8")
    # One pass: what is put in is never searched for placeholders again.
    return _PLACEHOLDER.sub(lambda match: values[match[1]], template)
