"""`digest send` end to end: the example project to a real SMTP server, once per reader."""

from __future__ import annotations

import mailbox
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from smtp_server import SlowData, SmtpRecorder, running

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
    assert result.stderr.startswith("error: 1 failed, 0 unknown")
    assert smtp.copies() == {"ana.perez@example.org": 1, "cy.okoro@example.com": 1}
    subscribers = SubscriberFile(project.parent / "subscribers.csv")
    bounced = subscribers.find("bo.li@example.net")
    assert bounced is not None and bounced.status is SubscriberStatus.BOUNCED
    kept = subscribers.find("ana.perez@example.org")
    assert kept is not None and kept.status is SubscriberStatus.SUBSCRIBED


def test_without_smtp_host_messages_go_to_the_outbox_maildir(project: Path) -> None:
    """With SMTP_HOST unset, each copy is one file in outbox/ beside the config, and it says so."""
    env: dict[str, str | None] = {"DIGEST_SECRET": SECRET, "SMTP_HOST": None}
    result = run(project, "send", *WEEK, env=env)
    assert result.exit_code == 0, result.output
    assert "outbox" in result.stdout and "3 sent" in result.stdout
    outbox = mailbox.Maildir(project.parent / "outbox", create=False)
    recipients = {str(message["To"]).rsplit("<", 1)[-1].rstrip(">") for message in outbox}
    assert recipients == SUBSCRIBED


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
        try:
            deadline = time.monotonic() + 60
            while len(slow.messages) < 2 and process.poll() is None:
                assert time.monotonic() < deadline, "the send never reached its second message"
                time.sleep(0.02)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
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
    """A subscriber added after the send began is left out on a rerun unless --include-new."""
    assert run(project, "send", *WEEK, env=smtp_env(smtp)).exit_code == 0
    added = run(project, "subscribers", "add", "new.reader@example.org", env=smtp_env(smtp))
    assert added.exit_code == 0, added.output
    again = run(project, "send", *WEEK, env=smtp_env(smtp))
    assert "0 sent" in again.stdout and "new.reader@example.org" not in smtp.copies()
    included = run(project, "send", *WEEK, "--include-new", env=smtp_env(smtp))
    assert included.exit_code == 0, included.output
    assert "1 sent, 0 failed" in included.stdout
    assert smtp.copies() == {address: 1 for address in {*SUBSCRIBED, "new.reader@example.org"}}
