"""Looks inside a trained run: scripts/inspect.py --train_dir=runs/shakespeare_cpu --output_dir=/tmp/inside.

Writes inspect.html (the text coloured by a cell's activation, the most interpretable cells), the gate
saturation and cell activation plots and ranking.json into --output_dir, and the figures to TensorBoard.
"""

import os
import sys

# `python scripts/inspect.py` puts scripts/ first on sys.path, where this file would shadow the standard
# library's `inspect` module, which TensorFlow, absl and numpy import: take scripts/ off before any import.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != _HERE]

# The same main as the `tf_charrnn.cli.inspect` module: flags, config, one library call.
from tf_charrnn.cli import inspect  # noqa: E402

if __name__ == "__main__":
    inspect.run()
