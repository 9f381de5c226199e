"""Command-line options declared once, as the fields of a frozen dataclass: argparse reads them, the command gets an
instance of the class, and a training checkpoint stores it (to_dict) and reads it back (from_dict).

Imports no TensorFlow, so option mistakes are answered in a second.
"""
import argparse
import dataclasses
import types
import typing

from .errors import CifarlabError


class OptionError(CifarlabError, ValueError):
    """Options that do not fit together (argparse answers the ones it can check alone)."""


def option(help, default=None, *, flag=None, **argparse_keywords):
    """A field given as --NAME (or `flag`) on the command line; argparse_keywords: choices (or a function that
    returns them when the parser is built), metavar, required."""
    return dataclasses.field(default=default, metadata={"help": help, "flag": flag, **argparse_keywords})


def positional(help, default=dataclasses.MISSING, **argparse_keywords):
    """A field given by its place on the command line; argparse_keywords: choices, nargs."""
    return dataclasses.field(default=default, metadata={"help": help, "positional": True, **argparse_keywords})


def value_type(hint):
    """The Python type of a field's values: int for `int | None`, str for `tuple[str, ...]`."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is tuple:
        hint = typing.get_args(hint)[0]
    return hint


def add_options(parser, options_class):
    """Add one argparse argument per field of options_class to parser."""
    hints = typing.get_type_hints(options_class)
    for field in dataclasses.fields(options_class):
        keywords = {key: value for key, value in field.metadata.items() if key not in ("flag", "positional")}
        if callable(keywords.get("choices")):
            keywords["choices"] = keywords["choices"]()
        kind = value_type(hints[field.name])
        if field.metadata.get("positional"):
            parser.add_argument(field.name, type=kind, **keywords)
        elif kind is bool:
            parser.add_argument(field_flag(field), dest=field.name, action="store_true", **keywords)
        elif typing.get_origin(hints[field.name]) is tuple:
            parser.add_argument(field_flag(field), dest=field.name, type=kind, action="append", default=[],
                                **keywords)
        else:
            parser.add_argument(field_flag(field), dest=field.name, type=kind, default=field.default, **keywords)


def field_flag(field):
    """--batch-size for batch_size, unless the field names its own flag."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def from_namespace(options_class, namespace):
    """The options_class instance argparse's namespace holds."""
    return from_dict(options_class, {field.name: getattr(namespace, field.name)
                                     for field in dataclasses.fields(options_class)})


def to_dict(options):
    """The options as JSON-ready values (a checkpoint stores them)."""
    return dataclasses.asdict(options)


def from_dict(options_class, values):
    """Options back from to_dict's values; OptionError when the class no longer has those fields."""
    hints = typing.get_type_hints(options_class)
    names = {field.name for field in dataclasses.fields(options_class)}
    if set(values) - names:
        raise OptionError(f"options this version does not take: {', '.join(sorted(set(values) - names))}")
    return options_class(**{name: tuple(value) if typing.get_origin(hints[name]) is tuple else value
                            for name, value in values.items()})


def subcommand_parser(prog, description, commands):
    """An argparse parser with one subcommand per (name, options_class, summary) in commands; each subcommand's
    --help describes it by its options class's docstring."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, options_class, summary in commands:
        sub = subparsers.add_parser(name, help=summary, description=options_class.__doc__)
        add_options(sub, options_class)
    return parser
