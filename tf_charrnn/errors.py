"""Errors the user can fix, as data: a `UserError` knows the settings its message is about and says them as
the command line does (`--prime`, `--strategy=tpu`) or as the Python API does (`prime=`, `strategy=tpu`).

A message marks a setting with `flag(name)`, the command that trains a run with `train_command(train_dir)`
and the advice to try again with `RERUN`; the markers are private-use characters that no text of the
user's holds, and `UserError.render` replaces them for its audience.
"""

import contextlib
from collections.abc import Iterator

_FLAG, _END, _TRAIN, _RERUN = "\ue000", "\ue001", "\ue002", "\ue003"
# Flags whose Python argument has another name.
_PYTHON_NAMES = {"flagfile": "config"}
COMMAND_LINE, PYTHON = "command_line", "python"

# "re-run the same command", or to a Python caller "make the same call again".
RERUN = _RERUN


def flag(name: str) -> str:
    """The setting `name` in a message: `--name` on the command line, `name=` in Python (`name` before an
    `=` the message writes itself, as in `flag("strategy") + "=tpu"`)."""
    return f"{_FLAG}{name}{_END}"


def train_command(train_dir: str) -> str:
    """The command that trains the run in `train_dir`, for a message."""
    return f"{_TRAIN}{train_dir}{_END}"


class UserError(ValueError):
    """A problem with what the user asked for; its message names the problem and the fix.

    Attributes:
      message: the message with its markers (see the module docstring).
      audience: COMMAND_LINE (str() says `--prime`) or PYTHON (`prime=`).
    """

    def __init__(self, message: str, audience: str = COMMAND_LINE) -> None:
        super().__init__(message)
        self.message = message
        self.audience = audience

    @property
    def settings(self) -> list[str]:
        """The names of the settings the message is about, in order."""
        return [part.split(_END, 1)[0] for part in self.message.split(_FLAG)[1:]]

    def render(self, audience: str) -> str:
        """The message for `audience` (COMMAND_LINE or PYTHON)."""
        text = self.message.replace(
            _RERUN, "make the same call again" if audience == PYTHON else "re-run the same command"
        )
        pieces = text.split(_TRAIN)
        text = pieces[0]
        for piece in pieces[1:]:
            train_dir, rest = piece.split(_END, 1)
            command = (
                f"tf_charrnn.train(train_dir={train_dir!r})"
                if audience == PYTHON
                else (f"scripts/train.py --train_dir={train_dir}")
            )
            text += command + rest
        pieces = text.split(_FLAG)
        text = pieces[0]
        for piece in pieces[1:]:
            name, rest = piece.split(_END, 1)
            if audience == PYTHON:
                name = _PYTHON_NAMES.get(name, name)
                text += name + ("" if rest.startswith("=") else "=") + rest
            else:
                text += f"--{name}{rest}"
        return text

    def __str__(self) -> str:
        return self.render(self.audience)

    def __reduce__(
        self,
    ) -> tuple[type, tuple[str, str]]:  # pickled (e.g. by a multiprocessing pool) with its audience
        return type(self), (self.message, self.audience)


def first_line(error: BaseException) -> str:
    """The first line of an error's message for a one-line message of our own; its type's name when it
    has no message."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def python_arguments() -> Iterator[None]:
    """Raises a UserError from inside the block again, said to a Python caller."""
    try:
        yield
    except UserError as error:
        raise UserError(error.message, PYTHON) from None
