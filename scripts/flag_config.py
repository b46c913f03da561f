"""Turns config dataclass fields into absl flags of the same names, and flags back into configs."""
import dataclasses

from absl import flags

_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}


def define_flags(config_class, skip=()):
    """Defines one flag per field of `config_class` (name, default and help from the field)."""
    for field in dataclasses.fields(config_class):
        if field.name not in skip:
            _DEFINE[field.type](
                field.name, field.default, field.metadata.get("help", ""))


def config_from_flags(config_class, skip=()):
    """Builds `config_class` from the parsed flags defined by `define_flags`."""
    values = {field.name: flags.FLAGS[field.name].value
              for field in dataclasses.fields(config_class) if field.name not in skip}
    return config_class(**values)
