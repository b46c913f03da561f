"""Generates text from a trained run: scripts/sample.py --train_dir=runs/shakespeare_cpu --prime="ROMEO:".

A thin wrapper over tf_charrnn.cli.sample (flags: --helpshort).
"""

from tf_charrnn.cli import sample

if __name__ == "__main__":
    sample.run()
