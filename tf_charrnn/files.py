"""Atomic, durable file writes, content hashing and the cache location: a crash or a power cut never
leaves a half-written file, and a rename is made durable only after the contents it points at."""

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence

from tf_charrnn.errors import RERUN, UserError, flag

_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_out_of_space(error: BaseException) -> bool:
    """Whether an exception (OSError or a TensorFlow error) reports a full disk or an exceeded quota."""
    if isinstance(error, OSError) and error.errno in _SPACE_ERRNOS:
        return True
    message = str(error)
    return "No space left on device" in message or "Disk quota exceeded" in message


def out_of_space(what: str, directory: str, needed_bytes: float, rerun: str = RERUN) -> UserError:
    """The UserError for a write of `what` into `directory` that found the disk full: how much it needs,
    how much is free, and what to do."""
    free = shutil.disk_usage(directory).free if os.path.isdir(directory) else 0
    return UserError(
        f"no space left on device writing {what} in {directory}: it needs about "
        f"{_megabytes(needed_bytes)}, {_megabytes(free)} free; free some space and {rerun}"
    )


@contextlib.contextmanager
def full_disk_is_user_error(what: str, directory: str, needed_bytes: Callable[[], float]) -> Iterator[None]:
    """Turns a full disk met in the block (OSError or a TensorFlow error) into `out_of_space`'s UserError;
    `needed_bytes()` estimates what the write needs."""
    try:
        yield
    except Exception as error:
        if not is_out_of_space(error):
            raise
        raise out_of_space(what, directory, needed_bytes()) from None


def _megabytes(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:.1f} MB"


def fsync_directory(path: str) -> None:
    """Makes the entries of directory `path` (creations, renames, removals) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    """Makes the contents of file `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str) -> None:
    """Makes every file and folder below `path` (and `path` itself) durable, deepest first."""
    for folder, _, names in os.walk(path, topdown=False):
        for name in names:
            fsync_file(os.path.join(folder, name))
        fsync_directory(folder)


def make_folders(folder: str) -> list[str]:
    """Creates `folder` and its missing parents, like os.makedirs; returns the folders it created,
    outermost first (for `remove_empty_folders`)."""
    made = []
    while folder and not os.path.isdir(folder):  # a relative path ends in "": the current folder
        made.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    made.reverse()
    for path in made:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
    return made


def remove_empty_folders(folders: Sequence[str]) -> None:
    """Removes `folders` (as `make_folders` returned them), deepest first, where they are empty."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def check_output_folder(path: str, flag_name: str, overwrite: bool) -> str:
    """`path` made absolute, once it can be written as a folder: not a file, and empty unless `overwrite`.

    Raises:
      UserError: naming --`flag_name` and the fix.
    """
    folder = os.path.abspath(path)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UserError(f"{flag(flag_name)} {folder} is a file; name a folder")
    if os.path.isdir(folder) and os.listdir(folder) and not overwrite:
        raise UserError(
            f"{flag(flag_name)} {folder} is not empty; pass {flag('overwrite')} to replace it or choose "
            f"another {flag(flag_name)}"
        )
    return folder


def write_atomic(path: str, data: bytes | str) -> None:
    """Writes `data` (bytes or str, UTF-8) to `path` durably: a temporary file, fsync, rename, fsync of
    the folder. Readers see the old file or the new one, never a part; so does a power cut.

    Raises:
      OSError: the write failed (e.g. ENOSPC); no temporary file is left and `path` is unchanged.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path))
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from other users
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise
    fsync_directory(directory)


@contextlib.contextmanager
def replace_folder_atomic(path: str, prefix: str = ".tmp-") -> Iterator[str]:
    """Yields an empty temporary folder beside `path` to fill. When the block completes, the folder
    replaces `path` durably: its files and folders synced before the rename, the parent folder after (an
    existing `path` is moved aside, then removed). When it fails, the folder is removed and `path` is
    left as it was."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=prefix)
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's 0700 would hide an export from other users
    try:
        yield staging
        fsync_tree(staging)
        if os.path.exists(path):
            old = tempfile.mkdtemp(dir=parent, prefix=".replaced-")
            os.replace(path, os.path.join(old, "folder"))
            os.replace(staging, path)
            fsync_directory(parent)
            shutil.rmtree(old)
        else:
            os.replace(staging, path)
        fsync_directory(parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str, chunk_bytes: int = 1 << 22) -> tuple[str, int]:
    """Hex SHA-256 and size in bytes of a file, read `chunk_bytes` at a time.

    Returns:
      (hex digest, size).
    """
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def cache_dir(configured: str = "") -> str:
    """The cache folder: `configured`, else $TF_CHARRNN_CACHE, else ~/.cache/tf_charrnn."""
    return (
        configured
        or os.environ.get("TF_CHARRNN_CACHE")
        or os.path.join(os.path.expanduser("~"), ".cache", "tf_charrnn")
    )
