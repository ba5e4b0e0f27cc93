"""How long the select step takes for a big archive: 50,000 articles into 30 sections.

Two shapes: the weekly run as it happens (an archive of 50,000 articles spread over the year,
one week selected through the real SQLite query), and the worst case where all 50,000 fall in
the period (the selector alone, then fed by the archive).

The articles are synthetic but shaped like real feeds (several categories in mixed case, one or
two bylines, twenty sources, some pinned to a section), and always the same: the generator is
seeded, so figures from different runs and machines compare like with like.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from bench import best_of
from digest.archive import Archive
from digest.config import SectionConfig
from digest.models import Article, Image, Issue, Period
from digest.selector import select_issue

ARTICLES = 50_000
SECTIONS = 30
TARGET_SECONDS = 0.5
SEED = 20261122
ZONE = ZoneInfo("America/New_York")
# Eight weeks, Monday to Monday, across the end of daylight saving time on 2026-11-01.
PERIOD = Period(
    start=datetime(2026, 9, 28, tzinfo=ZONE),
    end=datetime(2026, 11, 23, tzinfo=ZONE),
)
# A year of a busy publication's archive (about 1,100 articles a week), and its last week.
YEAR = Period(start=datetime(2026, 1, 5, tzinfo=ZONE), end=PERIOD.end)
LAST_WEEK = Period(start=datetime(2026, 11, 16, tzinfo=ZONE), end=PERIOD.end)

CATEGORIES = (
    "Politics", "City Hall", "Elections", "Courts", "Police", "Fire", "Transit", "Roads",
    "Housing", "Real Estate", "Business", "Economy", "Jobs", "Small Business", "Technology",
    "Science", "Health", "Hospitals", "Education", "Schools", "Universities", "Climate",
    "Weather", "Environment", "Parks", "Food", "Restaurants", "Arts", "Music", "Theatre",
    "Film", "Books", "Museums", "Sports", "Football", "Basketball", "Baseball", "Soccer",
    "High School Sports", "Opinion", "Editorials", "Letters", "Obituaries", "Religion",
    "Immigration", "Agriculture", "Energy", "Water", "Public Safety", "Neighborhoods",
    "Events", "Travel", "Lifestyle", "Family", "Pets", "History", "Data", "Investigations",
    "Corrections", "Español",
)  # fmt: skip
SOURCES = (
    "Riverside Gazette", "Oakdale Times", "Millbrook Herald", "Harbor Post", "Cedar Tribune",
    "Lakeview Chronicle", "Brookfield Courier", "Fairview Ledger", "Greenville Sentinel",
    "Ashford Observer", "KRVR Radio", "WOAK Radio", "KMIL Radio", "WHBR Radio", "KCDR Radio",
    "Valley Wire", "Capitol Report", "Metro Weekly", "Campus Voice", "County Bulletin",
)  # fmt: skip
BYLINES = (
    "Ana Pérez", "Bo Li", "Chidi Okafor", "Dana Whitfield", "Émile Moreau", "Fatima Zahra",
    "Grace O'Neill", "Hiroshi Tanaka", "Inés Álvarez", "Jonas Müller", "Kwame Mensah",
    "Lena Søndergaard", "Marta Kowalska", "Nikhil Rao", "Olga Ivanova", "Pablo Ruiz",
    "Quinn Harper", "Rosa Delgado", "Sven Ødegård", "Tamar Cohen", "Uma Patel", "Victor Hugo Lima",
    "Wen Zhao", "Yusuf Demir", "Zoë Laurent", "Staff", "The Associated Press",
)  # fmt: skip
SUBJECTS = (
    "Council", "School board", "Mayor", "Transit agency", "Local bakery", "Hospital",
    "State senator", "Library", "Football team", "Planning commission", "Museum",
)  # fmt: skip
VERBS = (
    "approves", "delays", "rejects", "celebrates", "questions", "expands", "cuts", "unveils",
    "debates", "reviews",
)  # fmt: skip
OBJECTS = (
    "new budget", "bus routes", "housing plan", "summer program", "stadium deal", "water rates",
    "bike lanes", "festival", "tax break", "renovation",
)  # fmt: skip


def synthetic_articles(count: int, rng: random.Random, spread: Period = PERIOD) -> list[Article]:
    """`count` articles spread evenly over `spread`, as collect would have archived them."""
    span = (spread.end - spread.start).total_seconds()
    articles = []
    for n in range(count):
        source = rng.choice(SOURCES)
        published = spread.start + timedelta(seconds=rng.uniform(0, span))
        title = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
        slug = title.lower().replace(" ", "-")
        domain = source.lower().replace(" ", "") + ".example"
        url = f"https://{domain}/{published:%Y/%m}/{slug}-{n}"
        categories = [rng.choice(CATEGORIES) for _ in range(rng.randint(1, 4))]
        articles.append(
            Article(
                id=url if n % 3 else f"tag:{domain},2026:post-{n}",
                url=url,
                title=title,
                published=published.astimezone(UTC),
                source=source,
                excerpt=f"{title}. The decision follows months of public meetings and "
                "comments from residents, who packed the hearing on Tuesday night.",
                bylines=tuple(rng.sample(BYLINES, rng.randint(1, 2))),
                # Feeds spell categories as they like; the selector normalises them.
                categories=tuple(c.upper() if rng.random() < 0.1 else c for c in categories),
                image=Image(f"https://{domain}/img/{n}.jpg", alt=title)
                if rng.random() < 0.7
                else None,
            )
        )
    return articles


def synthetic_sections(count: int, rng: random.Random) -> list[SectionConfig]:
    """`count` sections of 3-5 categories each, three with a pinned source, the last catch-all."""
    pinned = dict(zip((0, 10, 20), rng.sample(SOURCES, 3), strict=True))  # section -> source
    return [
        SectionConfig(
            name=f"Section {n + 1}",
            categories=frozenset(c.casefold() for c in rng.sample(CATEGORIES, rng.randint(3, 5))),
            max_articles=rng.randint(5, 10),
            catch_all=n == count - 1,
            sources=frozenset([pinned[n]]) if n in pinned else frozenset(),
        )
        for n in range(count)
    ]


def run() -> Iterator[str]:
    """Time the weekly selection from a year's archive, then the all-in-one-period worst case."""
    rng = random.Random(SEED)
    sections = synthetic_sections(SECTIONS, rng)
    yearly = synthetic_articles(ARTICLES, rng, YEAR)
    with _archive_of(yearly) as archive:
        seconds = best_of(lambda: _select_from(archive, sections, LAST_WEEK))
        week = len(archive.candidates(LAST_WEEK))
    yield (
        f"select one week ({week:,} articles) from an archive of {ARTICLES:,} in "
        f"{SECTIONS} sections: {seconds:.3f} s (target < {TARGET_SECONDS} s)"
    )

    crowded = synthetic_articles(ARTICLES, rng, PERIOD)
    seconds = best_of(lambda: select_issue(crowded, sections, PERIOD, issue_id="bench"))
    yield (
        f"worst case, all {ARTICLES:,} articles in the period, selector alone: "
        f"{seconds:.2f} s (target < {TARGET_SECONDS} s)"
    )
    started = time.perf_counter()
    with _archive_of(crowded) as archive:
        inserted = time.perf_counter() - started
        seconds = best_of(lambda: _select_from(archive, sections, PERIOD))
    yield f"worst case through the archive (loading 50,000 rows as Articles): {seconds:.2f} s"
    yield f"archive insert of {ARTICLES:,} articles: {inserted:.2f} s"


@contextmanager
def _archive_of(articles: Sequence[Article]) -> Iterator[Archive]:
    """A real archive file holding `articles`, removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp, Archive.open(Path(tmp) / "a.sqlite3") as archive:
        archive.upsert_articles(articles, seen_at=PERIOD.end)
        yield archive


def _select_from(archive: Archive, sections: Sequence[SectionConfig], period: Period) -> Issue:
    """What `digest build --offline` does once the period is known."""
    return select_issue(archive.candidates(period), sections, period, issue_id="bench")
