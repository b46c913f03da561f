"""tf_charrnn: a character-level RNN language model (Char-RNN) in TensorFlow 2 / Keras 3.

From Python (the command-line tools are in scripts/):
```python
import tf_charrnn

result = tf_charrnn.train(train_dir="runs/quick", data_path="input.txt", max_steps=300)
lm = tf_charrnn.CharLM.from_run("runs/quick")
print(lm.generate("ROMEO:", length=200, temperature=0.8, seed=7))
```
The names below load on first use (PEP 562), so `import tf_charrnn` does not load TensorFlow.
"""

import importlib
from typing import Any

from tf_charrnn import moved, startup

moved.install()  # the flat layout's module paths (tf_charrnn.sampling, ...) still import
# name -> the module that defines it
_EXPORTS = {
    "train": "tf_charrnn.api",
    "TrainResult": "tf_charrnn.training.trainer",
    "CharLM": "tf_charrnn.inference.charlm",
    "UserError": "tf_charrnn.errors",
}
_NEED_TENSORFLOW = {"train", "TrainResult", "CharLM"}  # UserError's module imports no TensorFlow
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _NEED_TENSORFLOW:
        startup.import_tensorflow()  # without its start-up noise, as the command-line tools do
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
