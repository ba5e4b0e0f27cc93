"""Past issues: what `digest issues` lists and shows, and the web archive `digest archive` writes.

An issue's record joins the archive (its period, articles and when it was marked sent) with the
send ledger (how many copies were sent, failed or left unknown). The web archive holds one page
per sent issue, ISSUE_ID.html, and an index.html listing them newest first, so a publication can
host the pages its "view in browser" links point at ([newsletter] archive_url). A page is the
issue's default variant as it was mailed, with everything personal taken out: nobody's copy.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2

from digest import pipeline, render
from digest.archive import Archive, RecordedIssue
from digest.config import Config
from digest.errors import ArchiveError, DigestError
from digest.ledger import Counts, Ledger, Row, RowState
from digest.models import Issue, Period
from digest.project import data_dir

INDEX_PAGE = "index.html"

# A paragraph of the email: the unit a personal value is removed with. <p> cannot nest, so the
# first </p> closes it. Compiled once; it runs over every page.
_PARAGRAPH = re.compile(r"<p\b[^>]*>.*?</p>", re.DOTALL | re.IGNORECASE)
# The "view in browser" link (partials/header.html.j2): on the page itself it would link to itself.
_VIEW_ONLINE = re.compile(r"""^<p\b[^>]*\bclass=["'][^"']*\bview-online\b""", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class IssueRecord:
    """One recorded issue as `digest issues` lists it."""

    id: str
    period: Period
    created_at: datetime  # when it was recorded: its send began
    sent_at: datetime | None  # when no copy was left pending; None before
    articles: int  # featured story included
    frozen_at: datetime | None  # when the ledger froze it; None if it has no ledger rows
    counts: Counts  # its copies by state


@dataclass(frozen=True, slots=True)
class IssueDetail:
    """One issue as `digest issues show` prints it: its articles and the copies that failed."""

    record: IssueRecord
    issue: Issue  # the featured story and the sections, as recorded
    problems: tuple[Row, ...]  # failed and unknown copies, in address order


def list_issues(config: Config) -> list[IssueRecord]:
    """Every recorded issue, newest period first, with its copies' counts from the ledger."""
    with Archive.open(config.archive_path) as archive:
        recorded = archive.issue_records()
    with Ledger.open(_ledger_path(config)) as book:
        return [_record(row, book) for row in recorded]


def issue_detail(config: Config, issue_id: str) -> IssueDetail:
    """The issue's record, its articles by section, and its failed and unknown copies."""
    with Archive.open(config.archive_path) as archive:
        issue = archive.issue(issue_id)
        recorded = next((r for r in archive.issue_records() if r.id == issue_id), None)
    if issue is None or recorded is None:
        raise ArchiveError(
            f"no issue {issue_id} in the archive",
            where=str(config.archive_path),
            hint="`digest issues` lists the recorded issues",
        )
    with Ledger.open(_ledger_path(config)) as book:
        problems = book.rows(issue_id, RowState.FAILED, RowState.UNKNOWN)
        return IssueDetail(_record(recorded, book), issue, tuple(problems))


def days(period: Period, zone: ZoneInfo) -> str:
    """The period as the inclusive days --since/--until take: "2026-11-16 – 2026-11-22"."""
    last = period.end.astimezone(zone) - timedelta(microseconds=1)
    return f"{period.start.astimezone(zone):%Y-%m-%d} – {last:%Y-%m-%d}"


def minute(moment: datetime, zone: ZoneInfo) -> str:
    """A time to the minute in the newsletter's zone: "2026-11-23 09:00"."""
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M}"


def default_archive_dir(config: Config) -> Path:
    """Where `digest archive` writes without a DIR: archive/ beside the config."""
    return config.root / "archive"


def write_web_archive(config: Config, out_dir: Path) -> list[Path]:
    """Write out_dir/ISSUE_ID.html for each sent issue and out_dir/index.html; their paths.

    Each file is replaced atomically, so a web server never serves half of one; the same
    archive and ledger give the same bytes, so running it again changes nothing.
    """
    with Archive.open(config.archive_path) as archive:
        sent = [r.id for r in archive.issue_records() if r.sent_at is not None]
        issues = [issue for i in sent if (issue := archive.issue(i)) is not None]
    entries, paths = [], []
    for issue in issues:
        copy = pipeline.web_copy(config, issue)
        paths.append(_replace(out_dir / render.web_page(issue.id), public_html(copy)))
        entries.append(_IndexEntry(issue, copy.preheader))
    paths.append(_replace(out_dir / INDEX_PAGE, _index(config, entries)))
    return paths


def public_html(rendered: render.Rendered) -> str:
    """The variant's HTML as nobody's copy: greeted without a name, and without the paragraphs
    holding an address or a reader's links (the footer's), nor the link to this very page."""
    marker = f"x-digest-public-{secrets.token_hex(8)}"  # in no feed text, and removed below
    nobody = render.Recipient(
        email=f"{marker}-email",
        unsubscribe_url=f"{marker}-unsubscribe",
        preferences_url=f"{marker}-preferences",
    )
    html = _PARAGRAPH.sub(
        lambda p: "" if marker in p[0] or _VIEW_ONLINE.match(p[0]) else p[0],
        rendered.personalise(nobody).html,
    )
    # A template that puts a personal value outside a paragraph keeps its markup, emptied.
    return re.sub(rf"{marker}-[a-z]+", "", html)


@dataclass(frozen=True, slots=True)
class _IndexEntry:
    issue: Issue
    preheader: str  # the stories' titles, as the inbox showed them


def _index(config: Config, entries: list[_IndexEntry]) -> str:
    """The index page, in the newsletter's language; Jinja escapes every feed-derived value."""
    language = config.newsletter.language
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(data_dir() / "templates" / "archive"),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.install_gettext_translations(render.translations(language), newstyle=True)  # type: ignore[attr-defined]
    zone = config.newsletter.timezone
    issues = [
        {
            "page": render.web_page(entry.issue.id),
            "period": render.period_text(entry.issue.period, zone, language),
            "titles": entry.preheader,
            "articles": len(entry.issue.articles),
        }
        for entry in entries
    ]
    return env.get_template("index.html.j2").render(
        lang=language, newsletter=config.newsletter.name, issues=issues
    )


def _replace(path: Path, content: str) -> Path:
    """Write `content` to a temporary file beside `path`, then rename it over `path`."""
    staged: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        staged = Path(name)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(content)
        staged.chmod(0o644)  # a web server reads it; mkstemp makes it owner-only
        os.replace(staged, path)
    except OSError as err:
        if staged is not None:
            staged.unlink(missing_ok=True)
        raise DigestError(
            f"cannot write the web archive: {err}",
            where=str(path.parent),
            hint="choose another folder: digest archive DIR",
        ) from err
    return path


def _record(row: RecordedIssue, book: Ledger) -> IssueRecord:
    return IssueRecord(
        id=row.id,
        period=row.period,
        created_at=row.created_at,
        sent_at=row.sent_at,
        articles=row.articles,
        frozen_at=book.frozen_at(row.id),
        counts=book.counts(row.id),
    )


def _ledger_path(config: Config) -> Path:
    return config.archive_path.parent / pipeline.LEDGER_FILE  # beside the archive, as send has it
