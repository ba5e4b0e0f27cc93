"""The documentation keeps up with the code: every command and config key is described."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from digest.cli import cli
from digest.config import (
    CollectSettings,
    EmailSettings,
    ScheduleSettings,
    SelectionSettings,
    SendSettings,
    TrackingSettings,
)

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIG_DOC = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands() -> None:
    """A newcomer reads `make demo` and `make test` before anything else."""
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def command_paths() -> list[tuple[str, ...]]:
    """Every command, and every subcommand of a group such as `subscribers`, as its words."""
    paths: list[tuple[str, ...]] = []
    for name, command in sorted(cli.commands.items()):
        paths.append((name,))
        if isinstance(command, click.Group):
            paths += [(name, sub) for sub in sorted(command.commands)]
    return paths


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_has_help_and_a_readme_entry(path: tuple[str, ...]) -> None:
    """Each command and subcommand explains itself in --help and appears in the README's table."""
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    command: click.Command = cli
    for word in path:
        assert isinstance(command, click.Group)
        command = command.commands[word]
    assert command.help
    assert f"`digest {' '.join(path)}" in README


@pytest.mark.parametrize(
    ("table", "keys"),
    [
        ("collect", CollectSettings.__dataclass_fields__),
        ("selection", SelectionSettings.__dataclass_fields__),
        ("email", EmailSettings.__dataclass_fields__),
        ("tracking", TrackingSettings.__dataclass_fields__),
        ("send", SendSettings.__dataclass_fields__),
        ("schedule", ScheduleSettings.__dataclass_fields__),
    ],
)
def test_every_optional_setting_is_documented(table: str, keys: dict[str, object]) -> None:
    """Each field of the settings dataclasses has a row under its table's heading."""
    section = CONFIG_DOC.split(f"## `[{table}]`")[1].split("\n## ")[0].split("\n### ")[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))
    assert set(keys) == documented
