"""Generates text from a trained run: scripts/sample.py --train_dir=runs/shakespeare_cpu --prime="ROMEO:".

Without --stream the whole text comes from one compiled call; with it, characters print as they come.
The same --seed prints the same text either way, --stop_at included. --prime_file=FILE reads the prime
from a file; --output=FILE writes the samples there (atomically) instead of printing them.
"""

import sys
from typing import TYPE_CHECKING, Any

from absl import logging

from tf_charrnn import startup
from tf_charrnn.cli import flags
from tf_charrnn.config import SampleConfig
from tf_charrnn.errors import UserError
from tf_charrnn.inference import sample_text
from tf_charrnn.run import layout

if TYPE_CHECKING:  # imported in main, once the flags are valid
    from tf_charrnn.data.vocab import Vocab
    from tf_charrnn.inference import sampling


def _stream(
    sampler: "sampling.Sampler", vocab: "Vocab", prime: str, config: SampleConfig, options: dict[str, Any]
) -> list[str]:
    """Prints a single sample as it is generated (unless it goes to --output) and returns the samples."""
    steps = sampler.stream(vocab, prime, config.length, **options)
    columns: list[list[str]] = [[] for _ in range(config.num_samples)]
    printing = config.num_samples == 1 and not config.output
    if printing:
        sys.stdout.write(prime)
    for chars in steps:
        for column, char in zip(columns, chars, strict=True):
            column.append(char)
        if printing:
            sys.stdout.write(chars[0])
            sys.stdout.flush()
    if printing:
        sys.stdout.write("\n")
    return ["".join(column) for column in columns]


def main(argv: list[str]) -> None:
    del argv  # flags.run refuses positional arguments
    config = flags.config_from_flags(SampleConfig)
    if config.prime_file and "prime" in flags.given_values(SampleConfig):
        raise UserError("pass --prime or --prime_file, not both")
    _, run_vocab = layout.load_run(config.train_dir)
    prime = sample_text.read_prime_file(config.prime_file) if config.prime_file else config.prime
    sample_text.check_prime(run_vocab, prime, config.stop_at)
    if config.output:
        sample_text.check_output_path(config.output)
    layout.check_checkpoint_present(config.train_dir, config.checkpoint, config.best)
    # Imported once the flags, the run directory's files, the prime, the output path and the checkpoint's
    # files are valid: those faults are refused before TensorFlow loads (seconds).
    startup.import_tensorflow(for_command=True)
    from tf_charrnn.inference import sampling
    from tf_charrnn.runtime import placement

    placement.grow_gpu_memory()
    sampler, vocab = sampling.load_sampler(
        config.train_dir,
        config.checkpoint,
        config.best,
        fused_kernels=placement.fused_kernels_apply(),
        step_precision=config.step_precision,
    )
    logging.info("Each character steps on %s", sampler.model.step_implementation(config.step_precision))
    options: dict[str, Any] = dict(
        decoding=sampling.Decoding.of(config), num_samples=config.num_samples, stop_at=config.stop_at
    )
    if config.stream:
        texts = _stream(sampler, vocab, prime, config, options)
        printed = config.num_samples == 1 and not config.output
    else:
        texts = sampler.generate(vocab, prime, config.length, **options)
        printed = False
    if config.output:
        sample_text.write_samples(config.output, prime, texts)
        logging.info("Wrote %d sample(s) to %s", len(texts), config.output)
    elif not printed:
        sys.stdout.write(sample_text.format_samples(prime, texts))
        sys.stdout.flush()


def run() -> None:
    flags.define_flags(SampleConfig)
    flags.run(main)
