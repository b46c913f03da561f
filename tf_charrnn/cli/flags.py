"""What the entry points share: config fields as absl flags, and one-line errors instead of tracebacks."""

import dataclasses
import functools
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from absl import app, flags

from tf_charrnn import files
from tf_charrnn.config import escape, flag_fields, unescape
from tf_charrnn.errors import UserError, first_line, flag

T = TypeVar("T")

_DEFINE: dict[Any, Callable[..., Any]] = {
    bool: flags.DEFINE_bool,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
}
_ENUM_ERROR = re.compile(r"flag --(\w+)=(.*): value should be one of <")


def define_flags(config_class: type, flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines one flag per field of `config_class`, or of every section of a RunConfig (name, default,
    help and choices from the field; derived fields are no flags)."""
    for field in flag_fields(config_class):
        help_text = field.metadata.get("help", "")
        default: Any = field.default
        if field.metadata.get("escaped"):
            default = escape(default)
        # Registered to the main script, so that --helpshort lists them.
        if field.metadata.get("choices"):
            flags.DEFINE_enum(
                field.name,
                default,
                field.metadata["choices"],
                help_text,
                module_name=sys.argv[0],
                flag_values=flag_values,
            )
        else:
            _DEFINE[field.type](
                field.name, default, help_text, module_name=sys.argv[0], flag_values=flag_values
            )


def _value(field: dataclasses.Field, flag_values: flags.FlagValues = flags.FLAGS) -> Any:
    """The flag's value as the config field holds it (an escaped flag's text unescaped)."""
    value: Any = flag_values[field.name].value
    return unescape(value, field.name) if field.metadata.get("escaped") else value


def config_from_flags(config_class: type[T]) -> T:
    """Builds `config_class` (a RunConfig: all its sections) from the flags `define_flags` defined."""
    values = {field.name: _value(field) for field in flag_fields(config_class)}
    from_flat = getattr(config_class, "from_flat", None)
    return from_flat(values) if from_flat else config_class(**values)


def given_values(config_class: type) -> dict[str, Any]:
    """{name: value} of the flags of `config_class` given on the command line or in a flagfile."""
    return {
        field.name: _value(field) for field in flag_fields(config_class) if flags.FLAGS[field.name].present
    }


def read_flagfile(path: str, config_class: type) -> dict[str, Any]:
    """The settings a flagfile (e.g. configs/smoke.cfg) gives the flags of `config_class`, parsed as the
    command line parses them, without touching the command line's flags (the Python API's `config=`).

    Returns:
      {name: value} of the flags the file sets.
    Raises:
      UserError: the file cannot be read, or sets an unknown flag or a bad value.
    """
    flag_values = flags.FlagValues()
    define_flags(config_class, flag_values)
    try:
        flag_values(["flagfile", f"--flagfile={path}"])
    except flags.Error as error:
        raise UserError(f"{flag('flagfile')}={path}: {_flag_error_message(error, flag_values)}") from None
    return {
        field.name: _value(field, flag_values)
        for field in flag_fields(config_class)
        if flag_values[field.name].present
    }


def _flag_error_message(error: flags.Error, flag_values: flags.FlagValues = flags.FLAGS) -> str:
    """absl's error, as a UserError's message (a choice flag's named with `flag`)."""
    message = re.sub(r"^ERROR:+\s*", "", " ".join(str(error).split()))
    enum_error = _ENUM_ERROR.match(message)
    if enum_error:
        name, value = enum_error.groups()
        parser: Any = flag_values[name].parser  # an EnumParser
        choices = ", ".join(parser.enum_values)
        return f"{flag(name)} must be one of {choices}, got {value!r}"
    return message


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        remaining = flags.FLAGS(argv)
    except flags.Error as error:
        sys.exit(f"error: {UserError(_flag_error_message(error))}; see --helpshort for the flags")
    if len(remaining) > 1:
        sys.exit(f"error: unexpected arguments {remaining[1:]}; flags take the form --name=value")
    return remaining


def _one_line_errors(main: Callable[[list[str]], object], argv: list[str]) -> object:
    try:
        return main(argv)
    except UserError as error:
        if flags.FLAGS.verbose:
            raise
        sys.exit(f"error: {error}")
    except Exception as error:  # a full disk anywhere else (a log, the lock): one line too
        if flags.FLAGS.verbose or not files.is_out_of_space(error):
            raise
        where = getattr(error, "filename", None) or first_line(error)
        sys.exit(f"error: no space left on device ({where}); free some space and re-run the same command")


def run(main: Callable[[list[str]], object]) -> None:
    """Runs `main` as an absl app: bad flags and UserErrors end with one line on stderr and exit 1."""
    launcher = sys.modules["__main__"]
    if not launcher.__doc__:  # a console-script launcher: --help shows the entry point's usage instead
        launcher.__doc__ = sys.modules[main.__module__].__doc__
    flags.DEFINE_bool(
        "verbose",
        False,
        "show the Python traceback of an error, not only its one-line message",
        module_name=sys.argv[0],
    )
    app.run(functools.partial(_one_line_errors, main), flags_parser=_parse_flags)
