"""`digest send` end to end: the example project to a real SMTP server, once per reader."""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
import pty
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import dkim
import filelock
import pytest
from click.testing import CliRunner, Result
from dkim_keys import make_key
from processes import Ended, signal_when, start_digest
from smtp_server import (
    DROP_AFTER_DATA,
    SlowData,
    SmtpRecorder,
    kill_at,
    password_checker,
    running,
)

from digest import pipeline
from digest.archive import Archive
from digest.cli import cli
from digest.config import load_config
from digest.ledger import Ledger
from digest.models import SubscriberStatus
from digest.pipeline import LEDGER_FILE
from digest.subscribers import SubscriberFile

WEEK = ["--since", "2026-11-16", "--until", "2026-11-22"]
SECRET = "Qm3kd9Zp2Lx8Wv1Rt7Yb4Nc6Hs0Jf5Ga"
SUBSCRIBED = {"ana.perez@example.org", "bo.li@example.net", "cy.okoro@example.com"}


def run(config: Path, *args: str, env: dict[str, str | None]) -> Result:
    return CliRunner().invoke(
        cli, ["--config", str(config), *args], env=env, catch_exceptions=False
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The example project from `digest init`, collected, so its archive holds the week."""
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(tmp_path / "news")]).exit_code == 0
    config = tmp_path / "news" / "digest.toml"
    collected = runner.invoke(cli, ["--config", str(config), "collect"])
    assert collected.exit_code == 0, collected.output
    return config


@pytest.fixture
def smtp() -> Iterator[SmtpRecorder]:
    """A real aiosmtpd server on 127.0.0.1 recording every message it accepts."""
    with running(SmtpRecorder()) as recorder:
        yield recorder


def smtp_env(recorder: SmtpRecorder) -> dict[str, str | None]:
    return {
        "DIGEST_SECRET": SECRET,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(recorder.port),
        "SMTP_SECURITY": "none",
        "SMTP_USERNAME": None,
        "SMTP_PASSWORD": None,
    }


def test_send_delivers_one_copy_to_each_subscribed_reader_and_a_rerun_sends_none(
    project: Path, smtp: SmtpRecorder
) -> None:
    """Every subscribed reader gets exactly one copy; running the send again sends nothing."""
    first = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert first.exit_code == 0, first.output
    assert "3 sent, 0 failed, 0 unknown, 0 skipped" in first.stdout
    assert "messages/s" in first.stdout
    assert smtp.copies() == {address: 1 for address in SUBSCRIBED}
    again = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert again.exit_code == 0, again.output
    assert "0 sent, 0 failed, 0 unknown" in again.stdout
    assert smtp.copies() == {address: 1 for address in SUBSCRIBED}


def test_a_refused_address_is_marked_bounced_and_the_send_exits_3(
    project: Path, smtp: SmtpRecorder
) -> None:
    """A 550 for one reader marks them bounced in the CSV; the others get theirs; exit code 3."""
    smtp.refuse("bo.li@example.net", "550 5.1.1 no such mailbox")
    result = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert result.exit_code == 3, result.output
    assert "2 sent, 1 failed, 0 unknown" in result.stdout
    named, error = result.stderr.splitlines()
    assert named == "failed 1 reader: bo.li@example.net (5.1.1 no such mailbox)"
    assert error.startswith("error: 1 failed, 0 unknown")
    assert smtp.copies() == {"ana.perez@example.org": 1, "cy.okoro@example.com": 1}
    subscribers = SubscriberFile(project.parent / "subscribers.csv")
    bounced = subscribers.find("bo.li@example.net")
    assert bounced is not None and bounced.status is SubscriberStatus.BOUNCED
    kept = subscribers.find("ana.perez@example.org")
    assert kept is not None and kept.status is SubscriberStatus.SUBSCRIBED


def test_with_mark_bounced_off_a_refusal_leaves_the_list_alone(
    project: Path, smtp: SmtpRecorder
) -> None:
    """[send] mark_bounced = false: the copy is failed in the ledger, the CSV is not touched."""
    text = project.read_text(encoding="utf-8")
    project.write_text(text.replace("concurrency = 4", "mark_bounced = false"), encoding="utf-8")
    readers = project.parent / "subscribers.csv"
    before = readers.read_bytes()
    smtp.refuse("bo.li@example.net", "550 5.1.1 no such mailbox")
    result = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert result.exit_code == 3 and "2 sent, 1 failed" in result.stdout
    assert readers.read_bytes() == before
    assert not readers.with_name("subscribers.csv.bak").exists()


def add_row(project: Path, address: str) -> None:
    with (project.parent / "subscribers.csv").open("a", encoding="utf-8") as file:
        file.write(f"{address},José,,subscribed,,,,,\n")


def test_a_utf8_address_is_sent_with_smtputf8_and_named_when_the_relay_cannot(
    project: Path,
) -> None:
    """josé@exämple.org gets a copy through a relay offering SMTPUTF8; through one that does
    not, the copy fails with that reason, named in the summary, exit 3, and the next send
    through a relay that offers it delivers it. jo@exämple.org needs only IDNA: sent anyway."""
    add_row(project, "josé@exämple.org")
    add_row(project, "jo@exämple.org")
    with running(SmtpRecorder(), enable_SMTPUTF8=False) as ascii_only:
        first = run(project, "send", *WEEK, env=smtp_env(ascii_only))
    assert first.exit_code == 3, first.output
    assert "4 sent, 1 failed, 0 unknown, 0 skipped" in first.stdout
    assert "failed 1 reader: josé@exämple.org (not sent: the address needs SMTPUTF8" in (
        first.stderr
    )
    assert ascii_only.copies() == {a: 1 for a in {*SUBSCRIBED, "jo@xn--exmple-cua.org"}}
    assert all(m.mail_options == () for m in ascii_only.messages)
    with running(SmtpRecorder()) as relay:
        again = run(project, "send", *WEEK, env=smtp_env(relay))
    assert again.exit_code == 0, again.output
    assert "1 sent, 0 failed" in again.stdout
    assert relay.copies() == {"josé@xn--exmple-cua.org": 1}
    (copy,) = relay.messages
    assert copy.mail_options == ("SMTPUTF8",)


def test_a_refused_reader_of_an_international_domain_is_marked_bounced_as_listed(
    project: Path, smtp: SmtpRecorder
) -> None:
    """The relay refuses jo@xn--exmple-cua.org, the form it was given: the list's row
    jo@exämple.org is marked bounced, and the summary names it as the list writes it."""
    add_row(project, "jo@exämple.org")
    smtp.refuse("jo@xn--exmple-cua.org", "550 5.1.1 no such mailbox")
    result = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert result.exit_code == 3, result.output
    assert "failed 1 reader: jo@exämple.org (5.1.1 no such mailbox)" in result.stderr
    found = SubscriberFile(project.parent / "subscribers.csv").find("jo@exämple.org")
    assert found is not None and found.status is SubscriberStatus.BOUNCED


def test_every_reader_a_send_skips_is_named_with_the_reason(
    project: Path, smtp: SmtpRecorder
) -> None:
    """A row whose address cannot be sent to is skipped, and the summary names it and why."""
    add_row(project, "two@@example.org")
    result = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert result.exit_code == 0, result.output
    assert "3 sent, 0 failed, 0 unknown, 1 skipped" in result.stdout
    assert "skipped 1 reader: two@@example.org (not a valid address" in result.stderr


def test_without_smtp_host_messages_go_to_the_outbox_maildir(project: Path) -> None:
    """With SMTP_HOST unset, each copy is one file in outbox/ beside the config, and it says so."""
    env: dict[str, str | None] = {"DIGEST_SECRET": SECRET, "SMTP_HOST": None}
    result = run(project, "send", *WEEK, env=env)
    assert result.exit_code == 0, result.output
    assert "outbox" in result.stdout and "3 sent" in result.stdout
    outbox = mailbox.Maildir(project.parent / "outbox", create=False)
    recipients = {str(message["To"]).rsplit("<", 1)[-1].rstrip(">") for message in outbox}
    assert recipients == SUBSCRIBED


def test_rate_into_the_outbox_is_one_warning_line(project: Path) -> None:
    """--rate paces SMTP connections only; into the outbox it says so once, and still sends."""
    env: dict[str, str | None] = {"DIGEST_SECRET": SECRET, "SMTP_HOST": None}
    result = run(project, "send", *WEEK, "--rate", "5", env=env)
    assert result.exit_code == 0, result.output
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "--rate applies to SMTP only" in warning
    assert "3 sent" in result.stdout


EMPTY_WEEK = ["--since", "2026-10-05", "--until", "2026-10-11"]  # before the example's stories


@pytest.mark.parametrize("mode", [[], ["--dry-run"], ["--to", "editor@example.org"]])
def test_an_issue_with_no_articles_is_refused_with_a_hint(
    project: Path, smtp: SmtpRecorder, mode: list[str]
) -> None:
    """A send, a dry run or a test copy of an empty issue is one error naming --allow-empty;
    nothing goes out and nothing is recorded."""
    result = run(project, "send", *EMPTY_WEEK, *mode, env=smtp_env(smtp))
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: issue 2026-W41 has no articles between 2026-10-05 00:00 and ")
    assert "--allow-empty" in line
    assert smtp.copies() == {}
    assert run(project, "issues", env=smtp_env(smtp)).stdout.strip() == "no issues yet"


def test_allow_empty_sends_an_issue_with_no_articles(project: Path, smtp: SmtpRecorder) -> None:
    """--allow-empty is the editor saying so: a reader of every section gets the empty issue
    (those who chose sections are skipped, as whenever theirs are empty)."""
    result = run(project, "send", *EMPTY_WEEK, "--allow-empty", env=smtp_env(smtp))
    assert result.exit_code == 0, result.output
    assert "1 sent, 0 failed, 0 unknown, 2 skipped" in result.stdout
    assert smtp.copies() == {"ana.perez@example.org": 1}


def test_a_send_by_hand_left_unfinished_is_resumed_by_the_next_days_send(project: Path) -> None:
    """Without a period, `digest send` on Friday finishes Thursday's interrupted issue (its id
    has Thursday's date) rather than sending its stories again in a new one."""
    config = load_config(project, environ={"DIGEST_SECRET": SECRET})
    zone = config.newsletter.timezone
    thursday, friday = (datetime(2026, 11, d, 15, tzinfo=zone) for d in (19, 20))
    default = pipeline.PeriodRequest()
    first = pipeline.send_issue(config, default, pipeline.SendOptions(limit=1), now=thursday)
    assert (first.issue_id, first.report.sent) == ("2026-W47-2026-11-19", 1)
    rest = pipeline.send_issue(config, default, pipeline.SendOptions(), now=friday)
    assert (rest.issue_id, rest.report.sent) == ("2026-W47-2026-11-19", 2)
    with Archive.open(config.archive_path) as archive:
        assert [r.id for r in archive.issue_records()] == ["2026-W47-2026-11-19"]


def test_a_row_that_is_not_utf8_is_a_warning_and_the_others_get_their_copy(
    project: Path, smtp: SmtpRecorder
) -> None:
    """A Latin-1 byte in one row: the send warns, naming its line, and everyone else is sent."""
    readers = project.parent / "subscribers.csv"
    with readers.open("ab") as handle:
        handle.write(b"zz@example.org,Ren\xe9,,subscribed\n")
    before = readers.read_bytes()
    result = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert result.exit_code == 0, result.output
    assert smtp.copies() == {address: 1 for address in SUBSCRIBED}
    assert "warning: subscribers.csv: left out 1 row(s) that cannot be read (line 7)" in (
        result.stderr
    )
    assert readers.read_bytes() == before


def test_dry_run_composes_every_copy_and_sends_none(project: Path, smtp: SmtpRecorder) -> None:
    """--dry-run prints one sample message and a count, delivers nothing and freezes nothing."""
    result = run(project, "send", *WEEK, "--dry-run", env=smtp_env(smtp))
    assert result.exit_code == 0, result.output
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in result.stdout
    assert result.stdout.rstrip().endswith("dry run: 3 composed, 0 skipped, nothing sent")
    assert smtp.copies() == {}
    real = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert "3 sent" in real.stdout


def test_a_limited_send_resumes_where_it_stopped(project: Path, smtp: SmtpRecorder) -> None:
    """--limit 1 sends one copy; the next run sends only the other two, with the frozen content
    even though the subject template changed in between."""
    first = run(project, "send", *WEEK, "--limit", "1", env=smtp_env(smtp))
    assert first.exit_code == 0, first.output
    assert "1 sent" in first.stdout
    with project.open("a", encoding="utf-8") as config:
        config.write('\n[email]\nsubject = "Changed after the freeze"\n')
    rest = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert rest.exit_code == 0, rest.output
    assert "2 sent, 0 failed, 0 unknown" in rest.stdout
    assert smtp.copies() == {address: 1 for address in SUBSCRIBED}
    subjects = [m.data.split(b"\r\nSubject: ")[1].split(b"\r\n")[0] for m in smtp.messages]
    assert all(b"Harbor Dispatch Weekly" in s and b"Changed" not in s for s in subjects)


def test_a_send_killed_part_way_resumes_without_a_second_copy(project: Path) -> None:
    """SIGKILL mid-send, then a rerun: each reader has one copy; the one in flight is unknown."""
    with running(SmtpRecorder()) as slow:
        for address in SUBSCRIBED:
            slow.plan(address, SlowData(1.0))  # the server keeps the data, answers a second late
        env = {**os.environ, **smtp_env(slow), "SMTP_USERNAME": "", "SMTP_PASSWORD": ""}
        command = [sys.executable, "-m", "digest", "--config", str(project), "send", *WEEK]
        process = subprocess.Popen(
            [*command, "--concurrency", "1"],
            env={k: v for k, v in env.items() if v is not None},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        kill_at(process, slow, 2)
        assert len(slow.messages) == 2  # killed while the second copy awaited its reply
        resumed = run(project, "send", *WEEK, env=smtp_env(slow))
        assert resumed.exit_code == 3, resumed.output
        assert "1 sent, 0 failed, 1 unknown" in resumed.stdout
        assert slow.copies() == {address: 1 for address in SUBSCRIBED}
    ledger_path = load_config(project).archive_path.parent / LEDGER_FILE
    with Ledger.open(ledger_path) as book:
        counts = book.counts("2026-W47")
    assert (counts.sent, counts.unknown, counts.pending, counts.sending) == (2, 1, 0, 0)


def test_readers_added_after_the_freeze_get_the_issue_only_with_include_new(
    project: Path, smtp: SmtpRecorder
) -> None:
    """A subscriber added after the send began is left out on a rerun, which says so and how
    to include them; --include-new sends them theirs."""
    assert run(project, "send", *WEEK, env=smtp_env(smtp)).exit_code == 0
    added = run(project, "subscribers", "add", "new.reader@example.org", env=smtp_env(smtp))
    assert added.exit_code == 0, added.output
    again = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert "0 sent" in again.stdout and "new.reader@example.org" not in smtp.copies()
    assert again.stderr == (
        "warning: left out: 1 reader added since 2026-W47 began; "
        "run it again with --include-new to send them theirs\n"
    )
    included = run(project, "send", *WEEK, "--include-new", env=smtp_env(smtp))
    assert included.exit_code == 0, included.output
    assert "warning" not in included.stderr
    assert "1 sent, 0 failed" in included.stdout
    assert smtp.copies() == {address: 1 for address in {*SUBSCRIBED, "new.reader@example.org"}}


def ledger_counts(config: Path, issue_id: str = "2026-W47") -> tuple[int, int, int, int]:
    """The issue's (sent, failed, unknown, pending) rows."""
    with Ledger.open(load_config(config).archive_path.parent / LEDGER_FILE) as book:
        counts = book.counts(issue_id)
    return counts.sent, counts.failed, counts.unknown, counts.pending


def test_a_complete_send_records_the_issue_as_sent_in_the_archive(
    project: Path, smtp: SmtpRecorder
) -> None:
    """Once no copy is pending the issue is sent: its articles are not offered again (those
    the sections had no room for still are), and the next period starts where it ended."""
    assert run(project, "send", *WEEK, "--limit", "2", env=smtp_env(smtp)).exit_code == 0
    with Archive.open(load_config(project).archive_path) as archive:
        assert archive.last_sent_period_end() is None  # one copy still pending
    assert run(project, "send", *WEEK, env=smtp_env(smtp)).exit_code == 0
    with Archive.open(load_config(project).archive_path) as archive:
        issue = archive.issue("2026-W47")
        assert issue is not None and issue.articles
        assert archive.last_sent_period_end() == issue.period.end
        offered = {article.id for article in archive.candidates(issue.period)}
        assert offered and not offered & {article.id for article in issue.articles}


def test_retry_unknown_resends_only_the_copies_whose_fate_was_unknown(
    project: Path, smtp: SmtpRecorder
) -> None:
    """A connection lost after the data leaves that copy unknown (exit 3), never resent by a
    plain rerun; --retry-unknown sends it again and nobody else."""
    smtp.plan("bo.li@example.net", DROP_AFTER_DATA)
    first = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert first.exit_code == 3, first.output
    assert "2 sent, 0 failed, 1 unknown" in first.stdout
    assert "--retry-unknown" in first.stderr
    again = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert "0 sent, 0 failed, 0 unknown" in again.stdout
    retried = run(project, "send", *WEEK, "--retry-unknown", env=smtp_env(smtp))
    assert retried.exit_code == 0, retried.output
    assert "1 sent, 0 failed, 0 unknown" in retried.stdout
    # The server kept the first copy before hanging up: the reader may now have two.
    assert smtp.copies() == {"ana.perez@example.org": 1, "bo.li@example.net": 2,
                             "cy.okoro@example.com": 1}  # fmt: skip
    assert ledger_counts(project) == (3, 0, 0, 0)


def test_to_sends_test_copies_and_records_nothing(project: Path, smtp: SmtpRecorder) -> None:
    """--to mails each address a copy (a subscriber's as they would get it) with a Message-ID
    of its own; the issue's real send afterwards still reaches everyone."""
    result = run(
        project, "send", *WEEK, "--to", "editor@example.org", "--to", "ana.perez@example.org",
        env=smtp_env(smtp),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2026-W47: test copies: 2 sent" in result.stdout
    assert smtp.copies() == {"editor@example.org": 1, "ana.perez@example.org": 1}
    tests = list(smtp.messages)
    assert all(b"\r\nSubject: The Harbor Dispatch Weekly" in m.data for m in tests)
    to_ana = next(m.data for m in tests if "ana.perez@example.org" in m.recipients)
    text = email.message_from_bytes(to_ana, policy=email.policy.default).get_body(("plain",))
    assert text is not None and "Hola, Ana" in text.get_content()  # her language, her name
    with Ledger.open(load_config(project).archive_path.parent / LEDGER_FILE) as book:
        assert book.frozen_at("2026-W47") is None
    real = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert "3 sent" in real.stdout
    ids = [m.data.split(b"\r\nMessage-ID: ")[1].split(b"\r\n")[0] for m in smtp.messages]
    assert len(set(ids)) == len(ids) == 5
    bad = run(project, "send", *WEEK, "--to", "not an address", env=smtp_env(smtp))
    assert bad.exit_code == 1 and bad.stderr.startswith("error: --to:")


def test_issue_option_resumes_a_recorded_issue_and_names_an_unknown_one(
    project: Path, smtp: SmtpRecorder
) -> None:
    """--issue ID finishes the send of a recorded issue without naming its period again."""
    assert run(project, "send", *WEEK, "--limit", "1", env=smtp_env(smtp)).exit_code == 0
    rest = run(project, "send", "--issue", "2026-W47", env=smtp_env(smtp))
    assert rest.exit_code == 0, rest.output
    assert "2026-W47: 2 sent, 0 failed" in rest.stdout
    assert smtp.copies() == {address: 1 for address in SUBSCRIBED}
    unknown = run(project, "send", "--issue", "2099-W01", env=smtp_env(smtp))
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: --issue: no issue 2099-W01 was recorded")


def test_a_second_send_while_one_is_running_is_refused(project: Path, smtp: SmtpRecorder) -> None:
    """Two sends of one list at once would race on the ledger; the second stops, sending none."""
    lock = (load_config(project).archive_path.parent / LEDGER_FILE).with_suffix(".lock")
    with filelock.FileLock(lock):
        refused = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert refused.exit_code == 1
    assert "another send of this list is in progress" in refused.stderr
    assert smtp.copies() == {}


def test_without_a_terminal_progress_is_a_line_per_thousand_messages(project: Path) -> None:
    """Under cron or in a pipe: a line on stderr every 1,000 copies, then the summary."""
    readers = project.parent / "subscribers.csv"
    with readers.open("a", encoding="utf-8") as file:
        file.writelines(f"reader{n}@example.org,,,subscribed,,,,,\n" for n in range(1000))
    result = run(project, "send", *WEEK, env={"DIGEST_SECRET": SECRET, "SMTP_HOST": None})
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "2026-W47: 1,000/1,003 done, 1,000 sent, 0 failed, 0 unknown, "
        + result.stderr.split("unknown, ")[1].split("\n")[0]
    ]
    assert "1,003 sent, 0 failed, 0 unknown" in result.stdout


def test_on_a_terminal_progress_is_a_bar(project: Path) -> None:
    """Run in a pseudo-terminal, the send draws a progress bar with its tallies."""
    env = {**os.environ, "DIGEST_SECRET": SECRET, "COLUMNS": "120"}
    env.pop("SMTP_HOST", None)
    terminal, child_end = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(project), "send", *WEEK],
        stdin=child_end,
        stdout=child_end,
        stderr=child_end,
        env=env,
    )
    os.close(child_end)
    output = bytearray()
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        output.extend(chunk)
    os.close(terminal)
    assert process.wait(timeout=60) == 0
    shown = output.decode("utf-8", "replace")
    assert "━" in shown and "3/3" in shown and "3 sent · 0 failed" in shown


def test_build_after_a_send_shows_the_issue_that_went_out(
    project: Path, smtp: SmtpRecorder
) -> None:
    """Once sent, a period's articles are taken; building that week again shows the sent issue,
    not an empty one, and a --feature for it is refused."""
    before = run(project, "build", *WEEK, "--format", "json", env=smtp_env(smtp))
    assert run(project, "send", *WEEK, env=smtp_env(smtp)).exit_code == 0
    after = run(project, "build", *WEEK, "--format", "json", env=smtp_env(smtp))
    assert after.exit_code == 0, after.output
    assert after.stdout == before.stdout
    featured = run(
        project, "build", *WEEK, "--feature", "https://dispatch.example.org/x", env=smtp_env(smtp)
    )
    assert featured.exit_code == 1
    assert "2026-W47 was sent (or its send began): its articles cannot change" in featured.stderr


def add_readers(project: Path, count: int) -> set[str]:
    """`count` more subscribed readers of every section, in the project's subscriber list."""
    added = {f"reader{n}@example.org" for n in range(count)}
    with (project.parent / "subscribers.csv").open("a", encoding="utf-8") as file:
        file.writelines(f"{address},,,subscribed,,,,,\n" for address in sorted(added))
    return added


def test_a_large_list_goes_out_from_two_processes_once_per_reader(
    project: Path, smtp: SmtpRecorder
) -> None:
    """With enough copies, two processes share the list and the pool: every reader still gets
    one copy, the counts add up, and a bounce in either is marked in the list."""
    readers = add_readers(project, 1200) | SUBSCRIBED
    smtp.refuse("reader7@example.org", "550 5.1.1 no such user")
    result = run(
        project, "send", *WEEK, "--processes", "2", "--concurrency", "4", env=smtp_env(smtp)
    )
    assert result.exit_code == 3, result.output
    assert "1,202 sent, 1 failed, 0 unknown, 0 skipped" in result.stdout
    assert "2 processes)" in result.stdout
    assert smtp.copies() == {address: 1 for address in readers - {"reader7@example.org"}}
    bounced = SubscriberFile(project.parent / "subscribers.csv").find("reader7@example.org")
    assert bounced is not None and bounced.status is SubscriberStatus.BOUNCED
    again = run(project, "send", *WEEK, "--processes", "2", env=smtp_env(smtp))
    assert "0 sent, 0 failed, 0 unknown" in again.stdout


def test_a_small_send_stays_in_one_process(project: Path, smtp: SmtpRecorder) -> None:
    """Fewer than 500 copies a process: starting another would cost more than it saves."""
    add_readers(project, 600)
    result = run(project, "send", *WEEK, "--processes", "4", env=smtp_env(smtp))
    assert result.exit_code == 0, result.output
    assert "603 sent" in result.stdout and "processes)" not in result.stdout


def test_a_refused_login_stops_every_process_with_one_error(project: Path) -> None:
    """A fatal error in one process stops the other; the error is one line, nothing is sent."""
    add_readers(project, 1200)
    checker = password_checker("news", "s3cret")
    with running(SmtpRecorder(), authenticator=checker, auth_require_tls=False) as relay:
        env = {**smtp_env(relay), "SMTP_USERNAME": "news", "SMTP_PASSWORD": "wrong"}
        result = run(project, "send", *WEEK, "--processes", "2", env=env)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "login refused" in result.stderr
    assert relay.messages == []
    with Ledger.open(load_config(project).archive_path.parent / LEDGER_FILE) as book:
        assert book.counts("2026-W47").pending == 1203


def test_killing_a_two_process_send_stops_both_and_a_rerun_completes_it(project: Path) -> None:
    """SIGKILL to `digest send` mid-send: its sending processes see it go and stop after the
    copies in flight; a rerun sends the rest, one copy per reader, nothing left sending."""
    readers = add_readers(project, 1500) | SUBSCRIBED
    with running(SmtpRecorder()) as server:
        env = {**os.environ, **smtp_env(server), "SMTP_USERNAME": "", "SMTP_PASSWORD": ""}
        command = [sys.executable, "-m", "digest", "--config", str(project), "send", *WEEK]
        process = subprocess.Popen(
            [*command, "--processes", "2", "--concurrency", "4"],
            env={k: v for k, v in env.items() if v is not None},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        kill_at(process, server, 200)
        time.sleep(1.0)  # the orphans' copies in flight arrive, then nothing more
        settled = len(server.messages)
        time.sleep(1.0)
        assert len(server.messages) == settled < len(readers)
        resumed = run(project, "send", *WEEK, env=smtp_env(server))
        assert resumed.exit_code in (0, 3), resumed.output
        assert smtp_copies_at_most_one(server, readers)
    with Ledger.open(load_config(project).archive_path.parent / LEDGER_FILE) as book:
        counts = book.counts("2026-W47")
    assert (counts.pending, counts.sending, counts.failed) == (0, 0, 0)
    assert counts.unknown <= 4 and counts.sent + counts.unknown == len(readers)
    assert sum(server.copies().values()) >= counts.sent


def smtp_copies_at_most_one(server: SmtpRecorder, readers: set[str]) -> bool:
    copies = server.copies()
    return set(copies) <= readers and all(n == 1 for n in copies.values())


# One message: whatever makes a reader's copy, it is the message `send` sends them.

READER = "ana.perez@example.org"  # the first subscribed reader: hers is the dry run's sample


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], bytes]:
    """DKIM settings with a fresh 2048-bit key in a file, and the DNS TXT record publishing it."""
    key = make_key(tmp_path_factory.mktemp("dkim"))
    return key.env("dispatch.example.org"), key.record.encode()


def test_the_built_eml_unsubscribes_in_one_click_on_digest_serve_and_its_dkim_verifies(
    project: Path, smtp: SmtpRecorder, dkim_key: tuple[dict[str, str], bytes]
) -> None:
    """build's .eml carries a usable List-Unsubscribe (https and mailto) whose RFC 8058 POST
    unsubscribes the reader on a running `digest serve`, and a signature dkimpy verifies."""
    settings, record = dkim_key
    env = {**smtp_env(smtp), **settings}
    built = run(project, "build", *WEEK, "--offline", "--for", READER, env=env)
    assert built.exit_code == 0, built.output
    eml = (project.parent / "out" / "2026-W47.eml").read_bytes()
    assert dkim.verify(eml, dnsfunc=lambda name, timeout=5: record)
    parsed = email.message_from_bytes(eml, policy=email.policy.default)
    header = str(parsed["List-Unsubscribe"])
    assert "=?" not in header  # no encoded word: a mail program reads the URIs as they are
    https, mailto = re.findall(r"<([^<>]+)>", header)
    assert mailto == "mailto:weekly@dispatch.example.org?subject=unsubscribe"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    public_url = load_config(project).newsletter.public_url
    assert https.startswith(f"{public_url}/unsubscribe?t=")
    serving = subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(project), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DIGEST_SECRET": SECRET},
    )
    try:
        assert serving.stdout is not None
        line = serving.stdout.readline()
        address = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert address, line
        # The public URL is where a proxy forwards to `digest serve`: post where it would.
        request = urllib.request.Request(
            address[0] + https.removeprefix(public_url),
            data=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with no_proxy.open(request, timeout=10) as answer:
            assert answer.status == 200
    finally:
        serving.send_signal(signal.SIGINT)
        serving.communicate(timeout=10)
    found = SubscriberFile(project.parent / "subscribers.csv").find(READER)
    assert found is not None and found.status is SubscriberStatus.UNSUBSCRIBED


def masked(data: bytes) -> bytes:
    """A copy with its Date and Message-ID blanked, and its DKIM signature's b= too: b= signs
    the Date and Message-ID headers, so it differs whenever they do (bh=, the body's hash,
    is left as it is: the bodies must be the same)."""
    data = re.sub(rb"(?m)^(Date|Message-ID): [^\r]*\r\n", rb"\1: -\r\n", data)
    return re.sub(rb"(?m)^ b=[A-Za-z0-9+/=]+\r\n", b" b=-\r\n", data)


def test_every_copy_for_a_reader_is_the_same_message_but_date_and_message_id(
    project: Path, smtp: SmtpRecorder, dkim_key: tuple[dict[str, str], bytes]
) -> None:
    """build's .eml and --format eml, the --to copy, the dry run's sample and the copy sent
    are the same bytes for the same reader, but for Date, Message-ID and the signature."""
    env = {**smtp_env(smtp), **dkim_key[0]}
    assert run(project, "build", *WEEK, "--for", READER, env=env).exit_code == 0
    copies = {"build": (project.parent / "out" / "2026-W47.eml").read_bytes()}
    printed = run(project, "build", *WEEK, "--for", READER, "--format", "eml", env=env)
    copies["build --format eml"] = printed.stdout_bytes
    assert run(project, "send", *WEEK, "--to", READER, env=env).exit_code == 0
    (test_copy,) = smtp.messages
    copies["send --to"] = test_copy.data
    dry_run = run(project, "send", *WEEK, "--dry-run", env=env)
    copies["send --dry-run"] = dry_run.stdout_bytes.rpartition(b"2026-W47: dry run:")[0]
    assert run(project, "send", *WEEK, env=env).exit_code == 0
    (sent,) = (m for m in smtp.messages[1:] if m.recipients == (READER,))
    copies["send"] = sent.data
    assert all(copy.startswith(b"DKIM-Signature:") for copy in copies.values())
    assert len({masked(copy) for copy in copies.values()}) == 1, copies.keys()
    assert copies["send --to"] != copies["send"]  # its own Message-ID: no client merges them


def outbox_recipients(project: Path) -> list[str]:
    """The To: address of every message in the project's outbox/ Maildir."""
    outbox = mailbox.Maildir(project.parent / "outbox", create=True)
    return [str(message["To"]).rsplit("<", 1)[-1].rstrip(">") for message in outbox]


def assert_interrupted(ended: Ended) -> None:
    """Stopped within a few seconds, exit 130, one line on stderr saying how to resume."""
    assert ended.seconds < 10, f"took {ended.seconds:.1f}s to stop"
    assert ended.returncode == 130, ended.stderr
    (line,) = ended.stderr.splitlines()[-1:]
    assert line.startswith("interrupted: 2026-W47: ") and "not yet" in line, ended.stderr
    assert "`digest send --issue 2026-W47`" in line and "Aborted" not in ended.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_an_outbox_send_at_once_and_a_rerun_completes_it(
    project: Path, signum: int
) -> None:
    """Ctrl-C or SIGTERM mid-send into the outbox: it stops within seconds, exits 130 saying how
    to resume, `digest issues` says so, and a rerun writes the rest, one copy per reader."""
    readers = add_readers(project, 3000) | SUBSCRIBED
    env: dict[str, str | None] = {"DIGEST_SECRET": SECRET, "SMTP_HOST": None}
    process = start_digest(project, "send", *WEEK, env=env)
    new = project.parent / "outbox" / "new"
    ended = signal_when(
        process, lambda: new.is_dir() and len(os.listdir(new)) >= 50, signum, what="50 copies"
    )
    assert_interrupted(ended)
    written = len(outbox_recipients(project))
    assert 50 <= written < len(readers)
    assert ledger_counts(project) == (written, 0, 0, len(readers) - written)
    listed = run(project, "issues", env=env)
    assert f"interrupted, {len(readers) - written:,} pending" in listed.stdout
    resumed = run(project, "send", *WEEK, env=env)
    assert resumed.exit_code == 0, resumed.output
    assert sorted(outbox_recipients(project)) == sorted(readers)
    assert ledger_counts(project) == (len(readers), 0, 0, 0)


@pytest.mark.parametrize(
    ("signum", "processes"),
    [(signal.SIGINT, "1"), (signal.SIGTERM, "1"), (signal.SIGINT, "2"), (signal.SIGTERM, "2")],
    ids=["SIGINT-1", "SIGTERM-1", "SIGINT-2", "SIGTERM-2"],
)
def test_a_signal_stops_a_relay_send_at_once_and_a_rerun_completes_it(
    project: Path, smtp: SmtpRecorder, signum: int, processes: str
) -> None:
    """Ctrl-C or SIGTERM mid-send over SMTP, from one process or two: the copies in flight
    finish, none is left unknown, it exits 130 saying how to resume, and a rerun sends the
    rest, one copy per reader."""
    readers = add_readers(project, 1500) | SUBSCRIBED
    process = start_digest(
        project, "send", *WEEK, "--processes", processes, "--concurrency", "4", env=smtp_env(smtp)
    )
    ended = signal_when(process, lambda: len(smtp.messages) >= 50, signum, what="50 copies")
    assert_interrupted(ended)
    sent, failed, unknown, pending = ledger_counts(project)
    assert (failed, unknown) == (0, 0) and sent == len(smtp.messages) == len(readers) - pending
    assert pending > 0
    resumed = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert resumed.exit_code == 0, resumed.output
    assert smtp.copies() == {address: 1 for address in readers}
