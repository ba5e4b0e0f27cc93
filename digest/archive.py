"""The SQLite archive: every article seen, each source's fetch state, and what each issue held.

Times are stored as UTC ISO 8601 text, which sorts in time order, so SQL compares them as
strings. Bylines and categories are joined with the unit separator: cheap to split on load.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from digest.errors import ArchiveError
from digest.models import Article, FetchState, Image, ImageSize, Issue, Period, Section
from digest.store import SqliteFile

# Schema version N is MIGRATIONS[N - 1]; add new scripts at the end, never edit old ones.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE articles (
        id TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        url TEXT NOT NULL,
        title TEXT NOT NULL,
        published TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        excerpt TEXT NOT NULL,
        bylines TEXT NOT NULL,
        categories TEXT NOT NULL,
        image_url TEXT,
        image_alt TEXT,
        date_estimated INTEGER NOT NULL
    );
    CREATE INDEX articles_published ON articles (published);
    CREATE INDEX articles_url ON articles (url);
    CREATE TABLE source_state (
        source TEXT PRIMARY KEY,
        etag TEXT,
        last_modified TEXT,
        fetched_at TEXT NOT NULL
    );
    CREATE TABLE issues (
        id TEXT PRIMARY KEY,
        period_start TEXT NOT NULL,
        period_end TEXT NOT NULL,
        created_at TEXT NOT NULL,
        sent_at TEXT
    );
    CREATE TABLE issue_articles (
        issue_id TEXT NOT NULL REFERENCES issues (id),
        article_id TEXT NOT NULL REFERENCES articles (id),
        section TEXT,
        position INTEGER NOT NULL,
        PRIMARY KEY (issue_id, article_id)
    );
    CREATE INDEX issue_articles_article ON issue_articles (article_id);
    """,
    """
    CREATE TABLE skipped_periods (
        period_end TEXT PRIMARY KEY,
        period_start TEXT NOT NULL,
        issue_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        decided_at TEXT NOT NULL
    );
    """,
    # The sizes a site offers of an article's picture, as JSON [[url, width, height], ...].
    """
    ALTER TABLE articles ADD COLUMN image_sizes TEXT NOT NULL DEFAULT '';
    """,
)

_SEPARATOR = "\x1f"  # ASCII unit separator: never part of a name

# The columns an Article is made of, in the order of its fields.
_ARTICLE_COLUMNS = (
    "id, url, title, published, source, excerpt, bylines, categories, image_url, image_alt, "
    "date_estimated, image_sizes"
)
# What upsert compares to decide between updated and unchanged; `published` is index 3.
_CONTENT_COLUMNS = (
    "source, url, title, published, excerpt, bylines, categories, image_url, image_alt, "
    "date_estimated, image_sizes"
)


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    """What storing one batch of articles did, for collect's report."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0


class Archive(SqliteFile):
    """An open archive file; use it as a context manager so the connection is closed."""

    what = "archive"
    error = ArchiveError
    migrations = MIGRATIONS
    pragmas = ("PRAGMA foreign_keys = ON",)
    not_a_database_hint = "point [archive] path in digest.toml at a new file, or move this one away"

    def upsert_articles(self, articles: Iterable[Article], *, seen_at: datetime) -> UpsertCounts:
        """Store a batch of fetched articles; one seen before is updated in place, never copied."""
        seen = _iso(seen_at)
        new = updated = unchanged = 0
        with self._transaction("saving articles") as db:
            for article in articles:
                stored = db.execute(
                    f"SELECT {_CONTENT_COLUMNS} FROM articles WHERE id = ?", (article.id,)
                ).fetchone()
                if stored is None:
                    db.execute(
                        f"INSERT INTO articles (id, first_seen, last_seen, {_CONTENT_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (article.id, seen, seen, *_content(article, stored)),
                    )
                    new += 1
                elif (content := _content(article, stored)) == stored:
                    db.execute("UPDATE articles SET last_seen = ? WHERE id = ?", (seen, article.id))
                    unchanged += 1
                else:
                    db.execute(
                        "UPDATE articles SET last_seen = ?, source = ?, url = ?, title = ?, "
                        "published = ?, excerpt = ?, bylines = ?, categories = ?, "
                        "image_url = ?, image_alt = ?, date_estimated = ?, image_sizes = ? "
                        "WHERE id = ?",
                        (seen, *content, article.id),
                    )
                    updated += 1
        return UpsertCounts(new=new, updated=updated, unchanged=unchanged)

    def fetch_state(self, source: str) -> FetchState | None:
        """The validators the source sent last time, or None if it was never fetched."""
        with self._reading("reading fetch state") as db:
            row = db.execute(
                "SELECT etag, last_modified FROM source_state WHERE source = ?", (source,)
            ).fetchone()
        return None if row is None else FetchState(etag=row[0], last_modified=row[1])

    def save_fetch_state(self, source: str, state: FetchState, *, fetched_at: datetime) -> None:
        """Remember the source's validators for the next conditional request."""
        with self._transaction("saving fetch state") as db:
            db.execute(
                "INSERT INTO source_state (source, etag, last_modified, fetched_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET "
                "etag = excluded.etag, last_modified = excluded.last_modified, "
                "fetched_at = excluded.fetched_at",
                (source, state.etag, state.last_modified, _iso(fetched_at)),
            )

    def candidates(self, period: Period) -> list[Article]:
        """The period's articles that no sent issue has carried yet, newest first."""
        with self._reading("reading articles") as db:
            rows = db.execute(
                f"SELECT {_ARTICLE_COLUMNS} FROM articles "
                "WHERE published >= ? AND published < ? AND id NOT IN ("
                "  SELECT article_id FROM issue_articles JOIN issues ON issues.id = issue_id"
                "  WHERE sent_at IS NOT NULL"
                ") ORDER BY published DESC, id",
                (_iso(period.start), _iso(period.end)),
            ).fetchall()
        return _articles(rows)

    def article_by_url(self, url: str) -> Article | None:
        """The archived article at `url`, the newest one if several ids share it."""
        with self._reading("reading articles") as db:
            rows = db.execute(
                f"SELECT {_ARTICLE_COLUMNS} FROM articles WHERE url = ? "
                "ORDER BY published DESC, id LIMIT 1",
                (url,),
            ).fetchall()
        return next(iter(_articles(rows)), None)

    def record_issue(self, issue: Issue, *, created_at: datetime) -> None:
        """Store which articles the issue holds; an unsent issue recorded again is replaced."""
        with self._transaction("recording the issue") as db:
            row = db.execute("SELECT sent_at FROM issues WHERE id = ?", (issue.id,)).fetchone()
            if row is not None and row[0] is not None:
                raise ArchiveError(
                    f"issue {issue.id} was sent at {row[0]}; its articles cannot change",
                    where=str(self.path),
                    hint="build the next issue instead",
                )
            db.execute(
                "INSERT INTO issues (id, period_start, period_end, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "period_start = excluded.period_start, period_end = excluded.period_end, "
                "created_at = excluded.created_at",
                (issue.id, _iso(issue.period.start), _iso(issue.period.end), _iso(created_at)),
            )
            db.execute("DELETE FROM issue_articles WHERE issue_id = ?", (issue.id,))
            featured = [(issue.featured, None)] if issue.featured else []
            placed = featured + [(a, s.name) for s in issue.sections for a in s.articles]
            db.executemany(
                "INSERT INTO issue_articles (issue_id, article_id, section, position) "
                "VALUES (?, ?, ?, ?)",
                [
                    (issue.id, article.id, section, position)
                    for position, (article, section) in enumerate(placed)
                ],
            )

    def issue(self, issue_id: str) -> Issue | None:
        """The recorded issue as it was selected: its period, featured story and sections."""
        with self._reading("reading the issue") as db:
            period = db.execute(
                "SELECT period_start, period_end FROM issues WHERE id = ?", (issue_id,)
            ).fetchone()
            if period is None:
                return None
            placed = db.execute(
                f"SELECT section, {_ARTICLE_COLUMNS} "
                "FROM issue_articles JOIN articles ON articles.id = article_id "
                "WHERE issue_id = ? ORDER BY position",
                (issue_id,),
            ).fetchall()
        featured: Article | None = None
        sections: dict[str, list[Article]] = {}
        for row, article in zip(placed, _articles(row[1:] for row in placed), strict=True):
            if row[0] is None:
                featured = article
            else:
                sections.setdefault(row[0], []).append(article)
        return Issue(
            id=issue_id,
            period=Period(datetime.fromisoformat(period[0]), datetime.fromisoformat(period[1])),
            featured=featured,
            sections=tuple(Section(name, tuple(articles)) for name, articles in sections.items()),
        )

    def issue_period(self, issue_id: str) -> Period | None:
        """The period the recorded issue covers, or None if there is no such issue."""
        with self._reading("reading the issue") as db:
            row = db.execute(
                "SELECT period_start, period_end FROM issues WHERE id = ?", (issue_id,)
            ).fetchone()
        return None if row is None else Period(*map(datetime.fromisoformat, row))

    def mark_sent(self, issue_id: str, *, sent_at: datetime) -> None:
        """Note that the issue went out, so its articles are no longer candidates."""
        with self._transaction("marking the issue sent") as db:
            # COALESCE: a resumed send keeps the time the issue first went out.
            cursor = db.execute(
                "UPDATE issues SET sent_at = COALESCE(sent_at, ?) WHERE id = ?",
                (_iso(sent_at), issue_id),
            )
            if cursor.rowcount == 0:
                raise ArchiveError(
                    f"no issue {issue_id} in the archive",
                    where=str(self.path),
                    hint="build the issue before sending it",
                )

    def last_sent_period_end(self) -> datetime | None:
        """Where the last sent issue's period ended, or when its send began if that came first
        (it could not carry what was published later): the default start of the next one."""
        with self._reading("reading issues") as db:
            # Both are UTC ISO 8601 strings, so they compare as text in time order.
            (end,) = db.execute(
                "SELECT MAX(MIN(period_end, created_at)) FROM issues WHERE sent_at IS NOT NULL"
            ).fetchone()
        return None if end is None else datetime.fromisoformat(end)

    def skip_period(self, issue_id: str, period: Period, *, reason: str, at: datetime) -> None:
        """Remember that the scheduled period ending then was skipped, so later runs before the
        next due time neither collect again nor send it late; its articles wait."""
        with self._transaction("recording a skipped period") as db:
            db.execute(
                "INSERT INTO skipped_periods (period_end, period_start, issue_id, reason, "
                "decided_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (period_end) DO NOTHING",
                (_iso(period.end), _iso(period.start), issue_id, reason, _iso(at)),
            )

    def skip_reason(self, period_end: datetime) -> str | None:
        """Why the scheduled period ending at `period_end` was skipped, if it was."""
        with self._reading("reading skipped periods") as db:
            row = db.execute(
                "SELECT reason FROM skipped_periods WHERE period_end = ?", (_iso(period_end),)
            ).fetchone()
        return None if row is None else str(row[0])

    def unsent_since(self) -> datetime | None:
        """Where the next scheduled issue starts: the end of the last sent issue, else the start
        of the first skipped period (its articles waited), else None."""
        sent = self.last_sent_period_end()
        if sent is not None:
            return sent
        with self._reading("reading skipped periods") as db:
            (start,) = db.execute("SELECT MIN(period_start) FROM skipped_periods").fetchone()
        return None if start is None else datetime.fromisoformat(start)

    def issue_records(self) -> list[RecordedIssue]:
        """Every recorded issue with its article count, newest period first: the issue list."""
        with self._reading("listing issues") as db:
            rows = db.execute(
                "SELECT id, period_start, period_end, created_at, sent_at, "
                "(SELECT count(*) FROM issue_articles WHERE issue_id = issues.id) "
                "FROM issues ORDER BY period_end DESC, id DESC"
            ).fetchall()
        parse = datetime.fromisoformat
        return [
            RecordedIssue(
                id=id_,
                period=Period(parse(start), parse(end)),
                created_at=parse(created),
                sent_at=None if sent is None else parse(sent),
                articles=count,
            )
            for id_, start, end, created, sent, count in rows
        ]


@dataclass(frozen=True, slots=True)
class RecordedIssue:
    """One row of the issues table: what `digest issues` lists beside the ledger's counts."""

    id: str
    period: Period
    created_at: datetime
    sent_at: datetime | None  # None while copies of it are still pending
    articles: int  # featured story included


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _content(article: Article, stored: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """The row values upsert compares, in _CONTENT_COLUMNS order."""
    if stored is not None and article.date_estimated:
        # A feed without dates yields a new estimate on every fetch; the first one stands.
        published, estimated = stored[3], stored[9]
    else:
        published, estimated = _iso(article.published), int(article.date_estimated)
    image = article.image
    return (
        # The first source to carry an article keeps it: two feeds sharing a story (the main
        # feed and a category feed, say) must not flip it back and forth on every collect.
        article.source if stored is None else stored[0],
        article.url,
        article.title,
        published,
        article.excerpt,
        _join(article.bylines),
        _join(article.categories),
        image.url if image else None,
        image.alt if image else None,
        estimated,
        _sizes_json(image.sizes) if image else "",
    )


def _join(names: tuple[str, ...]) -> str:
    # Empty names are dropped: "" already stands for no names at all.
    return _SEPARATOR.join(name.replace(_SEPARATOR, " ") for name in names if name)


def _articles(rows: Iterable[tuple[Any, ...]]) -> list[Article]:
    """Articles from _ARTICLE_COLUMNS rows; the hot path of candidates, so kept plain."""
    parse, sep = datetime.fromisoformat, _SEPARATOR
    return [
        Article(
            id_,
            url,
            title,
            parse(when),
            source,
            excerpt,
            tuple(bylines.split(sep)) if bylines else (),
            tuple(tags.split(sep)) if tags else (),
            None if image is None else Image(image, alt, _sizes(sizes)),
            estimated == 1,
        )
        for id_, url, title, when, source, excerpt, bylines, tags, image, alt, estimated, sizes in (
            rows
        )
    ]


def _sizes_json(sizes: tuple[ImageSize, ...]) -> str:
    """The sizes as compact JSON; "" for none, so most rows stay as small as before."""
    if not sizes:
        return ""
    return json.dumps([[s.url, s.width, s.height] for s in sizes], separators=(",", ":"))


def _sizes(stored: str) -> tuple[ImageSize, ...]:
    if not stored:
        return ()
    return tuple(ImageSize(url, width, height) for url, width, height in json.loads(stored))
