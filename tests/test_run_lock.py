"""The run directory's lock: held for a run, refused to a second holder, and gone without a trace once
released, so that a refused run leaves nothing."""

import os

import pytest

from tf_charrnn.errors import UserError
from tf_charrnn.run import layout, lock


def test_the_lock_file_lives_only_while_the_lock_is_held(tmp_path):
    train_dir = tmp_path / "runs" / "new"
    with lock.RunLock(str(train_dir)):
        with open(layout.lock_path(str(train_dir))) as f:
            assert f.read().startswith(f"pid {os.getpid()} on ")
        with pytest.raises(UserError, match=f"{train_dir} is being trained by pid {os.getpid()} on "):
            lock.RunLock(str(train_dir))
    assert os.listdir(tmp_path) == []  # the lock file and the folders the lock created are gone
    train_dir.mkdir(parents=True)
    (train_dir / "config.json").write_text("{}")
    with lock.RunLock(str(train_dir)):
        pass
    assert os.listdir(train_dir) == ["config.json"]  # a run's own folder stays


def test_a_lock_file_removed_under_a_waiting_process_is_not_locked_twice(tmp_path, monkeypatch):
    # A second trainer opened train.lock just before its holder released (and removed) it: the file it
    # then locks is no longer the lock, so it must lock the path anew, or a third would lock that.
    train_dir = str(tmp_path)
    first = lock.RunLock(train_dir)
    stale = os.open(layout.lock_path(train_dir), os.O_RDWR)
    first.release()
    opens = iter([lambda *args: stale])
    real_open = os.open
    monkeypatch.setattr(lock.os, "open", lambda *args: next(opens, real_open)(*args))
    second = lock.RunLock(train_dir)
    monkeypatch.undo()
    try:
        assert os.path.samestat(os.fstat(second._fd), os.stat(layout.lock_path(train_dir)))
        with pytest.raises(UserError, match="is being trained by"):
            lock.RunLock(train_dir)
    finally:
        second.release()
