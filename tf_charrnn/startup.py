"""TensorFlow started without its start-up noise: the commands' own lines come first.

TensorFlow 2.21 writes its C++ start-up lines through absl before absl's logging is initialised, so
TF_CPP_MIN_LOG_LEVEL does not reach them: on a CPU-only machine the oneDNN and CUDA-driver notices
(twice), the CPU-feature notice and an `E0000 ... failed call to cuInit` line. They are caught at the
file-descriptor level while TensorFlow is imported and looks for GPUs, and every line that is not one of
those notices is written out again. TensorFlow's Python INFO lines (one `Sharding callback duration` per
checkpoint, logged through absl) are held back too. A user who sets TF_CPP_MIN_LOG_LEVEL (e.g. =0) sees
everything as TensorFlow prints it.
"""

import contextlib
import logging
import os
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


def import_tensorflow() -> None:
    """Imports TensorFlow and lets it find its devices, writing to stderr only the start-up lines that
    matter, with TensorFlow's C++ INFO and WARNING lines off (TF_CPP_MIN_LOG_LEVEL=2). Where the user set
    TF_CPP_MIN_LOG_LEVEL, or TensorFlow is already imported, it changes nothing."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
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
