"""Trains a Char-RNN: scripts/train.py --flagfile=configs/shakespeare.cfg [--flag=value ...].

A thin wrapper over tf_charrnn.cli.train (flags: --helpshort).
"""

from tf_charrnn.cli import train

if __name__ == "__main__":
    train.run()
