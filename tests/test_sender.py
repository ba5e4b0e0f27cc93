"""Delivery over a real SMTP server on 127.0.0.1: pooling, retries, faults, TLS, rate, Maildir."""

from __future__ import annotations

import asyncio
import mailbox
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme
from smtp_server import (
    DROP_AFTER_DATA,
    DROP_BEFORE_DATA,
    SlowData,
    SmtpRecorder,
    password_checker,
    running,
    server_tls_context,
)

from digest.errors import ConfigError, MessageError, SendError
from digest.ledger import NO_SMTPUTF8, Counts, Ledger, Recipient, RowState
from digest.sender import (
    DeliveryOptions,
    Job,
    Outbox,
    SendReport,
    SmtpSettings,
    data_section,
    deliver,
    read_settings,
)

ISSUE = "2024-W19"
AT = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
FAST = DeliveryOptions(envelope_from="bounces@example.org", backoff=0.01, timeout=5.0)


@pytest.fixture(params=[False, True], ids=["lockstep", "pipelining"])
def smtp_server(request: pytest.FixtureRequest) -> Iterator[SmtpRecorder]:
    """A real SMTP server on 127.0.0.1 that records messages and fails on request; every test
    runs against it without and with PIPELINING, the sender's two ways of talking."""
    with running(SmtpRecorder(pipelining=request.param)) as recorder:
        yield recorder


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(tmp_path / ".digest" / "ledger.sqlite3") as book:
        yield book


def addresses(count: int) -> list[str]:
    return [f"reader{n:03}@example.org" for n in range(count)]


def jobs_for(book: Ledger, people: list[str]) -> Iterator[Job]:
    """Freeze the issue for these people, then compose their messages lazily, as pipeline will."""
    book.freeze(ISSUE, variants={"all": b"body"}, recipients=map(Recipient, people), at=AT)
    for n, row in enumerate(book.rows(ISSUE, RowState.PENDING)):
        message_id = f"<{n}.{ISSUE}@example.org>"
        message = (
            f"From: News <news@example.org>\r\nTo: {row.address}\r\nSubject: This week\r\n"
            f"Message-ID: {message_id}\r\n\r\nHello.\r\n"
        ).encode()
        yield Job(row.address, message, message_id)


def plain(server: SmtpRecorder, **overrides: object) -> SmtpSettings:
    options: dict[str, object] = {"host": "127.0.0.1", "port": server.port, "security": "none"}
    options.update(overrides)
    return SmtpSettings(**options)  # type: ignore[arg-type]


def send(
    book: Ledger,
    settings: SmtpSettings | Outbox,
    people: list[str],
    options: DeliveryOptions = FAST,
    bounced: list[str] | None = None,
) -> SendReport:
    return asyncio.run(
        deliver(
            jobs_for(book, people),
            book,
            settings,
            options,
            issue_id=ISSUE,
            on_bounce=None if bounced is None else bounced.append,
        )
    )


def test_a_pool_delivers_every_message_once_over_reused_connections(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """Sixty messages over three connections: each reader gets one copy, and the counts add up."""
    people = addresses(60)
    options = DeliveryOptions(envelope_from="bounces@example.org", concurrency=3)
    report = send(ledger, plain(smtp_server), people, options)
    assert (report.sent, report.failed, report.unknown, report.skipped) == (60, 0, 0, 0)
    assert smtp_server.copies() == dict.fromkeys(people, 1)
    assert smtp_server.connections <= 3
    assert ledger.counts(ISSUE) == Counts(sent=60)
    assert {m.mail_from for m in smtp_server.messages} == {"bounces@example.org"}


@pytest.mark.parametrize(
    ("message", "on_the_wire"),
    [
        (
            b"A: b\r\n\r\n.hidden\r\n..two\r\nend.\r\n",
            b"A: b\r\n\r\n..hidden\r\n...two\r\nend.\r\n.\r\n",
        ),
        (b".first\r\nno end", b"..first\r\nno end\r\n.\r\n"),
        (b"A: b\r\n\r\nno dot.\r\n", b"A: b\r\n\r\nno dot.\r\n.\r\n"),
    ],
)
def test_lines_starting_with_a_dot_are_doubled(message: bytes, on_the_wire: bytes) -> None:
    """RFC 5321 4.5.2: a line's leading dot is doubled, so only the ".\\r\\n" we add ends
    the data."""
    assert data_section(message) == on_the_wire


def test_a_dot_free_message_is_sent_as_it_is() -> None:
    """The composer vouches that no line starts with "." (quoted-printable writes =2E): only
    the line that ends the data is added."""
    message = b"A: b\r\n\r\nno dot.\r\n=2Edot\r\n"
    assert data_section(message, dot_free=True) == message + b".\r\n"


def test_a_message_with_dot_lines_arrives_byte_for_byte(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """The server undoes the stuffing: what it keeps is exactly the message composed."""
    message = b"Subject: dots\r\n\r\n.\r\n.hidden\r\n..\r\nlast line\r\n"
    ledger.freeze(ISSUE, variants={}, recipients=[Recipient("ana@example.org")], at=AT)
    report = asyncio.run(
        deliver(
            [Job("ana@example.org", message, "<1@example.org>")],
            ledger,
            plain(smtp_server),
            FAST,
            issue_id=ISSUE,
        )
    )
    assert report.sent == 1
    (received,) = smtp_server.messages
    assert received.data == message


def test_a_second_run_sends_nothing_already_sent(smtp_server: SmtpRecorder, ledger: Ledger) -> None:
    """Running the send again after it finished delivers no second copy."""
    people = addresses(5)
    send(ledger, plain(smtp_server), people)
    again = send(ledger, plain(smtp_server), people)
    assert (again.sent, again.skipped) == (0, 0)  # nothing pending, so no jobs at all
    assert sum(smtp_server.copies().values()) == 5


def test_a_4xx_reply_is_retried_until_accepted(smtp_server: SmtpRecorder, ledger: Ledger) -> None:
    """Two temporary refusals, then success: one copy, three attempts recorded."""
    people = addresses(3)
    smtp_server.plan(people[1], "451 4.7.1 try again later", "450 4.2.1 busy")
    report = send(ledger, plain(smtp_server), people)
    assert (report.sent, report.retries) == (3, 2)
    assert smtp_server.copies()[people[1]] == 1
    row = ledger.row(ISSUE, people[1])
    assert row is not None and (row.state, row.attempts) == (RowState.SENT, 3)


def test_temporary_refusals_past_max_attempts_fail_without_a_bounce(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """A reader the relay keeps deferring is failed after max_attempts, not marked bounced."""
    people = addresses(2)
    smtp_server.plan(people[0], *["452 4.2.2 mailbox full"] * 5)
    bounced: list[str] = []
    options = DeliveryOptions(envelope_from="b@example.org", backoff=0.01, max_attempts=3)
    report = send(ledger, plain(smtp_server), people, options, bounced)
    assert (report.sent, report.failed, bounced) == (1, 1, [])
    row = ledger.row(ISSUE, people[0])
    assert row is not None and (row.state, row.reply_code) == (RowState.FAILED, 452)


def test_a_550_fails_one_reader_and_reports_the_bounce(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """A permanent refusal fails that row and calls on_bounce; everyone else gets one copy."""
    people = addresses(4)
    smtp_server.refuse(people[2], "550 5.1.1 no such mailbox")
    bounced: list[str] = []
    report = send(ledger, plain(smtp_server), people, bounced=bounced)
    assert (report.sent, report.failed, report.bounced, bounced) == (
        3,
        1,
        (people[2],),
        [people[2]],
    )
    assert smtp_server.recipients() == set(people) - {people[2]}
    row = ledger.row(ISSUE, people[2])
    assert row is not None
    assert (row.state, row.reply_code, row.reply_text) == (
        RowState.FAILED,
        550,
        "5.1.1 no such mailbox",
    )


def test_a_policy_refusal_fails_the_row_without_a_bounce(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """A relay refusing on policy (554 5.7.1) is about us, not the reader: nobody is bounced."""
    people = addresses(2)
    smtp_server.refuse(people[0], "554 5.7.1 Relay access denied")
    bounced: list[str] = []
    report = send(ledger, plain(smtp_server), people, bounced=bounced)
    assert (report.sent, report.failed, report.bounced, bounced) == (1, 1, (), [])


def test_a_refused_envelope_sender_stops_the_run(smtp_server: SmtpRecorder, ledger: Ledger) -> None:
    """A 5xx to MAIL FROM would refuse every message, so the run stops with rows pending."""
    smtp_server.mail_reply = "550 5.7.1 sender not allowed"
    with pytest.raises(SendError, match="refuses the envelope sender"):
        send(ledger, plain(smtp_server), addresses(5))
    assert ledger.counts(ISSUE) == Counts(pending=5)


def test_a_composer_error_is_raised_after_the_queued_messages_go_out(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """A message that cannot be composed stops the run with that error; no row is left sending."""
    people = addresses(6)

    def jobs() -> Iterator[Job]:
        for n, job in enumerate(jobs_for(ledger, people)):
            if n == 3:
                raise MessageError("bad header")
            yield job

    with pytest.raises(MessageError, match="bad header"):
        asyncio.run(deliver(jobs(), ledger, plain(smtp_server), FAST, issue_id=ISSUE))
    assert ledger.counts(ISSUE) == Counts(pending=3, sent=3)


def test_a_connection_dropped_before_data_is_retried_on_a_new_one(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """The server hanging up at RCPT costs a reconnect, not the message."""
    people = addresses(4)
    smtp_server.plan(people[1], DROP_BEFORE_DATA)
    options = DeliveryOptions(envelope_from="b@example.org", backoff=0.01, concurrency=1)
    report = send(ledger, plain(smtp_server), people, options)
    assert (report.sent, report.retries) == (4, 1)
    assert smtp_server.copies() == dict.fromkeys(people, 1)
    assert smtp_server.connections == 2


def test_a_connection_dropped_after_data_is_unknown_and_not_resent(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """Once the data went out, a lost answer is recorded as unknown rather than risk two copies."""
    people = addresses(3)
    smtp_server.plan(people[0], DROP_AFTER_DATA)
    report = send(ledger, plain(smtp_server), people)
    assert (report.sent, report.unknown, report.retries) == (2, 1, 0)
    assert smtp_server.copies() == dict.fromkeys(people, 1)
    assert ledger.counts(ISSUE) == Counts(sent=2, unknown=1)


def test_a_reply_slower_than_the_timeout_after_data_is_unknown(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """A relay that answers the data too late leaves that row unknown; the rest go out."""
    people = addresses(3)
    smtp_server.plan(people[0], SlowData(1.5))
    options = DeliveryOptions(envelope_from="b@example.org", backoff=0.01, timeout=0.3)
    report = send(ledger, plain(smtp_server), people, options)
    assert (report.sent, report.unknown) == (2, 1)
    row = ledger.row(ISSUE, people[0])
    assert row is not None and row.state is RowState.UNKNOWN


def test_rate_limits_messages_per_second_across_the_pool(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """Twenty messages at 40 per second over two connections take at least about 0.45 s."""
    options = DeliveryOptions(envelope_from="b@example.org", concurrency=2, rate=40)
    started = time.monotonic()
    report = send(ledger, plain(smtp_server), addresses(20), options)
    assert report.sent == 20
    assert time.monotonic() - started >= 0.45


def test_a_throttling_reply_holds_back_the_whole_pool(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """After a 421 the other connections wait too, so most mail arrives after the retry."""
    people = addresses(20)
    smtp_server.plan(people[0], "421 4.7.0 slow down")
    options = DeliveryOptions(envelope_from="b@example.org", concurrency=2, backoff=0.4)
    report = send(ledger, plain(smtp_server), people, options)
    assert (report.sent, report.retries) == (20, 1)
    retried = next(m.at for m in smtp_server.messages if m.recipients == (people[0],))
    later = [m for m in smtp_server.messages if m.at >= retried and m.recipients != (people[0],)]
    assert len(later) >= 10


def test_an_hourly_cap_holds_messages_back_without_claiming_them(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """With per_hour=3 the fourth message waits, and its row stays pending, not sending."""
    options = DeliveryOptions(envelope_from="b@example.org", concurrency=2, per_hour=3)
    people = addresses(4)
    run = deliver(jobs_for(ledger, people), ledger, plain(smtp_server), options, issue_id=ISSUE)
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(run, timeout=1.0))
    assert len(smtp_server.messages) == 3
    assert ledger.counts(ISSUE) == Counts(pending=1, sent=3)


def test_a_stop_ends_waits_for_the_cap_and_for_a_retry_with_their_rows_pending(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """Asked to stop, a run held back by an hourly cap, or by a 452's long backoff, returns
    within a moment; the rows not sent stay pending for a rerun."""
    people = addresses(4)
    smtp_server.plan(people[0], "452 4.2.2 mailbox full")  # a retry that holds back no one else
    options = DeliveryOptions(envelope_from="b@example.org", concurrency=2, per_hour=3, backoff=60)
    asked: list[float] = []

    def stop() -> bool:
        """True once two copies arrived (the third waits for the cap, the first for its retry)."""
        if not asked and len(smtp_server.messages) >= 2:
            asked.append(time.monotonic())
        return bool(asked)

    jobs = jobs_for(ledger, people)
    report = asyncio.run(
        deliver(jobs, ledger, plain(smtp_server), options, issue_id=ISSUE, stop=stop)
    )
    assert time.monotonic() - asked[0] < 5
    assert (report.sent, report.failed, report.unknown) == (2, 0, 0)
    assert ledger.counts(ISSUE) == Counts(pending=2, sent=2)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def test_starttls_is_used_and_the_certificate_verified(
    ledger: Ledger, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SSL_CERT_FILE naming the relay's CA, mail goes over STARTTLS with a login."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    tls = server_tls_context(ca.issue_cert("127.0.0.1"))
    with running(
        SmtpRecorder(),
        tls_context=tls,
        require_starttls=True,
        authenticator=password_checker("news", "s3cret"),
    ) as server:
        settings = SmtpSettings(
            "127.0.0.1", server.port, "starttls", username="news", password="s3cret"
        )
        report = send(ledger, settings, addresses(3))
    assert report.sent == 3
    assert server.recipients() == set(addresses(3))


def test_implicit_tls_delivers_when_security_is_tls(ledger: Ledger, ca: trustme.CA) -> None:
    """SMTP_SECURITY=tls speaks TLS from the first byte, verified with the given context."""
    tls = server_tls_context(ca.issue_cert("127.0.0.1"))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    with running(SmtpRecorder(), ssl_context=tls) as server:
        settings = SmtpSettings("127.0.0.1", server.port, "tls", tls_context=client)
        report = send(ledger, settings, addresses(2))
    assert report.sent == 2
    assert server.recipients() == set(addresses(2))


def test_an_untrusted_certificate_stops_the_run_before_any_message(
    ledger: Ledger, ca: trustme.CA
) -> None:
    """A relay whose certificate does not verify gets no mail, and every row stays pending."""
    tls = server_tls_context(ca.issue_cert("127.0.0.1"))
    with (
        running(SmtpRecorder(), tls_context=tls, require_starttls=True) as server,
        pytest.raises(SendError, match="STARTTLS failed"),
    ):
        send(ledger, SmtpSettings("127.0.0.1", server.port, "starttls"), addresses(3))
    assert server.messages == []
    assert ledger.counts(ISSUE) == Counts(pending=3)


def test_a_relay_without_starttls_is_refused_when_starttls_is_required(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """STARTTLS is never silently skipped: the run stops before any message, rows pending."""
    settings = SmtpSettings("127.0.0.1", smtp_server.port, "starttls")
    with pytest.raises(SendError, match="does not offer STARTTLS"):
        send(ledger, settings, addresses(5))
    assert smtp_server.messages == []
    assert ledger.counts(ISSUE) == Counts(pending=5)


def test_wrong_credentials_stop_the_run_with_nothing_recorded(ledger: Ledger) -> None:
    """A refused login is one clear error; no row is sent or failed."""
    with (
        running(
            SmtpRecorder(), authenticator=password_checker("news", "s3cret"), auth_require_tls=False
        ) as server,
        pytest.raises(SendError, match="login refused") as raised,
    ):
        send(ledger, plain(server, username="news", password="wrong"), addresses(4))
    assert "SMTP_PASSWORD" in str(raised.value)
    assert server.messages == []
    assert ledger.counts(ISSUE) == Counts(pending=4)


def test_a_relay_that_goes_away_mid_run_stops_it_without_failing_anyone(
    smtp_server: SmtpRecorder, ledger: Ledger
) -> None:
    """When reconnecting keeps failing, the run stops and the unsent rows stay pending."""
    people = addresses(10)

    def jobs() -> Iterator[Job]:
        for n, job in enumerate(jobs_for(ledger, people)):
            if n == 6:  # the queue holds two, so by now some were delivered
                smtp_server.stop()
            yield job

    options = DeliveryOptions(
        envelope_from="b@example.org", backoff=0.01, concurrency=1, max_attempts=2
    )
    with pytest.raises(SendError, match="lost the SMTP relay"):
        asyncio.run(deliver(jobs(), ledger, plain(smtp_server), options, issue_id=ISSUE))
    counts = ledger.counts(ISSUE)
    assert (counts.failed, counts.sending) == (0, 0)
    assert counts.pending >= 3 and counts.sent >= 1
    assert counts.sent == len(smtp_server.messages) - counts.unknown


def test_no_relay_listening_stops_the_run_with_rows_pending(ledger: Ledger) -> None:
    """Nothing to connect to at the start is a clear error, not four failed rows."""
    from smtp_server import free_port

    settings = SmtpSettings("127.0.0.1", free_port(), "none")
    with pytest.raises(SendError, match="cannot connect"):
        send(ledger, settings, addresses(4))
    assert ledger.counts(ISSUE) == Counts(pending=4)


UTF8_READER = "josé@xn--exmple-cua.org"  # josé@exämple.org as message.checked_address gives it


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelining"])
def test_a_utf8_address_goes_with_smtputf8_when_the_relay_offers_it(
    ledger: Ledger, pipelining: bool
) -> None:
    """MAIL FROM carries SMTPUTF8 (RFC 6531) for a non-ASCII local part only; ASCII readers'
    transactions are unchanged."""
    with running(SmtpRecorder(pipelining=pipelining), enable_SMTPUTF8=True) as relay:
        report = send(ledger, plain(relay), [*addresses(2), UTF8_READER])
    assert (report.sent, report.failed) == (3, 0)
    options = {m.recipients: m.mail_options for m in relay.messages}
    assert options[(UTF8_READER,)] == ("SMTPUTF8",)
    assert options[(addresses(1)[0],)] == ()
    (utf8_copy,) = [m for m in relay.messages if m.recipients == (UTF8_READER,)]
    assert f"To: {UTF8_READER}".encode() in utf8_copy.data


def test_without_smtputf8_a_utf8_reader_fails_with_a_reason_and_a_later_send_retries_it(
    ledger: Ledger,
) -> None:
    """A relay that does not offer SMTPUTF8 gets no command for that reader: the row is failed
    with NO_SMTPUTF8, everyone else is sent; resuming the issue through a relay that offers it
    delivers that copy, once."""
    with running(SmtpRecorder(), enable_SMTPUTF8=False) as ascii_only:
        report = send(ledger, plain(ascii_only), [*addresses(2), UTF8_READER])
    assert (report.sent, report.failed, report.bounced) == (2, 1, ())
    assert ascii_only.recipients() == set(addresses(2))
    row = ledger.row(ISSUE, UTF8_READER)
    assert row is not None and (row.state, row.reply_text) == (RowState.FAILED, NO_SMTPUTF8)
    with running(SmtpRecorder(), enable_SMTPUTF8=True) as relay:
        again = send(ledger, plain(relay), [*addresses(2), UTF8_READER])
    assert (again.sent, again.failed) == (1, 0)
    assert relay.recipients() == {UTF8_READER}
    assert ledger.counts(ISSUE) == Counts(sent=3)


def test_a_utf8_address_goes_into_the_maildir_outbox(ledger: Ledger, tmp_path: Path) -> None:
    """The outbox needs no SMTP extension: a UTF-8 reader's copy is written like any other."""
    report = send(ledger, Outbox(tmp_path / "outbox"), [UTF8_READER])
    assert report.sent == 1
    (copy,) = mailbox.Maildir(tmp_path / "outbox", create=False)
    assert f"To: {UTF8_READER}".encode() in copy.as_bytes()


def test_without_smtp_host_messages_go_to_a_maildir_outbox(ledger: Ledger, tmp_path: Path) -> None:
    """No SMTP_HOST: one file per message in outbox/ beside the config, rows marked sent."""
    settings = read_settings({}, root=tmp_path)
    assert settings == Outbox(tmp_path / "outbox")
    report = send(ledger, settings, addresses(3))
    assert report.sent == 3
    box = mailbox.Maildir(tmp_path / "outbox", create=False)
    assert sorted(message["To"] for message in box) == addresses(3)
    assert ledger.counts(ISSUE) == Counts(sent=3)


def test_settings_default_to_starttls_on_port_587() -> None:
    """SMTP_HOST alone means STARTTLS, required, on the submission port."""
    settings = read_settings(
        {"SMTP_HOST": "smtp.example.org", "SMTP_USERNAME": "u", "SMTP_PASSWORD": "hunter2"},
        root=Path("."),
    )
    assert settings == SmtpSettings("smtp.example.org", 587, "starttls", "u", "hunter2")
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SMTP_SECURITY": "ssl"}, "expected starttls, tls or none"),
        ({"SMTP_SECURITY": "none"}, "only for a relay on this machine"),
        ({"SMTP_PORT": "smtp"}, "expected a port number"),
        ({"SMTP_USERNAME": "news"}, "set both, or neither"),
    ],
)
def test_wrong_smtp_settings_are_clear_config_errors(env: dict[str, str], message: str) -> None:
    """Each mistake in the SMTP_* variables names the variable and what it expects."""
    with pytest.raises(ConfigError, match=message):
        read_settings({"SMTP_HOST": "smtp.example.org", **env}, root=Path("."))


def test_security_none_is_allowed_for_a_loopback_relay() -> None:
    """A relay on this machine may be spoken to in clear, e.g. a local Postfix."""
    for host in ("localhost", "127.0.0.1", "::1"):
        settings = read_settings({"SMTP_HOST": host, "SMTP_SECURITY": "none"}, root=Path("."))
        assert settings == SmtpSettings(host, 25, "none")
