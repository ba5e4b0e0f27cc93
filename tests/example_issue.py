"""Issues to render in tests: the bundled example week, and synthetic ones of any size."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from digest import pipeline, project, render
from digest.config import Config, load_config
from digest.models import Article, Image, Issue, Period, Section

ZONE = ZoneInfo("America/New_York")
WEEK = pipeline.PeriodRequest(since=date(2026, 11, 16), until=date(2026, 11, 22))
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=ZONE)
# A reader whose values need escaping, and an unsubscribe URL with a query to keep.
READER = render.Recipient(
    email="ana.perez@example.org",
    unsubscribe_url="https://dispatch.example.org/digest/unsubscribe?t=abc.def&x=1",
    preferences_url="https://dispatch.example.org/digest/preferences?t=abc.def",
    name="Ana",
)


def example_project(folder: Path, environ: dict[str, str] | None = None) -> tuple[Config, Issue]:
    """`digest init` into `folder`, collect its feeds, and select the example week."""
    project.init_project(folder)
    config = load_config(folder / "digest.toml", environ=environ or {})
    pipeline.collect(config, now=NOW)
    return config, pipeline.select(config, WEEK, now=NOW)


def synthetic_issue(count: int, *, excerpt_length: int = 280) -> Issue:
    """`count` articles (one featured) in sections of five, with long titles, excerpts and
    two bylines each, and a picture on most: a heavy issue, to measure size and speed."""
    start = datetime(2026, 11, 16, tzinfo=ZONE)
    words = (
        "Council members debated the transit budget late into the night as residents packed "
        "the hearing room, asking for more frequent buses, safer crossings and a fare freeze "
        "for students and older riders across the city's outer neighborhoods this winter."
    )
    articles = [
        Article(
            id=f"https://news.example.org/2026/11/story-{n}",
            url=f"https://news.example.org/2026/11/{n:03d}/a-long-and-descriptive-slug-for-story-{n}/",
            title=f"Story {n}: Council Weighs a Budget That Would Reshape the City's Bus Network",
            published=(start + timedelta(hours=4 * n)).astimezone(UTC),
            source="News",
            excerpt=(words * 2)[: excerpt_length - 1].rstrip() + "…",
            bylines=("Ana Pérez", "Chidi Okafor"),
            image=Image(f"https://news.example.org/img/{n}-1200x800.jpg", alt=f"Picture {n}")
            if n % 10 < 7
            else None,
        )
        for n in range(count)
    ]
    featured, rest = articles[0], articles[1:]
    sections = tuple(
        Section(name=f"Section {n // 5 + 1}", articles=tuple(rest[n : n + 5]))
        for n in range(0, len(rest), 5)
    )
    period = Period(start=start, end=start + timedelta(days=7))
    return Issue(id="2026-W47", period=period, featured=featured, sections=sections)
