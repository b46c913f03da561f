"""The run directory's lock: one training process at a time."""

import contextlib
import fcntl
import os
import socket
import time
from typing import Self

from tf_charrnn import files
from tf_charrnn.errors import UserError, flag
from tf_charrnn.run.layout import lock_path


class RunLock:
    """The run directory's exclusive lock, held by its one trainer for the whole run.

    An advisory lock (flock) on TRAIN_DIR/train.lock: the kernel drops it when its process ends, however
    it ends, so a killed trainer leaves no lock behind. The file names the holder for whoever is refused;
    `release` removes it (and the run directory, where the lock created it and it is still empty).
    Sampling, evaluation and export do not take it.

    Raises:
      UserError: another process holds the lock.
    """

    def __init__(self, train_dir: str) -> None:
        self._folders_made = files.make_folders(train_dir)
        self._path = lock_path(train_dir)
        while True:
            self._fd: int | None = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(self._fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(self._fd)
                files.remove_empty_folders(self._folders_made)
                raise UserError(
                    f"{train_dir} is being trained by {holder} (it holds {self._path}); wait for it to "
                    f"finish or stop it, or use another {flag('train_dir')}"
                ) from None
            # The holder before may have removed the file between our open and our lock: then lock anew.
            try:
                if os.path.samestat(os.fstat(self._fd), os.stat(self._path)):
                    break
            except FileNotFoundError:
                pass
            os.close(self._fd)
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, holder.encode("utf-8"), 0)

    def release(self) -> None:
        if self._fd is not None:
            # Removed while locked: a process that opened this file meanwhile finds it gone and locks anew.
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path)
            os.close(self._fd)  # closing drops the flock
            self._fd = None
            files.remove_empty_folders(self._folders_made)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
