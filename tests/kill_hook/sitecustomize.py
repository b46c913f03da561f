"""Loaded by test subprocesses through PYTHONPATH: with TF_CHARRNN_KILL_IN_SAVE=N, the process SIGKILLs
itself in the middle of saving checkpoint N, after its files are written and before the
CheckpointManager records it."""

import os
import signal

_KILL_AT = os.environ.get("TF_CHARRNN_KILL_IN_SAVE")
if _KILL_AT:
    from tensorflow.python.checkpoint import checkpoint_management

    _record = checkpoint_management.update_checkpoint_state_internal

    def _kill_before_recording(save_dir, model_checkpoint_path, *args, **kwargs):
        if model_checkpoint_path.endswith(f"ckpt-{_KILL_AT}"):
            os.kill(os.getpid(), signal.SIGKILL)
        return _record(save_dir, model_checkpoint_path, *args, **kwargs)

    checkpoint_management.update_checkpoint_state_internal = _kill_before_recording
