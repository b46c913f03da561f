"""Looks inside a trained run: scripts/inspect.py --train_dir=runs/shakespeare_cpu --output_dir=/tmp/inside.

Writes inspect.html (the text coloured by a cell's activation, the most interpretable cells), the gate
saturation and cell activation plots and ranking.json into --output_dir, and the figures to TensorBoard.
"""

# This file's name is the standard library's `inspect`, which TensorFlow, absl and pdb import. Whenever a
# script here runs, scripts/ is first on sys.path, so `import inspect` finds this file:
# - run as `python scripts/inspect.py`, it takes scripts/ off sys.path before importing anything;
# - imported as `inspect` (by any script here, e.g. sample.py through absl), it hands the importer the
#   standard library's module in its place.
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_ELSEWHERE = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]

if __name__ == "__main__":
    sys.path[:] = _ELSEWHERE
    # The same main as the `tf_charrnn.cli.inspect` module: flags, config, one library call.
    from tf_charrnn.cli import inspect as command

    command.run()
else:
    import importlib.machinery
    import importlib.util

    _spec = importlib.machinery.PathFinder.find_spec(__name__, _ELSEWHERE)
    if _spec is None or _spec.loader is None:
        raise ImportError(f"no module {__name__} outside {_HERE}")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _module  # what `import inspect` returns once this file has run
    _spec.loader.exec_module(_module)
