"""The cache folder's files are checked before use (tf_charrnn/cache.py): the records and checks, then the
faults through the real scripts (a truncated id cache, a garbled vocabulary, a truncated kernel library, a
read-only cache, two processes building one entry at once), each with its exit code, its last stderr line
and snapshots of the cache before and after."""

import contextlib
import hashlib
import json
import os
import shlex
import subprocess
import sys

import pytest

from helpers import QUOTE, REPO_ROOT, run_command, script_env, smoke_train_command, snapshot
from tf_charrnn import cache, files
from tf_charrnn.config import DataConfig
from tf_charrnn.data import encoded
from tf_charrnn.model import native

FAULT_HOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fault_hooks")
COMPILER = shlex.join([sys.executable, os.path.join(FAULT_HOOKS, "copying_compiler.py")])


def _publish(folder, name, content):
    path = os.path.join(folder, name)
    with open(path + ".tmp", "wb") as f:
        f.write(content)
    cache.publish(path + ".tmp", path)
    return path


def test_a_published_file_matches_its_record_and_each_damage_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "BLOCK_BYTES", 1000)  # five blocks, hashed in parallel
    path = str(tmp_path / "entry.bin")
    assert cache.problem(path) == "absent"
    content = os.urandom(4500)
    path = _publish(str(tmp_path), "entry.bin", content)
    assert cache.problem(path) is None and not os.path.exists(path + ".tmp")
    blocks = b"".join(
        hashlib.sha256(content[start : start + 1000]).digest() for start in range(0, 4500, 1000)
    )
    with open(cache.record_path(path)) as f:
        assert json.load(f) == {"size": 4500, "sha256_blocks": hashlib.sha256(blocks).hexdigest()}

    with open(path, "r+b") as f:
        f.truncate(3000)
    assert cache.problem(path) == "is 3,000 bytes but was written with 4,500 (truncated or overwritten)"
    with open(path, "wb") as f:  # one bit flipped, same size
        f.write(content[:2222] + bytes([content[2222] ^ 1]) + content[2223:])
    assert (
        cache.problem(path) == "has changed since it was written (its content hash differs from its record)"
    )
    with open(cache.record_path(path), "w") as f:
        f.write('{"size": 45')
    assert cache.problem(path) == "has an unreadable record entry.bin.record.json (JSONDecodeError)"
    os.remove(cache.record_path(path))
    assert cache.problem(path).startswith("has no record of its size and hash (entry.bin.record.json;")
    _publish(str(tmp_path), "entry.bin", content)
    os.remove(path)
    assert cache.problem(path) == "is missing (its record is there)"


def test_the_first_published_build_stays(tmp_path):
    path = _publish(str(tmp_path), "entry.bin", b"first build")
    _publish(str(tmp_path), "entry.bin", b"second build")  # another process, a moment later
    with open(path, "rb") as f:
        assert f.read() == b"first build"
    assert cache.problem(path) is None
    assert sorted(os.listdir(tmp_path)) == ["entry.bin", "entry.bin.record.json"]


def test_a_discarded_entry_leaves_no_file_and_no_folder(tmp_path):
    folder = tmp_path / "cache" / "encoded"
    pending = cache.Pending(files.make_folders(str(folder)))
    with open(pending.temporary(str(folder / "x.ids.npy")), "wb") as f:
        f.write(b"ids")
    pending.discard()
    assert os.listdir(tmp_path) == []
    pending = cache.Pending(files.make_folders(str(folder)))
    with open(pending.temporary(str(folder / "x.ids.npy")), "wb") as f:
        f.write(b"ids")
    pending.publish()
    pending.discard()  # after publish: nothing to discard
    assert sorted(os.listdir(folder)) == ["x.ids.npy", "x.ids.npy.record.json"]
    assert cache.problem(str(folder / "x.ids.npy")) is None


@pytest.fixture
def corpus_entry(tmp_path):
    """A corpus, its cache folder (the kernels seeded) holding its id cache entry, and the entry's paths."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((QUOTE + "\n") * 30, encoding="utf-8")
    folder = tmp_path / "cache"
    env = script_env(folder)
    digest = encoded.load_corpus(DataConfig(data_path=str(corpus), cache_dir=str(folder))).sha256
    stem = folder / "encoded" / digest
    return corpus, folder, env, {"ids": f"{stem}.ids.npy", "vocab": f"{stem}.vocab.json"}


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _garble(path):
    """Same size, not JSON any more (an id cache's vocabulary: json.decoder.JSONDecodeError before)."""
    with open(path, "r+b") as f:
        f.write(b"[")


@pytest.mark.slow
@pytest.mark.parametrize("name, damage", [("ids", _truncate), ("vocab", _garble)])
def test_a_damaged_id_cache_is_rebuilt_with_one_warning(corpus_entry, tmp_path, name, damage):
    corpus, folder, env, paths = corpus_entry
    good = snapshot(folder)
    damage(paths[name])
    result = run_command(smoke_train_command(tmp_path / "run", corpus, "--max_steps=1"), env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if "rebuilding it from" in line]
    assert len(warnings) == 1, warnings
    what = "The id cache" if name == "ids" else "The id cache's vocabulary"
    assert f"{what} {paths[name]} " in warnings[0] and warnings[0].endswith(f"rebuilding it from {corpus}")
    assert snapshot(folder) == good  # rebuilt byte for byte, with its record; no temporary file left


@contextlib.contextmanager
def _read_only(folder):
    """`folder` read-only for this user: a read-only bind mount for root (whom permissions do not stop),
    else its write permission removed."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", folder, folder], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", folder, folder], check=True)
            yield
        finally:
            subprocess.run(["umount", folder], check=True)
    else:
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, 0o755)


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["id cache", "kernel library"])
def test_a_damaged_file_in_a_read_only_cache_is_one_line_naming_what_to_delete(
    corpus_entry, tmp_path, damaged
):
    corpus, folder, env, paths = corpus_entry
    path = paths["ids"] if damaged == "id cache" else native.library_path(str(folder))
    _truncate(path)
    size, written = os.path.getsize(path), os.path.getsize(path) * 2
    before = snapshot(tmp_path)
    with _read_only(os.path.dirname(path)):
        result = run_command(smoke_train_command(tmp_path / "run", corpus, "--max_steps=1"), env, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    what = "the id cache" if damaged == "id cache" else "the compiled kernel library"
    directory = os.path.dirname(path)
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {what} {path} is {size:,} bytes but was written with {written:,} (truncated or "
        f"overwritten), and {directory} is read-only, so it cannot be rebuilt: delete {path} and "
        f"{path}.record.json (or make {directory} writable), or set TF_CHARRNN_CACHE to another folder"
    )
    assert snapshot(tmp_path) == before


@pytest.fixture
def copying_compiler(tmp_path, monkeypatch):
    """The environment of a script whose C++ compiler copies this process's kernel library (slowly), and
    where its builds land: (the environment's additions, the build log, the library path they build)."""
    real = native.library_path()
    if cache.problem(real) is not None:
        native.build_and_load()  # the library these tests copy, with its record
    log = tmp_path / "builds.log"
    log.touch()
    extra = {"CXX": COMPILER, "TF_CHARRNN_BUILD_LOG": str(log), "TF_CHARRNN_REAL_LIBRARY": real}
    monkeypatch.setenv("CXX", COMPILER)
    monkeypatch.setattr(native, "_compiler_accepts", lambda flag: True)  # as the copying compiler says
    return extra, log, native.library_path(str(tmp_path / "cache"))


@pytest.mark.slow
def test_a_truncated_kernel_library_is_rebuilt_with_one_warning_never_loaded(
    corpus_entry, copying_compiler, tmp_path
):
    corpus, folder, _, _ = corpus_entry
    extra, log, path = copying_compiler
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(extra["TF_CHARRNN_REAL_LIBRARY"], "rb") as f:
        _publish(os.path.dirname(path), os.path.basename(path), f.read())
    _truncate(path)  # before: "Fatal Python error: Bus error" in every command that loads the kernels
    command = smoke_train_command(tmp_path / "run", corpus, "--max_steps=1")
    result = run_command(command, script_env(folder, **extra), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "rebuilding it from" in line]
    assert len(warnings) == 1 and f"The compiled kernel library {path} is " in warnings[0], warnings
    assert "recurrent layers on the fused C++ kernels" in result.stderr
    assert len(log.read_text().splitlines()) == 1
    assert cache.problem(path) is None


# Two processes that need the same new corpus entry and kernel library at the same moment (a barrier of
# files lines them up), each checking what it got.
BUILD_TOGETHER = """
import glob, os, sys, time
from tf_charrnn.data import encoded
from tf_charrnn.model import native
from tf_charrnn.config import DataConfig

corpus, cache_folder, barrier = sys.argv[1:]
open(f"{barrier}.{os.getpid()}", "w").close()
while len(glob.glob(barrier + ".*")) < 2:
    time.sleep(0.001)
loaded = encoded.load_corpus(DataConfig(data_path=corpus, cache_dir=cache_folder))
with open(corpus, encoding="utf-8") as f:
    assert loaded.vocab.decode(loaded.ids) == f.read()
assert all(hasattr(native.build_and_load(cache_folder), op) for op in native.OPS)
print("ok")
"""


@pytest.mark.slow
def test_two_processes_building_one_entry_at_once_both_get_whole_files(copying_compiler, tmp_path):
    extra, log, library = copying_compiler
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((QUOTE + "\n") * 40_000, encoding="utf-8")  # 3 MB: encoding overlaps
    folder, barriers = tmp_path / "cache", tmp_path / "barriers"
    barriers.mkdir()
    env = {**os.environ, **extra, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO_ROOT}
    command = [sys.executable, "-c", BUILD_TOGETHER, str(corpus), str(folder), str(barriers / "ready")]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0 and stdout.strip() == "ok", stderr[-3000:]
        assert "rebuilding" not in stderr
    assert len(log.read_text().splitlines()) == 1  # one built the kernels, the other waited for them
    digest, _ = files.sha256_file(str(corpus))
    for path in (f"{folder}/encoded/{digest}.ids.npy", f"{folder}/encoded/{digest}.vocab.json", library):
        assert cache.problem(path) is None
    leftovers = [name for _, _, names in os.walk(folder) for name in names if name.startswith(".tmp")]
    assert not leftovers
