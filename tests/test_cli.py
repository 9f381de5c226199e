"""cifarlab.cli: options declared once as dataclass fields, parsed by argparse, stored and read back."""
import json
from dataclasses import FrozenInstanceError, dataclass

import pytest

from cifarlab import cli
from cifarlab.cli import OptionError, option, positional


@dataclass(frozen=True)
class Options:
    """python demo.py INPUT [options]."""

    input: str = positional("what to read")
    size: int | None = option("a whole number")
    share: float = option("a share", 0.5)
    mode: str = option("one of two", "fast", choices=lambda: ("fast", "slow"))
    overrides: tuple[str, ...] = option("repeatable", (), flag="--set", metavar="KEY=VALUE")
    force: bool = option("a switch", False)


def parse(argv):
    parser = cli.subcommand_parser("demo.py", "demo", [("run", Options, "Run the demo.")])
    namespace = parser.parse_args(["run", *argv])
    return cli.from_namespace(Options, namespace)


def test_options_parse_into_typed_frozen_instances():
    options = parse(["in.png", "--size", "3", "--share", "0.25", "--mode", "slow", "--set", "a=1", "--set", "b=2",
                     "--force"])
    assert options == Options("in.png", 3, 0.25, "slow", ("a=1", "b=2"), True)
    with pytest.raises(FrozenInstanceError):
        options.size = 4


def test_defaults_are_the_fields_defaults():
    assert parse(["in.png"]) == Options("in.png")


@pytest.mark.parametrize("argv", [[], ["in.png", "--size", "three"], ["in.png", "--mode", "medium"],
                                  ["in.png", "--unknown"], ["in.png", "--share"]])
def test_bad_options_exit_2_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2 and "usage: demo.py" in capsys.readouterr().err


def test_options_survive_a_trip_through_json():
    options = parse(["in.png", "--set", "a=1"])
    assert cli.from_dict(Options, json.loads(json.dumps(cli.to_dict(options)))) == options


def test_stored_options_this_version_does_not_take_are_refused():
    with pytest.raises(OptionError, match="options this version does not take: colour"):
        cli.from_dict(Options, {"input": "in.png", "colour": "red"})


def test_each_subcommand_has_its_summary_in_the_help(capsys):
    with pytest.raises(SystemExit):
        cli.subcommand_parser("demo.py", "demo", [("run", Options, "Run the demo.")]).parse_args(["--help"])
    assert "Run the demo." in capsys.readouterr().out
