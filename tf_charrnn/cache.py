"""The integrity of the cache folder's derived files (the id cache and its vocabulary, the compiled kernels):
each is put in place with a record of its size and content hash beside it, and checked against that
record before every use; a file that fails is rebuilt, or named in a one-line error where it cannot be.

A record is FILE.record.json: {"size": bytes, "sha256_blocks": the SHA-256 of the SHA-256 digests of
the file's 16 MiB blocks}. The blocks are hashed on every core at once (hashlib releases the GIL), so
checking a 1 GB id cache takes a fraction of a second. Builders write into a temporary file in the same
folder and `publish` it; two processes building one entry at once both publish complete, equal files
(the folder's lock orders their renames and records), so neither ever reads a half-written one.
"""

import concurrent.futures
import contextlib
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import TypeGuard

from absl import logging

from tf_charrnn import files
from tf_charrnn.errors import UserError

BLOCK_BYTES = 1 << 24
_READ_ONLY_ERRNOS = (errno.EACCES, errno.EROFS, errno.EPERM)


def record_path(path: str) -> str:
    """Where the size and content hash of cache file `path` are recorded."""
    return path + ".record.json"


def content_digest(path: str) -> tuple[str, int]:
    """The hex SHA-256 of the SHA-256 digests of `path`'s BLOCK_BYTES blocks (hashed in parallel).

    Returns:
      (hex digest, size in bytes).
    """
    size = os.path.getsize(path)
    starts = range(0, size, BLOCK_BYTES)
    fd = os.open(path, os.O_RDONLY)
    try:

        def block_digest(start: int) -> str:
            return files.sha256_hex(os.pread(fd, BLOCK_BYTES, start))

        workers = min(len(starts), os.cpu_count() or 1, 16) or 1
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            digests = list(pool.map(block_digest, starts))
    finally:
        os.close(fd)
    return files.sha256_hex(bytes.fromhex("".join(digests))), size


def write_record(path: str) -> None:
    """Records the size and content hash of `path` beside it (durably)."""
    digest, size = content_digest(path)
    files.write_atomic(record_path(path), json.dumps({"size": size, "sha256_blocks": digest}))


def problem(path: str) -> str | None:
    """What is wrong with cache file `path`, or None when it matches its record.

    Returns:
      None (good), "absent" (neither the file nor its record exists: never built), or a phrase for
      "{path} {phrase}", e.g. "is 100 bytes but was written with 2,000 (truncated or overwritten)".
    """
    record_file = record_path(path)
    if not os.path.isfile(path):
        return "absent" if not os.path.exists(record_file) else "is missing (its record is there)"
    try:
        with open(record_file, encoding="utf-8") as f:
            record = json.load(f)
        size, digest = int(record["size"]), str(record["sha256_blocks"])
    except FileNotFoundError:
        name = os.path.basename(record_file)
        return f"has no record of its size and hash ({name}; written by an older version, or cut short)"
    except (OSError, ValueError, TypeError, KeyError) as error:
        return f"has an unreadable record {os.path.basename(record_file)} ({type(error).__name__})"
    actual_size = os.path.getsize(path)
    if actual_size != size:
        return f"is {actual_size:,} bytes but was written with {size:,} (truncated or overwritten)"
    if content_digest(path)[0] != digest:
        return "has changed since it was written (its content hash differs from its record)"
    return None


_held_folders: set[str] = (
    set()
)  # the folders whose lock this process holds (the lock is per process, reentrant)


@contextlib.contextmanager
def folder_lock(folder: str) -> Iterator[None]:
    """Holds an exclusive flock on `folder` itself (no lock file), ordering the processes that build or
    publish into it; reentrant within a process. Where the folder is absent or its filesystem has no
    flock, holds nothing."""
    folder = os.path.realpath(folder)
    if folder in _held_folders:
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        _held_folders.add(folder)
        yield
    finally:
        _held_folders.discard(folder)
        os.close(fd)  # drops the flock


def check_before_use(path: str, what: str, source: str) -> bool:
    """Checks cache file `path` against its record: True when it may be used; False when it must be built,
    having logged one warning naming it when it was there but damaged.

    Args:
      path: the cache file.
      what: what it is, for the messages ("the id cache").
      source: what it is rebuilt from, for the warning ("corpus.txt").
    Raises:
      UserError: it is damaged and its folder is read-only, so it cannot be rebuilt: the line says
        which files to delete.
    """
    found = problem(path)
    if found is None:
        return True
    with folder_lock(os.path.dirname(path)):  # a publisher between its rename and its record: wait
        found = problem(path)
    if found is None:
        return True
    if found != "absent":
        if not writable(os.path.dirname(path)):
            raise damaged_and_read_only(path, what, found)
        logging.warning("%s %s %s; rebuilding it from %s", what.capitalize(), path, found, source)
    return False


def writable(folder: str) -> bool:
    """Whether a file may be created in `folder` (the nearest existing folder above it, when absent)."""
    while not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            return False
        folder = parent
    return os.access(folder, os.W_OK)


def damaged_and_read_only(path: str, what: str, found: str) -> UserError:
    """The UserError for a damaged cache file that cannot be rebuilt in place."""
    folder = os.path.dirname(path)
    return UserError(
        f"{what} {path} {found}, and {folder} is read-only, so it cannot be rebuilt: delete {path} and "
        f"{record_path(path)} (or make {folder} writable), or set TF_CHARRNN_CACHE to another folder"
    )


def cannot_write(folder: str, error: OSError) -> UserError:
    """The UserError for a cache folder where nothing can be written (read-only or not ours)."""
    return UserError(
        f"cannot write in the cache folder {folder} ({error.strerror or error}); make it writable, or set "
        f"TF_CHARRNN_CACHE to another folder"
    )


def is_read_only_error(error: BaseException) -> TypeGuard[OSError]:
    return isinstance(error, OSError) and error.errno in _READ_ONLY_ERRNOS


def publish(tmp_path: str, path: str) -> None:
    """Moves the complete, synced temporary file `tmp_path` into place as cache file `path` and records it.

    Under the folder's lock: where another process has meanwhile published a good `path`, `tmp_path` is
    removed instead (the two builds are equal; the first one stays).
    """
    folder = os.path.dirname(path)
    with folder_lock(folder):
        if problem(path) is None:
            os.remove(tmp_path)
            return
        files.fsync_file(tmp_path)
        os.replace(tmp_path, path)
        files.fsync_directory(folder)
        write_record(path)


class Pending:
    """Cache files built into temporary files but not yet in place, so that a run refused before it
    starts leaves the cache folder as it found it: `publish` puts them in place (with their records),
    `discard` removes them and the folders made for them.

    Args:
      folders_made: the folders created to hold the temporary files, deepest last.
    """

    def __init__(self, folders_made: Iterable[str] = ()) -> None:
        self._files: dict[str, str] = {}  # final path -> temporary path
        self._folders_made = list(folders_made)

    def temporary(self, path: str) -> str:
        """A new empty temporary file beside cache file `path`, published as `path`; its path."""
        fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-" + os.path.basename(path))
        os.close(fd)
        self._files[path] = tmp_path
        return tmp_path

    def publish(self) -> None:
        """Puts every file in place, in the order `temporary` made them (the last one completes the entry)."""
        for path, tmp_path in self._files.items():
            publish(tmp_path, path)
        self._files.clear()
        self._folders_made.clear()

    def discard(self) -> None:
        """Removes the temporary files and the folders made for them (where they are empty)."""
        for tmp_path in self._files.values():
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp_path)
        self._files.clear()
        files.remove_empty_folders(self._folders_made)
        self._folders_made.clear()
