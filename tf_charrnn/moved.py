"""Import paths of the flat layout (tf_charrnn 0.1's `tf_charrnn.sampling`, `tf_charrnn.data.load_corpus`,
...) served from where their modules and names went, each with a DeprecationWarning naming the new path."""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

# Old module -> the module it became (or the modules a split module's names went to).
MODULES: dict[str, str | tuple[str, ...] | None] = {
    "tf_charrnn.benchmark": None,  # scripts/benchmark_lib.py: a developer's tool, outside the package
    "tf_charrnn.browser": "tf_charrnn.export.browser",
    "tf_charrnn.charlm": "tf_charrnn.inference.charlm",
    "tf_charrnn.corpus_files": "tf_charrnn.data.corpus_files",
    "tf_charrnn.distribute": "tf_charrnn.runtime.distribute",
    "tf_charrnn.fused_lstm": "tf_charrnn.model.fused_lstm",
    "tf_charrnn.litert": "tf_charrnn.export.litert",
    "tf_charrnn.losses": "tf_charrnn.model.losses",
    "tf_charrnn.native": "tf_charrnn.model.native",
    "tf_charrnn.recurrent": "tf_charrnn.model.recurrent",
    # Split: its names are served from these modules, each listed after those it imports names from
    # (so that a name is found where it is defined).
    "tf_charrnn.evaluate": ("tf_charrnn.inference.scored_text", "tf_charrnn.inference.scoring"),
    "tf_charrnn.run_directory": (
        "tf_charrnn.run.layout",
        "tf_charrnn.run.lock",
        "tf_charrnn.run.checkpoints",
        "tf_charrnn.run.resume",
    ),
    "tf_charrnn.sampling": "tf_charrnn.inference.sampling",
    "tf_charrnn.schedules": "tf_charrnn.training.schedules",
    "tf_charrnn.summaries": "tf_charrnn.training.summaries",
    "tf_charrnn.train_step": "tf_charrnn.training.train_step",
    "tf_charrnn.vocab": "tf_charrnn.data.vocab",
    "tf_charrnn.web": "tf_charrnn.export.web",
}
# Old modules whose names are now packages: the package -> the modules that hold the old module's names
# (in the same order as a split module's).
PACKAGES: dict[str, tuple[str, ...]] = {
    "tf_charrnn.data": (
        "tf_charrnn.data.sources",
        "tf_charrnn.data.encoded",
        "tf_charrnn.data.pipeline",
        "tf_charrnn.data.splits",
    ),
    "tf_charrnn.export": ("tf_charrnn.export.saved_model",),
    "tf_charrnn.model": ("tf_charrnn.model.char_rnn",),
    "tf_charrnn.runtime": ("tf_charrnn.runtime.placement",),
    "tf_charrnn.training": ("tf_charrnn.training.trainer",),
}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; import it from there", DeprecationWarning, stacklevel=3)


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and loads it as the module it became (the same module object)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        del path, target
        if fullname not in MODULES:
            return None
        new = MODULES[fullname]
        # The file it became, as `python -m OLD_PATH` sets sys.argv[0] to it (TensorFlow reads argv).
        new_spec = importlib.util.find_spec(new) if isinstance(new, str) else None
        return importlib.util.spec_from_loader(fullname, self, origin=new_spec.origin if new_spec else None)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new = MODULES[spec.name]
        if new is None:
            raise ImportError(f"{spec.name} moved out of the package: it is scripts/benchmark_lib.py")
        if isinstance(new, tuple):  # a module split in several: one that serves their names
            module = types.ModuleType(spec.name, f"{spec.name}'s names, from {', '.join(new)}")
            setattr(module, "__getattr__", _names_from(spec.name, new))  # noqa: B010 (PEP 562)
            return module
        _warn(spec.name, new)
        return importlib.import_module(new)

    def exec_module(self, module: types.ModuleType) -> None:
        del module  # the module it became is already executed

    def get_code(self, fullname: str) -> types.CodeType | None:
        """The code of the module `fullname` became, for `python -m OLD_PATH` (runpy asks for it)."""
        new = MODULES[fullname]
        if not isinstance(new, str):
            raise ImportError(f"{fullname} is no longer a module that runs; see tf_charrnn/moved.py")
        _warn(fullname, new)
        spec = importlib.util.find_spec(new)
        loader = spec.loader if spec else None
        if not isinstance(loader, importlib.abc.InspectLoader):
            raise ImportError(f"{new} has no code to run")
        return loader.get_code(new)


def install() -> None:
    """Lets the old module paths import (once per process)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules())  # before an editable install's finder


def package_getattr(package: str) -> Callable[[str], Any]:
    """A PEP 562 `__getattr__` for `package` that serves the names its old module of the same name had."""
    return _names_from(package, PACKAGES[package])


def _names_from(old: str, modules: tuple[str, ...]) -> Callable[[str], Any]:
    """A PEP 562 `__getattr__` for the module `old` (a package, or a split module) that serves the names
    of `modules`."""

    def __getattr__(name: str) -> Any:
        # A private name was never served. A package's submodule not yet imported is the import system's
        # to find (importing the modules below while one of them is being imported would be circular).
        if name.startswith("_"):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        is_package = "__path__" in vars(sys.modules[old])
        if is_package and importlib.util.find_spec(f"{old}.{name}") is not None:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        for module_name in modules:
            module = importlib.import_module(module_name)
            if hasattr(module, name):
                _warn(f"{old}.{name}", f"{module_name}.{name}")
                value = getattr(module, name)
                setattr(sys.modules[old], name, value)  # warned once
                return value
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__
