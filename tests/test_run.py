"""`digest run` from cron: each due period's issue goes out once, whatever starts it and when."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import filelock
import pytest
from click.testing import CliRunner
from smtp_server import SlowData, SmtpRecorder, kill_at, running
from test_send import SECRET, SUBSCRIBED, ledger_counts, run, smtp_env

from digest import pipeline, schedule
from digest.archive import Archive
from digest.cli import cli
from digest.config import load_config
from digest.ledger import Ledger
from digest.pipeline import LEDGER_FILE

WEEKLY = '[schedule]\nevery = "week"\nday = "saturday"\ntime = "08:00"\n'  # the example's
DAILY = '[schedule]\nevery = "day"\ntime = "06:00"\n'


def feed(published: list[datetime]) -> str:
    """An RSS feed with one story per time, in turn in each section the readers chose."""
    sections = ("Labor", "US Politics", "Latin America")
    items = "".join(
        f"<item><title>Story {n}</title><link>https://dispatch.example.org/s/{n}</link>"
        f"<guid>https://dispatch.example.org/s/{n}</guid>"
        f"<category>{sections[n % 3]}</category><pubDate>{format_datetime(when)}</pubDate>"
        f"<description>What happened, part {n}.</description></item>"
        for n, when in enumerate(published)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Harbor Dispatch</title><link>https://dispatch.example.org/</link>{items}"
        "</channel></rss>"
    )


def edit(config: Path, old: str, new: str) -> None:
    text = config.read_text(encoding="utf-8")
    assert old in text
    config.write_text(text.replace(old, new), encoding="utf-8")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The example project on a daily schedule, its main feed holding three stories from the
    period that is due now (the other feeds' stories are older)."""
    assert CliRunner().invoke(cli, ["init", str(tmp_path / "news")]).exit_code == 0
    config_path = tmp_path / "news" / "digest.toml"
    edit(config_path, WEEKLY, DAILY)
    config = load_config(config_path, environ={})
    due = schedule.latest_due(
        config.schedule, timezone=config.newsletter.timezone, now=datetime.now(UTC)
    )
    stories = [due - timedelta(hours=hours) for hours in (2, 5, 9)]
    (tmp_path / "news" / "feeds" / "dispatch.rss").write_text(feed(stories), encoding="utf-8")
    return config_path


@pytest.fixture
def smtp() -> Iterator[SmtpRecorder]:
    with running(SmtpRecorder()) as recorder:
        yield recorder


def test_a_run_sends_the_due_issue_silently_and_a_second_run_sends_nothing(
    project: Path, smtp: SmtpRecorder
) -> None:
    """On success cron gets no output; the next run finds the period sent and says so with -v."""
    first = run(project, "run", env=smtp_env(smtp))
    assert first.exit_code == 0, first.output
    assert first.output == ""
    assert smtp.copies() == {address: 1 for address in SUBSCRIBED}
    again = run(project, "-v", "run", env=smtp_env(smtp))
    assert again.exit_code == 0, again.output
    assert "already sent; the next issue is due " in again.stdout
    assert smtp.copies() == {address: 1 for address in SUBSCRIBED}


def test_a_run_warns_of_a_row_it_cannot_read_and_sends_the_others(
    project: Path, smtp: SmtpRecorder
) -> None:
    """A Latin-1 byte in one row: cron gets one warning naming its line; everyone else is sent."""
    with (project.parent / "subscribers.csv").open("ab") as handle:
        handle.write(b"zz@example.org,Ren\xe9,,subscribed\n")
    result = run(project, "run", env=smtp_env(smtp))
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "warning: subscribers.csv: left out 1 row(s) that cannot be read (line 7); "
        "`digest subscribers validate` says why\n"
    )
    assert smtp.copies() == {address: 1 for address in SUBSCRIBED}


def test_a_period_with_too_few_new_articles_is_skipped_and_logged(
    project: Path, smtp: SmtpRecorder, tmp_path: Path
) -> None:
    """min_articles above what the period has: nothing is sent and the reason is in the log
    file; the skip stands until the next due time (no collect, no late send), and then the
    waiting articles go out with the next period's."""
    edit(project, DAILY, DAILY + "min_articles = 4\n")
    log = tmp_path / "digest.log"
    result = run(project, "run", "--log-file", str(log), env=smtp_env(smtp))
    assert result.exit_code == 0, result.output
    assert result.output == "" and smtp.copies() == {}
    (line,) = log.read_text(encoding="utf-8").splitlines()
    assert "info too few articles:" in line
    assert "3 new articles, fewer than min_articles (4)" in line
    edit(project, "min_articles = 4", "min_articles = 3")
    again = run(project, "-v", "run", env=smtp_env(smtp))
    assert "fewer than min_articles (4)" in again.stdout and smtp.copies() == {}
    config = load_config(project, environ={"DIGEST_SECRET": SECRET})
    tomorrow = schedule.next_due(
        config.schedule, timezone=config.newsletter.timezone, after=datetime.now(UTC)
    ) + timedelta(minutes=5)
    outcome = pipeline.run_scheduled(config, now=tomorrow)
    assert outcome.status == "sent"
    (sent,) = outcome.sends
    assert sent.report.sent == 3  # to the outbox: this config has no SMTP_HOST
    with Archive.open(config.archive_path) as archive:
        issue = archive.issue(sent.issue_id)
    assert issue is not None and {a.title for a in issue.articles} >= {"Story 0", "Story 1"}


def test_json_log_lines_for_log_collectors(
    project: Path, smtp: SmtpRecorder, tmp_path: Path
) -> None:
    """--json writes one JSON object per event, with the counts as fields."""
    log = tmp_path / "digest.jsonl"
    assert run(project, "run", "--log-file", str(log), "--json", env=smtp_env(smtp)).exit_code == 0
    assert run(project, "run", "--log-file", str(log), "--json", env=smtp_env(smtp)).exit_code == 0
    sent, already = (json.loads(line) for line in log.read_text(encoding="utf-8").splitlines())
    assert (sent["level"], sent["event"], sent["sent"], sent["failed"]) == ("info", "sent", 3, 0)
    assert already["event"] == "already sent"
    assert datetime.fromisoformat(sent["time"]).tzinfo is not None


def test_a_run_into_the_outbox_says_so_on_stderr(project: Path) -> None:
    """From cron, an unset SMTP_HOST is a forgotten setting: the run says where mail went."""
    result = run(project, "run", env={"DIGEST_SECRET": SECRET, "SMTP_HOST": None})
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    outbox = project.parent / "outbox"
    assert result.stderr == f"warning: SMTP_HOST is unset: messages went to {outbox}\n"


def test_problems_go_to_stderr_and_the_exit_code(project: Path, smtp: SmtpRecorder) -> None:
    """A refused reader is a problem cron should mail: a warning line and exit 3."""
    smtp.refuse("bo.li@example.net", "550 5.1.1 no such mailbox")
    result = run(project, "run", env=smtp_env(smtp))
    assert result.exit_code == 3
    assert result.stdout == ""
    assert "warning: " in result.stderr and "2 sent, 1 failed" in result.stderr
    assert "failed 1 reader: bo.li@example.net (5.1.1 no such mailbox)" in result.stderr


def test_a_reader_a_run_skips_is_named_in_the_log_file_not_on_stderr(
    project: Path, smtp: SmtpRecorder, tmp_path: Path
) -> None:
    """A skipped reader needs no mail from cron: it is an info line, kept in --log-file."""
    with (project.parent / "subscribers.csv").open("a", encoding="utf-8") as file:
        file.write("two@@example.org,,,subscribed,,,,,\n")
    log = tmp_path / "digest.log"
    result = run(project, "run", "--log-file", str(log), env=smtp_env(smtp))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "skipped 1 reader: two@@example.org (not a valid address" in log.read_text("utf-8")


def digest_run(project: Path, recorder: SmtpRecorder) -> subprocess.Popen[str]:
    env = {**os.environ, **smtp_env(recorder)}
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(project), "-v", "run"],
        env={k: v for k, v in env.items() if v is not None},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_runs_started_together_deliver_one_copy_each(project: Path) -> None:
    """Cron twice at once: one run sends, the other finds it in progress and exits 0."""
    edit(project, "concurrency = 4", "concurrency = 1")
    with running(SmtpRecorder()) as slow:
        for address in SUBSCRIBED:
            slow.plan(address, SlowData(0.5))
        runs = [digest_run(project, slow), digest_run(project, slow)]
        outputs = [process.communicate(timeout=120) for process in runs]
        assert [process.returncode for process in runs] == [0, 0], outputs
        assert slow.copies() == {address: 1 for address in SUBSCRIBED}
    said = [stdout for stdout, _ in outputs]
    assert sum("another send of this list (a send or a run) is in" in o for o in said) == 1, said


def test_a_run_while_a_send_holds_the_lock_does_not_call_it_a_run(project: Path) -> None:
    """The lock a `digest send` holds stops a run; the run's line says a send or run holds it."""
    lock = (load_config(project).archive_path.parent / LEDGER_FILE).with_suffix(".lock")
    with running(SmtpRecorder()) as relay, filelock.FileLock(lock):
        result = run(project, "-v", "run", env=smtp_env(relay))
    assert result.exit_code == 0, result.output
    assert "another send of this list (a send or a run) is in progress" in result.output
    assert "another run" not in result.output


def test_a_run_killed_mid_send_is_resumed_by_the_next_run(project: Path) -> None:
    """SIGKILL during the send; the next run finishes it: one copy each, the one in flight
    recorded unknown (exit 3), and a third run sends nothing."""
    edit(project, "concurrency = 4", "concurrency = 1")
    with running(SmtpRecorder()) as slow:
        for address in SUBSCRIBED:
            slow.plan(address, SlowData(1.0))
        process = digest_run(project, slow)
        kill_at(process, slow, 2)
        resumed = run(project, "run", env=smtp_env(slow))
        assert resumed.exit_code == 3, resumed.output
        assert "1 sent, 0 failed, 1 unknown" in resumed.stderr
        assert slow.copies() == {address: 1 for address in SUBSCRIBED}
        assert run(project, "run", env=smtp_env(slow)).exit_code == 0
        assert slow.copies() == {address: 1 for address in SUBSCRIBED}
    with Ledger.open(load_config(project).archive_path.parent / LEDGER_FILE) as book:
        (issue,) = book.issues()
    assert ledger_counts(project, issue.issue_id) == (2, 0, 1, 0)


def test_an_error_is_one_line_on_stderr_and_one_in_the_log(project: Path, tmp_path: Path) -> None:
    """A broken config stops the run: cron mails one error line, and the log file keeps it."""
    edit(project, 'every = "day"', 'every = "fortnight"')
    log = tmp_path / "digest.log"
    result = run(project, "run", "--log-file", str(log), env={})
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: digest.toml:") and "schedule.every" in line
    (logged,) = log.read_text(encoding="utf-8").splitlines()
    assert " error failed: digest.toml:" in logged


NEW_YORK = ZoneInfo("America/New_York")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment of November 2026 in the example's zone."""
    return datetime(2026, 11, day, hour, minute, tzinfo=NEW_YORK)


def test_a_manual_send_mid_week_leaves_the_scheduled_issue_its_id_and_new_articles(
    tmp_path: Path,
) -> None:
    """A Thursday `digest send` gets an id of its own (with its last day); Saturday's run
    still sends 2026-W48, with exactly the stories published since the Thursday send; and a
    Sunday send after it gets its own id too."""
    assert CliRunner().invoke(cli, ["init", str(tmp_path / "news")]).exit_code == 0
    config = load_config(tmp_path / "news" / "digest.toml", environ={"DIGEST_SECRET": SECRET})
    feed_file = tmp_path / "news" / "feeds" / "dispatch.rss"
    stories = [at(20, 9), at(24, 9), at(26, 10), at(26, 16), at(27, 9)]  # Story 0 .. Story 4

    def published_by(now: datetime) -> None:
        feed_file.write_text(feed([s for s in stories if s <= now]), encoding="utf-8")

    def titles(issue_id: str) -> set[str]:
        with Archive.open(config.archive_path) as archive:
            issue = archive.issue(issue_id)
        assert issue is not None
        return {a.title for a in issue.articles if a.title.startswith("Story ")}

    published_by(at(21, 8, 15))
    first = pipeline.run_scheduled(config, now=at(21, 8, 15))
    assert (first.status, first.issue_id) == ("sent", "2026-W47")

    thursday = at(26, 15)
    published_by(thursday)
    pipeline.collect(config, now=thursday)
    manual = pipeline.send_issue(
        config, pipeline.PeriodRequest(), pipeline.SendOptions(), now=thursday
    )
    assert manual.issue_id == "2026-W48-2026-11-26"
    assert titles(manual.issue_id) == {"Story 1", "Story 2"}

    saturday = at(28, 8, 15)
    published_by(saturday)
    scheduled = pipeline.run_scheduled(config, now=saturday)
    assert (scheduled.status, scheduled.issue_id) == ("sent", "2026-W48")
    assert titles("2026-W48") == {"Story 3", "Story 4"}
    assert sum(sent.report.sent for sent in scheduled.sends) > 0
    with Archive.open(config.archive_path) as archive:
        (period,) = [r.period for r in archive.issue_records() if r.id == "2026-W48"]
    assert (period.start, period.end) == (thursday, at(28, 8))

    later = pipeline.run_scheduled(config, now=at(28, 8, 30))
    assert later.status == "already sent"

    sunday = at(29, 12)  # still ISO week 48, whose scheduled issue went out
    stories.append(at(29, 10))
    published_by(sunday)
    pipeline.collect(config, now=sunday)
    extra = pipeline.send_issue(
        config, pipeline.PeriodRequest(), pipeline.SendOptions(), now=sunday
    )
    assert extra.issue_id == "2026-W48-2026-11-29"
    assert titles(extra.issue_id) == {"Story 5"}


def test_a_manual_send_of_a_period_ending_ahead_loses_nothing_published_after_it(
    tmp_path: Path,
) -> None:
    """A Thursday send of the week up to Sunday could not carry Friday's story: Saturday's
    run sends it (under 2026-W48), rather than finding the week covered."""
    assert CliRunner().invoke(cli, ["init", str(tmp_path / "news")]).exit_code == 0
    config = load_config(tmp_path / "news" / "digest.toml", environ={"DIGEST_SECRET": SECRET})
    feed_file = tmp_path / "news" / "feeds" / "dispatch.rss"
    stories = [at(24, 9), at(27, 9)]  # Story 0 before the Thursday send, Story 1 after it
    thursday, saturday = at(26, 15), at(28, 8, 15)
    feed_file.write_text(feed(stories[:1]), encoding="utf-8")
    pipeline.collect(config, now=thursday)
    week = pipeline.PeriodRequest(since=date(2026, 11, 23), until=date(2026, 11, 29))
    manual = pipeline.send_issue(config, week, pipeline.SendOptions(), now=thursday)
    assert manual.issue_id == "2026-W48-2026-11-29"
    feed_file.write_text(feed(stories), encoding="utf-8")
    scheduled = pipeline.run_scheduled(config, now=saturday)
    assert (scheduled.status, scheduled.issue_id) == ("sent", "2026-W48")
    with Archive.open(config.archive_path) as archive:
        issue = archive.issue("2026-W48")
    assert issue is not None
    assert {a.title for a in issue.articles if a.title.startswith("Story ")} == {"Story 1"}
    assert issue.period.start == thursday
