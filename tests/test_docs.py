"""The documentation keeps up with the code: every command and config key is described."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import cli
from digest.config import CollectSettings, EmailSettings, SelectionSettings, TrackingSettings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIG_DOC = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_commands() -> None:
    """A newcomer reads `make demo` and `make test` before anything else."""
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_and_a_readme_entry(name: str) -> None:
    """Each command explains itself in --help and appears in the README's command table."""
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0
    assert cli.commands[name].help
    assert f"`digest {name}" in README


@pytest.mark.parametrize(
    ("table", "keys"),
    [
        ("collect", CollectSettings.__dataclass_fields__),
        ("selection", SelectionSettings.__dataclass_fields__),
        ("email", EmailSettings.__dataclass_fields__),
        ("tracking", TrackingSettings.__dataclass_fields__),
    ],
)
def test_every_optional_setting_is_documented(table: str, keys: dict[str, object]) -> None:
    """Each field of the settings dataclasses has a row under its table's heading."""
    section = CONFIG_DOC.split(f"## `[{table}]`")[1].split("\n## ")[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE))
    assert set(keys) == documented
