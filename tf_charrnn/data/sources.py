"""A corpus's text at its source: tiny-shakespeare's checked download, and UTF-8 files read in chunks
that never split a character (a corpus of any size streams through a few megabytes)."""

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING

from absl import logging

from tf_charrnn import cache, files
from tf_charrnn.errors import UserError, flag

if TYPE_CHECKING:  # corpus_files reads its files through this module
    from tf_charrnn.data import corpus_files

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_CACHE_PATH = os.path.join("data", "tinyshakespeare", "input.txt")


def download_shakespeare(cache_folder: str) -> str:
    """Returns the path of the cached tiny-shakespeare corpus, downloading and checking it where it is
    absent, or where the file there is not the corpus (a download cut short, an edit: one warning).

    Raises:
      UserError: the download failed or does not match, or a damaged copy is in a read-only cache.
    """
    path = os.path.join(cache_folder, SHAKESPEARE_CACHE_PATH)
    if os.path.isfile(path):
        digest, size = files.sha256_file(path)
        if digest == SHAKESPEARE_SHA256:
            return path
        found = f"is not the tiny-shakespeare corpus ({size:,} bytes, sha256 {digest})"
        if not cache.writable(os.path.dirname(path)):
            raise UserError(
                f"{path} {found}, and its folder is read-only, so it cannot be downloaded again: delete it, "
                f"or set TF_CHARRNN_CACHE to another folder"
            )
        logging.warning("The downloaded corpus %s %s; downloading it again", path, found)
    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response:
            data = response.read()
    except (urllib.error.URLError, OSError) as e:
        raise UserError(
            f"could not download the tiny-shakespeare corpus from {SHAKESPEARE_URL} ({e}); "
            f"save it by hand as {path}, or pass {flag('data_path')}=FILE with any UTF-8 text"
        ) from None
    if files.sha256_hex(data) != SHAKESPEARE_SHA256:
        raise UserError(
            f"the file downloaded from {SHAKESPEARE_URL} does not match sha256 "
            f"{SHAKESPEARE_SHA256}; retry, or pass {flag('data_path')}=FILE"
        )
    files.write_atomic(path, data)
    return path


def _check_text_file(path: str) -> None:
    if os.path.isdir(path):
        raise UserError(f"{flag('data_path')} {path} is a directory; pass a UTF-8 text file")
    if not os.path.isfile(path):
        raise UserError(f"{flag('data_path')} {path} does not exist; pass a UTF-8 text file")
    if os.path.getsize(path) == 0:
        raise UserError(f"{flag('data_path')} {path} is empty; pass a UTF-8 text file with some text")


def not_utf8_error(
    setting: str, path: str, error: UnicodeDecodeError, offset: int = 0, lines: int | None = None
) -> UserError:
    """The UserError for a file that is not UTF-8, naming the byte (and line) where decoding failed.

    Args:
      setting: the flag that named the file ("data_path", "prime_file").
      path: the file.
      error: the UnicodeDecodeError of decoding `error.object`, the file's bytes from byte `offset` on.
      offset: the position of `error.object` in the file.
      lines: the newlines in the file before `offset`; None: the message names no line.
    """
    where = ""
    if lines is not None:
        line = lines + error.object.count(b"\n", 0, error.start) + 1
        where = f"line {line}: "
    return UserError(
        f"{flag(setting)} {path} is not valid UTF-8 at byte {offset + error.start} ({where}{error.reason}); "
        "convert it, e.g. iconv -f LATIN1 -t UTF-8"
    )


def _whole_characters(data: bytes) -> int:
    """The length of the longest prefix of UTF-8 bytes `data` that does not end inside a character."""
    start = len(data) - 1
    while start >= max(0, len(data) - 4) and data[start] & 0xC0 == 0x80:  # continuation bytes
        start -= 1
    if start < 0:
        return len(data)
    lead = data[start]
    length = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4
    return start if start + length > len(data) else len(data)


def read_text_chunks(path: str, chunk_bytes: int = 1 << 22) -> Iterator[str]:
    """Yields a UTF-8 text file as strings of about `chunk_bytes` bytes each, never splitting a character,
    so that a corpus of any size streams through a few megabytes.

    Raises:
      UserError: the file is missing, a directory, empty or not UTF-8 (with the byte offset).
    """
    _check_text_file(path)
    offset, lines, pending = 0, 0, b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(chunk_bytes)
            data = pending + chunk
            if not data:
                return
            cut = _whole_characters(data) if chunk else len(data)
            data, pending = data[:cut], data[cut:]
            try:
                yield data.decode("utf-8")
            except UnicodeDecodeError as error:
                raise not_utf8_error("data_path", path, error, offset, lines) from None
            offset, lines = offset + len(data), lines + data.count(b"\n")


def read_corpus_chunks(listing: "corpus_files.CorpusListing", chunk_bytes: int = 1 << 22) -> Iterator[str]:
    """Yields the joined text of a corpus's files (a corpus_files.CorpusListing) as strings of about
    `chunk_bytes` bytes: each file's chunks (see `read_text_chunks`), the separator between two files."""
    for index, file in enumerate(listing.files):
        if index and listing.separator:
            yield listing.separator
        yield from read_text_chunks(file.path, chunk_bytes)
