"""`ebr --help`: every subcommand and every option says what it does."""

import argparse

import pytest

from ebr.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, path: str = "ebr"):
    """(command path, parser, its help line in the parent) for ebr and every (sub)subcommand."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                assert helps.get(name), f"{path} {name} has no help line"
                yield from _parsers(child, f"{path} {name}")


def test_every_command_and_option_has_help():
    commands = list(_parsers(build_parser()))
    names = {path for path, _ in commands}
    assert {"ebr search", "ebr rollback", "ebr bench", "ebr docs dbt"} <= names
    for path, parser in commands:
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help, (
                f"`{path}` option {action.option_strings or action.dest} has no help"
            )


@pytest.mark.parametrize("command", [[], ["search"], ["docs", "dbt"], ["rollback"]])
def test_help_prints_and_exits_cleanly(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ebr") and "show this help message" in out
