"""What the scripts share: config fields as absl flags, and one-line errors instead of tracebacks."""

import dataclasses
import functools
import re
import sys

from absl import app, flags

from tf_charrnn.config import UserError

_DEFINE = {
    bool: flags.DEFINE_bool,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
}
flags.DEFINE_bool(
    "verbose",
    False,
    "show the Python traceback of an error, not only its one-line message",
    module_name=sys.argv[0],
)


def define_flags(config_class, skip=()):
    """Defines one flag per field of `config_class` (name, default and help from the field)."""
    for field in dataclasses.fields(config_class):
        if field.name not in skip:
            # Registered to the main script, so that --helpshort lists them.
            _DEFINE[field.type](
                field.name, field.default, field.metadata.get("help", ""), module_name=sys.argv[0]
            )


def config_from_flags(config_class, skip=()):
    """Builds `config_class` from the parsed flags defined by `define_flags`."""
    values = {
        field.name: flags.FLAGS[field.name].value
        for field in dataclasses.fields(config_class)
        if field.name not in skip
    }
    return config_class(**values)


def _parse_flags(argv):
    try:
        remaining = flags.FLAGS(argv)
    except flags.Error as error:
        message = re.sub(r"^ERROR:+\s*", "", " ".join(str(error).split()))
        sys.exit(f"error: {message}; see --helpshort for the flags")
    if len(remaining) > 1:
        sys.exit(f"error: unexpected arguments {remaining[1:]}; flags take the form --name=value")
    return remaining


def _one_line_errors(main, argv):
    try:
        return main(argv)
    except UserError as error:
        if flags.FLAGS.verbose:
            raise
        sys.exit(f"error: {error}")


def run(main):
    """Runs `main` as an absl app: bad flags and UserErrors end with one line on stderr and exit 1."""
    app.run(functools.partial(_one_line_errors, main), flags_parser=_parse_flags)
