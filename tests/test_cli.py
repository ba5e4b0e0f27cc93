"""The command line: what each command prints, and one readable line with an exit code on error."""

from __future__ import annotations

import email
import json
import re
import signal
import subprocess
import sys
from datetime import datetime
from email import policy
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import HttpServer
from processes import signal_when, start_digest

from digest import tokens
from digest.archive import Archive
from digest.cli import cli
from digest.config import load_config
from digest.ledger import Ledger
from digest.models import Issue, Period
from digest.pipeline import LEDGER_FILE

WEEK = ["--since", "2026-11-16", "--until", "2026-11-22"]
JSON = ["--format", "json"]


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
    result = run("--config", starter, "build", *WEEK, *JSON)
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


def test_build_fails_when_every_source_failed(starter: Path) -> None:
    """With every feed gone, build warns for each and exits 1 rather than building from nothing."""
    for feed in (starter.parent / "feeds").iterdir():
        feed.unlink()
    result = run("--config", starter, "build", *WEEK)
    assert result.exit_code == 1
    assert result.stderr.count("warning: ") == 3
    assert "error: every source failed (3 of 3)" in result.stderr
    assert "--offline" in result.stderr
    assert not (starter.parent / "out").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_slow_collect_with_one_line_and_exit_130(
    starter: Path, http_server: HttpServer, signum: int
) -> None:
    """Ctrl-C or SIGTERM while a feed is slow to answer: exit 130 at once with one line."""
    slow = http_server.url("/slow/60/feeds/news-guardian-us-2018.rss")
    text = starter.read_text(encoding="utf-8")
    starter.write_text(text.replace('"feeds/dispatch.rss"', f'"{slow}"'), encoding="utf-8")
    process = start_digest(starter, "collect", env={})
    ended = signal_when(process, lambda: bool(http_server.arrived), signum, what="the slow feed")
    assert ended.seconds < 10, f"took {ended.seconds:.1f}s to stop"
    assert (ended.returncode, ended.stderr) == (130, "interrupted\n")


def test_build_selects_the_week_by_section(starter: Path) -> None:
    """The example week comes out featured story first, then sections in config order."""
    issue = json.loads(run("--config", starter, "build", *WEEK, *JSON).stdout)
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


@pytest.mark.parametrize(
    "days", [("1900-01-01", "1900-01-03"), ("9998-12-20", "9998-12-31")], ids=["first", "last"]
)
def test_build_takes_a_period_at_either_end_of_the_calendar(
    starter: Path, days: tuple[str, str]
) -> None:
    """A period at either end of the days digest takes gets its id and builds: no bug."""
    since, until = days
    result = run("--config", starter, "build", "--offline", "--since", since, "--until", until)
    assert result.exit_code == 0, result.output
    assert "no articles between" in result.stderr


def test_build_output_is_byte_identical_for_the_same_archive_and_period(starter: Path) -> None:
    """Building again offline prints exactly the same bytes."""
    first = run("--config", starter, "build", *WEEK, *JSON)
    second = run("--config", starter, "build", "--offline", *WEEK, *JSON)
    assert first.stdout == second.stdout
    assert first.stdout.endswith("}\n")


def test_feature_option_puts_that_article_on_top(starter: Path) -> None:
    """--feature URL overrides the featured category, and the article leaves its section."""
    url = "https://dispatch.example.org/2026/11/18/interconnection-queue-solar-backlog/"
    issue = json.loads(run("--config", starter, "build", "--feature", url, *WEEK, *JSON).stdout)
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


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["build", "--days", "100000000"], "Invalid value for '--days'"),
        (["build", "--since", "9999-12-30", "--until", "9999-12-31"], "'9999-12-30' is not"),
        (["build", "--until", "9999-12-31"], "'9999-12-31' is not between"),
        (["send", "--since", "0001-01-01", "--dry-run"], "'0001-01-01' is not between"),
        (["send", "--limit", "99999999999999999999", "--dry-run"], "Invalid value for '--limit'"),
        (["serve", "--host", "999.1.1.1"], "'999.1.1.1' is not an address or a name"),
    ],
)
def test_an_option_beyond_what_digest_can_hold_is_a_usage_error(
    starter: Path, args: list[str], said: str
) -> None:
    """A date, a day count or a host digest could not use is exit 2 with click's error line,
    before the command starts (not an overflow, exit 70)."""
    result = run("--config", starter, *args)
    assert result.exit_code == 2, result.output
    assert said in result.stderr.splitlines()[-1]


def test_days_with_since_is_refused(starter: Path) -> None:
    """Two ways of naming the period at once is an error, not a guess."""
    result = run("--config", starter, "build", "--offline", "--days", "3", "--since", "2026-11-16")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")


def test_python_dash_m_runs_the_same_cli(starter: Path) -> None:
    """`python -m digest` is the console script under another name."""
    done = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(starter), "build", *WEEK, *JSON],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["id"] == "2026-W47"


# digest build: the email files

NO_SECRET = {"DIGEST_SECRET": ""}
SECRET = "k3y-for-tests-only-Xq9vT2pLm8Rz4WbN"


def test_build_writes_html_text_and_eml_beside_the_config(starter: Path) -> None:
    """By default build writes out/ISSUE.{html,txt,eml} and prints their paths, one a line."""
    result = run("--config", starter, "build", *WEEK, env=NO_SECRET)
    assert result.exit_code == 0, result.stderr
    out = starter.parent / "out"
    assert result.stdout.splitlines() == [
        str(out / "2026-W47.html"),
        str(out / "2026-W47.txt"),
        str(out / "2026-W47.eml"),
    ]
    html = (out / "2026-W47.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "Senate Deal on Disaster Aid" in html
    assert (out / "2026-W47.txt").read_text(encoding="utf-8").startswith("THE HARBOR DISPATCH")
    parsed = email.message_from_bytes((out / "2026-W47.eml").read_bytes(), policy=policy.default)
    assert parsed["To"] == "reader@example.org"
    assert parsed.get_content_type() == "multipart/alternative"


def test_build_out_writes_into_another_folder(starter: Path, tmp_path: Path) -> None:
    """--out DIR puts the three files there, creating the folder."""
    target = tmp_path / "elsewhere" / "issue"
    result = run("--config", starter, "build", *WEEK, "--out", target, env=NO_SECRET)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in target.iterdir()) == [
        "2026-W47.eml",
        "2026-W47.html",
        "2026-W47.txt",
    ]
    assert not (starter.parent / "out").exists()


@pytest.mark.parametrize(
    ("kind", "starts"),
    [("html", "<!DOCTYPE html>"), ("text", "THE HARBOR DISPATCH WEEKLY"), ("eml", "From: ")],
)
def test_build_format_prints_one_to_stdout_and_writes_nothing(
    starter: Path, kind: str, starts: str
) -> None:
    """--format html|text|eml prints that one and writes no file."""
    result = run("--config", starter, "build", *WEEK, "--format", kind, env=NO_SECRET)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(starts)
    assert not (starter.parent / "out").exists()


def test_build_without_a_secret_warns_and_uses_a_fake_token(starter: Path) -> None:
    """With DIGEST_SECRET unset the links carry an obviously fake token, and stderr says so."""
    result = run("--config", starter, "build", *WEEK, "--format", "text", env=NO_SECRET)
    assert "warning: DIGEST_SECRET is unset" in result.stderr
    assert "unsubscribe?t=PREVIEW-NOT-A-REAL-TOKEN" in result.stdout


def test_build_with_a_secret_signs_the_readers_links(starter: Path) -> None:
    """With DIGEST_SECRET set, the unsubscribe link's token verifies for the sample reader."""
    result = run(
        "--config", starter, "build", *WEEK, "--format", "eml", env={"DIGEST_SECRET": SECRET}
    )
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr
    parsed = email.message_from_bytes(result.stdout_bytes, policy=policy.default)
    link, mailto = re.findall(r"<([^>]*)>", str(parsed["List-Unsubscribe"]))
    assert mailto.startswith("mailto:")
    assert link.startswith("https://dispatch.example.org/digest/unsubscribe?t=")
    token = link.split("t=", 1)[1]
    config = load_config(starter, environ={"DIGEST_SECRET": SECRET})
    address = tokens.verify_token(
        token, list_id=tokens.list_id(config), secret=tokens.secret_from(config)
    )
    assert address == "reader@example.org"


def test_build_for_a_subscriber_renders_their_copy(starter: Path) -> None:
    """--for EMAIL uses that subscriber's name, language and address from the subscriber file."""
    result = run(
        "--config", starter, "build", *WEEK, "--for", "ana.perez@example.org", "--format", "eml",
        env=NO_SECRET,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    parsed = email.message_from_bytes(result.stdout_bytes, policy=policy.default)
    assert parsed["To"] == "Ana Pérez <ana.perez@example.org>"
    text = parsed.get_body(preferencelist=("plain",))
    assert text is not None and "Hola, Ana:" in text.get_content()


def test_build_for_an_unknown_address_is_an_error(starter: Path) -> None:
    """--for an address not in the subscriber file exits 1 with a hint."""
    result = run("--config", starter, "build", *WEEK, "--for", "nobody@example.org")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "nobody@example.org" in result.stderr


def test_build_note_puts_the_editors_note_in_the_email(starter: Path, tmp_path: Path) -> None:
    """--note FILE shows that plain text under the header, in HTML and text alike."""
    note = tmp_path / "note.txt"
    note.write_text("Thanks for reading <3\n\nSee you next week.\n", encoding="utf-8")
    with_note = ["--config", starter, "build", *WEEK, "--note", note]
    html = run(*with_note, "--format", "html", env=NO_SECRET)
    assert "Thanks for reading &lt;3" in html.stdout
    text = run(*with_note, "--format", "text", env=NO_SECRET)
    assert "  See you next week." in text.stdout.splitlines()


def test_build_with_a_broken_template_names_the_file_and_line(starter: Path) -> None:
    """A template mistake is one error line with the template's path and line, exit 1."""
    folder = starter.parent / "templates" / "partials"
    folder.mkdir(parents=True)
    (folder / "header.html.j2").write_text("<tr><td>\n{{ issue.nope }}\n</td></tr>\n", "utf-8")
    with starter.open("a", encoding="utf-8") as config:
        config.write('\n[email]\ntemplates = "templates"\n')
    result = run("--config", starter, "build", *WEEK, env=NO_SECRET)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith(f"error: {folder / 'header.html.j2'}:2: ")


def test_a_language_without_a_catalog_is_one_warning(starter: Path) -> None:
    """`language = "pt"` builds, with one warning on stderr that its words are English."""
    text = starter.read_text(encoding="utf-8")
    starter.write_text(text.replace('language = "en"', 'language = "pt"'), encoding="utf-8")
    result = run("--config", starter, "build", *WEEK, *JSON)
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "newsletter.language" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: digest.toml: newsletter")


@pytest.mark.parametrize("rate", ["nan", "inf", "-inf", "0", "-3"])
def test_send_refuses_a_rate_that_is_no_rate(starter: Path, rate: str) -> None:
    """--rate nan, inf, zero or negative is a usage error (exit 2) naming the option."""
    result = run("--config", starter, "send", *WEEK, "--rate", rate)
    assert result.exit_code == 2
    assert "--rate" in result.stderr and rate in result.stderr


def test_build_shows_a_recorded_issues_period_in_the_newsletters_time_zone(starter: Path) -> None:
    """A recorded issue comes back from the archive in UTC; its dates print in New York time."""
    config = load_config(starter, environ={})
    zone = config.newsletter.timezone
    period = Period(datetime(2020, 1, 1, tzinfo=zone), datetime(2020, 1, 8, tzinfo=zone))
    with Archive.open(config.archive_path) as archive:
        archive.record_issue(Issue("2020-W02", period, None, ()), created_at=period.end)
    with Ledger.open(config.archive_path.parent / LEDGER_FILE) as book:
        book.freeze("2020-W02", variants={}, recipients=(), at=period.end)
    result = run("--config", starter, "build", "--since", "2020-01-01", "--until", "2020-01-07")
    assert "no articles between 2020-01-01 00:00 and 2020-01-08 00:00;" in result.stderr
