"""TensorFlow started without its start-up noise: the commands' own lines come first.

TensorFlow 2.21 writes its C++ start-up lines through absl before absl's logging is initialised, so
TF_CPP_MIN_LOG_LEVEL does not reach them: on a CPU-only machine the CUDA-driver notice (twice), the
oneDNN notice, the CPU-feature notice and an `E0000 ... failed call to cuInit` line. They are caught at
the file-descriptor level while TensorFlow is imported and looks for GPUs, and every line that is not one
of those notices is written out again. TensorFlow's Python INFO lines (one `Sharding callback duration`
per checkpoint, logged through absl) are held back too. A user who sets TF_CPP_MIN_LOG_LEVEL (e.g. =0)
sees everything as TensorFlow prints it.

On x86-64 TensorFlow's oneDNN ops are turned on where the user has not set TF_ENABLE_ONEDNN_OPTS:
TensorFlow does so itself only on AVX-512 CPUs with VNNI, BF16 or AMX, and on AVX2 CPUs its matmuls are
faster with them.

A command also keeps Keras from importing IPython and matplotlib, which Keras 3 imports whenever they
are installed (for notebook display in `keras.saving` and `keras.visualization`'s image galleries, which
no command uses): about 1 s of a command's start where Jupyter or matplotlib is installed.
"""

import contextlib
import importlib.abc
import logging
import os
import platform
import re
import sys
import tempfile
from collections.abc import Iterator

# Start-up lines that say nothing a user acts on. cuInit's failure is noise only where no GPU is found.
_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|\] oneDNN custom operations are on\."
    r"|\] Could not find cuda drivers on your machine"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
    r"|^To enable the following instructions: .* rebuild TensorFlow"
)
_NO_GPU_NOISE = re.compile(r"\] failed call to cuInit: ")


class _TensorFlowInfo(logging.Filter):
    """Holds back INFO lines that TensorFlow's own modules log through absl."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or f"{os.sep}tensorflow{os.sep}" not in record.pathname


@contextlib.contextmanager
def _captured_stderr(lines: list[str]) -> Iterator[None]:
    """Redirects file descriptor 2 (C++ writes there directly) into a temporary file for the block, and
    appends what was written to `lines`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines.extend(capture.read().decode(errors="replace").splitlines(keepends=True))


class _Unimportable(importlib.abc.MetaPathFinder):
    """A finder that answers "not installed" for the given top-level packages."""

    def __init__(self, packages: set[str]) -> None:
        self._packages = packages

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname.partition(".")[0] in self._packages:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@contextlib.contextmanager
def _not_importable(packages: tuple[str, ...]) -> Iterator[None]:
    """Within the block, imports of `packages` (those not yet imported) fail as if they were not installed;
    after it they import as usual (a failed import leaves nothing in sys.modules)."""
    finder = _Unimportable({package for package in packages if package not in sys.modules})
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


# Keras imports these at its own import when they are installed, for features no command uses.
_DISPLAY_PACKAGES = ("IPython", "matplotlib")


def import_tensorflow(for_command: bool = False) -> None:
    """Imports TensorFlow and lets it find its devices, writing to stderr only the start-up lines that
    matter, with TensorFlow's C++ INFO and WARNING lines off (TF_CPP_MIN_LOG_LEVEL=2). Where the user set
    TF_CPP_MIN_LOG_LEVEL, TensorFlow's lines are left as they are. `for_command`: Keras imports neither
    IPython nor matplotlib (a command-line tool's process; in the Python API a user may want Keras' own
    uses of them). Does nothing where TensorFlow is already imported."""
    if "tensorflow" in sys.modules:
        return
    _turn_on_onednn()
    with _not_importable(_DISPLAY_PACKAGES if for_command else ()):
        if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
            import tensorflow  # noqa: F401
        else:
            _import_tensorflow_quietly()


def _turn_on_onednn() -> None:
    """Turns on TensorFlow's oneDNN ops on x86-64 CPUs, unless the user set TF_ENABLE_ONEDNN_OPTS.
    TensorFlow turns them on by itself only where the CPU has AVX512-VNNI, AVX512-BF16 or AMX; on AVX2 CPUs
    (Zen 3) its matmuls then run on Eigen, and the `large` training step was 1.33x faster with oneDNN
    (docs/performance.md, "AVX2 CPUs without AVX-512")."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _import_tensorflow_quietly() -> None:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    lines: list[str] = []
    try:
        with _captured_stderr(lines):
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
    except BaseException:
        sys.stderr.writelines(lines)
        raise
    sys.stderr.writelines(
        line for line in lines if not (_NOISE.search(line) or (not gpus and _NO_GPU_NOISE.search(line)))
    )
    sys.stderr.flush()
    logging.getLogger("absl").addFilter(_TensorFlowInfo())
