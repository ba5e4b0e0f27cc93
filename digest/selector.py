"""The select step: which period an issue covers, and which articles it shows where.

Pure: no I/O and no clock (`now` is a parameter), so the same archive and options always give
the same issue, byte for byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo

from digest.config import SectionConfig
from digest.errors import SelectionError
from digest.models import Article, Issue, Period, Section

# Letters, digits, "_" first; then also ".", "+", "-": no path separators, no hidden files.
_SAFE_ID = re.compile(r"\w[\w.+-]*")


def resolve_period(
    *,
    since: date | None,
    until: date | None,
    days: int | None,
    timezone: ZoneInfo,
    now: datetime,
    last_sent_end: datetime | None,
    default_days: int,
) -> Period:
    """Turn --since/--until/--days (all optional) into the half-open period an issue covers.

    Days are calendar days in the newsletter's time zone, so a week across a DST change still
    runs midnight to midnight. With no options the period continues where the last issue ended.
    """
    if days is not None and days < 1:
        raise SelectionError(f"--days must be at least 1, got {days}", hint="write --days 7")
    if days is not None and since is not None:
        raise SelectionError(
            "use --since/--until or --days, not both",
            hint="--days 7 --until 2026-11-22 means the 7 days ending on the 22nd",
        )
    if since is not None and until is not None and since > until:
        raise SelectionError(
            f"--since {since} is after --until {until}",
            hint="--since is the first day and --until the last; both are included",
        )
    local_now = now.astimezone(timezone)
    end = _midnight(until + timedelta(days=1), timezone) if until is not None else local_now
    if since is not None:
        start = _midnight(since, timezone)
        if start >= end:
            raise SelectionError(
                f"--since {since} is in the future: the period would end now, before it starts",
                hint="pick an earlier day, or add --until for a period ahead of today",
            )
    elif last_sent_end is not None and days is None and until is None:
        start = last_sent_end.astimezone(timezone)
        if start >= end:
            raise SelectionError(
                f"the last issue already covers up to {start:%Y-%m-%d %H:%M %Z}: nothing is new",
                hint="pass --since or --days to build an earlier period again",
            )
    else:
        start = _days_before(end, days if days is not None else default_days, timezone)
    return Period(start=start, end=end)


def _midnight(day: date, timezone: ZoneInfo) -> datetime:
    # Round-tripping through UTC moves a midnight that a DST jump skips to the real first moment.
    return datetime.combine(day, time(), tzinfo=timezone).astimezone(UTC).astimezone(timezone)


def _days_before(moment: datetime, days: int, timezone: ZoneInfo) -> datetime:
    # Aware datetime arithmetic is wall-clock arithmetic: the same local time, `days` days earlier.
    return (moment - timedelta(days=days)).astimezone(UTC).astimezone(timezone)


def issue_id(period: Period, *, timezone: ZoneInfo, fmt: str) -> str:
    """Name an issue by its last day, so "%G-W%V" gives the ISO week the period ends in.

    The id becomes a file name and part of URLs, so anything unsafe there is refused early.
    """
    last_moment = (period.end.astimezone(UTC) - timedelta(microseconds=1)).astimezone(timezone)
    ident = last_moment.strftime(fmt)
    if not _SAFE_ID.fullmatch(ident):
        raise SelectionError(
            f"the issue id format {fmt!r} gives {ident!r}, which cannot be used as a file name",
            hint='set selection.issue_id_format to letters, digits and "-", "_", "." only, '
            'such as "%G-W%V" or "%Y-%m-%d"',
        )
    return ident


def dated_id(ident: str, period: Period, *, timezone: ZoneInfo) -> str:
    """`ident` with the period's last day added, for a period whose id another period has or
    will have: a Thursday send's "2026-W48-2026-11-26" beside Saturday's "2026-W48"."""
    last_moment = (period.end.astimezone(UTC) - timedelta(microseconds=1)).astimezone(timezone)
    return f"{ident}-{last_moment:%Y-%m-%d}"


def select_issue(
    articles: Iterable[Article],
    sections: Sequence[SectionConfig],
    period: Period,
    *,
    issue_id: str,
    featured: Article | None = None,
    featured_category: str | None = None,
) -> Issue:
    """Choose the period's articles: the featured one, then each section newest first.

    An article from a pinned source goes to that source's section; any other goes to the first
    section in config order that claims one of its categories; the catch-all section takes what
    no section claims. A full section drops the
    rest rather than pushing them on, so no section's contents depend on another's cap.
    """
    # The archive gives UTC times; comparing them with UTC bounds skips a zone lookup per test.
    window = Period(start=period.start.astimezone(UTC), end=period.end.astimezone(UTC))
    ordered = _newest_first(a for a in articles if a.published in window)
    if featured is None and featured_category is not None:
        wanted = _normal(featured_category)
        featured = next(
            (a for a in _unique(ordered) if any(_normal(c) == wanted for c in a.categories)),
            None,
        )
    skip = (featured,) if featured is not None else ()

    claimant_of = _claim_rule(sections)
    chosen: list[list[Article]] = [[] for _ in sections]
    for article in _unique(ordered, skip=skip):
        claimant = claimant_of(article)
        if claimant is not None and len(chosen[claimant]) < sections[claimant].max_articles:
            chosen[claimant].append(article)

    return Issue(
        id=issue_id,
        period=period,
        featured=featured,
        sections=tuple(
            Section(name=s.name, articles=tuple(picked))
            for s, picked in zip(sections, chosen, strict=True)
            if picked
        ),
    )


def _claim_rule(sections: Sequence[SectionConfig]) -> Callable[[Article], int | None]:
    """The index of the section that takes an article, or None; cheap enough for 50,000."""
    by_source: dict[str, int] = {}
    by_category: dict[str, int] = {}
    # Reversed, so an earlier section overwrites a later one and each key keeps the first index.
    for index in reversed(range(len(sections))):
        by_source.update(dict.fromkeys(sections[index].sources, index))
        by_category.update(dict.fromkeys(map(_normal, sections[index].categories), index))
    catch_all = next((i for i, s in enumerate(sections) if s.catch_all), None)
    unclaimed = len(sections)  # after every real index, so min() prefers any claim
    known: dict[str, int] = {}  # raw category -> section index, so each is normalised once

    def claimant(article: Article) -> int | None:
        pinned = by_source.get(article.source)
        if pinned is not None:
            return pinned  # a pinned source sends every article to its section
        first = unclaimed
        for raw in article.categories:
            found = known.get(raw)
            if found is None:
                found = known[raw] = by_category.get(_normal(raw), unclaimed)
            if found < first:
                first = found
        return catch_all if first == unclaimed else first

    return claimant


def _normal(category: str) -> str:
    return category.strip().casefold()


def _newest_first(articles: Iterable[Article]) -> list[Article]:
    """Newest first, ties by id, so the same articles in any order give the same issue."""
    # Two stable sorts, by id then by time descending: cheaper than a tuple key for 50,000.
    ordered = sorted(articles, key=attrgetter("id"))
    ordered.sort(key=lambda a: a.published.timestamp(), reverse=True)
    return ordered


def _unique(ordered: Iterable[Article], *, skip: Iterable[Article] = ()) -> Iterator[Article]:
    """One article per story: an id or URL seen before (or in `skip`) is the same story again."""
    seen_ids = {a.id for a in skip}
    seen_urls = {a.url for a in skip}
    for article in ordered:
        if article.id not in seen_ids and article.url not in seen_urls:
            yield article
        seen_ids.add(article.id)
        seen_urls.add(article.url)


def issue_to_json(issue: Issue, *, timezone: ZoneInfo) -> str:
    """The issue as `digest build --format json` prints it: stable keys, local times."""
    document = {
        "id": issue.id,
        "period": {
            "start": _local_time(issue.period.start, timezone),
            "end": _local_time(issue.period.end, timezone),
        },
        "featured": _article_json(issue.featured, timezone) if issue.featured else None,
        "sections": [
            {"name": s.name, "articles": [_article_json(a, timezone) for a in s.articles]}
            for s in issue.sections
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _article_json(article: Article, timezone: ZoneInfo) -> dict[str, Any]:
    image = article.image
    return {
        "id": article.id,
        "title": article.title,
        "url": article.url,
        "byline": _join_names(article.bylines),
        "published": _local_time(article.published, timezone),
        "excerpt": article.excerpt,
        "image": {"url": image.url, "alt": image.alt} if image else None,
        "categories": list(article.categories),
    }


def _local_time(moment: datetime, timezone: ZoneInfo) -> str:
    return moment.astimezone(timezone).isoformat(timespec="seconds")


def _join_names(names: Sequence[str]) -> str:
    # "Ana", "Ana and Bo", "Ana, Bo and Cy": how a byline reads in running text.
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"
