"""`inspect_run`: a trained run looked into on a text, written as one folder (inspect.html, the PNG plots,
ranking.json) and, optionally, as TensorBoard images and text in TRAIN_DIR/logs/inspect."""

import dataclasses
import json
import os
import re
import time
from typing import Any

import numpy as np
import tensorflow as tf

from tf_charrnn import files
from tf_charrnn.config import CELL_STATES, InspectConfig
from tf_charrnn.inference import activations, scored_text
from tf_charrnn.inspection import features, figures, page, saturation
from tf_charrnn.model.char_rnn import CharRNN
from tf_charrnn.run import checkpoints, layout

PAGE = "inspect.html"
SATURATION_PNG = "gate_saturation.png"
ACTIVATION_PNG = "cell_activation.png"
RANKING_JSON = "ranking.json"
PLOT_CHARS = 160  # characters along the activation plot
TENSORBOARD_SPLIT = "inspect"  # TRAIN_DIR/logs/inspect


@dataclasses.dataclass(frozen=True)
class Inspection:
    """What `inspect_run` found and wrote."""

    output_dir: str
    checkpoint: str
    characters: int  # characters inspected
    skipped_characters: int  # left out with skip_unknown
    seconds: float  # computing the activations (the model's part)
    shown: str  # the cell the page shows first, "LAYER/STATE/INDEX"
    ranking: dict[str, list[features.CellScore]]


def inspect_run(config: InspectConfig, text_ids: tuple[np.ndarray, int] | None = None) -> Inspection:
    """Looks inside a run's checkpoint on a text and writes the report.

    The text (the run's validation split, or --data_path) is cut at config.max_chars, run through the
    model in the run's streams (`activations.compute_activations`), its features computed
    (`features.text_features`) and every h and c cell ranked by each; the gates' saturation is counted.

    Args:
      config: InspectConfig.
      text_ids: what `scored_text.read_inspected` read for `config` before TensorFlow loaded (inspect.py's
        way); None: read here.

    Returns:
      Inspection.
    Raises:
      UserError: no run or checkpoint, a non-empty output_dir without overwrite, a cell or layer out of
        range, an unreadable or too short text, or characters outside the vocabulary (without
        skip_unknown). Nothing is written then.
    """
    run_config, vocab = layout.load_run(config.train_dir)
    # Before the text: a run without checkpoints fails at once, not after reading a corpus.
    path = checkpoints.find_checkpoint(config.train_dir, config.checkpoint or None, config.best)
    chosen = config.chosen_cell(run_config.model)
    output_dir = files.check_output_folder(config.output_dir, "output_dir", config.overwrite)
    ids, skipped = text_ids if text_ids is not None else scored_text.read_inspected(config, run_config, vocab)
    text = vocab.decode(ids)
    model = CharRNN(run_config.model, batch_size=1)
    path = checkpoints.restore_weights(config.train_dir, model, path, config.best)

    start = time.perf_counter()
    streams = activations.stream_count(len(ids), run_config.layout.batch_size, run_config.layout.seq_length)
    found = activations.compute_activations(model, ids, text, streams)
    seconds = time.perf_counter() - start

    text_features = features.text_features(text)
    cell_states = {
        (layer, state): found[f"{layer}/{state}"]
        for layer in found.layers
        for state in CELL_STATES[found.cell]
    }
    ranking = features.rank_cells(cell_states, text_features, config.top_cells)
    shown, shown_score, descriptions = _shown_cell(chosen, ranking, found)
    stats = saturation.gate_saturation(found)
    saturation_png = (
        figures.saturation_png(stats, found.layers)
        if stats
        else figures.message_png("no gates: a simple RNN")
    )
    activation_png = _activation_png(shown, shown_score, cell_states, text_features, text)

    page_text = text[: config.page_chars]
    listed = dict.fromkeys([shown, *descriptions])
    cells = {name: _cell_values(cell_states, name)[: len(page_text)] for name in listed}
    run_name = os.path.basename(os.path.normpath(os.path.abspath(config.train_dir)))
    about = (
        f"{run_name}: {run_config.model.num_layers} x {run_config.model.rnn_units} {run_config.model.cell}, "
        f"{os.path.basename(path)}; {len(text):,} characters of "
        f"{config.data_path or 'its validation split'} in {streams} streams; the first "
        f"{len(page_text):,} are shown."
    )
    html_page = page.render_page(
        run_name,
        about,
        page_text,
        cells,
        descriptions,
        ranking,
        shown,
        len(text),
        saturation_png,
        activation_png,
    )
    record = _record(path, len(text), skipped, streams, seconds, shown, ranking, stats)
    _write_report(
        output_dir,
        {
            PAGE: html_page,
            SATURATION_PNG: saturation_png,
            ACTIVATION_PNG: activation_png,
            RANKING_JSON: json.dumps(record, indent=1),
        },
    )
    if config.tensorboard:
        _write_tensorboard(config.train_dir, path, ranking, saturation_png, activation_png)
    return Inspection(output_dir, path, len(text), skipped, seconds, shown, ranking)


def _shown_cell(
    chosen: tuple[str, str, int] | None,
    ranking: dict[str, list[features.CellScore]],
    found: activations.Activations,
) -> tuple[str, features.CellScore | None, dict[str, str]]:
    """(the cell the page and plot show first, "layer/state/index"; its score when it is the best cell
    found; {cell: "feature, r = ..."} of every ranked cell, by its best rank)."""
    descriptions: dict[str, str] = {}
    best: features.CellScore | None = None
    for scores in ranking.values():
        for score in scores:
            descriptions.setdefault(score.name, f"{score.feature}, r = {score.correlation:+.3f}")
        if scores and (best is None or abs(scores[0].correlation) > abs(best.correlation)):
            best = scores[0]
    if chosen is not None:
        shown = "/".join(map(str, chosen))
    elif best is not None:
        shown = best.name
    else:  # no feature moves over this text: the last layer's first cell
        shown = f"{found.layers[-1]}/{CELL_STATES[found.cell][-1]}/0"
    return shown, best if best is not None and best.name == shown else None, descriptions


def _cell_values(cell_states: dict[tuple[str, str], np.ndarray], name: str) -> np.ndarray:
    """float32 [N]: the cell "layer/state/index" after each character."""
    layer, state, index = name.split("/")
    return cell_states[layer, state][:, int(index)]


def _activation_png(
    shown: str,
    shown_score: features.CellScore | None,
    cell_states: dict[tuple[str, str], np.ndarray],
    text_features: dict[str, np.ndarray],
    text: str,
) -> bytes:
    """The shown cell over the text's first PLOT_CHARS characters, with its feature when it has one."""
    feature = text_features[shown_score.feature][:PLOT_CHARS] if shown_score else None
    title = shown + (
        f": {features.FEATURES[shown_score.feature]}, r = {shown_score.correlation:+.3f}"
        if shown_score
        else ""
    )
    values = _cell_values(cell_states, shown)[:PLOT_CHARS]
    return figures.activation_png(values, text[:PLOT_CHARS], title, feature)


def _record(
    path: str,
    characters: int,
    skipped: int,
    streams: int,
    seconds: float,
    shown: str,
    ranking: dict[str, list[features.CellScore]],
    stats: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
) -> dict[str, Any]:
    """What ranking.json holds: the inspection's figures, every ranking and every gate's saturation."""
    return {
        "checkpoint": path,
        "characters": characters,
        "skipped_characters": skipped,
        "streams": streams,
        "seconds": seconds,
        "shown": shown,
        "features": features.FEATURES,
        "ranking": {
            name: [dataclasses.asdict(score) for score in scores] for name, scores in ranking.items()
        },
        "gate_saturation": {
            f"{layer}/{gate}": {"left": left.tolist(), "right": right.tolist()}
            for (layer, gate), (left, right) in stats.items()
        },
    }


def _write_report(output_dir: str, contents: dict[str, str | bytes]) -> None:
    """Writes {file name: text or bytes} as the folder output_dir, whole or not at all."""
    with files.replace_folder_atomic(output_dir, prefix=".inspect-") as staging:
        for name, data in contents.items():
            with open(os.path.join(staging, name), "wb") as f:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)


def ranking_markdown(ranking: dict[str, list[features.CellScore]]) -> str:
    """The ranking as a Markdown table (TensorBoard's text dashboard renders it)."""
    lines = ["| feature | rank | cell | r |", "| --- | --- | --- | --- |"]
    for name, scores in ranking.items():
        if not scores:
            lines.append(f"| {name} | - | constant over the text | - |")
        lines += [
            f"| {name} | {rank} | {s.name} | {s.correlation:+.3f} |" for rank, s in enumerate(scores, 1)
        ]
    return "\n".join(lines)


def _write_tensorboard(
    train_dir: str,
    checkpoint: str,
    ranking: dict[str, list[features.CellScore]],
    saturation_png: bytes,
    activation_png: bytes,
) -> None:
    """The figures as images and the ranking as text in TRAIN_DIR/logs/inspect, at the checkpoint's step."""
    match = re.search(r"-(\d+)$", checkpoint)
    step = int(match[1]) if match else 0
    writer = tf.summary.create_file_writer(layout.log_dir(train_dir, TENSORBOARD_SPLIT))
    with writer.as_default(step=step):
        tf.summary.image("inspect/gate_saturation", tf.image.decode_png(saturation_png, channels=4)[None])
        tf.summary.image("inspect/cell_activation", tf.image.decode_png(activation_png, channels=4)[None])
        tf.summary.text("inspect/ranking", ranking_markdown(ranking))
    writer.close()
