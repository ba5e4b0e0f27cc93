"""How long the email takes: render and inline one 40-article issue, then personalise it.

The slow part, Jinja plus premailer, runs once per variant; each reader's copy is then tokens
and string joins. The figures: one variant rendered and inlined, and 10,000 personalised copies
(their signed links included); bench/compose.py times composing the MIME messages.
The issue is synthetic but heavy: long titles, 280-character excerpts, two bylines, most
articles with a picture.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bench import best_of
from digest import pipeline, render, tokens
from digest.config import Config, load_config
from digest.models import Article, Image, Issue, Period, Section
from digest.project import data_dir

ARTICLES = 40
COPIES = 10_000
TARGET_SECONDS = 2.0
ZONE = ZoneInfo("America/New_York")
SECRET = "bench-secret-not-for-use-9f3Kq7Lx2Pz"


def heavy_issue(count: int) -> Issue:
    """`count` articles: one featured, the rest in sections of five."""
    start = datetime(2026, 11, 16, tzinfo=ZONE)
    words = (
        "Council members debated the transit budget late into the night as residents packed "
        "the hearing room, asking for more frequent buses, safer crossings and a fare freeze "
        "for students and older riders across the city's outer neighborhoods this winter. "
    )
    articles = [
        Article(
            id=f"https://news.example.org/2026/11/story-{n}",
            url=f"https://news.example.org/2026/11/{n:03d}/a-long-and-descriptive-slug-{n}/",
            title=f"Story {n}: Council Weighs a Budget That Would Reshape the City's Bus Network",
            published=(start + timedelta(hours=4 * n)).astimezone(UTC),
            source="News",
            excerpt=words[:279].rstrip() + "…",
            bylines=("Ana Pérez", "Chidi Okafor"),
            image=Image(f"https://news.example.org/img/{n}.jpg", alt=f"Picture {n}")
            if n % 10 < 7
            else None,
        )
        for n in range(count)
    ]
    sections = tuple(
        Section(name=f"Section {n // 5 + 1}", articles=tuple(articles[1:][n : n + 5]))
        for n in range(0, count - 1, 5)
    )
    period = Period(start=start, end=start + timedelta(days=7))
    return Issue(id="2026-W47", period=period, featured=articles[0], sections=sections)


def run() -> Iterator[str]:
    """Time one variant's render + inline, and 10,000 personalised copies."""
    config = load_config(
        data_dir() / "examples" / "digest.toml", environ={tokens.SECRET_VAR: SECRET}
    )
    issue = heavy_issue(ARTICLES)
    variant = render.variant_for(config)
    seconds = best_of(lambda: pipeline.render_issue(config, issue, variant), runs=3)
    rendered = pipeline.render_issue(config, issue, variant)
    sample = rendered.personalise(_recipients(config, 1)[0])
    size = len(sample.html.encode("utf-8"))
    yield (
        f"render + inline one {ARTICLES}-article issue: {seconds:.3f} s "
        f"(HTML {size / 1000:.1f} KB, Gmail clips over 102 KB)"
    )

    started = time.perf_counter()
    for recipient in _recipients(config, COPIES):
        rendered.personalise(recipient)
    seconds = time.perf_counter() - started
    yield (
        f"{COPIES:,} personalised copies, signed links included: {seconds:.2f} s "
        f"(target < {TARGET_SECONDS} s)"
    )


def _recipients(config: Config, count: int) -> list[render.Recipient]:
    """`count` readers with their own signed links, as a send would make them."""
    secret, list_id = tokens.secret_from(config), tokens.list_id(config)
    readers = []
    for n in range(count):
        address = f"reader.{n}@example.org"
        token = tokens.make_token(address, list_id=list_id, secret=secret)
        readers.append(
            render.Recipient(
                email=address,
                unsubscribe_url=tokens.unsubscribe_url(config, token),
                preferences_url=tokens.preferences_url(config, token),
                name=f"Reader {n}",
            )
        )
    return readers
