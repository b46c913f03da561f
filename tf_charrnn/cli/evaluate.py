"""Scores a trained run's checkpoint on a text: scripts/evaluate.py --train_dir=runs/shakespeare_cpu.

Without --data_path it scores the run's own validation split; prints nats, bits and perplexity per
character on one line (one JSON line with --json).
"""

import dataclasses
import json
import os
from typing import TYPE_CHECKING

from tf_charrnn import startup
from tf_charrnn.cli import flags
from tf_charrnn.config import EvaluateConfig
from tf_charrnn.data import corpus_files
from tf_charrnn.inference import scored_text
from tf_charrnn.run import layout

if TYPE_CHECKING:  # imported in main, once the flags are valid
    from tf_charrnn.inference import scoring


def _characters(count: int) -> str:
    return f"{count:,} character" + ("" if count == 1 else "s")


def _human_line(result: "scoring.Evaluation") -> str:
    line = (
        f"{os.path.basename(result.checkpoint)} | {_characters(result.characters)} | "
        f"{result.nats_per_char:.4f} nats/char | {result.bits_per_char:.4f} bits/char | "
        f"perplexity {result.perplexity:.3f}"
    )
    if result.skipped_characters:
        line += f" | {_characters(result.skipped_characters)} left out"
    return line


def main(argv: list[str]) -> None:
    del argv  # flags.run refuses positional arguments
    config = flags.config_from_flags(EvaluateConfig)
    run_config, vocab = layout.load_run(config.train_dir)
    if config.data_path:
        corpus_files.check_names(config.data_path)
    layout.check_checkpoint_present(config.train_dir, config.checkpoint, config.best)
    text = scored_text.read_scored(
        run_config,
        vocab,
        config.train_dir,
        config.data_path,
        config.skip_unknown,
        config.split,
        config.reset_every,
    )
    # Imported once the flags, the run directory's files, the text and the checkpoint's files are valid:
    # those faults are refused before TensorFlow loads (seconds).
    startup.import_tensorflow(for_command=True)
    from tf_charrnn.inference import scoring
    from tf_charrnn.runtime import placement

    placement.grow_gpu_memory()
    result = scoring.evaluate_run(
        config.train_dir,
        config.checkpoint,
        config.best,
        config.data_path,
        config.skip_unknown,
        config.split,
        config.reset_every,
        config.step_precision,
        text,
    )
    if config.json:
        print(json.dumps(dataclasses.asdict(result)))
    else:
        print(_human_line(result))


def run() -> None:
    flags.define_flags(EvaluateConfig)
    flags.run(main)
