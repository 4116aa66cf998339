"""The `fusion` command's help follows typer/click conventions (issue 22, 10).

-h beside --help, --version, every option and argument described, fixed choices listed as
choices, no one-letter long option, and the defaults of the output options stated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from fusion.tokens import ROLES
from labs.bench import BENCHMARKS
from labs.cli import app
from labs.cli.options import BenchName, TokenRole

runner = CliRunner()


def _commands(group: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """Yield (the command's words, the click command) for every leaf command of `fusion`."""
    group = group or typer.main.get_command(app)
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


COMMANDS = dict(_commands())


def _flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def test_version_and_short_help():
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("fusion 0."), version.output
    assert runner.invoke(app, ["-h"]).stdout == runner.invoke(app, ["--help"]).stdout


@pytest.mark.parametrize("words", sorted(COMMANDS))
def test_every_command_takes_h_and_describes_every_parameter(words: str):
    result = runner.invoke(app, [*words.split(), "-h"])
    assert result.exit_code == 0, result.output
    assert "Usage: fusion " + words in _flat(result.stdout)
    for param in COMMANDS[words].params:
        assert param.help, f"fusion {words}: {param.name} has no description"
        long_names = [o for o in param.opts if o.startswith("--")]
        assert all(len(o) > 3 for o in long_names), f"fusion {words}: one-letter {long_names}"


@pytest.mark.parametrize(
    ("words", "choices"),
    [
        ("keys rotate", "hpke|salt"),
        ("vendor rotate", "signing|oprf"),
        ("vendor pack", "salted|oprf"),
        ("match", "salted|oprf"),
        ("token create", "|".join(ROLES)),
        ("bench", "|".join(BENCHMARKS)),
    ],
)
def test_fixed_choices_are_listed(words: str, choices: str):
    wide = runner.invoke(app, [*words.split(), "-h"], env={"COLUMNS": "400"})
    assert f"<{choices}>" in _flat(wide.stdout) or f"<list[{choices}]>" in _flat(wide.stdout)


def test_the_choices_are_the_platforms_own():
    assert tuple(TokenRole) == ROLES
    assert tuple(BenchName) == tuple(BENCHMARKS)


@pytest.mark.parametrize("words", ["vendor pack", "vendor evaluate"])
def test_the_output_defaults_are_stated(words: str):
    help_text = _flat(runner.invoke(app, [*words.split(), "-h"]).stdout)
    assert "Default: " in help_text and "<run>/vendor/" in help_text, help_text


def test_the_log_level_is_a_choice():
    result = runner.invoke(app, ["--log-level", "LOUD", "campaign", "list"])
    assert result.exit_code == 2
    assert "'LOUD' is not one of" in _flat(result.stderr)
