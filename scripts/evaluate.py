"""Scores a trained run's checkpoint on a text: scripts/evaluate.py --train_dir=runs/shakespeare_cpu.

Without --data_path it scores the run's own validation split; prints nats, bits and perplexity per
character on one line (one JSON line with --json).
"""

# The same main as the `tf_charrnn.cli.evaluate` module: flags, config, one library call.
from tf_charrnn.cli import evaluate

if __name__ == "__main__":
    evaluate.run()
