"""What a sampler reads and writes, with no TensorFlow (sample.py checks them before it loads): the prime
file, the prime and stop string against a run's vocabulary, and the samples as printed or written."""

import os
from collections.abc import Sequence

from tf_charrnn import files
from tf_charrnn.data import sources
from tf_charrnn.data.vocab import Vocab
from tf_charrnn.errors import UserError, flag


def read_prime_file(path: str) -> str:
    """The text of a prime file (UTF-8; its last newline is kept, as it is part of the prime).

    Raises:
      UserError: the file is missing, a folder, empty or not UTF-8.
    """
    if not os.path.isfile(path):
        what = "is a folder" if os.path.isdir(path) else "does not exist"
        raise UserError(f"{flag('prime_file')} {path} {what}; pass a UTF-8 text file")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise sources.not_utf8_error("prime_file", path, error) from None
    if not text:
        raise UserError(f"{flag('prime_file')} {path} is empty; pass a file with at least one character")
    return text


def check_prime(vocab: Vocab, prime: str, stop_at: str = "") -> None:
    """Raises UserError when `prime` is empty, or `prime` or `stop_at` has characters outside `vocab`."""
    unknown = vocab.unknown_chars(prime)
    if unknown:
        raise UserError(
            f"{flag('prime')} has characters outside the run's vocabulary: {unknown!r}; "
            f"remove them or train on a corpus that has them"
        )
    if not prime:
        raise UserError(f"{flag('prime')} must hold at least one character (the default is a newline)")
    unknown = vocab.unknown_chars(stop_at)
    if unknown:
        raise UserError(
            f"{flag('stop_at')} has characters outside the run's vocabulary: {unknown!r}; it could never "
            f"be generated: pass a string of the run's characters"
        )


def check_output_path(path: str) -> None:
    """Raises UserError when samples cannot be written to `path` (a folder, or in a folder not writable)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UserError(f"{flag('output')} {path} is a folder; pass a file path")
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise UserError(
            f"{flag('output')} {path}: cannot write in {existing}; pass a path in a writable folder"
        )


def format_samples(prime: str, texts: Sequence[str]) -> str:
    """The samples as sample.py prints them: each after its prime and followed by a newline; several
    headed by '--- sample N ---' lines."""
    if len(texts) == 1:
        return prime + texts[0] + "\n"
    return "".join(f"--- sample {index} ---\n{prime}{text}\n" for index, text in enumerate(texts, 1))


def write_samples(path: str, prime: str, texts: Sequence[str]) -> None:
    """Writes the samples (see `format_samples`) to `path` atomically: a reader, or a crash, sees the old
    file or the whole new one, never a part."""
    files.write_atomic(path, format_samples(prime, texts))
