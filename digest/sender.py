"""Deliver composed messages over SMTP (aiosmtplib), or into a Maildir outbox, exactly once.

`deliver` is the one entry point; `pipeline` runs it with `asyncio.run`. A pool of connections
takes turns at the jobs, which the composer makes lazily. Every message's ledger row is marked
`sending` (committed) before its data goes out, then `sent`, `failed` or `unknown`:

- a 4xx reply, or a connection dropped or timed out before DATA: retried with exponential
  backoff and jitter up to `max_attempts`; throttling replies (421, 450, 451, 454) also pause
  the whole pool for that delay;
- a 5xx reply to RCPT: `failed`, and when it is about the mailbox (550-553, or an enhanced
  code 5.1.x / 5.2.x, not 5.7.x policy) the address goes to `on_bounce`; a 5xx to the data:
  `failed`; a 5xx to MAIL FROM stops the run (every message would be refused);
- a timeout or dropped connection after the data went out: `unknown`, never retried here;
- a TLS or login failure, or no relay to connect to before anything was delivered: the run
  stops at once with SendError and the row in hand goes back to `pending`; so does a relay
  that cannot be reconnected to within `max_attempts` later in the run;
- an exception from the jobs iterable (the composer): messages in flight are delivered, then
  it is raised;
- an address with a non-ASCII local part (`josé@example.org`) goes with SMTPUTF8 (RFC 6531)
  when the relay offers it; otherwise it is `failed` with `NO_SMTPUTF8` and no command sent,
  and the ledger makes it pending again when the issue's send is resumed (see `Ledger.freeze`).
  ASCII addresses, nearly all, go as before: one flag read per message.

A job waits for the rate limit before its row is claimed, so held-back rows stay `pending`.
Ledger writes are synchronous SQLite transactions made on the event loop, far shorter than an
SMTP round trip; the pool's claims and outcomes are gathered into one a millisecond.
"""

from __future__ import annotations

import asyncio
import mailbox
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import aiosmtplib

from digest.config import is_loopback
from digest.errors import ConfigError, SendError
from digest.ledger import NO_SMTPUTF8, Claim, Ledger, Outcome, RowState

Security = Literal["starttls", "tls", "none"]
SECURITIES: tuple[Security, ...] = ("starttls", "tls", "none")
DEFAULT_PORTS: Mapping[Security, int] = {"starttls": 587, "tls": 465, "none": 25}
THROTTLING = frozenset({421, 450, 451, 454})
BUSY_RETRY = 0.0005  # seconds before trying a ledger write again while another process writes
GATHER = 0.001  # seconds the pool's ledger writes are gathered for one commit
STOP_POLL = 0.1  # seconds between looks at the stop flag while waiting (rate limit, backoff)
OUTBOX = "outbox"


@dataclass(frozen=True, slots=True)
class Job:
    """One message to deliver: the recipient's address, the finished bytes (CRLF, signed) and
    its Message-ID, recorded in the ledger. The composer yields these lazily."""

    address: str
    message: bytes
    message_id: str
    dot_free: bool = False  # no line of `message` starts with ".": nothing to look for


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """How to reach the relay; read from the environment by `read_settings`."""

    host: str
    port: int
    security: Security = "starttls"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # None: Python's default context (the system's trust store, or $SSL_CERT_FILE).
    tls_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Outbox:
    """No relay configured: messages go to a Maildir folder, one file each."""

    path: Path


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """How hard to push: pool size, rates, retries and timeouts."""

    envelope_from: str  # MAIL FROM: the bounce address
    concurrency: int = 4  # connections in the pool
    rate: float | None = None  # messages per second across the pool; None: no limit
    per_hour: int | None = None  # caps for providers such as SES, within one run
    per_day: int | None = None
    max_attempts: int = 5  # tries per message, the first included
    backoff: float = 1.0  # seconds before the first retry, doubling after each
    timeout: float = 60.0  # seconds per SMTP command

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be positive, got {self.rate}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")


@dataclass(frozen=True, slots=True)
class SendReport:
    """What one `deliver` call did."""

    sent: int
    failed: int
    unknown: int
    skipped: int  # jobs whose row was not pending (already sent, or claimed elsewhere)
    retries: int
    bounced: tuple[str, ...]  # addresses refused for good at RCPT
    elapsed: float  # seconds

    @property
    def per_second(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0


def read_settings(env: Mapping[str, str], *, root: Path) -> SmtpSettings | Outbox:
    """SMTP settings from SMTP_* variables; without SMTP_HOST, the `outbox/` Maildir in root."""
    host = env.get("SMTP_HOST", "").strip()
    if not host:
        return Outbox(root / OUTBOX)
    raw_security = env.get("SMTP_SECURITY", "starttls").strip().lower() or "starttls"
    if raw_security not in SECURITIES:
        raise ConfigError(
            f"SMTP_SECURITY: expected starttls, tls or none, got {raw_security!r}",
            hint="starttls for port 587, tls for port 465",
        )
    security: Security = raw_security
    if security == "none" and not is_loopback(host):
        raise ConfigError(
            f"SMTP_SECURITY: none is allowed only for a relay on this machine, not {host!r}",
            hint="use starttls or tls; mail and passwords would cross the network in clear",
        )
    raw_port = env.get("SMTP_PORT", "").strip()
    if raw_port:
        if not raw_port.isdigit() or not 1 <= int(raw_port) <= 65535:
            raise ConfigError(
                f"SMTP_PORT: expected a port number (1-65535), got {raw_port!r}",
                hint="587 for starttls, 465 for tls",
            )
        port = int(raw_port)
    else:
        port = DEFAULT_PORTS[security]
    username = env.get("SMTP_USERNAME", "") or None
    password = env.get("SMTP_PASSWORD", "") or None
    if (username is None) != (password is None):
        raise ConfigError(
            "SMTP_USERNAME and SMTP_PASSWORD: set both, or neither",
            hint="a relay that needs no login needs neither",
        )
    return SmtpSettings(host, port, security, username, password)


async def deliver(
    jobs: Iterable[Job],
    ledger: Ledger,
    settings: SmtpSettings | Outbox,
    options: DeliveryOptions,
    *,
    issue_id: str,
    on_bounce: Callable[[str], None] | None = None,
    on_progress: Callable[[SendReport], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> SendReport:
    """Deliver each job whose ledger row is pending, recording every outcome in the ledger.

    `on_progress` gets the tallies so far after each outcome. Once `stop()` is true no new job
    is started; those in flight finish, and those waiting (rate limit, retry) stay pending.
    Raises SendError (rows not yet delivered stay pending) when TLS or login fails.
    """
    run = _Run(ledger, options, issue_id, on_bounce, on_progress, stop)
    if isinstance(settings, Outbox):
        _to_maildir(jobs, settings.path, run)
    else:
        await _over_smtp(jobs, settings, run)
    return run.report()


def _now() -> datetime:
    return datetime.now(UTC)


class _Run:
    """One deliver call's shared state: ledger bookkeeping, tallies and the stop flag."""

    def __init__(
        self,
        ledger: Ledger,
        options: DeliveryOptions,
        issue_id: str,
        on_bounce: Callable[[str], None] | None,
        on_progress: Callable[[SendReport], None] | None,
        stop: Callable[[], bool] | None,
    ) -> None:
        self.ledger, self.options, self.issue_id = ledger, options, issue_id
        self.on_bounce, self.on_progress = on_bounce, on_progress
        self.stop = stop
        self.sent = self.failed = self.unknown = self.skipped = self.retries = 0
        self.bounced: list[str] = []
        self.fatal: SendError | None = None
        self.stopped_by: Exception | None = None
        self.connected_once = False
        self.started = time.monotonic()

    def claim(self, job: Job) -> bool:
        """Claim the job's row now, in a transaction of its own."""
        claimed = self.ledger.mark_sending(
            self.issue_id, job.address, message_id=job.message_id, at=_now()
        )
        return self.counted(claimed)

    def stopping(self) -> bool:
        return self.stop is not None and self.stop()

    def counted(self, claimed: bool) -> bool:
        if not claimed:
            self.skipped += 1
        return claimed

    def record(self, job: Job, verdict: _Verdict, book: _Book | None = None) -> None:
        """Count the verdict and write it: with the pool's next batch, or now."""
        outcome = Outcome(job.address, _STATES[verdict.kind], verdict.code, verdict.text)
        if book is None:
            self.ledger.write(self.issue_id, [outcome], at=_now())
        else:
            book.finish(outcome)
        if verdict.kind == "sent":
            self.sent += 1
        elif verdict.kind == "unknown":
            self.unknown += 1
        else:
            self.failed += 1
        if verdict.kind == "bounced":
            self.bounced.append(job.address)
            if self.on_bounce is not None:
                self.on_bounce(job.address)
        if self.on_progress is not None:
            self.on_progress(self.report())

    def report(self) -> SendReport:
        return SendReport(
            sent=self.sent,
            failed=self.failed,
            unknown=self.unknown,
            skipped=self.skipped,
            retries=self.retries,
            bounced=tuple(self.bounced),
            elapsed=time.monotonic() - self.started,
        )


def _to_maildir(jobs: Iterable[Job], path: Path, run: _Run) -> None:
    try:
        box = mailbox.Maildir(path, create=True)
    except OSError as err:
        raise SendError(f"cannot create the outbox: {err}", where=str(path)) from err
    for job in jobs:
        if run.stopping():
            break
        if not run.claim(job):
            continue
        try:
            key = box.add(job.message)
        except OSError as err:
            run.ledger.release(run.issue_id, job.address)
            raise SendError(f"cannot write to the outbox: {err}", where=str(path)) from err
        run.record(job, _Verdict("sent", 250, f"written to {path / 'new' / key}"))


@dataclass(frozen=True, slots=True)
class _Verdict:
    kind: Literal["sent", "failed", "bounced", "unknown", "retry"]
    code: int | None
    text: str
    connecting: bool = False  # no connection could be opened for this attempt


_STATES: Mapping[str, RowState] = {
    "sent": RowState.SENT,
    "failed": RowState.FAILED,
    "bounced": RowState.FAILED,
    "unknown": RowState.UNKNOWN,
}


class _Book:
    """The pool's ledger writes, gathered: the claims and outcomes every connection makes
    within GATHER seconds are committed together. A commit is most of a write's cost (a
    millisecond gathers about ten writes at full speed), and a claim is still on disk before
    its message goes out.

    A connection's outcome is queued before its next claim, so they share a commit or the
    outcome goes first: a crash still leaves at most one `sending` row per connection.
    """

    def __init__(self, ledger: Ledger, issue_id: str) -> None:
        self.ledger, self.issue_id = ledger, issue_id
        self._steps: list[Claim | Outcome] = []
        self._waiting: list[asyncio.Future[bool] | None] = []
        self._error: Exception | None = None

    def claim(self, job: Job) -> asyncio.Future[bool]:
        """Resolves to whether the row was pending and is now claimed, once committed."""
        waiter = asyncio.get_running_loop().create_future()
        self._add(Claim(job.address, job.message_id), waiter)
        return waiter

    def finish(self, outcome: Outcome) -> None:
        self._add(outcome, None)

    def _add(self, step: Claim | Outcome, waiter: asyncio.Future[bool] | None) -> None:
        if self._error is not None:
            raise self._error
        if not self._steps:
            asyncio.get_running_loop().call_later(GATHER, self._flush_soon)
        self._steps.append(step)
        self._waiting.append(waiter)

    def _flush_soon(self) -> None:
        # An error is raised by the next claim, or the final flush.
        if not self._commit(wait=False):  # another process is writing: try again shortly
            asyncio.get_running_loop().call_later(BUSY_RETRY, self._flush_soon)

    def flush(self, *, raising: bool = True) -> None:
        """Commit what is queued, waiting for the ledger if need be; with `raising`, raise
        (LedgerError) if that, or an earlier batch, failed."""
        self._commit(wait=True)
        if self._error is not None and raising:
            raise self._error

    def _commit(self, *, wait: bool) -> bool:
        """False if the ledger was busy and `wait` false: nothing written, all still queued."""
        steps, waiting = self._steps, self._waiting
        if not steps or self._error is not None:
            return True
        write = self.ledger.write if wait else self.ledger.write_if_free
        try:
            moved = write(self.issue_id, steps, at=_now())
        except Exception as err:
            self._error = err
            self._steps, self._waiting = [], []
            for waiter in waiting:
                if waiter is not None and not waiter.done():
                    waiter.set_exception(err)
            return True
        if moved is None:
            return False
        self._steps, self._waiting = [], []
        for waiter, claimed in zip(waiting, moved, strict=True):
            if waiter is not None and not waiter.done():
                waiter.set_result(claimed)
        return True


class _Fatal(Exception):
    """Stop the run: the relay will not take mail from us as configured."""

    def __init__(self, error: SendError) -> None:
        super().__init__(str(error))
        self.error = error


class _Limiter:
    """Token buckets shared by the pool: per second (burst 1), per hour and per day."""

    def __init__(self, options: DeliveryOptions) -> None:
        self._buckets: list[_Bucket] = []
        if options.rate is not None:
            self._buckets.append(_Bucket(options.rate, 1.0))
        if options.per_hour is not None:
            self._buckets.append(_Bucket(options.per_hour / 3600, options.per_hour))
        if options.per_day is not None:
            self._buckets.append(_Bucket(options.per_day / 86400, options.per_day))
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        """Hold every connection back, e.g. after a throttling reply."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self, stopping: Callable[[], bool]) -> bool:
        """Wait for a token; False, taking none, if the run is asked to stop meanwhile."""
        if not self._buckets and not self._lock.locked() and time.monotonic() >= self._paused_until:
            return True  # nothing to wait for: skip the lock, taken a thousand times a second
        async with self._lock:  # waiters queue here, so the buckets are shared fairly
            while not stopping():
                now = time.monotonic()
                wait = max([self._paused_until - now] + [b.wait(now) for b in self._buckets])
                if wait <= 0:
                    for bucket in self._buckets:
                        bucket.tokens -= 1
                    return True
                await asyncio.sleep(min(wait, STOP_POLL))
            return False


class _Bucket:
    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.stamp = capacity, time.monotonic()

    def wait(self, now: float) -> float:
        """Refill for the time gone by; seconds until a whole token is there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


async def _over_smtp(jobs: Iterable[Job], settings: SmtpSettings, run: _Run) -> None:
    options = run.options
    limiter = _Limiter(options)
    # One context for the pool: loading the trust store takes tens of milliseconds.
    context = settings.tls_context
    if context is None and settings.security != "none":
        context = ssl.create_default_context()
    pending = iter(jobs)

    def next_job() -> Job | None:
        """The next message, composed now; None when there are no more or the run stops. The
        connections take turns at the one iterator: a queue between them and a composing task
        cost a task switch a message."""
        if run.fatal is not None or run.stopped_by is not None or run.stopping():
            return None
        try:
            return next(pending, None)
        except Exception as err:  # the composer failed: finish what is in hand, then raise it
            run.stopped_by = err
            return None

    async def work() -> None:
        connection = _Connection(settings, run, context)
        try:
            while (job := next_job()) is not None:
                await _send_one(job, connection, limiter, book, run)
        finally:
            await connection.quit()

    book = _Book(run.ledger, run.issue_id)
    finished = False
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(options.concurrency):
                group.create_task(work())
        finished = True
    except BaseExceptionGroup as group:  # a bug or a LedgerError: show it, not the group
        raise group.exceptions[0] from None
    finally:
        book.flush(raising=finished)  # when stopped by an error, keep what can be kept
    if run.fatal is not None:
        raise run.fatal
    if run.stopped_by is not None:
        raise run.stopped_by


async def _send_one(
    job: Job, connection: _Connection, limiter: _Limiter, book: _Book, run: _Run
) -> None:
    # Wait for the rate limit before claiming, so no row sits `sending` while held back.
    if not await limiter.acquire(run.stopping):
        return
    if not run.counted(await book.claim(job)):
        return
    options = run.options
    attempt = 1
    while True:
        if attempt > 1 and not await limiter.acquire(run.stopping):
            run.ledger.release(run.issue_id, job.address)  # asked to stop: not sent, pending
            return
        try:
            verdict = await connection.transmit(job)
        except _Fatal as fatal:
            run.ledger.release(run.issue_id, job.address)
            if run.fatal is None:
                run.fatal = fatal.error
            return
        if verdict.kind != "retry":
            run.record(job, verdict, book)
            return
        if attempt >= options.max_attempts:
            if verdict.connecting:  # the relay is gone: stop rather than fail the whole list
                run.ledger.release(run.issue_id, job.address)
                if run.fatal is None:
                    run.fatal = SendError(
                        f"lost the SMTP relay after {attempt} attempts: {verdict.text}",
                        where=f"{connection.settings.host}:{connection.settings.port}",
                        hint="run the send again when the relay is back; it resumes",
                    )
                return
            failed = _Verdict("failed", verdict.code, f"{attempt} attempts: {verdict.text}")
            run.record(job, failed, book)
            return
        delay = options.backoff * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
        if verdict.code in THROTTLING:
            limiter.pause(delay)
        if not await _pause(delay, run.stopping):
            run.ledger.release(run.issue_id, job.address)  # asked to stop: not sent, pending
            return
        attempt += 1
        run.retries += 1
        run.ledger.note_attempt(run.issue_id, job.address)


async def _pause(seconds: float, stopping: Callable[[], bool]) -> bool:
    """Sleep; False, at once, if the run is asked to stop meanwhile."""
    until = time.monotonic() + seconds
    while not stopping():
        left = until - time.monotonic()
        if left <= 0:
            return True
        await asyncio.sleep(min(left, STOP_POLL))
    return False


class _Connection:
    """One pooled SMTP connection, opened on first use and again after the server drops it.

    aiosmtplib opens it (greeting, EHLO, STARTTLS, login); a `_Session` then takes its
    transport over for the mail transactions.
    """

    def __init__(self, settings: SmtpSettings, run: _Run, context: ssl.SSLContext | None) -> None:
        self.settings, self.run, self.context = settings, run, context
        self.session: _Session | None = None
        self._mail_from = b"MAIL FROM:<%s>\r\n" % run.options.envelope_from.encode()
        self._mail_from_utf8 = self._mail_from[:-2] + b" SMTPUTF8\r\n"

    async def transmit(self, job: Job) -> _Verdict:
        """Send one message; a retry verdict means its data certainly did not go out."""
        session = self.session
        if session is None:
            try:
                session = await self._open()
            except (OSError, aiosmtplib.SMTPException) as err:
                return _Verdict("retry", None, f"connecting: {_describe(err)}", connecting=True)
        timeout = self.run.options.timeout
        mail_from = self._mail_from
        if not job.address.isascii():  # a UTF-8 mailbox: RFC 6531's SMTPUTF8, if offered
            if not session.smtputf8:
                return _Verdict("failed", None, NO_SMTPUTF8)
            mail_from = self._mail_from_utf8
        commands = (mail_from, b"RCPT TO:<%s>\r\n" % job.address.encode(), b"DATA\r\n")
        try:
            replies = await session.transaction(commands, timeout)
        except (OSError, aiosmtplib.SMTPException) as err:  # dropped or timed out: not sent
            self._drop()
            return _Verdict("retry", None, f"before DATA: {_describe(err)}")
        for step, reply in enumerate(replies):
            if reply.code not in _GO_ON[step]:
                return await self._refused(step, reply, replies)
        try:
            end = await session.data(job.message, timeout, dot_free=job.dot_free)
        except (OSError, aiosmtplib.SMTPException) as err:
            self._drop()
            return _Verdict("unknown", None, f"after DATA: {_describe(err)}")
        if end.code == 250:
            return _Verdict("sent", end.code, end.message)
        await self._reset(end.code)  # a clear answer: nothing was accepted
        return _Verdict("failed" if end.code >= 500 else "retry", end.code, end.message)

    async def _refused(
        self, step: int, refusal: aiosmtplib.SMTPResponse, replies: list[aiosmtplib.SMTPResponse]
    ) -> _Verdict:
        """The verdict on a transaction refused at MAIL (step 0), RCPT (1) or DATA (2)."""
        if replies[-1].code == 354:  # go-ahead for data after a refusal (pipelined): hanging
            self._drop()  # up sends nothing, where ending the data could send an empty message
        else:
            await self._reset(421 if any(r.code == 421 for r in replies) else refusal.code)
        code, text = refusal.code, refusal.message
        if code < 500:
            return _Verdict("retry", code, text)
        if step == 0:  # MAIL FROM refused for good: every message would fail the same way
            raise _Fatal(
                SendError(
                    f"the relay refuses the envelope sender "
                    f"{self.run.options.envelope_from}: {code} {text}",
                    where=f"{self.settings.host}:{self.settings.port}",
                    hint="check the bounce address and that the relay lets you send as it",
                )
            )
        return _Verdict("bounced" if step == 1 and _is_bounce(code, text) else "failed", code, text)

    async def _reset(self, code: int) -> None:
        """After a refusal: RSET, or hang up if the relay is closing (421) or does not answer."""
        if code == 421 or self.session is None:
            self._drop()
            return
        try:
            await self.session.command(b"RSET\r\n", self.run.options.timeout)
        except (OSError, aiosmtplib.SMTPException):
            self._drop()

    async def _open(self) -> _Session:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=self.run.options.timeout,
            use_tls=s.security == "tls",
            start_tls=False,
            tls_context=self.context,
        )
        where = f"{s.host}:{s.port}"
        try:
            await client.connect()
            await client.ehlo()  # learn the extensions: STARTTLS, AUTH
        except (OSError, aiosmtplib.SMTPException) as err:
            if _is_tls_error(err):
                raise _Fatal(SendError(f"TLS failed: {_describe(err)}", where=where)) from err
            if not self.run.connected_once:
                raise _Fatal(
                    SendError(
                        f"cannot connect to the SMTP relay: {_describe(err)}",
                        where=where,
                        hint="check SMTP_HOST and SMTP_PORT",
                    )
                ) from err
            raise
        try:
            if s.security == "starttls":
                if not client.supports_extension("starttls"):
                    raise _Fatal(
                        SendError(
                            "the relay does not offer STARTTLS, and SMTP_SECURITY is starttls",
                            where=where,
                            hint="use SMTP_SECURITY=tls for port 465, or a relay with STARTTLS",
                        )
                    )
                try:
                    await client.starttls()
                except (OSError, aiosmtplib.SMTPException) as err:
                    raise _Fatal(
                        SendError(f"STARTTLS failed: {_describe(err)}", where=where)
                    ) from err
            if s.username is not None and s.password is not None:
                try:
                    await client.login(s.username, s.password)
                except aiosmtplib.SMTPException as err:
                    raise _Fatal(
                        SendError(
                            f"login refused: {_describe(err)}",
                            where=where,
                            hint="check SMTP_USERNAME and SMTP_PASSWORD",
                        )
                    ) from err
        except BaseException:
            client.close()
            raise
        self.run.connected_once = True
        transport = client.transport
        if not isinstance(transport, asyncio.Transport):
            client.close()
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.session = _Session(
            transport,
            pipelining=client.supports_extension("pipelining"),
            smtputf8=client.supports_extension("smtputf8"),
        )
        return self.session

    def _drop(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    async def quit(self) -> None:
        if self.session is None:
            return
        try:
            await self.session.command(b"QUIT\r\n", self.run.options.timeout)
        except (OSError, aiosmtplib.SMTPException):
            pass
        finally:
            self._drop()


# The replies that let a transaction go on: to MAIL FROM, RCPT TO and DATA.
_GO_ON = (frozenset({250}), frozenset({250, 251}), frozenset({354}))
MAX_REPLY = 65536  # bytes of a reply we wait for before calling it a broken relay


class _Session(asyncio.Protocol):
    """The mail transactions of one connection, once it is open and logged in.

    With PIPELINING (RFC 2920; Postfix, Exim, every large provider) a transaction's MAIL,
    RCPT and DATA go in one write and their replies come back together: two round trips a
    message instead of four. Without it, each command waits for its reply. The message and
    the line ending it go in one write. aiosmtplib's own protocol reads one reply per
    command and drops whatever else arrives, so it cannot pipeline, and each of its round
    trips costs more Python than the whole exchange here; a send is CPU-bound.
    """

    def __init__(self, transport: asyncio.Transport, *, pipelining: bool, smtputf8: bool) -> None:
        self.transport, self.pipelining = transport, pipelining
        self.smtputf8 = smtputf8  # the relay takes UTF-8 addresses (RFC 6531)
        self._buffer = bytearray()
        self._lines: list[str] = []  # a multiline reply's lines so far
        self._replies: deque[aiosmtplib.SMTPResponse] = deque()
        self._awaited = 0  # replies to commands written and not yet received
        self._wanted = 0
        self._waiter: asyncio.Future[None] | None = None
        self._lost: Exception | None = None
        transport.set_protocol(self)

    async def transaction(
        self, commands: Sequence[bytes], timeout: float
    ) -> list[aiosmtplib.SMTPResponse]:
        """The replies to MAIL, RCPT and DATA; without pipelining, up to the first refusal."""
        if self.pipelining:
            self._write(b"".join(commands), len(commands))
            async with asyncio.timeout(timeout):
                return await self._read(len(commands))
        replies: list[aiosmtplib.SMTPResponse] = []
        for command, go_on in zip(commands, _GO_ON, strict=True):
            replies.append(await self.command(command, timeout))
            if replies[-1].code not in go_on:
                break
        return replies

    async def data(
        self, message: bytes, timeout: float, *, dot_free: bool = False
    ) -> aiosmtplib.SMTPResponse:
        """The message after DATA's go-ahead, then the reply to its end."""
        self._write(data_section(message, dot_free=dot_free), 1)
        async with asyncio.timeout(timeout):
            return (await self._read(1))[0]

    async def command(self, line: bytes, timeout: float) -> aiosmtplib.SMTPResponse:
        self._write(line, 1)
        async with asyncio.timeout(timeout):
            return (await self._read(1))[0]

    def close(self) -> None:
        self.transport.close()

    def _write(self, data: bytes, replies: int) -> None:
        if self._lost is not None:
            raise self._lost
        if self.transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.transport.write(data)
        self._awaited += replies

    async def _read(self, count: int) -> list[aiosmtplib.SMTPResponse]:
        while len(self._replies) < count:
            if self._lost is not None:
                raise self._lost
            self._wanted = count
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return [self._replies.popleft() for _ in range(count)]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end]).rstrip(b"\r")
            del buffer[: end + 1]
            code = line[:3]
            if not code.isdigit() or line[3:4] not in (b"", b" ", b"-"):
                text = line.decode("utf-8", "replace")
                self._fail(aiosmtplib.SMTPResponseException(-1, f"malformed reply: {text!r}"))
                return
            self._lines.append(line[4:].decode("utf-8", "replace").strip())
            if line[3:4] != b"-":  # the reply's last line
                if not self._awaited:  # e.g. a 421 at an idle connection: pairs with nothing
                    self._fail(aiosmtplib.SMTPServerDisconnected(f"unexpected reply: {line!r}"))
                    return
                self._awaited -= 1
                self._replies.append(aiosmtplib.SMTPResponse(int(code), "\n".join(self._lines)))
                self._lines = []
        if len(buffer) > MAX_REPLY:
            self._fail(aiosmtplib.SMTPResponseException(-1, "a reply line too long"))
        elif len(self._replies) >= self._wanted:
            self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("the relay closed the connection"))
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._fail(lost)

    def _fail(self, error: Exception) -> None:
        if self._lost is None:
            self._lost = error
        self.transport.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def data_section(message: bytes, *, dot_free: bool = False) -> bytes:
    """What follows DATA's go-ahead (RFC 5321 4.5.2): the message, CRLF line endings assumed,
    each line's leading "." doubled, then the line with a lone "." that ends it. Looking for
    such lines in a 30 KB message takes longer than composing it: a `dot_free` one has none."""
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if dot_free:
        return message + b".\r\n"
    if message.startswith(b"."):
        message = b"." + message
    if b"\r\n." in message:
        message = message.replace(b"\r\n.", b"\r\n..")
    return message + b".\r\n"


def _is_bounce(code: int, text: str) -> bool:
    """A permanent refusal about the recipient's mailbox, not about us (policy, relaying).

    "554 5.7.1 Relay access denied" for every address must not bounce a whole list.
    """
    enhanced = text.split(" ", 1)[0]
    if enhanced[:2] == "5." and enhanced.count(".") == 2:
        return enhanced.startswith(("5.1.", "5.2."))
    return code in {550, 551, 552, 553}


def _is_tls_error(err: BaseException) -> bool:
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(err: BaseException) -> str:
    return str(err) or type(err).__name__
