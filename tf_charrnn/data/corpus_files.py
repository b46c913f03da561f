"""Which files make a corpus and what identifies it: --data_path as a file, a folder (every text file
below it), a glob, or a comma-separated list of these, joined with a document separator.

A file named on its own must be UTF-8 text; files found in a folder or by a glob that are binary or not
UTF-8 are skipped (one warning counts them). The identity: every file's name and SHA-256 (so that a
changed file can be named), and one SHA-256 over them and the separator (for one file: the file's).
"""

import codecs
import dataclasses
import glob
import hashlib
import json
import os
from collections.abc import Sequence

from absl import logging

from tf_charrnn.data import sources
from tf_charrnn.errors import UserError, flag

_READ_BYTES = 1 << 20
_NAMES_LISTED = 5  # in a warning or an error, the first few names of a long list


@dataclasses.dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus."""

    path: str  # where it is read
    name: str  # its path below the folder or glob root it was found under; its file name if named alone
    sha256: str  # of its bytes
    size: int  # its bytes


@dataclasses.dataclass(frozen=True)
class CorpusListing:
    """The files of a corpus, in order, and the identity of their joined text."""

    files: tuple  # CorpusFile, in the order they are joined
    separator: str  # written between two files
    sha256: str  # one file: the file's SHA-256; several: that of the separator and `manifest()`
    size: int  # bytes of the joined text
    skipped: tuple  # paths found in folders or by globs that are binary or not UTF-8

    def manifest(self) -> tuple[str, ...]:
        """One 'SHA256  NAME' line per file, as `sha256sum` prints them (recorded in config.json)."""
        return tuple(f"{file.sha256}  {file.name}" for file in self.files)


def list_corpus(data_path: str, separator: str = "\n\n") -> CorpusListing:
    """The files `data_path` names, checked and hashed (each file is read once, a chunk at a time).

    Args:
      data_path: a file, a folder (every file below it, recursively, in sorted path order; names
        starting with "." are left out), a glob (`*`, `?`, `[...]`, `**`; its matches in sorted order),
        or a comma-separated list of these (in the order given).
      separator: the text written between two files.

    Returns:
      CorpusListing.
    Raises:
      UserError: a path that does not exist, a glob matching nothing, a named file that is empty or not
        UTF-8 (with the byte offset), or no text at all.
    """
    files, skipped = [], []
    for path, name, named in _candidates(data_path):
        scanned = _scan(path, named)
        if scanned is None:
            skipped.append(path)
        elif scanned[1]:  # an empty file found in a folder adds nothing (a named one was refused)
            files.append(CorpusFile(path, name, *scanned))
    if skipped:
        logging.warning(
            "--data_path %s: skipped %d file(s) that are binary or not UTF-8: %s",
            data_path,
            len(skipped),
            _first_names(skipped),
        )
    if not files:
        raise _no_text_error(data_path, skipped)
    size = sum(file.size for file in files) + (len(files) - 1) * len(separator.encode("utf-8"))
    listing = CorpusListing(tuple(files), separator, files[0].sha256, size, tuple(skipped))
    if len(files) > 1:
        identity = json.dumps({"separator": separator, "files": listing.manifest()}, ensure_ascii=False)
        listing = dataclasses.replace(listing, sha256=hashlib.sha256(identity.encode("utf-8")).hexdigest())
    return listing


def check_names(data_path: str) -> None:
    """The checks of `list_corpus` that read no file's contents (every path exists, every glob matches, a
    named file is not empty, some file is found): a command runs them before it imports TensorFlow, so
    that a mistyped path is refused at once.

    Raises:
      UserError: as `list_corpus`.
    """
    candidates = _candidates(data_path)
    for path, _, named in candidates:
        if named and os.path.getsize(path) == 0:
            raise _empty_error(path)
    if not candidates:
        raise _no_text_error(data_path, [])


def _candidates(data_path: str) -> list[tuple[str, str, bool]]:
    """[(path, name, named alone)] of every file `data_path` names, each once, in order."""
    candidates = []
    for part in _parts(data_path):
        candidates += _expand(part)
    return list(dict.fromkeys(candidates))


def _no_text_error(data_path: str, skipped: Sequence[str]) -> UserError:
    also = f" ({len(skipped)} skipped as binary or not UTF-8: {_first_names(skipped)})" if skipped else ""
    return UserError(
        f"{flag('data_path')} {data_path} holds no UTF-8 text{also}; pass a folder or glob with text "
        f"files, or convert them, e.g. iconv -f LATIN1 -t UTF-8"
    )


def _empty_error(path: str) -> UserError:
    return UserError(f"{flag('data_path')} {path} is empty; pass a UTF-8 text file with some text")


def _parts(data_path: str) -> list[str]:
    """The comma-separated parts of `data_path` (a path that exists is one part, commas and all)."""
    if os.path.exists(data_path):
        return [data_path]
    parts = [part.strip() for part in data_path.split(",") if part.strip()]
    if not parts:
        raise UserError(
            f"{flag('data_path')} {data_path!r} names no file; pass a UTF-8 text file, a folder or a glob"
        )
    return parts


def _expand(part: str) -> list[tuple[str, str, bool]]:
    """[(path, name, named alone)] of one part of --data_path."""
    if os.path.isfile(part):
        return [(part, os.path.basename(part), True)]
    if os.path.isdir(part):
        return _folder_files(part, part)
    if glob.has_magic(part):
        matches = sorted(glob.glob(part, recursive=True))
        if not matches:
            raise UserError(
                f"{flag('data_path')} {part} matches no files; check the pattern (and quote it, so that the "
                f"shell does not expand it)"
            )
        root = _glob_root(part)
        found = []
        for match in matches:
            if os.path.isdir(match):
                found += _folder_files(match, root)
            elif os.path.isfile(match):
                found.append((match, os.path.relpath(match, root), False))
        return found
    raise UserError(
        f"{flag('data_path')} {part} does not exist; pass a UTF-8 text file, a folder, a glob or a "
        f"comma-separated list of them"
    )


def _glob_root(pattern: str) -> str:
    """The folder a glob's matches are named relative to: its leading components without wildcards."""
    head = pattern
    while glob.has_magic(head):
        head = os.path.dirname(head)
    return head or "."


def _folder_files(folder: str, root: str) -> list[tuple[str, str, bool]]:
    """Every file below `folder`, in sorted order of its path components (the same on any filesystem),
    names starting with "." left out; each named relative to `root`."""
    found = []
    for current, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            path = os.path.join(current, name)
            if not name.startswith(".") and os.path.isfile(path):
                found.append(os.path.relpath(path, root))
    found.sort(key=lambda relative: relative.split(os.sep))
    return [(os.path.join(root, relative), relative, False) for relative in found]


def _scan(path: str, named: bool) -> tuple[str, int] | None:
    """Reads a file once: (its SHA-256, its size), or None when a found (not named) file is binary (holds
    a NUL byte) or not UTF-8.

    Raises:
      UserError: a named file is empty or not UTF-8 (with the byte offset and line).
    """
    digest, size, lines = hashlib.sha256(), 0, 0
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_READ_BYTES)
            pending = decoder.getstate()[0]  # the bytes of a character the last chunk cut
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                if not named:
                    return None
                # error.object: the bytes of the cut character, then this chunk.
                raise sources.not_utf8_error("data_path", path, error, size - len(pending), lines) from None
            if not chunk:
                break
            if not named and b"\x00" in chunk:
                return None
            digest.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
    if named and size == 0:
        raise _empty_error(path)
    return digest.hexdigest(), size


def _first_names(paths: Sequence[str]) -> str:
    listed = ", ".join(paths[:_NAMES_LISTED])
    return listed + (f" and {len(paths) - _NAMES_LISTED} more" if len(paths) > _NAMES_LISTED else "")


def describe_changes(recorded: Sequence[str], current: Sequence[str]) -> str:
    """What changed between two manifests (`CorpusListing.manifest` lines): e.g. 'edited: a.txt; added:
    b.txt', the first few names of each kind; '' when the file lists and contents are equal."""
    before = dict(line.split("  ", 1)[::-1] for line in recorded)
    after = dict(line.split("  ", 1)[::-1] for line in current)
    kinds = (
        ("edited", [name for name in after if name in before and before[name] != after[name]]),
        ("added", [name for name in after if name not in before]),
        ("removed", [name for name in before if name not in after]),
    )
    described = "; ".join(f"{kind}: {_first_names(names)}" for kind, names in kinds if names)
    if not described and list(recorded) != list(current):
        described = "the files are in another order"
    return described
