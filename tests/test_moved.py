"""The flat layout's import paths still work, each with a DeprecationWarning naming the new path."""

import importlib
import sys

import pytest

from helpers import REPO_ROOT, run_command, script_env
from tf_charrnn import moved


@pytest.mark.parametrize("old", sorted(name for name, new in moved.MODULES.items() if isinstance(new, str)))
def test_an_old_module_path_imports_the_module_it_became(old, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {moved.MODULES[old]}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(moved.MODULES[old])


def test_a_split_module_s_names_are_served_from_where_they_went(monkeypatch):
    monkeypatch.delitem(sys.modules, "tf_charrnn.run_directory", raising=False)
    old = importlib.import_module("tf_charrnn.run_directory")
    for name, module in [("load_run", "layout"), ("check_resumable", "resume"), ("RunLock", "lock")]:
        new = f"tf_charrnn.run.{module}"
        with pytest.warns(DeprecationWarning, match=f"tf_charrnn.run_directory.{name} moved to {new}.{name}"):
            assert getattr(old, name) is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError):
        old.no_such_name  # noqa: B018


def test_the_benchmark_left_the_package_and_says_where_it_went():
    with pytest.raises(ImportError, match="scripts/benchmark_lib.py"):
        importlib.import_module("tf_charrnn.benchmark")


@pytest.mark.parametrize(
    "package, name, module",
    [
        ("tf_charrnn.model", "CharRNN", "tf_charrnn.model.char_rnn"),
        ("tf_charrnn.data", "load_corpus", "tf_charrnn.data.encoded"),
        ("tf_charrnn.data", "stream_dataset", "tf_charrnn.data.pipeline"),
        ("tf_charrnn.runtime", "resolve", "tf_charrnn.runtime.placement"),
        ("tf_charrnn.training", "TrainResult", "tf_charrnn.training.trainer"),
        ("tf_charrnn.export", "export_run", "tf_charrnn.export.saved_model"),
    ],
)
def test_an_old_module_s_names_are_served_by_the_package_of_its_name(package, name, module, monkeypatch):
    package_module = importlib.import_module(package)
    monkeypatch.delitem(vars(package_module), name, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{package}.{name} moved to {module}.{name}"):
        value = getattr(package_module, name)
    assert value is getattr(importlib.import_module(module), name)
    with pytest.raises(AttributeError):
        package_module.no_such_name  # noqa: B018


def test_an_old_module_path_still_runs_with_dash_m(tmp_path):
    # `python -m tf_charrnn.native`, the command earlier notes and scripts gave for building the kernels.
    env = script_env(tmp_path, PYTHONPATH=REPO_ROOT, PYTHONWARNINGS="always::DeprecationWarning")
    result = run_command([sys.executable, "-m", "tf_charrnn.native"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bfloat16 ops: " in result.stdout
    assert "tf_charrnn.native moved to tf_charrnn.model.native" in result.stderr
