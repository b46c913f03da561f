"""Atomic file and folder writes, content hashing and the cache location: a crash never leaves a
half-written file or folder."""

import contextlib
import hashlib
import os
import shutil
import tempfile


def write_atomic(path, data):
    """Writes `data` (bytes or str, UTF-8) to `path` through a temporary file and a rename."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


@contextlib.contextmanager
def replace_folder_atomic(path, prefix=".tmp-"):
    """Yields an empty temporary folder beside `path` to fill; when the block completes, the folder
    replaces `path` (an existing one is moved aside, then removed), else it is removed and `path` is left
    as it was."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=prefix)
    try:
        yield staging
        if os.path.exists(path):
            old = tempfile.mkdtemp(dir=parent, prefix=".replaced-")
            os.replace(path, os.path.join(old, "folder"))
            os.replace(staging, path)
            shutil.rmtree(old)
        else:
            os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sha256_hex(data):
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def cache_dir(configured=""):
    """The cache folder: `configured`, else $TF_CHARRNN_CACHE, else ~/.cache/tf_charrnn."""
    return (
        configured
        or os.environ.get("TF_CHARRNN_CACHE")
        or os.path.join(os.path.expanduser("~"), ".cache", "tf_charrnn")
    )
