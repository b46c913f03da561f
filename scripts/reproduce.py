"""Reproduces a paper's table: scripts/reproduce.py --table=karpathy2015 --corpus=FILE --out_dir=DIR.

Re-running the same command continues an interrupted cell; finished cells are read back.
"""

# The same main as the `tf_charrnn.cli.reproduce` module: flags, config, one library call.
from tf_charrnn.cli import reproduce

if __name__ == "__main__":
    reproduce.run()
