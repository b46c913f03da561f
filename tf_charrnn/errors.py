"""Errors the user can fix: what the scripts print as one line instead of a traceback, and what the Python
API raises (`tf_charrnn.UserError`), its messages naming Python arguments instead of flags."""

import contextlib
import re

# "scripts/train.py --train_dir=DIR" in a message: the command that trains a run, said in Python.
_TRAIN_COMMAND = re.compile(r"scripts/train\.py --train_dir=(\S+?)(?=[);,]|\s|$)")
_FLAG = re.compile(r"--(\w+)(=?)")
# Flags whose Python argument has another name.
_PYTHON_NAMES = {"flagfile": "config"}


class UserError(ValueError):
    """A problem with what the user asked for; its message names the problem and the fix."""


def in_python_terms(message):
    """A message written for the command line, said to a Python caller: `--prime` -> `prime=`,
    `--train_dir=runs/x` -> `train_dir=runs/x`, the training command -> `tf_charrnn.train(train_dir=...)`."""
    message = message.replace("re-run the same command", "make the same call again")
    message = _TRAIN_COMMAND.sub(lambda match: f"tf_charrnn.train(train_dir={match.group(1)!r})", message)
    return _FLAG.sub(lambda match: _PYTHON_NAMES.get(match.group(1), match.group(1)) + "=", message)


@contextlib.contextmanager
def python_arguments():
    """Raises a UserError from inside the block again with its message `in_python_terms`."""
    try:
        yield
    except UserError as error:
        raise UserError(in_python_terms(str(error))) from None
