"""Strings the steps together: collect into the archive, then select an issue from it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, datetime

from digest import selector, sources
from digest.archive import Archive, UpsertCounts
from digest.config import Config
from digest.errors import SelectionError, SourceError
from digest.models import Issue
from digest.sources import SourceResult


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
