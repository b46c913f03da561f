"""Exports a trained run as a SavedModel: scripts/export.py --train_dir=runs/shakespeare_cpu.

A thin wrapper over tf_charrnn.cli.export (flags: --helpshort).
"""

from tf_charrnn.cli import export

if __name__ == "__main__":
    export.run()
