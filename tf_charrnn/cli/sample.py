"""Generates text from a trained run: scripts/sample.py --train_dir=runs/shakespeare_cpu --prime="ROMEO:".

Without --stream the whole text comes from one compiled call; with it, characters print as they come.
The same --seed prints the same text either way.
"""

import sys

from tf_charrnn.cli import flags
from tf_charrnn.config import SampleConfig


def _stream(sampler, vocab, config, options):
    """Prints a single sample as it is generated; collects several and returns them to print after."""
    steps = sampler.stream(vocab, config.prime, config.length, **options)
    if config.num_samples > 1:
        columns = [[] for _ in range(config.num_samples)]
        for chars in steps:
            for column, char in zip(columns, chars, strict=True):
                column.append(char)
        return ["".join(column) for column in columns]
    sys.stdout.write(config.prime)
    for chars in steps:
        sys.stdout.write(chars[0])
        sys.stdout.flush()
    sys.stdout.write("\n")
    return []


def main(argv):
    del argv  # flags.run refuses positional arguments
    config = flags.config_from_flags(SampleConfig)
    # Imported once the flags are valid: a bad flag is refused before TensorFlow loads (seconds).
    from tf_charrnn import runtime, sampling

    runtime.grow_gpu_memory()
    sampler, vocab = sampling.load_sampler(
        config.train_dir, config.checkpoint, config.best, fused_kernels=runtime.fused_kernels_apply()
    )
    options = dict(
        num_samples=config.num_samples,
        seed=config.seed,
        mode=config.sampling,
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
    )
    if config.stream:
        texts = _stream(sampler, vocab, config, options)
    else:
        texts = sampler.generate(vocab, config.prime, config.length, **options)
    for index, text in enumerate(texts):
        if config.num_samples > 1:
            sys.stdout.write(f"--- sample {index + 1} ---\n")
        sys.stdout.write(config.prime + text + "\n")
    sys.stdout.flush()


def run():
    flags.define_flags(SampleConfig)
    flags.run(main)
