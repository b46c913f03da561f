"""Atomic file writes, content hashing and the cache location: a crash never leaves a half-written file."""

import hashlib
import os
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
