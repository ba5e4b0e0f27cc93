"""The command line: what each command prints, and one readable line with an exit code on error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from digest.cli import cli

WEEK = ["--since", "2026-11-16", "--until", "2026-11-22"]


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture
def starter(tmp_path: Path) -> Path:
    """A project written by `digest init`: the bundled example publication."""
    result = run("init", tmp_path / "news")
    assert result.exit_code == 0, result.output
    return tmp_path / "news" / "digest.toml"


def test_init_writes_a_project_that_builds(starter: Path) -> None:
    """`digest init` writes config, feeds, .env.example and a subscribers file that work as is."""
    folder = starter.parent
    assert {p.name for p in folder.iterdir()} >= {
        "digest.toml",
        ".env.example",
        "feeds",
        "subscribers.csv",
    }
    result = run("--config", starter, "build", *WEEK)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["sections"]


def test_init_refuses_to_overwrite_and_writes_nothing(starter: Path) -> None:
    """A second init in the same folder names the files it would overwrite and changes none."""
    starter.write_text("# mine\n", encoding="utf-8")
    result = run("init", starter.parent)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "would overwrite" in result.stderr
    assert "digest.toml" in result.stderr
    assert starter.read_text(encoding="utf-8") == "# mine\n"


def test_collect_prints_one_line_per_source(starter: Path) -> None:
    """Each source reports its new and updated articles; a second collect finds nothing new."""
    first = run("--config", starter, "collect")
    assert first.exit_code == 0, first.stderr
    assert first.stdout.splitlines() == [
        "Harbor Dispatch: 9 new, 0 updated",
        "Labor Desk: 4 new, 0 updated",
        "Americas Bureau: 5 new, 0 updated",
    ]
    again = run("--config", starter, "collect")
    assert "Harbor Dispatch: 0 new, 0 updated" in again.stdout


def test_a_failed_source_is_a_warning_and_the_rest_still_count(starter: Path) -> None:
    """A missing feed file is one warning naming the source; collect still succeeds."""
    (starter.parent / "feeds" / "labor-desk.atom").unlink()
    result = run("--config", starter, "collect")
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: Labor Desk: failed: ")
    assert "Harbor Dispatch: 9 new" in result.stdout


def test_collect_fails_only_when_every_source_failed(starter: Path) -> None:
    """With every feed gone, each is a warning and the command exits 1."""
    for feed in (starter.parent / "feeds").iterdir():
        feed.unlink()
    result = run("--config", starter, "collect")
    assert result.exit_code == 1
    assert result.stderr.count("warning: ") == 3
    assert "error: every source failed (3 of 3)" in result.stderr


def test_build_selects_the_week_by_section(starter: Path) -> None:
    """The example week comes out featured story first, then sections in config order."""
    issue = json.loads(run("--config", starter, "build", *WEEK).stdout)
    assert issue["id"] == "2026-W47"
    assert issue["period"] == {
        "start": "2026-11-16T00:00:00-05:00",
        "end": "2026-11-23T00:00:00-05:00",
    }
    assert (
        issue["featured"]["title"]
        == "Senate Deal on Disaster Aid Leaves Out Public Housing Repairs"
    )
    names = [section["name"] for section in issue["sections"]]
    assert names == ["US Politics", "Latin America", "Labor", "Climate", "More from the Dispatch"]
    labor = [a["title"] for a in issue["sections"][2]["articles"]]
    assert labor[0] == "Nurses at Two Bronx Hospitals Set a Strike Date"  # pinned source
    assert (
        "City Council Passes Heat Protections for Delivery Workers" in labor
    )  # Labor before Climate
    titles = [a["title"] for s in issue["sections"] for a in s["articles"]]
    assert (
        "House Committee Advances Bill to Cap Medical Debt Reporting" not in titles
    )  # week before
    assert len(titles) == len(set(titles))


def test_build_output_is_byte_identical_for_the_same_archive_and_period(starter: Path) -> None:
    """Building again offline prints exactly the same bytes."""
    first = run("--config", starter, "build", *WEEK)
    second = run("--config", starter, "build", "--offline", *WEEK)
    assert first.stdout == second.stdout
    assert first.stdout.endswith("}\n")


def test_feature_option_puts_that_article_on_top(starter: Path) -> None:
    """--feature URL overrides the featured category, and the article leaves its section."""
    url = "https://dispatch.example.org/2026/11/18/interconnection-queue-solar-backlog/"
    issue = json.loads(run("--config", starter, "build", "--feature", url, *WEEK).stdout)
    assert issue["featured"]["url"] == url
    assert url not in [a["url"] for s in issue["sections"] for a in s["articles"]]


def test_unknown_feature_url_is_an_error_with_a_hint(starter: Path) -> None:
    """A URL the archive does not hold is refused in one line."""
    result = run("--config", starter, "build", "--feature", "https://nowhere.example/x", *WEEK)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --feature: no archived article has the URL")


def test_missing_config_is_one_line_and_verbose_adds_the_traceback(tmp_path: Path) -> None:
    """Errors are one line on stderr; -v shows the traceback as well."""
    missing = tmp_path / "nope.toml"
    quiet = run("--config", missing, "collect")
    assert quiet.exit_code == 1
    assert quiet.stderr.strip().count("\n") == 0 and "Traceback" not in quiet.stderr
    loud = run("-v", "--config", missing, "collect")
    assert loud.exit_code == 1 and "Traceback" in loud.stderr


def test_a_malformed_date_is_a_usage_error(starter: Path) -> None:
    """--since with a non-date exits 2 with click's usage message."""
    result = run("--config", starter, "build", "--since", "last monday")
    assert result.exit_code == 2
    assert "'last monday' is not a date like 2026-11-22" in result.stderr


def test_days_with_since_is_refused(starter: Path) -> None:
    """Two ways of naming the period at once is an error, not a guess."""
    result = run("--config", starter, "build", "--offline", "--days", "3", "--since", "2026-11-16")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")


def test_python_dash_m_runs_the_same_cli(starter: Path) -> None:
    """`python -m digest` is the console script under another name."""
    done = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(starter), "build", *WEEK],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["id"] == "2026-W47"
