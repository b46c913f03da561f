"""The TF_CONFIG environment variable a --strategy=multi_worker launch reads, checked without TensorFlow
(so that train.py refuses a missing or malformed one before TensorFlow loads)."""

import json
import os

from tf_charrnn.errors import UserError, flag

_EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'


def check_tf_config() -> None:
    """Raises UserError unless TF_CONFIG is JSON with a cluster and this worker's task."""
    raw = os.environ.get("TF_CONFIG", "")
    try:
        tf_config = json.loads(raw) if raw else None
    except json.JSONDecodeError as error:
        raise UserError(f"TF_CONFIG is not valid JSON ({error}); set it like {_EXAMPLE}") from None
    if not isinstance(tf_config, dict) or "cluster" not in tf_config or "task" not in tf_config:
        raise UserError(
            f"{flag('strategy')}=multi_worker needs TF_CONFIG with a cluster and this worker's task; "
            f"set it like {_EXAMPLE}"
        )
