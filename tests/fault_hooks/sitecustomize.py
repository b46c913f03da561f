"""Faults injected into test subprocesses, loaded through PYTHONPATH:

- TF_CHARRNN_KILL_IN_SAVE=N: the process SIGKILLs itself in the middle of saving checkpoint N, after its
  files are written and before the CheckpointManager records it.
- TF_CHARRNN_FULL_DISK_AT=NAME (ckpt-8, best/ckpt-8, ...: that checkpoint; saved_model: a SavedModel
  export): just before it is written, the disk becomes full. With TF_CHARRNN_FILL_FILE=PATH for real:
  PATH (on a small filesystem) grows until the filesystem has no byte left; without it, simulated: the
  write leaves a partial file and raises the error TensorFlow raises on a full disk.
"""

import os
import signal

_KILL_AT = os.environ.get("TF_CHARRNN_KILL_IN_SAVE")
_FULL_DISK_AT = os.environ.get("TF_CHARRNN_FULL_DISK_AT")

if _KILL_AT:
    from tensorflow.python.checkpoint import checkpoint_management

    _record = checkpoint_management.update_checkpoint_state_internal

    def _kill_before_recording(save_dir, model_checkpoint_path, *args, **kwargs):
        if model_checkpoint_path.endswith(f"ckpt-{_KILL_AT}"):
            os.kill(os.getpid(), signal.SIGKILL)
        return _record(save_dir, model_checkpoint_path, *args, **kwargs)

    checkpoint_management.update_checkpoint_state_internal = _kill_before_recording


def _fill(path):
    """Grows `path` until its filesystem has no byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        block = 1 << 20
        while block:
            try:
                os.write(fd, b"\0" * block)
            except OSError:
                block //= 2
    finally:
        os.close(fd)


def _make_the_disk_full(partial_path, simulated_error):
    """Fills the disk for real (TF_CHARRNN_FILL_FILE), or writes `partial_path` and raises."""
    fill_file = os.environ.get("TF_CHARRNN_FILL_FILE")
    if fill_file:
        _fill(fill_file)
        return
    os.makedirs(os.path.dirname(partial_path), exist_ok=True)
    with open(partial_path, "wb") as f:
        f.write(b"\0" * 1000)
    raise simulated_error


if _FULL_DISK_AT:
    import tensorflow as tf

    _save_checkpoint, _save_model = tf.train.CheckpointManager.save, tf.saved_model.save

    def _save_checkpoint_on_a_full_disk(self, checkpoint_number=None, *args, **kwargs):
        prefix = os.path.join(self.directory, f"ckpt-{checkpoint_number}")
        if prefix.endswith(os.path.join("checkpoints", _FULL_DISK_AT)):
            partial = os.path.join(prefix + "_temp", "part-00000-of-00001.data-00000-of-00001.tempstate1")
            error = tf.errors.ResourceExhaustedError(
                None, None, f"{partial}; No space left on device [Op:SaveV2]"
            )
            _make_the_disk_full(partial, error)
        return _save_checkpoint(self, checkpoint_number, *args, **kwargs)

    def _save_model_on_a_full_disk(obj, export_dir, *args, **kwargs):
        if _FULL_DISK_AT == "saved_model":
            partial = os.path.join(export_dir, "saved_model.pb")
            _make_the_disk_full(partial, OSError(28, "No space left on device", partial))
        return _save_model(obj, export_dir, *args, **kwargs)

    tf.train.CheckpointManager.save = _save_checkpoint_on_a_full_disk
    tf.saved_model.save = _save_model_on_a_full_disk
