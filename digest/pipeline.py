"""Strings the steps together: collect into the archive, select an issue, render, compose and
send it."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from pathlib import Path
from typing import Literal

import filelock
import jinja2

from digest import (
    inline,
    ledger,
    message,
    render,
    schedule,
    selector,
    sender,
    shards,
    sources,
    tokens,
)
from digest.archive import Archive, UpsertCounts
from digest.config import Config
from digest.errors import (
    ConfigError,
    DigestError,
    LedgerError,
    MessageError,
    SelectionError,
    SendInProgress,
    SendInterrupted,
    SourceError,
    SubscriberFileError,
)
from digest.ledger import Ledger
from digest.models import (
    Article,
    Issue,
    Period,
    Subscriber,
    SubscriberStatus,
    address_as_written,
    email_key,
)
from digest.sources import SourceResult
from digest.subscribers import SubscriberFile


@dataclass(frozen=True, slots=True)
class SourceReport:
    """What collecting one source did to the archive."""

    result: SourceResult
    counts: UpsertCounts | None  # None when the source failed or was not modified


@dataclass(frozen=True, slots=True)
class CollectReport:
    reports: tuple[SourceReport, ...]

    @property
    def all_failed(self) -> bool:
        return bool(self.reports) and all(r.result.failed for r in self.reports)

    def raise_if_all_failed(self) -> None:
        if self.all_failed:
            raise SourceError(
                f"every source failed ({len(self.reports)} of {len(self.reports)})",
                hint="check the warnings above; `digest build --offline` uses the archive as it is",
            )


@dataclass(frozen=True, slots=True)
class PeriodRequest:
    """The period options as given: --since/--until (inclusive days) or --days."""

    since: date | None = None
    until: date | None = None
    days: int | None = None
    period: Period | None = None  # an exact period, as `digest run`'s schedule gives it


def collect(config: Config, *, now: datetime) -> CollectReport:
    """Fetch every source and store what it gave; a failed source never stops the others."""
    with Archive.open(config.archive_path) as archive:
        states = {
            source.name: state
            for source in config.sources
            if (state := archive.fetch_state(source.name)) is not None
        }
        results = asyncio.run(
            sources.collect(
                config.sources,
                states,
                config.collect,
                timezone=config.newsletter.timezone,
                now=now,
            )
        )
        reports = []
        for result in results:
            counts = None
            if not result.failed and not result.not_modified:
                counts = archive.upsert_articles(result.articles, seen_at=now)
            if result.state is not None:
                archive.save_fetch_state(result.source, result.state, fetched_at=now)
            reports.append(SourceReport(result, counts))
    return CollectReport(tuple(reports))


def select(
    config: Config, request: PeriodRequest, *, now: datetime, feature_url: str | None = None
) -> Issue:
    """Choose this period's articles from the archive, section by section; once the period's
    send has begun, its issue is the one recorded then, so build and preview show what went
    out and a resumed send sends the same articles."""
    with Archive.open(config.archive_path) as archive:
        with Ledger.open(_ledger_path(config)) as book:
            period = _period(config, request, archive, book, now=now)
            issue_id = _issue_id(config, period, archive, book, now=now)
            frozen = book.frozen_at(issue_id) is not None
        recorded = archive.issue(issue_id) if frozen else None
        if recorded is not None:
            if feature_url is not None:
                raise SelectionError(
                    f"issue {issue_id} was sent (or its send began): its articles cannot change",
                    where="--feature",
                    hint="feature the article in the next issue",
                )
            return recorded
        featured = None
        if feature_url is not None:
            featured = archive.article_by_url(feature_url)
            if featured is None:
                raise SelectionError(
                    f"no archived article has the URL {feature_url}",
                    where="--feature",
                    hint="run `digest collect` first, or copy the URL from the source's feed",
                )
        return _select(config, archive, period, issue_id, featured=featured)


def _period(
    config: Config, request: PeriodRequest, archive: Archive, book: Ledger, *, now: datetime
) -> Period:
    if request.period is not None:
        return request.period
    if request == PeriodRequest():
        unfinished = _unfinished_period(archive, book)
        if unfinished is not None:
            return unfinished
    return selector.resolve_period(
        since=request.since,
        until=request.until,
        days=request.days,
        timezone=config.newsletter.timezone,
        now=now,
        last_sent_end=archive.last_sent_period_end(),
        default_days=config.selection.days,
    )


def _unfinished_period(archive: Archive, book: Ledger) -> Period | None:
    """The period of the newest issue whose send began where the last sent one ended and has
    copies pending: the default period resumes it after a crash or a --limit, on any day."""
    last_end = archive.last_sent_period_end()
    for known in reversed(book.issues()):
        period = archive.issue_period(known.issue_id) if known.counts.pending else None
        if period is not None and (last_end is None or period.start >= last_end):
            return period
    return None


def _issue_id(
    config: Config, period: Period, archive: Archive, book: Ledger, *, now: datetime
) -> str:
    """The period's id in [selection] issue_id_format, unless the schedule's period has that
    id, or will have it: then the one that is not the schedule's adds its last day. So a
    manual send before Saturday's run is 2026-W48-2026-11-26 and the run still sends 2026-W48.

    An issue whose send began keeps the id it has, so existing ledgers stay valid; two periods
    neither of which is the schedule's may share an id, as before (a send run again resumes).
    """
    zone, fmt = config.newsletter.timezone, config.selection.issue_id_format
    ident = selector.issue_id(period, timezone=zone, fmt=fmt)
    dated = selector.dated_id(ident, period, timezone=zone)
    began = {i: archive.issue_period(i) for i in (ident, dated) if book.frozen_at(i) is not None}
    for candidate, taken in began.items():
        if taken is not None and _same_period(taken, period):
            return candidate
    try:
        clash = _clashes_with_schedule(config, period, ident, began.get(ident), now=now)
    except OverflowError:  # at the calendar's ends (years 1 and 9999) no scheduled time is near
        clash = False
    return dated if clash else ident


def _clashes_with_schedule(
    config: Config, period: Period, ident: str, taken: Period | None, *, now: datetime
) -> bool:
    """Whether `ident` names a period other than `period` (`taken`, if its send began) where
    one of the two is the schedule's, or will name the schedule's next one (after the period,
    or after now for a period ending ahead)."""
    if _on_schedule(config, period.end):
        return taken is not None
    if taken is not None and _on_schedule(config, taken.end):
        return True
    zone, fmt = config.newsletter.timezone, config.selection.issue_id_format
    after = min(period.end, now, key=lambda moment: moment.astimezone(UTC))
    due = schedule.next_due(config.schedule, timezone=zone, after=after)
    return selector.issue_id(Period(after, due), timezone=zone, fmt=fmt) == ident


def _on_schedule(config: Config, moment: datetime) -> bool:
    """Whether a period ending at `moment` ends where the schedule's periods end."""
    due = schedule.latest_due(config.schedule, timezone=config.newsletter.timezone, now=moment)
    return due.astimezone(UTC) == moment.astimezone(UTC)


def _same_period(one: Period, other: Period) -> bool:
    # In UTC: datetimes with one tzinfo compare by wall clock, ignoring fold.
    return (one.start.astimezone(UTC), one.end.astimezone(UTC)) == (
        other.start.astimezone(UTC),
        other.end.astimezone(UTC),
    )


def _select(
    config: Config,
    archive: Archive,
    period: Period,
    issue_id: str,
    *,
    featured: Article | None = None,
) -> Issue:
    return selector.select_issue(
        archive.candidates(period),
        config.sections,
        period,
        issue_id=issue_id,
        featured=featured,
        featured_category=config.selection.featured_category,
    )


# Who `digest build` writes the sample copy for, unless --for names a subscriber: a made-up
# reader, so files that get forwarded for review carry nobody's real address.
SAMPLE_READER = "reader@example.org"
# Stands in for a signed token when DIGEST_SECRET is unset; no page will ever accept it.
PREVIEW_TOKEN = "PREVIEW-NOT-A-REAL-TOKEN"


@dataclass(frozen=True, slots=True)
class Reader:
    """Who a copy is for: the subscriber (or the made-up reader) and their variant of the issue;
    without DIGEST_SECRET, the stand-in token their links carry."""

    subscriber: Subscriber
    variant: render.Variant
    preview_token: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Sample:
    """One reader's copy of an issue: what `digest build` writes and a preview shows."""

    issue: Issue
    reader: Reader
    email: render.Email
    eml: bytes  # the message as `send` would send it to this reader

    @property
    def message(self) -> EmailMessage:
        return BytesParser(policy=email_policy.default).parsebytes(self.eml)


def render_issue(
    config: Config,
    issue: Issue,
    variant: render.Variant,
    *,
    note: str = "",
    env: jinja2.Environment | None = None,
) -> render.Rendered:
    """Render and inline one variant of the issue: the slow part, done once per variant.

    `env` is a Jinja environment for the variant's language to reuse (else one is made)."""
    draft = render.render_variant(config, issue, variant, note=note, env=env)
    return draft.finish(inline.inline_css(draft.html).html)


def reader_for(config: Config, email: str | None = None) -> Reader:
    """The subscriber with this address (their name, sections and language), else the sample.

    Their links carry a real token when DIGEST_SECRET is set, else a fake one and a warning.
    """
    warnings: list[str] = []
    if email is None:
        subscriber = Subscriber(SAMPLE_READER)
    else:
        found = SubscriberFile(config.subscribers_path).find(email)
        if found is None:
            raise SubscriberFileError(
                f"no subscriber has the address {email}",
                where=str(config.subscribers_path),
                hint="check the address, or leave out --for to use a made-up reader",
            )
        if not found.receives_mail:
            warnings.append(f"{found.email} is {found.status}: they will not receive this issue")
        subscriber = found
    preview_token = None
    if not config.env.get(tokens.SECRET_VAR, "").strip():
        preview_token = PREVIEW_TOKEN
        warnings.append(
            f"{tokens.SECRET_VAR} is unset: the unsubscribe and preferences links carry a fake "
            "preview token (sending needs the secret)"
        )
    return Reader(
        subscriber=subscriber,
        variant=render.variant_for(config, subscriber.language, subscriber.sections),
        preview_token=preview_token,
        warnings=tuple(warnings),
    )


def copy_for(
    config: Config, issue: Issue, rendered: render.Rendered, reader: Reader, *, now: datetime
) -> Sample:
    """One reader's copy from their rendered variant, by the composer `send` uses: cheap, no
    templates involved."""
    composer = message.Composer(
        config, issue, {reader.variant: rendered}, now=now, preview_token=reader.preview_token
    )
    composed = composer.compose(reader.subscriber)
    email = rendered.personalise(composer.recipient_of(reader.subscriber))
    return Sample(issue=issue, reader=reader, email=email, eml=composed.data)


def sample(
    config: Config,
    issue: Issue,
    *,
    now: datetime,
    recipient: str | None = None,
    note_path: Path | None = None,
) -> Sample:
    """The issue as one reader receives it: `recipient` from the subscriber file, else the
    made-up sample reader. The editor's note comes from `note_path`, else [email] note."""
    reader = reader_for(config, recipient)
    note = read_note(note_path if note_path is not None else config.email.note)
    rendered = render_issue(config, issue, reader.variant, note=note)
    return copy_for(config, issue, rendered, reader, now=now)


def read_note(path: Path | None) -> str:
    """The editor's plain-text note, or "" without one."""
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the editor's note: {err}", where=str(path)) from err


def default_out_dir(config: Config) -> Path:
    """Where `digest build` writes: out/ beside the config."""
    return config.root / "out"


def write_sample(copy: Sample, out_dir: Path) -> tuple[Path, Path, Path]:
    """Write ISSUE.html, ISSUE.txt and ISSUE.eml into `out_dir`; their paths."""
    html, text, eml = (out_dir / f"{copy.issue.id}.{kind}" for kind in ("html", "txt", "eml"))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        html.write_text(copy.email.html, encoding="utf-8")
        text.write_text(copy.email.text, encoding="utf-8")
        eml.write_bytes(copy.eml)
    except OSError as err:
        raise DigestError(
            f"cannot write the issue: {err}", where=str(out_dir), hint="choose a folder with --out"
        ) from err
    return html, text, eml


LEDGER_FILE = "ledger.sqlite3"  # beside the archive
# Fewer copies than this per sending process, and another process costs more than it saves.
SHARE_LEAST = 500
LOOKUP_CHUNK = 256  # readers a send looks up in the ledger at once


@dataclass(frozen=True, slots=True)
class SendOptions:
    """How `digest send` delivers: the pool, the rate, and which rows to (re)send."""

    concurrency: int | None = None  # SMTP connections; None: [send] concurrency
    processes: int | None = None  # sending processes; None: [send] processes, else one per 2 CPUs
    rate: float | None = None  # messages per second across the pool; None: [send] rate
    retry_unknown: bool = False  # resend rows an earlier run left `unknown`
    include_new: bool = False  # add subscribers who joined after the issue was frozen
    limit: int | None = None  # send at most this many messages in this run
    dry_run: bool = False  # compose every copy, send nothing
    allow_empty: bool = False  # send an issue with no articles rather than refuse it
    issue_id: str | None = None  # resume this recorded issue rather than the period's


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What `send_issue` did: the delivery report (skipped readers counted) and where it went."""

    issue_id: str
    report: sender.SendReport
    outbox: Path | None = None  # the Maildir the messages went to when SMTP_HOST is unset
    composed: int = 0  # dry run: copies composed
    sample: bytes | None = None  # dry run: the first copy, as it would be sent
    processes: int = 1  # how many processes delivered it
    left_out: int = 0  # readers added after the issue was frozen, without include_new
    # (address, why) for each subscribed reader this run gave no copy, and each copy it failed
    skipped_readers: tuple[tuple[str, str], ...] = ()
    failed_readers: tuple[tuple[str, str], ...] = ()
    unreadable: tuple[int, ...] = ()  # lines of the list's rows that cannot be read: no copy


@dataclass(frozen=True, slots=True)
class SendProgress:
    """How far a send has got, for a progress bar: `total` copies are this run's to deliver."""

    issue_id: str
    total: int
    report: sender.SendReport


def send_issue(
    config: Config,
    request: PeriodRequest,
    options: SendOptions,
    *,
    now: datetime,
    progress: Callable[[SendProgress], None] | None = None,
) -> SendOutcome:
    """Deliver the period's issue to every subscribed reader once; safe to run again after a
    crash (the ledger resumes it with the same content, only to those not yet sent).

    One send at a time per ledger: a second raises SendInProgress.
    """
    if options.dry_run:
        issue = issue_to_send(config, request, now=now, issue_id=options.issue_id)
        _refuse_empty(config, issue, allow_empty=options.allow_empty)
        return _dry_run(config, issue, SubscriberFile(config.subscribers_path), now=now)
    settings = sender.read_settings(config.env, root=config.root)
    with _send_lock(config):
        issue = issue_to_send(config, request, now=now, issue_id=options.issue_id)
        _refuse_empty(config, issue, allow_empty=options.allow_empty)
        return _deliver_issue(config, issue, options, settings, now=now, progress=progress)


def issue_to_send(
    config: Config, request: PeriodRequest, *, now: datetime, issue_id: str | None = None
) -> Issue:
    """The period's issue (see `select`), or the recorded issue `issue_id` names."""
    if issue_id is None:
        return select(config, request, now=now)
    with Archive.open(config.archive_path) as archive:
        recorded = archive.issue(issue_id)
    if recorded is None:
        raise SelectionError(
            f"no issue {issue_id} was recorded",
            where="--issue",
            hint="`digest issues` lists them; send a new issue with --since/--until",
        )
    return recorded


def _refuse_empty(config: Config, issue: Issue, *, allow_empty: bool) -> None:
    """An issue with no articles is a mistake (nothing collected, the wrong period) unless the
    editor says otherwise; one whose send has begun is resumed as it was frozen."""
    if issue.articles or allow_empty:
        return
    with Ledger.open(_ledger_path(config)) as book:
        if book.frozen_at(issue.id) is not None:
            return
    zone = config.newsletter.timezone
    start, end = issue.period.start.astimezone(zone), issue.period.end.astimezone(zone)
    raise SelectionError(
        f"issue {issue.id} has no articles between {start:%Y-%m-%d %H:%M} and "
        f"{end:%Y-%m-%d %H:%M}: nothing to send",
        hint="run `digest collect` or choose another period; --allow-empty sends it anyway",
    )


def _deliver_issue(
    config: Config,
    issue: Issue,
    options: SendOptions,
    settings: sender.SmtpSettings | sender.Outbox,
    *,
    now: datetime,
    progress: Callable[[SendProgress], None] | None,
) -> SendOutcome:
    file = SubscriberFile(config.subscribers_path)
    renderer = _Renderer(config, issue)
    composer = message.Composer(config, issue, renderer, now=now)
    with Ledger.open(_ledger_path(config)) as book:
        if book.frozen_at(issue.id) is None:
            with Archive.open(config.archive_path) as archive:
                archive.record_issue(issue, created_at=now)
        try:
            frozen = _freeze(book, composer, renderer, file, options, now=now)
        except KeyboardInterrupt as err:  # one transaction: nothing frozen, or all of it
            raise _interrupted(book, issue.id) from err
        pending = book.counts(issue.id).pending
        total = pending if options.limit is None else min(pending, options.limit)
        skipped: list[tuple[str, str]] = []
        left_out: list[str] = []
        bounced: list[str] = []
        started = datetime.now(UTC)
        unreadable: list[int] = []
        on_progress = (
            None
            if progress is None
            else lambda so_far: progress(SendProgress(issue.id, total, so_far))
        )
        processes = _processes(config, options, settings, total)
        try:
            with _stop_on_signals() as stop:
                if processes == 1:
                    report = asyncio.run(
                        sender.deliver(
                            itertools.islice(
                                _pending_copies(
                                    composer, book, file.shard(0, 1, unreadable), skipped, left_out
                                ),
                                options.limit,
                            ),
                            book,
                            settings,
                            _delivery_options(config, options),
                            issue_id=issue.id,
                            on_bounce=bounced.append,
                            on_progress=on_progress,
                            stop=stop,
                        )
                    )
                else:
                    task = _ShardTask(config, issue, options, now)
                    report = _deliver_in_shards(
                        task, processes, skipped, left_out, bounced, unreadable, on_progress, stop
                    )
        except KeyboardInterrupt as err:  # a second Ctrl-C: stopped at once
            raise _interrupted(book, issue.id) from err
        finally:
            if config.send.mark_bounced:
                # Refused as sent (a domain's xn-- form), listed as written: both forms match.
                listed = [*bounced, *map(address_as_written, bounced)]
                file.set_statuses(listed, SubscriberStatus.BOUNCED, at=now)
        complete = book.counts(issue.id).pending == 0
        failed = _failed_readers(book, issue.id, since=started)
        if stop() and not complete:
            raise _interrupted(book, issue.id)
    if complete:
        with Archive.open(config.archive_path) as archive:
            archive.mark_sent(issue.id, sent_at=now)
    return SendOutcome(
        issue_id=issue.id,
        # Rows an interrupted run left `sending` are this run's unknowns: maybe delivered.
        report=replace(
            report,
            skipped=report.skipped + len(skipped),
            unknown=report.unknown + frozen.made_unknown,
        ),
        outbox=settings.path if isinstance(settings, sender.Outbox) else None,
        processes=processes,
        left_out=len(left_out),
        skipped_readers=tuple(skipped),
        failed_readers=failed,
        unreadable=tuple(sorted(unreadable)),
    )


def _failed_readers(
    book: Ledger, issue_id: str, *, since: datetime | None = None
) -> tuple[tuple[str, str], ...]:
    """(address as the list writes it, the server's reply) for each copy that failed (since
    `since`: this run's, not an earlier one's)."""
    return tuple(
        (address_as_written(row.address), row.reply_text or "")
        for row in book.rows(issue_id, ledger.RowState.FAILED)
        if since is None or (row.finished_at is not None and row.finished_at >= since)
    )


def _interrupted(book: Ledger, issue_id: str) -> SendInterrupted:
    counts = book.counts(issue_id)
    left = counts.pending + counts.sending
    return SendInterrupted(
        f"{counts.sent:,} copies sent, {left:,} not yet" if counts.total else "no copy sent yet",
        where=issue_id,
        hint=f"run the same command again, or `digest send --issue {issue_id}`, to send the rest",
    )


@contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """While a send runs, Ctrl-C or SIGTERM asks it to stop: no new copy is started, those in
    flight finish, and the ledger is left for a rerun to resume. A second signal stops it at
    once (KeyboardInterrupt); a copy then in flight is `unknown` to the rerun."""
    asked = False

    def ask(signum: int, frame: object) -> None:
        nonlocal asked
        if asked:
            raise KeyboardInterrupt
        asked = True

    if threading.current_thread() is not threading.main_thread():  # signals reach only main
        yield lambda: asked
        return
    previous = {number: signal.signal(number, ask) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: asked
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)


def send_test_copies(
    config: Config,
    request: PeriodRequest,
    addresses: Sequence[str],
    *,
    now: datetime,
    issue_id: str | None = None,
    allow_empty: bool = False,
) -> SendOutcome:
    """A test copy of the issue to each address, the message that subscriber (or a reader of
    every section) gets but for its own Message-ID; nothing is recorded, so the real send is
    unaffected. An issue with no articles is refused as the real send would refuse it."""
    issue = issue_to_send(config, request, now=now, issue_id=issue_id)
    _refuse_empty(config, issue, allow_empty=allow_empty)
    file = SubscriberFile(config.subscribers_path)
    readers = [
        replace(file.find(address) or Subscriber(address), status=SubscriberStatus.SUBSCRIBED)
        for address in (address.strip() for address in addresses)
    ]
    recipients = [
        ledger.Recipient(message.checked_address(r.email, where="--to"), r.first_name, "")
        for r in readers
    ]
    composer = message.Composer(config, issue, _Renderer(config, issue), now=now, test_copy=True)
    settings = sender.read_settings(config.env, root=config.root)
    skipped: list[tuple[str, str]] = []
    with Ledger.open(Path(":memory:")) as scratch:  # the sender's bookkeeping, then dropped
        scratch.freeze(issue.id, variants={}, recipients=recipients, at=now)
        report = asyncio.run(
            sender.deliver(
                _jobs(composer.compose_all(readers), skipped),
                scratch,
                settings,
                _delivery_options(config, SendOptions()),
                issue_id=issue.id,
            )
        )
        failed = _failed_readers(scratch, issue.id)
    return SendOutcome(
        issue_id=issue.id,
        report=replace(report, skipped=report.skipped + len(skipped)),
        outbox=settings.path if isinstance(settings, sender.Outbox) else None,
        skipped_readers=tuple(skipped),
        failed_readers=failed,
    )


def _delivery_options(config: Config, options: SendOptions) -> sender.DeliveryOptions:
    pace = config.send
    return sender.DeliveryOptions(
        envelope_from=parseaddr(config.newsletter.sender)[1],
        concurrency=pace.concurrency if options.concurrency is None else options.concurrency,
        rate=pace.rate if options.rate is None else options.rate,
        per_hour=pace.per_hour,
        per_day=pace.per_day,
        max_attempts=pace.max_attempts,
        backoff=pace.retry_delay,
        timeout=pace.timeout,
    )


def _processes(
    config: Config, options: SendOptions, settings: sender.SmtpSettings | sender.Outbox, total: int
) -> int:
    """How many processes deliver: as configured, else one per two CPUs (the other half is
    left to the relay, often on the same machine, and a process keeps a CPU busy); at most
    one per connection and per SHARE_LEAST copies; one for the outbox, written to disk."""
    if isinstance(settings, sender.Outbox):
        return 1
    wanted = options.processes or config.send.processes or len(os.sched_getaffinity(0)) // 2
    connections = _delivery_options(config, options).concurrency
    return max(1, min(wanted, connections, total // SHARE_LEAST))


@dataclass(frozen=True, slots=True)
class _ShardTask:
    """What each sending process is given (pickled): it reads the rest from the ledger."""

    config: Config
    issue: Issue
    options: SendOptions
    now: datetime


@dataclass(frozen=True, slots=True)
class _ShardResult:
    skipped: tuple[tuple[str, str], ...]  # readers of this share who get no copy, and why
    left_out: tuple[str, ...]  # readers of this share added after the freeze
    unreadable: tuple[int, ...]  # lines of this share's rows that cannot be read


def _deliver_in_shards(
    task: _ShardTask,
    processes: int,
    skipped: list[tuple[str, str]],
    left_out: list[str],
    bounced: list[str],
    unreadable: list[int],
    on_progress: Callable[[sender.SendReport], None] | None,
    stop: Callable[[], bool],
) -> sender.SendReport:
    """Deliver the frozen issue from `processes` processes, each to every Nth reader of the
    list (see digest.shards); their reports added up. Raises the first one's error after the
    others stopped, with `bounced` filled in from all of them."""
    started = time.monotonic()

    def combined(reports: Sequence[sender.SendReport]) -> sender.SendReport:
        return sender.SendReport(
            sent=sum(r.sent for r in reports),
            failed=sum(r.failed for r in reports),
            unknown=sum(r.unknown for r in reports),
            skipped=sum(r.skipped for r in reports),
            retries=sum(r.retries for r in reports),
            bounced=tuple(a for r in reports for a in r.bounced),
            elapsed=time.monotonic() - started,
        )

    gathered = shards.run(
        _deliver_shard,
        task,
        processes,
        on_progress=None if on_progress is None else lambda reports: on_progress(combined(reports)),
        stop=stop,
    )
    report = combined(gathered.progress)
    bounced.extend(report.bounced)
    skipped.extend(name for result in gathered.results for name in result.skipped)
    left_out.extend(name for result in gathered.results for name in result.left_out)
    unreadable.extend(line for result in gathered.results for line in result.unreadable)
    if gathered.error is not None:
        raise gathered.error
    return report


def _deliver_shard(task: _ShardTask, shard: shards.Shard) -> _ShardResult:
    """One sending process: its share of the readers, its share of the pool and the rate; it
    reports its tallies as it goes, and a last time however it ends."""
    config, issue = task.config, task.issue
    settings = sender.read_settings(config.env, root=config.root)
    renderer = _Renderer(config, issue)
    composer = message.Composer(config, issue, renderer, now=task.now)
    unreadable: list[int] = []
    readers = SubscriberFile(config.subscribers_path).shard(shard.index, shard.count, unreadable)
    limit = task.options.limit
    skipped: list[tuple[str, str]] = []
    left_out: list[str] = []
    # The tallies the parent adds up: the last progress report, then the final one.
    last = sender.SendReport(0, 0, 0, 0, 0, (), 0.0)

    def progress(report: sender.SendReport) -> None:
        nonlocal last
        last = report
        shard.progress(report)

    with Ledger.open(_ledger_path(config)) as book:
        renderer.load(book.variants(issue.id))
        jobs = _pending_copies(composer, book, readers, skipped, left_out)
        try:
            last = asyncio.run(
                sender.deliver(
                    itertools.islice(jobs, None if limit is None else _share(limit, shard)),
                    book,
                    settings,
                    _shard_options(_delivery_options(config, task.options), shard),
                    issue_id=issue.id,
                    on_progress=progress,
                    stop=shard.stopping,
                )
            )
        finally:
            shard.progress(last, final=True)
    return _ShardResult(tuple(skipped), tuple(left_out), tuple(unreadable))


def _share(total: int, shard: shards.Shard) -> int:
    """This shard's part of `total`, the parts adding up to it."""
    return total // shard.count + (shard.index < total % shard.count)


def _shard_options(options: sender.DeliveryOptions, shard: shards.Shard) -> sender.DeliveryOptions:
    """A shard's part of the pool and of each rate, so that together they keep to the whole."""
    return replace(
        options,
        concurrency=_share(options.concurrency, shard),
        rate=None if options.rate is None else options.rate / shard.count,
        per_hour=None if options.per_hour is None else max(1, _share(options.per_hour, shard)),
        per_day=None if options.per_day is None else max(1, _share(options.per_day, shard)),
    )


def _ledger_path(config: Config) -> Path:
    return config.archive_path.parent / LEDGER_FILE


@contextmanager
def _send_lock(config: Config) -> Iterator[None]:
    """Held while an issue is delivered: two sends of one list would race on the ledger's rows.

    An OS file lock, so a crashed or killed run never leaves it held."""
    path = _ledger_path(config).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with filelock.FileLock(path, timeout=0):
            yield
    except filelock.Timeout as err:
        raise SendInProgress(
            "another send of this list is in progress",
            where=str(path),
            hint="let it finish; an interrupted send resumes when run again",
        ) from err


def send_in_progress(config: Config) -> bool:
    """Whether a send of this list holds the send lock right now."""
    try:
        with _send_lock(config):
            return False
    except SendInProgress:
        return True


RunStatus = Literal["sent", "already sent", "in progress", "too few articles"]


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What one scheduled run did; every status but a failed send is a normal outcome."""

    status: RunStatus
    reason: str  # one line for the log: why it sent, or why not
    issue_id: str | None = None
    collected: CollectReport | None = None
    sends: tuple[SendOutcome, ...] = ()  # an interrupted issue resumed first, then the period's


def run_scheduled(
    config: Config, *, now: datetime, progress: Callable[[SendProgress], None] | None = None
) -> RunOutcome:
    """Send what the schedule says is due, once, whenever and however often cron starts it.

    An interrupted send is finished first; then the current period's issue is collected,
    selected and sent, unless it was sent already or has fewer than min_articles articles.
    A run that finds another one (or a `digest send`) in progress does nothing.
    """
    try:
        return _run(config, now=now, progress=progress)
    except SendInProgress:  # the send lock is held for the whole of a run
        # A `digest send` takes the same lock: say what is true of both.
        return RunOutcome(
            "in progress", "another send of this list (a send or a run) is in progress"
        )


def _run(
    config: Config, *, now: datetime, progress: Callable[[SendProgress], None] | None
) -> RunOutcome:
    settings = sender.read_settings(config.env, root=config.root)
    with _send_lock(config):
        with Ledger.open(_ledger_path(config)) as book:
            unfinished = [known.issue_id for known in book.issues() if known.counts.pending]
        resumed = tuple(
            _deliver_issue(
                config,
                issue_to_send(config, PeriodRequest(), now=now, issue_id=issue_id),
                SendOptions(),
                settings,
                now=now,
                progress=progress,
            )
            for issue_id in unfinished
        )
        with Archive.open(config.archive_path) as archive:
            period = schedule.scheduled_period(
                config.schedule,
                timezone=config.newsletter.timezone,
                now=now,
                last_sent_end=archive.unsent_since(),
            )
            skipped = None if period is None else archive.skip_reason(period.end)
        if period is None:
            status: RunStatus = "sent" if resumed else "already sent"
            ids = ", ".join(outcome.issue_id for outcome in resumed)
            due = schedule.next_due(config.schedule, timezone=config.newsletter.timezone, after=now)
            reason = (
                f"resumed {ids}"
                if resumed
                else f"already sent; the next issue is due {due:%Y-%m-%d %H:%M}"
            )
            return RunOutcome(status, reason, sends=resumed)
        if skipped is not None:
            return RunOutcome("too few articles", skipped, sends=resumed)
        collected = collect(config, now=now)
        issue = issue_to_send(config, PeriodRequest(period=period), now=now)
        wanted = config.schedule.min_articles
        if len(issue.articles) < wanted:
            reason = (
                f"{issue.id}: {len(issue.articles)} new articles, fewer than min_articles "
                f"({wanted}); they wait for the next issue"
            )
            with Archive.open(config.archive_path) as archive:
                archive.skip_period(issue.id, period, reason=reason, at=now)
            return RunOutcome(
                "too few articles", reason, issue_id=issue.id, collected=collected, sends=resumed
            )
        sent = _deliver_issue(config, issue, SendOptions(), settings, now=now, progress=progress)
    return RunOutcome(
        "sent",
        f"{issue.id}: sent",
        issue_id=issue.id,
        collected=collected,
        sends=(*resumed, sent),
    )


def _freeze(
    book: Ledger,
    composer: message.Composer,
    renderer: _Renderer,
    file: SubscriberFile,
    options: SendOptions,
    *,
    now: datetime,
) -> ledger.Frozen:
    """Freeze the issue with its readers and the variants they read, rendered once the list
    has been read through, or resume the frozen issue; from then on the renderer gives the
    ledger's variants."""
    needed: set[render.Variant] = set()
    keys: dict[render.Variant, str] = {}

    def recipients() -> Iterator[ledger.Recipient]:
        for subscriber in _deliverable(composer, file):
            address = _address(composer, subscriber)
            if address is None:
                continue
            variant = composer.variant_of(subscriber)
            needed.add(variant)
            key = keys.get(variant)
            if key is None:
                key = keys[variant] = _variant_key(variant)
            yield ledger.Recipient(address, subscriber.first_name, key)

    def variants() -> dict[str, bytes]:
        renderer.render_all(needed)
        return renderer.stored()

    frozen = book.freeze(
        composer.issue.id,
        variants=variants,
        recipients=recipients(),
        at=now,
        include_new=options.include_new,
        retry_unknown=options.retry_unknown,
    )
    renderer.load(frozen.variants)
    return frozen


def _dry_run(config: Config, issue: Issue, file: SubscriberFile, *, now: datetime) -> SendOutcome:
    """Compose every subscribed reader's copy and send none; one copy is kept as a sample."""
    started = time.monotonic()
    composer = message.Composer(config, issue, _Renderer(config, issue), now=now)
    composed, sample, skipped = 0, None, 0
    for item in composer.compose_all(s for s in file if s.receives_mail):
        if isinstance(item, message.Skipped):
            skipped += 1
            continue
        composed += 1
        sample = item.data if sample is None else sample
    report = sender.SendReport(
        sent=0,
        failed=0,
        unknown=0,
        skipped=skipped,
        retries=0,
        bounced=(),
        elapsed=time.monotonic() - started,
    )
    return SendOutcome(issue.id, report, composed=composed, sample=sample)


def _jobs(
    items: Iterator[message.Composed | message.Skipped], skipped: list[tuple[str, str]]
) -> Iterator[sender.Job]:
    """The composed copies as delivery jobs; each reader who gets none goes to `skipped`."""
    for item in items:
        if isinstance(item, message.Skipped):
            skipped.append((item.email, item.reason))
        else:
            yield sender.Job(item.address, item.data, item.message_id, item.dot_free)


def _pending_copies(
    composer: message.Composer,
    book: Ledger,
    readers: Iterator[Subscriber],
    skipped: list[tuple[str, str]],
    left_out: list[str],
) -> Iterator[sender.Job]:
    """The copy of each subscribed reader whose row is pending, to the address frozen for it;
    readers with a bad address or nothing in their sections go to `skipped`, readers the
    issue was not frozen for (added since) to `left_out`."""
    issue_id = composer.issue.id
    while batch := list(itertools.islice(readers, LOOKUP_CHUNK)):
        chunk = [s for s in batch if s.receives_mail]
        known = book.copies_of(issue_id, [s.email for s in chunk])
        for subscriber in chunk:
            job = _pending_copy(composer, book, subscriber, known, skipped, left_out)
            if job is not None:
                yield job


def _pending_copy(
    composer: message.Composer,
    book: Ledger,
    subscriber: Subscriber,
    known: Mapping[str, tuple[ledger.RowState, str]],
    skipped: list[tuple[str, str]],
    left_out: list[str],
) -> sender.Job | None:
    """This reader's copy if their row is pending (`known`: their rows, looked up ahead)."""
    found = known.get(email_key(subscriber.email))
    if found is None:  # not frozen for them, or frozen under the address's checked form
        address = _address(composer, subscriber)
        if address is None:
            skipped.append((subscriber.email, NOT_AN_ADDRESS))
            return None
        found = book.copy_of(composer.issue.id, address)
    if (reason := composer.skip_reason(subscriber)) is not None:
        skipped.append((subscriber.email, reason))
    elif found is None:
        left_out.append(subscriber.email)
    elif found[0] is ledger.RowState.PENDING:
        copy = composer.compose_to(subscriber, found[1])
        return sender.Job(copy.address, copy.data, copy.message_id, copy.dot_free)
    return None


NOT_AN_ADDRESS = "not a valid address; `digest subscribers validate` says why"


def _deliverable(composer: message.Composer, file: SubscriberFile) -> Iterator[Subscriber]:
    """The subscribed readers who get a copy of this issue (articles in their sections)."""
    return (s for s in file if s.receives_mail and composer.skip_reason(s) is None)


def _address(composer: message.Composer, subscriber: Subscriber) -> str | None:
    """The address a copy goes to (as the ledger records it), or None if it is not valid."""
    try:
        return message.checked_address(subscriber.email, where="subscribers")
    except MessageError:
        return None


def _variant_key(variant: render.Variant) -> str:
    sections = None if variant.sections is None else sorted(variant.sections)
    return json.dumps([variant.language, sections], ensure_ascii=False)


class _Renderer:
    """Each variant rendered once, or read back from the ledger so a resumed send uses the
    bytes frozen with the issue. A variant first needed on a resume (a reader added with
    --include-new, or one who changed their choice) is rendered then."""

    def __init__(self, config: Config, issue: Issue) -> None:
        self.config, self.issue = config, issue
        self.note = read_note(config.email.note)
        self._done: dict[str, render.Rendered] = {}
        self._environments: dict[str, jinja2.Environment] = {}

    def __call__(self, variant: render.Variant) -> render.Rendered:
        key = _variant_key(variant)
        found = self._done.get(key)
        if found is None:
            env = self._environments.get(variant.language)
            if env is None:  # compiling the templates is most of a variant's rendering
                env = self._environments[variant.language] = render.environment(
                    self.config, variant.language
                )
            found = self._done[key] = render_issue(
                self.config, self.issue, variant, note=self.note, env=env
            )
        return found

    def render_all(self, variants: Iterable[render.Variant]) -> None:
        for variant in variants:
            self(variant)

    def stored(self) -> dict[str, bytes]:
        """The rendered variants as the ledger stores them."""
        return {key: _dump(rendered) for key, rendered in self._done.items()}

    def load(self, stored: Mapping[str, bytes]) -> None:
        """Use the ledger's frozen variants from now on."""
        self._done = {key: _load(content) for key, content in stored.items()}


def _dump(rendered: render.Rendered) -> bytes:
    variant = rendered.variant
    return json.dumps(
        {
            "language": variant.language,
            "sections": None if variant.sections is None else sorted(variant.sections),
            "subject": rendered.subject,
            "preheader": rendered.preheader,
            "html_parts": rendered.html_parts,
            "text_parts": rendered.text_parts,
            "greetings": rendered.greetings,
        },
        ensure_ascii=False,
    ).encode("utf-8")


def _load(content: bytes) -> render.Rendered:
    try:
        data = json.loads(content)
        sections = data["sections"]
        greeting, plain = data["greetings"]
        return render.Rendered(
            variant=render.Variant(
                str(data["language"]), None if sections is None else frozenset(sections)
            ),
            subject=str(data["subject"]),
            preheader=str(data["preheader"]),
            html_parts=tuple(str(p) for p in data["html_parts"]),
            text_parts=tuple(str(p) for p in data["text_parts"]),
            greetings=(str(greeting), str(plain)),
        )
    except (ValueError, KeyError, TypeError) as err:
        raise LedgerError(
            f"a frozen variant cannot be read: {err}",
            hint="the ledger was written by another version of digest",
        ) from err


def web_copy(config: Config, issue: Issue) -> render.Rendered:
    """The issue's default variant (every section, the newsletter's language) as it was frozen
    for the send, so a web page shows what was mailed; rendered now if no reader had it."""
    variant = render.variant_for(config)
    with Ledger.open(_ledger_path(config)) as book:
        frozen = book.variant(issue.id, _variant_key(variant))
    if frozen is not None:
        return _load(frozen)
    return render_issue(config, issue, variant, note=read_note(config.email.note))
