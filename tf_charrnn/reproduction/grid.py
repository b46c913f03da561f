"""The grid of runs behind a paper's table: one ordinary run directory per cell under the grid's folder,
trained (or resumed) in turn and scored on the held-out test split; a cell with its result is done."""

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from typing import Any

from absl import logging

from tf_charrnn import files
from tf_charrnn.config import ReproduceConfig, RunConfig
from tf_charrnn.data.splits import Splits, load_splits, num_stream_batches
from tf_charrnn.errors import UserError, flag
from tf_charrnn.reproduction import ngram, paper

GRID_FILE = "grid.json"  # what the folder's grid is: a folder of another grid is refused
RESULT_FILE = "result.json"  # in a cell's run directory: the cell is finished
NGRAM_FILE = "ngram.json"


class GridStopped(Exception):
    """A signal stopped a cell's training (its checkpoint is saved: re-running continues it)."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(f"stopped by signal {signal_number}")
        self.signal_number = signal_number


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    cell: str
    num_layers: int
    rnn_units: int

    @property
    def name(self) -> str:
        return f"{self.cell}_{self.num_layers}x{self.rnn_units}"


def grid_cells(config: ReproduceConfig) -> list[Cell]:
    """The cells `config` asks for, cell type by cell type, then layers, then size."""
    table = paper.TABLES[config.table]
    return [
        Cell(cell, layers, units)
        for cell in config.cells.split(",")
        for layers in config.layer_counts()
        for units in config.unit_counts(table.sizes)
    ]


def _identity(config: ReproduceConfig, protocol: Mapping[str, Any], splits: Splits) -> dict[str, Any]:
    return {"table": config.table, "corpus_sha256": splits.corpus_sha256, "protocol": dict(protocol)}


def claim_out_dir(config: ReproduceConfig, protocol: Mapping[str, Any], splits: Splits) -> None:
    """Writes the grid's identity into out_dir, or checks the one there.

    Raises:
      UserError: out_dir holds other files, or another table, corpus or protocol.
    """
    path = os.path.join(config.out_dir, GRID_FILE)
    identity = _identity(config, protocol, splits)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as file:
            if json.load(file) != identity:
                raise UserError(
                    f"{flag('out_dir')}={config.out_dir} holds a grid of another table, corpus or protocol; "
                    f"pass an empty or new {flag('out_dir')}"
                )
        return
    if os.path.isdir(config.out_dir) and os.listdir(config.out_dir):
        raise UserError(
            f"{flag('out_dir')}={config.out_dir} is not empty and holds no grid; pass an empty or new "
            f"{flag('out_dir')}"
        )
    files.make_folders(config.out_dir)
    files.write_atomic(path, json.dumps(identity, indent=1, sort_keys=True))


def cell_config(config: ReproduceConfig, protocol: Mapping[str, Any], cell: Cell) -> dict[str, Any]:
    """The flat settings of a cell's run: the protocol's, the cell's model and the step cap."""
    values = {
        **protocol,
        "data_path": os.path.abspath(config.corpus),
        "train_dir": os.path.join(config.out_dir, cell.name),
        "cell": cell.cell,
        "num_layers": cell.num_layers,
        "rnn_units": cell.rnn_units,
    }
    if config.max_steps:
        values["max_steps"] = config.max_steps
    if config.mixed_precision:
        values["mixed_precision"] = config.mixed_precision
    return values


def _read_json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as file:
        result: dict[str, Any] = json.load(file)
    return result


def run_cell(values: Mapping[str, Any], steps_per_epoch: int, protocol_steps: int) -> dict[str, Any]:
    """Trains (or resumes) one cell and scores its best checkpoint on the test split. A cell with a
    result is not run again, unless that result was capped below the steps asked for now: then it trains
    on from its last checkpoint. `protocol_steps`: the protocol's length, uncapped.

    Returns:
      {"test_loss", "step", "epochs", "protocol_steps", "capped", "wall_s"}; wall_s sums every training
      call of the cell.
    """
    from tf_charrnn.inference import scoring
    from tf_charrnn.run import resume
    from tf_charrnn.training import trainer

    train_dir = values["train_dir"]
    result_path = os.path.join(train_dir, RESULT_FILE)
    earlier_s = 0.0
    if os.path.isfile(result_path):
        result = _read_json(result_path)
        wanted = min(values.get("max_steps") or protocol_steps, protocol_steps)
        if not result["capped"] or result["step"] >= wanted:
            return result
        earlier_s = result["wall_s"]  # capped lower before: train on to the new cap
    config = resume.config_to_train(RunConfig.from_flat(values), values)
    start = time.monotonic()
    trained = trainer.train(config)
    wall_s = earlier_s + time.monotonic() - start
    if trained.stopped_by_signal:
        raise GridStopped(trained.stopped_by_signal)
    evaluation = scoring.evaluate_run(train_dir, best=config.layout.val_fraction > 0, split="test")
    result = {
        "test_loss": evaluation.nats_per_char,
        "step": trained.step,
        "epochs": trained.step / steps_per_epoch,
        "protocol_steps": protocol_steps,
        "capped": trained.step < protocol_steps and not trained.stopped_early,
        "wall_s": wall_s,
    }
    files.write_atomic(result_path, json.dumps(result, indent=1, sort_keys=True))
    return result


def run_ngram(config: ReproduceConfig, splits: Splits) -> dict[str, Any]:
    """The paper's n-gram baseline on the same splits (cached in out_dir)."""
    path = os.path.join(config.out_dir, NGRAM_FILE)
    if os.path.isfile(path):
        return _read_json(path)
    order = paper.TABLES[config.table].ngram_order
    start = time.monotonic()
    model = ngram.KneserNey(splits.train_ids, len(splits.vocab.chars), order)
    result = {"order": order, "test_loss": model.nats_per_char(splits.test_ids)}
    result["wall_s"] = time.monotonic() - start
    files.write_atomic(path, json.dumps(result, indent=1, sort_keys=True))
    return result


def run_grid(config: ReproduceConfig, protocol: Mapping[str, Any]) -> dict[str, Any]:
    """Runs every cell of the grid (finished ones are read back) and the n-gram baseline.

    Args:
      config: ReproduceConfig.
      protocol: {flat RunConfig field: value} of the runs (the --protocol flagfile's settings).

    Returns:
      {"cells": {cell name: run_cell's result}, "ngram": run_ngram's result}.
    Raises:
      GridStopped: a signal stopped training (re-running continues).
      UserError: a missing corpus, a protocol without a test split, or an out_dir of another grid.
    """
    if not os.path.isfile(config.corpus):
        raise UserError(f"{flag('corpus')}={config.corpus} is no file; pass the corpus file's path")
    base = RunConfig.from_flat({**protocol, "data_path": config.corpus})
    if base.layout.test_fraction <= 0:
        raise UserError(f"the protocol {config.protocol} sets no test split; add {flag('test_fraction')}")
    splits = load_splits(base.data, base.layout, publish=False)
    try:
        claim_out_dir(config, protocol, splits)
    except BaseException:
        splits.discard_cache()  # a refused grid leaves no cache entry
        raise
    splits.publish_cache()
    steps_per_epoch = num_stream_batches(
        len(splits.train_ids), base.layout.batch_size, base.layout.seq_length
    )
    results: dict[str, Any] = {"cells": {}, "ngram": run_ngram(config, splits)}
    for cell in grid_cells(config):
        logging.info("Cell %s", cell.name)
        values = cell_config(config, protocol, cell)
        results["cells"][cell.name] = run_cell(
            values, steps_per_epoch, base.length.total_steps(steps_per_epoch)
        )
    return results
