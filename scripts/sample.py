"""Generates text from a trained run: scripts/sample.py --train_dir=runs/shakespeare_cpu --prime="ROMEO:".

Without --stream the whole text comes from one compiled call; with it, characters print as they come.
The same --seed prints the same text either way.
"""

# The same main as the `tf_charrnn.cli.sample` module: flags, config, one library call.
from tf_charrnn.cli import sample

if __name__ == "__main__":
    sample.run()
