"""Trains a Char-RNN: scripts/train.py --flagfile=configs/shakespeare.cfg [--flag=value ...].

Re-running the same command resumes from the run's latest checkpoint; so does --train_dir=DIR alone,
with the run's own configuration. Flags given on resume may change the run's length, cadences and
runtime; a different model, data layout, precision or optimisation is refused.
"""

# The same main as the `tf_charrnn.cli.train` module: flags, config, one library call.
from tf_charrnn.cli import train

if __name__ == "__main__":
    train.run()
