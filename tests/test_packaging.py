"""The package people install: the wheel carries the kernel sources and the CLI, an installed copy builds
and trains on the kernels and runs its console scripts, and the kernel loader refuses what it cannot use
(no sources, a library without the ops) and says once when it compiles."""

import glob
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import types
import zipfile

import pytest
import tensorflow as tf

from helpers import QUOTE, REPO_ROOT, run_command
from tf_charrnn import cache as cache_lib
from tf_charrnn.model import native

KERNELS = os.path.join(REPO_ROOT, "tf_charrnn", "model", "kernels")
SCRIPTS = [
    "tf-charrnn-train",
    "tf-charrnn-sample",
    "tf-charrnn-export",
    "tf-charrnn-evaluate",
    "tf-charrnn-webpage",
    "tf-charrnn-inspect",
    "tf-charrnn-reproduce",
]


def _source_copy(target):
    """What the build reads of the checkout (its top-level files and tf_charrnn/), copied to `target`:
    setuptools builds in the source tree (build/, *.egg-info), which must not land in the checkout."""
    os.makedirs(target)
    for name in os.listdir(REPO_ROOT):
        if os.path.isfile(os.path.join(REPO_ROOT, name)):
            shutil.copy(os.path.join(REPO_ROOT, name), target)
    shutil.copytree(
        os.path.join(REPO_ROOT, "tf_charrnn"),
        os.path.join(target, "tf_charrnn"),
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"),
    )
    return target


def _pip(*args):
    """Runs pip in this Python, offline; returns its CompletedProcess after checking it succeeded."""
    result = run_command([sys.executable, "-m", "pip", *args, "--no-index", "--disable-pip-version-check"])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return _source_copy(str(tmp_path_factory.mktemp("source") / "tf_charrnn"))


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory):
    """The wheel of the checkout, built without network."""
    out = str(tmp_path_factory.mktemp("wheel"))
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", out, source)
    (path,) = glob.glob(os.path.join(out, "tf_charrnn-*.whl"))
    return path


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory):
    """A folder the wheel is installed into (pip --target), nothing else."""
    target = str(tmp_path_factory.mktemp("install") / "site")
    _pip("install", "--no-deps", "--target", target, wheel)
    return target


def _expected_package_files():
    kernels = [f"tf_charrnn/model/kernels/{name}" for name in sorted(os.listdir(KERNELS))]
    cli = [
        os.path.relpath(path, REPO_ROOT).replace(os.sep, "/")
        for path in sorted(glob.glob(os.path.join(REPO_ROOT, "tf_charrnn", "cli", "*.py")))
    ]
    return kernels, cli


@pytest.mark.slow
def test_wheel_carries_the_kernel_sources_and_the_cli(wheel):
    kernels, cli = _expected_package_files()
    assert any(name.endswith(".cc") for name in kernels) and any(name.endswith(".h") for name in kernels)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(entry_points).decode()
    assert set(kernels) <= names
    assert set(cli) <= names
    page = os.path.join(REPO_ROOT, "tf_charrnn", "export", "web_page")
    assert {f"tf_charrnn/export/web_page/{name}" for name in os.listdir(page)} <= names  # --format=web's page
    assert "tf_charrnn/inspection/page_template.html" in names  # inspect.py's page
    for script in SCRIPTS:
        assert f"{script} = tf_charrnn.cli.{script.rsplit('-', 1)[1]}:run" in entry_points


@pytest.mark.slow
def test_sdist_carries_the_kernel_sources_and_the_cli(source, tmp_path):
    out = str(tmp_path / "sdist")
    command = [sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({out!r})"]
    result = run_command(command, cwd=source)
    assert result.returncode == 0, result.stderr[-2000:]
    (path,) = glob.glob(os.path.join(out, "tf_charrnn-*.tar.gz"))
    with tarfile.open(path) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    kernels, cli = _expected_package_files()
    assert set(kernels) <= names
    assert set(cli) <= names


_CHILD = """
import json, math, os, sys

import tf_charrnn

site = sys.argv[1]
assert os.path.abspath(tf_charrnn.__file__).startswith(site + os.sep), tf_charrnn.__file__

from absl import logging

logging.set_verbosity(logging.INFO)

from tf_charrnn.model import native
from tf_charrnn.runtime import placement
from tf_charrnn.training import trainer
from tf_charrnn.config import RunConfig

kernels = native.load()
assert kernels is not None, "the kernels did not build from the installed sources"
assert all(hasattr(kernels, op) for op in native.OPS), dir(kernels)
calls = {op: 0 for op in native.OPS}


def counted(op, function):
    def call(*args, **kwargs):
        calls[op] += 1
        return function(*args, **kwargs)

    return call


for op in native.OPS:  # the layers call the module's attributes while they are traced
    setattr(kernels, op, counted(op, getattr(kernels, op)))

config = RunConfig.from_flat(json.loads(sys.argv[2]))
fused_kernels = placement.resolve(config).fused_kernels
result = trainer.train(config)
print("RESULT " + json.dumps({
    "kernels_dir": native.KERNELS_DIR,
    "library": native.library_path(),
    "fused_kernels": fused_kernels,
    "calls": calls,
    "losses": [float(loss) for loss in result.losses],
    "step": result.step,
}))
"""


@pytest.mark.slow
def test_installed_wheel_builds_the_kernels_trains_on_them_and_runs_its_scripts(site, tmp_path):
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("no C++ compiler on this machine")
    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    cwd.mkdir()
    cache.mkdir()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text((QUOTE + "\n") * 40, encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CONFIG", "TF_CHARRNN_NATIVE")}
    # Only the install is importable: not the checkout (not the cwd, not on PYTHONPATH).
    env.update(PYTHONPATH=site, TF_CHARRNN_CACHE=str(cache), TF_CPP_MIN_LOG_LEVEL="2")
    config = {
        "data_path": str(corpus),
        "cache_dir": str(cache),
        "train_dir": str(tmp_path / "run"),
        "rnn_units": 64,
        "max_steps": 3,
        "batch_size": 2,
        "seq_length": 8,
        "sample_length": 0,
    }
    result = run_command(
        [sys.executable, "-c", _CHILD, site, json.dumps(config)], env=env, cwd=cwd, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    report = json.loads(line.removeprefix("RESULT "))
    assert report["kernels_dir"] == os.path.join(site, "tf_charrnn", "model", "kernels")
    assert report["library"].startswith(str(cache) + os.sep) and os.path.isfile(report["library"])
    assert result.stderr.count("Compiling the fused LSTM kernels once") == 1, result.stderr[-3000:]
    assert report["fused_kernels"]
    assert (
        report["calls"]["char_rnn_lstm_sequence"] > 0 and report["calls"]["char_rnn_lstm_sequence_grad"] > 0
    )
    assert report["step"] == 3 and len(report["losses"]) == 3
    assert all(0 < loss < 10 for loss in report["losses"]), report["losses"]  # finite, and sane

    # pip --target installs the console scripts into its bin/. They run the package's own `run`, whose
    # flags are registered to sys.argv[0] (the script's path), so --helpshort lists them, as it lists
    # scripts/NAME.py's for that script.
    listed = {}
    for script in SCRIPTS:
        path = os.path.join(site, "bin", script)
        assert os.path.isfile(path), os.listdir(os.path.join(site, "bin"))
        listed[script] = _helpshort_flags([path], env, cwd, heading=path)
        assert "verbose" in listed[script] and len(listed[script]) > 1
        checkout_script = os.path.join(REPO_ROOT, "scripts", f"{script.rsplit('-', 1)[1]}.py")
        if os.path.isfile(checkout_script):
            checkout, checkout_env = [sys.executable, checkout_script], {**env, "PYTHONPATH": REPO_ROOT}
            want = _helpshort_flags(checkout, checkout_env, REPO_ROOT, heading=checkout_script)
            assert listed[script] == want
    assert {"rnn_units", "max_steps", "data_path", "train_dir"} <= listed["tf-charrnn-train"]


def _helpshort_flags(command, env, cwd, heading):
    """The flag names `command --helpshort` lists under `heading` (the main module: sys.argv[0])."""
    result = run_command([*command, "--helpshort"], env=env, cwd=cwd, timeout=120)
    assert result.returncode in (0, 1), result.stderr[-2000:]  # absl exits 1 after the help
    assert f"\n{heading}:\n" in result.stdout, result.stdout[-2000:]
    return set(re.findall(r"^  --(?:\[no\])?(\w+):", result.stdout, re.MULTILINE))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty kernel cache, the default one for `native.load`."""
    path = tmp_path / "cache"
    path.mkdir()
    monkeypatch.setenv("TF_CHARRNN_CACHE", str(path))
    monkeypatch.delenv("TF_CHARRNN_NATIVE", raising=False)
    return path


def _files_under(path):
    return [os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names]


def test_no_kernel_sources_is_refused_and_builds_nothing(monkeypatch, cache, caplog):
    # As a wheel built without package data installs: the package without tf_charrnn/model/kernels.
    monkeypatch.setattr(native, "SOURCES", [])
    with pytest.raises(native.NativeBuildError, match=f"no kernel sources.*{native.KERNELS_DIR}"):
        native.build_and_load(cache=str(cache))
    with pytest.raises(native.NativeBuildError, match="no kernel sources"):
        native.build(native.library_path(str(cache)))
    with caplog.at_level(logging.WARNING):
        assert native.load.__wrapped__() is None
    assert "fused LSTM kernels unavailable" in caplog.text and "no kernel sources" in caplog.text
    assert _files_under(cache) == []


def test_a_library_without_the_ops_is_refused(cache, caplog):
    compiler = native._compiler()
    if shutil.which(compiler[0]) is None:
        pytest.skip("no C++ compiler on this machine")
    # What the build made of no sources before it refused them: a library that loads and has no op.
    path = native.library_path(str(cache))
    os.makedirs(os.path.dirname(path))
    command = [*compiler, *native.compile_flags(), "-o", path + ".tmp", *tf.sysconfig.get_link_flags()]
    subprocess.run(command, check=True, capture_output=True)
    cache_lib.publish(path + ".tmp", path)  # with its record, as a build puts it there
    with pytest.raises(
        native.NativeBuildError, match="lacks the ops char_rnn_lstm_sequence, .*char_rnn_model_step"
    ):
        native.build_and_load(cache=str(cache))
    with caplog.at_level(logging.WARNING):
        assert native.load.__wrapped__() is None
    assert "char_rnn_model_step" in caplog.text


def test_a_library_missing_one_op_is_refused(monkeypatch, cache):
    path = native.library_path(str(cache))
    os.makedirs(os.path.dirname(path))
    open(path, "wb").close()
    cache_lib.write_record(path)
    partial = types.SimpleNamespace(**{op: None for op in native.OPS if op != "char_rnn_model_step"})
    monkeypatch.setattr(tf, "load_op_library", lambda _: partial)
    with pytest.raises(native.NativeBuildError, match="lacks the ops char_rnn_model_step$"):
        native.build_and_load(cache=str(cache))


def test_first_use_build_logs_one_info_line(monkeypatch, cache, caplog):
    built = []

    def build(path):  # stands in for the compiler: the real build is test_installed_wheel_...'s
        built.append(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()
        cache_lib.write_record(path)

    monkeypatch.setattr(native, "build", build)
    monkeypatch.setattr(tf, "load_op_library", lambda _: types.SimpleNamespace(**dict.fromkeys(native.OPS)))
    with caplog.at_level(logging.INFO, logger="absl"):
        native.build_and_load(cache=str(cache))
        native.build_and_load(cache=str(cache))  # cached: no build, no line
    path = native.library_path(str(cache))
    assert built == [path]
    records = [record for record in caplog.records if "Compiling" in record.getMessage()]
    assert len(records) == 1, caplog.text
    assert records[0].levelno == logging.INFO
    lines = [records[0].getMessage()]
    assert "once (about 40 s on 2 cores)" in lines[0] and path in lines[0]
    assert "TF_CHARRNN_NATIVE=0" in lines[0]
