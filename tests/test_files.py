"""Durable writes: every rename comes after the fsync of what it moves, and the folder is synced after."""

import os

import pytest

from tf_charrnn import files


@pytest.fixture
def durability_log(monkeypatch):
    """Records ("fsync", path) and ("replace", source, target) in the order they happen."""
    events = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def logged_replace(source, target):
        events.append(("replace", os.path.abspath(source), os.path.abspath(target)))
        return replace(source, target)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    return events


def _synced_before(events, path, index):
    return ("fsync", path) in events[:index]


def assert_durable_renames(events):
    """Every rename: its source (and, for a folder, everything in it) synced before, the target's folder
    synced after."""
    renames = [(index, event) for index, event in enumerate(events) if event[0] == "replace"]
    assert renames
    for index, (_, source, target) in renames:
        assert _synced_before(events, source, index), (source, events)
        assert ("fsync", os.path.dirname(target)) in events[index + 1 :], (target, events)


def test_write_atomic_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, durability_log):
    path = tmp_path / "config.json"
    files.write_atomic(str(path), "{}")
    assert path.read_text() == "{}"
    assert_durable_renames(durability_log)
    assert durability_log[-1] == ("fsync", str(tmp_path))


def test_a_folder_replaced_atomically_is_synced_before_the_rename(tmp_path, durability_log):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old").write_text("old")
    with files.replace_folder_atomic(str(target), prefix=".export-") as staging:
        os.mkdir(os.path.join(staging, "variables"))
        for name in ("saved_model.pb", os.path.join("variables", "variables.index")):
            with open(os.path.join(staging, name), "wb") as f:
                f.write(b"new")
    assert sorted(os.listdir(target)) == ["saved_model.pb", "variables"]
    assert sorted(os.listdir(tmp_path)) == ["export"]  # neither the staging nor the replaced folder
    first_rename = next(index for index, event in enumerate(durability_log) if event[0] == "replace")
    for name in ("saved_model.pb", "variables/variables.index", "variables", ""):
        assert _synced_before(durability_log, os.path.join(staging, name).rstrip("/"), first_rename), name
    assert durability_log[first_rename][1:] == (str(target), durability_log[first_rename][2])  # aside
    assert durability_log[first_rename + 1][1:] == (staging, str(target))
    assert durability_log[-1] == ("fsync", str(tmp_path))


def test_a_failed_folder_write_leaves_the_old_folder(tmp_path):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(OSError):
        with files.replace_folder_atomic(str(target)) as staging:
            with open(os.path.join(staging, "model.tflite"), "wb") as f:
                f.write(b"part")
            raise OSError(28, "No space left on device")
    assert sorted(os.listdir(tmp_path)) == ["export"] and os.listdir(target) == ["old"]


def test_written_files_and_folders_get_the_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        files.write_atomic(str(tmp_path / "config.json"), "{}")
        with files.replace_folder_atomic(str(tmp_path / "export")):
            pass
    finally:
        os.umask(previous)
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "export").stat().st_mode & 0o777 == 0o755


def test_write_atomic_on_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "vocab.json"
    path.write_text("old")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as error:
        files.write_atomic(str(path), "new")
    assert files.is_out_of_space(error.value)
    assert os.listdir(tmp_path) == ["vocab.json"] and path.read_text() == "old"


def test_out_of_space_names_the_need_the_free_space_and_the_fix(tmp_path):
    message = str(files.out_of_space("checkpoint ckpt-8", str(tmp_path), 3 * 2**20))
    assert message.startswith(f"no space left on device writing checkpoint ckpt-8 in {tmp_path}: it needs ")
    assert "about 3.0 MB, " in message
    assert message.endswith(" free; free some space and re-run the same command")


def test_sha256_file_streams_and_counts(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"abc" * 1000)
    assert files.sha256_file(str(path), chunk_bytes=7) == (files.sha256_hex(b"abc" * 1000), 3000)


def test_make_folders_of_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = files.make_folders(os.path.join("runs", "two"))  # as --train_dir=runs/two in a fresh checkout
    assert made == ["runs", os.path.join("runs", "two")] and os.path.isdir(tmp_path / "runs" / "two")
    files.remove_empty_folders(made)
    assert os.listdir(tmp_path) == []
