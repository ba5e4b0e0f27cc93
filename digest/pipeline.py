"""Strings the steps together: collect into the archive, select an issue, render and compose it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

from digest import inline, message, render, selector, sources, tokens
from digest.archive import Archive, UpsertCounts
from digest.config import Config
from digest.errors import ConfigError, DigestError, SelectionError, SourceError, SubscriberFileError
from digest.models import Issue
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
    """Choose this period's articles from the archive, section by section."""
    zone = config.newsletter.timezone
    with Archive.open(config.archive_path) as archive:
        period = selector.resolve_period(
            since=request.since,
            until=request.until,
            days=request.days,
            timezone=zone,
            now=now,
            last_sent_end=archive.last_sent_period_end(),
            default_days=config.selection.days,
        )
        featured = None
        if feature_url is not None:
            featured = archive.article_by_url(feature_url)
            if featured is None:
                raise SelectionError(
                    f"no archived article has the URL {feature_url}",
                    where="--feature",
                    hint="run `digest collect` first, or copy the URL from the source's feed",
                )
        candidates = archive.candidates(period)
    return selector.select_issue(
        candidates,
        config.sections,
        period,
        issue_id=selector.issue_id(period, timezone=zone, fmt=config.selection.issue_id_format),
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
    """Who a copy is for: their address, their variant of the issue and their own links."""

    address: Address
    variant: render.Variant
    recipient: render.Recipient
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Sample:
    """One reader's copy of an issue: what `digest build` writes and a preview shows."""

    issue: Issue
    reader: Reader
    email: render.Email
    message: EmailMessage

    @property
    def eml(self) -> bytes:
        return message.as_bytes(self.message)


def render_issue(
    config: Config, issue: Issue, variant: render.Variant, *, note: str = ""
) -> render.Rendered:
    """Render and inline one variant of the issue: the slow part, done once per variant."""
    draft = render.render_variant(
        config, issue, variant, note=note, env=render.environment(config, variant.language)
    )
    return draft.finish(inline.inline_css(draft.html).html)


def reader_for(config: Config, email: str | None = None) -> Reader:
    """The subscriber with this address (their name, sections and language), else the sample.

    Their links carry a real token when DIGEST_SECRET is set, else a fake one and a warning.
    """
    warnings: list[str] = []
    if email is None:
        address, name, full_name = SAMPLE_READER, "", ""
        variant = render.variant_for(config)
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
        address, name = found.email, found.first_name
        variant = render.variant_for(config, found.language, found.sections)
        full_name = f"{found.first_name} {found.last_name}"
    if not config.env.get(tokens.SECRET_VAR, "").strip():
        token = PREVIEW_TOKEN
        warnings.append(
            f"{tokens.SECRET_VAR} is unset: the unsubscribe and preferences links carry a fake "
            "preview token (sending needs the secret)"
        )
    else:
        secret = tokens.secret_from(config)
        token = tokens.make_token(address, list_id=tokens.list_id(config), secret=secret)
    return Reader(
        address=message.address(address, full_name),
        variant=variant,
        recipient=render.Recipient(
            email=address,
            name=name,
            unsubscribe_url=tokens.unsubscribe_url(config, token),
            preferences_url=tokens.preferences_url(config, token),
        ),
        warnings=tuple(warnings),
    )


def copy_for(
    config: Config, issue: Issue, rendered: render.Rendered, reader: Reader, *, now: datetime
) -> Sample:
    """One reader's copy from their rendered variant: cheap, no templates involved."""
    email = rendered.personalise(reader.recipient)
    composed = message.compose(
        sender=config.newsletter.sender,
        to=reader.address,
        subject=email.subject,
        text=email.text,
        html=email.html,
        date=now,
        message_id=message.message_id(
            issue_id=issue.id, email=reader.recipient.email, sender=config.newsletter.sender
        ),
        unsubscribe_url=reader.recipient.unsubscribe_url,
        list_id=tokens.list_id(config),
        list_name=config.newsletter.name,
    )
    return Sample(issue=issue, reader=reader, email=email, message=composed)


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
