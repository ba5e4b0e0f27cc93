"""The SQLite archive, on real files: schema, upserts, candidates, issues and fetch state."""

from __future__ import annotations

import dataclasses
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from digest.archive import MIGRATIONS, Archive, UpsertCounts
from digest.errors import ArchiveError
from digest.models import Article, FetchState, Image, ImageSize, Issue, Period, Section

NEW_YORK = ZoneInfo("America/New_York")
WEEK = Period(
    start=datetime(2026, 11, 16, tzinfo=NEW_YORK), end=datetime(2026, 11, 23, tzinfo=NEW_YORK)
)
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def story(id: str, *, hour: float = 12, **changes: Any) -> Article:
    """An article published `hour` hours after WEEK starts."""
    article = Article(
        id=id,
        url=f"https://news.example/{id}",
        title=f"Story {id}",
        published=WEEK.start + timedelta(hours=hour),
        source="Riverside Gazette",
    )
    return dataclasses.replace(article, **changes)


def issue(id: str, featured: Article | None, *sections: tuple[str, list[Article]]) -> Issue:
    return Issue(
        id=id,
        period=WEEK,
        featured=featured,
        sections=tuple(Section(name, tuple(articles)) for name, articles in sections),
    )


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    with Archive.open(tmp_path / "archive.sqlite3") as opened:
        yield opened


def ids(articles: Iterable[Article]) -> list[str]:
    return [article.id for article in articles]


def raw(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    """Rows straight from the file, to check what the archive API does not show."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql, params).fetchall()


# Opening and migrating


def test_opening_creates_the_folder_and_the_latest_schema(tmp_path: Path) -> None:
    """A new archive gets its parent folder, every table, WAL mode and the newest version."""
    path = tmp_path / "data" / "archive.sqlite3"
    with Archive.open(path):
        pass
    tables = {name for (name,) in raw(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"articles", "source_state", "issues", "issue_articles", "skipped_periods"}
    assert raw(path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]


def test_reopening_keeps_data_and_migrates_nothing(tmp_path: Path) -> None:
    """Opening an up-to-date archive again changes neither its schema nor its rows."""
    path = tmp_path / "archive.sqlite3"
    with Archive.open(path) as archive:
        archive.upsert_articles([story("a")], seen_at=NOW)
    schema = raw(path, "SELECT sql FROM sqlite_master ORDER BY name")
    with Archive.open(path) as archive:
        assert ids(archive.candidates(WEEK)) == ["a"]
    assert raw(path, "SELECT sql FROM sqlite_master ORDER BY name") == schema
    assert raw(path, "PRAGMA user_version") == [(len(MIGRATIONS),)]


def test_newer_schema_is_refused_with_an_upgrade_hint(tmp_path: Path) -> None:
    """An archive written by a later digest is left alone, and the user told to upgrade."""
    path = tmp_path / "archive.sqlite3"
    newer = len(MIGRATIONS) + 1
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {newer}")
    with pytest.raises(ArchiveError) as caught:
        Archive.open(path)
    assert caught.value.message == f"archive schema v{newer} is newer than this digest understands"
    assert caught.value.hint == "upgrade digest"
    assert raw(path, "SELECT name FROM sqlite_master") == []


def test_a_file_that_is_not_sqlite_is_refused_by_name(tmp_path: Path) -> None:
    """Pointing the archive at some other file names that file and leaves it as it was."""
    path = tmp_path / "notes.txt"
    path.write_text("These are my notes, not a database.\n" * 10)
    with pytest.raises(ArchiveError, match="not an SQLite database") as caught:
        Archive.open(path)
    assert str(path) in str(caught.value)
    assert path.read_text() == "These are my notes, not a database.\n" * 10


def test_an_archive_being_written_can_still_be_opened_and_read(tmp_path: Path) -> None:
    """Opening an up-to-date archive takes no write lock, so a long collect never blocks build."""
    path = tmp_path / "archive.sqlite3"
    with Archive.open(path) as archive:
        archive.upsert_articles([story("a")], seen_at=NOW)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        with Archive.open(path) as archive:
            assert ids(archive.candidates(WEEK)) == ["a"]
    finally:
        writer.close()


# Upserting articles


def test_upsert_counts_new_updated_and_unchanged(archive: Archive) -> None:
    """Each article is counted once: new, changed since last time, or the same."""
    first = archive.upsert_articles([story("a"), story("b"), story("c")], seen_at=NOW)
    again = archive.upsert_articles(
        [story("a"), story("b", title="Corrected title"), story("d")], seen_at=NOW
    )
    assert first == UpsertCounts(new=3, updated=0, unchanged=0)
    assert again == UpsertCounts(new=1, updated=1, unchanged=1)
    assert {a.id: a.title for a in archive.candidates(WEEK)}["b"] == "Corrected title"


def test_an_article_seen_again_is_updated_in_place(archive: Archive) -> None:
    """The same id fetched twice, even within one batch, leaves one row."""
    archive.upsert_articles([story("a"), story("a", title="Second")], seen_at=NOW)
    archive.upsert_articles([story("a", title="Third")], seen_at=NOW + timedelta(hours=1))
    assert raw(archive.path, "SELECT id, title FROM articles") == [("a", "Third")]


def test_first_seen_stays_and_last_seen_moves(archive: Archive) -> None:
    """Seeing an article again records when, without forgetting when it first appeared."""
    later = NOW + timedelta(days=1)
    archive.upsert_articles([story("a")], seen_at=NOW)
    archive.upsert_articles([story("a")], seen_at=later)
    assert raw(archive.path, "SELECT first_seen, last_seen FROM articles") == [
        (NOW.isoformat(), later.isoformat())
    ]


def test_an_estimated_date_keeps_the_first_estimate(archive: Archive) -> None:
    """A feed without dates does not push its articles forward on every fetch."""
    archive.upsert_articles([story("a", hour=1, date_estimated=True)], seen_at=NOW)
    counts = archive.upsert_articles([story("a", hour=30, date_estimated=True)], seen_at=NOW)
    assert counts == UpsertCounts(unchanged=1)
    [article] = archive.candidates(WEEK)
    assert (article.published, article.date_estimated) == (WEEK.start + timedelta(hours=1), True)


def test_a_real_date_replaces_an_estimated_one(archive: Archive) -> None:
    """Once the feed gives a date, it wins over our first-seen estimate."""
    archive.upsert_articles([story("a", hour=30, date_estimated=True)], seen_at=NOW)
    counts = archive.upsert_articles([story("a", hour=1)], seen_at=NOW)
    assert counts == UpsertCounts(updated=1)
    [article] = archive.candidates(WEEK)
    assert (article.published, article.date_estimated) == (WEEK.start + timedelta(hours=1), False)


def test_a_failing_batch_stores_nothing(archive: Archive) -> None:
    """A batch is one transaction: an error part-way through rolls all of it back."""

    def batch() -> Iterator[Article]:
        yield story("a")
        raise RuntimeError("feed parser crashed")

    with pytest.raises(RuntimeError):
        archive.upsert_articles(batch(), seen_at=NOW)
    assert archive.candidates(WEEK) == []


def test_thousands_of_articles_are_stored_in_one_call(archive: Archive) -> None:
    """A big first collect stores every article and counts them all as new."""
    batch = [story(f"s{n:05}", hour=n / 100) for n in range(5000)]
    assert archive.upsert_articles(batch, seen_at=NOW) == UpsertCounts(new=5000)
    assert len(archive.candidates(WEEK)) == 5000


# Reading articles back


def test_every_article_field_round_trips(archive: Archive) -> None:
    """What goes in comes out equal, with tuples, images and aware UTC datetimes."""
    madrid = ZoneInfo("Europe/Madrid")
    full = Article(
        id="tag:news.example,2026:1",
        url="https://news.example/full?x=1&y=2",
        title="Café “quoted” 👩‍👩‍👧",
        published=datetime(2026, 11, 17, 9, 30, 15, 250, tzinfo=madrid),
        source="Riverside Gazette",
        excerpt="An excerpt…",
        bylines=("Ana Ruiz", "Bo Li"),
        categories=("City Hall", "Politics"),
        image=Image("https://news.example/a.jpg", alt=""),
        date_estimated=True,
    )
    bare = story("bare", hour=2)
    archive.upsert_articles([full, bare], seen_at=NOW)
    assert archive.candidates(WEEK) == [full, bare]
    loaded = archive.candidates(WEEK)[0]
    assert loaded.published.tzinfo == UTC
    assert (loaded.bylines, loaded.categories) == (full.bylines, full.categories)
    assert archive.candidates(WEEK)[1].image is None


@settings(max_examples=50)
@given(
    st.builds(
        Article,
        id=st.text(min_size=1),
        url=st.text(),
        title=st.text(),
        published=st.datetimes(
            min_value=datetime(1970, 1, 2),
            max_value=datetime(2100, 1, 1),
            timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), NEW_YORK]),
        ),
        source=st.text(),
        excerpt=st.text(),
        bylines=st.lists(st.text(min_size=1).filter(lambda s: "\x1f" not in s)).map(tuple),
        categories=st.lists(st.text(min_size=1).filter(lambda s: "\x1f" not in s)).map(tuple),
        image=st.none()
        | st.builds(
            Image,
            url=st.text(),
            alt=st.text(),
            sizes=st.lists(
                st.builds(
                    ImageSize,
                    url=st.text(),
                    width=st.integers(1, 10_000),
                    height=st.none() | st.integers(1, 10_000),
                )
            ).map(tuple),
        ),
        date_estimated=st.booleans(),
    )
)
@example(  # the first hour of 2000-10-29 happens twice in New York
    Article("0", "", "", datetime(2000, 10, 29, 1, 0, tzinfo=NEW_YORK), source="")
)
def test_any_article_round_trips(article: Article) -> None:
    """Generated articles, whatever their text, come back from the file unchanged (in UTC)."""
    # Compared in UTC: by PEP 495 an ambiguous local time (a DST fall-back hour) never equals
    # a time in another zone, even the same instant.
    in_utc = dataclasses.replace(article, published=article.published.astimezone(UTC))
    with tempfile.TemporaryDirectory() as folder, Archive.open(Path(folder) / "a.db") as archive:
        archive.upsert_articles([article], seen_at=NOW)
        assert archive.article_by_url(article.url) == in_utc


def test_candidates_include_the_start_and_exclude_the_end(archive: Archive) -> None:
    """The period is half-open, to the microsecond: its first instant is in, its end is out."""
    tick = timedelta(microseconds=1)
    archive.upsert_articles(
        [
            story("before", published=WEEK.start - tick),
            story("start", published=WEEK.start),
            story("last", published=WEEK.end - tick),
            story("end", published=WEEK.end),
        ],
        seen_at=NOW,
    )
    assert ids(archive.candidates(WEEK)) == ["last", "start"]


def test_candidates_skip_articles_of_sent_issues_only(archive: Archive) -> None:
    """An article a sent issue carried is never offered again; an unsent draft holds none."""
    sent, drafted, free = story("sent", hour=3), story("drafted", hour=2), story("free", hour=1)
    archive.upsert_articles([sent, drafted, free], seen_at=NOW)
    archive.record_issue(issue("2026-w47", sent), created_at=NOW)
    archive.record_issue(issue("2026-w48", None, ("News", [drafted])), created_at=NOW)
    assert ids(archive.candidates(WEEK)) == ["sent", "drafted", "free"]
    archive.mark_sent("2026-w47", sent_at=NOW)
    assert ids(archive.candidates(WEEK)) == ["drafted", "free"]


def test_candidates_are_newest_first_with_ties_by_id(archive: Archive) -> None:
    """Order is by publication time, latest first; equal times are ordered by id."""
    archive.upsert_articles(
        [story("b", hour=5), story("old", hour=1), story("a", hour=5), story("new", hour=9)],
        seen_at=NOW,
    )
    assert ids(archive.candidates(WEEK)) == ["new", "a", "b", "old"]


def test_article_by_url_finds_the_newest_of_several(archive: Archive) -> None:
    """Two ids for one URL (a feed changed its guids) give the newer article."""
    url = "https://news.example/shared"
    archive.upsert_articles(
        [story("old-guid", hour=1, url=url), story("new-guid", hour=2, url=url)], seen_at=NOW
    )
    found = archive.article_by_url(url)
    assert found is not None and found.id == "new-guid"
    assert archive.article_by_url("https://news.example/missing") is None


# Issues


def test_recording_an_unsent_issue_again_replaces_its_articles(archive: Archive) -> None:
    """A rebuilt draft forgets the articles of the earlier build, in featured-first order."""
    a, b, c = story("a"), story("b"), story("c")
    archive.upsert_articles([a, b, c], seen_at=NOW)
    archive.record_issue(issue("w47", a, ("News", [b])), created_at=NOW)
    archive.record_issue(issue("w47", c, ("News", [b]), ("Arts", [a])), created_at=NOW)
    rows = raw(
        archive.path,
        "SELECT article_id, section, position FROM issue_articles ORDER BY position",
    )
    assert rows == [("c", None, 0), ("b", "News", 1), ("a", "Arts", 2)]


def test_a_recorded_issue_reads_back_as_it_was_selected(archive: Archive) -> None:
    """A resumed send and the issue history get the same featured story and sections, in order."""
    a, b, c, d = story("a", hour=4), story("b", hour=3), story("c", hour=2), story("d", hour=1)
    archive.upsert_articles([a, b, c, d], seen_at=NOW)
    recorded = issue("w47", c, ("News", [b, d]), ("Arts", [a]))
    archive.record_issue(recorded, created_at=NOW)
    back = archive.issue("w47")
    assert back is not None
    assert back.period == recorded.period
    assert back.featured is not None and back.featured.id == "c"
    assert [(s.name, ids(s.articles)) for s in back.sections] == [
        ("News", ["b", "d"]),
        ("Arts", ["a"]),
    ]
    assert archive.issue("w48") is None


def test_a_sent_issue_cannot_be_recorded_again(archive: Archive) -> None:
    """Once sent, an issue's contents are history and a new build is refused."""
    archive.upsert_articles([story("a"), story("b")], seen_at=NOW)
    archive.record_issue(issue("w47", story("a")), created_at=NOW)
    archive.mark_sent("w47", sent_at=NOW)
    with pytest.raises(ArchiveError, match="w47 was sent"):
        archive.record_issue(issue("w47", story("b")), created_at=NOW)
    assert raw(archive.path, "SELECT article_id FROM issue_articles") == [("a",)]


def test_an_issue_with_an_unknown_article_is_refused(archive: Archive) -> None:
    """Issues only hold archived articles; anything else is an ArchiveError, not a crash."""
    with pytest.raises(ArchiveError, match="FOREIGN KEY"):
        archive.record_issue(issue("w47", story("never-stored")), created_at=NOW)
    assert raw(archive.path, "SELECT id FROM issues") == []


def test_marking_an_unknown_issue_sent_is_an_error(archive: Archive) -> None:
    """A typo in an issue id is reported rather than silently doing nothing."""
    with pytest.raises(ArchiveError, match="no issue w99"):
        archive.mark_sent("w99", sent_at=NOW)


def test_marking_sent_twice_keeps_the_first_time(archive: Archive) -> None:
    """A resumed send does not rewrite when the issue first went out."""
    archive.upsert_articles([story("a")], seen_at=NOW)
    archive.record_issue(issue("w47", story("a")), created_at=NOW)
    archive.mark_sent("w47", sent_at=NOW)
    archive.mark_sent("w47", sent_at=NOW + timedelta(hours=2))
    assert raw(archive.path, "SELECT sent_at FROM issues") == [(NOW.isoformat(),)]


def test_last_sent_period_end_ignores_unsent_issues(archive: Archive) -> None:
    """The next period starts where the last issue that actually went out ended."""
    assert archive.last_sent_period_end() is None
    next_week = Period(WEEK.end, WEEK.end + timedelta(days=7))
    archive.record_issue(issue("w47", None), created_at=NOW)
    archive.record_issue(Issue("w48", next_week, None, ()), created_at=NOW)
    assert archive.last_sent_period_end() is None
    archive.mark_sent("w47", sent_at=NOW)
    end = archive.last_sent_period_end()
    assert end == WEEK.end and end is not None and end.tzinfo == UTC


# Fetch state


def test_fetch_state_round_trips_and_is_replaced(archive: Archive) -> None:
    """A source's validators come back as saved; saving again replaces them."""
    assert archive.fetch_state("Gazette") is None
    archive.save_fetch_state("Gazette", FetchState(etag='"v1"'), fetched_at=NOW)
    assert archive.fetch_state("Gazette") == FetchState(etag='"v1"', last_modified=None)
    state = FetchState(etag=None, last_modified="Wed, 01 May 2024 10:00:00 GMT")
    archive.save_fetch_state("Gazette", state, fetched_at=NOW)
    assert archive.fetch_state("Gazette") == state
    assert archive.fetch_state("Other") is None


def test_a_story_in_two_sources_stays_with_the_first(archive: Archive) -> None:
    """The same id from a second feed is not an update, so collect reports stay quiet."""
    archive.upsert_articles([story("a")], seen_at=NOW)
    again = archive.upsert_articles([story("a", source="Category feed")], seen_at=NOW)
    assert again == UpsertCounts(unchanged=1)
    assert archive.candidates(WEEK)[0].source == "Riverside Gazette"


def test_issue_records_list_each_issue_newest_first_with_its_article_count(
    archive: Archive,
) -> None:
    """Each recorded issue comes back with its period, times and articles (featured included)."""
    archive.upsert_articles([story("a"), story("b"), story("c", hour=200)], seen_at=NOW)
    archive.record_issue(issue("W47", story("a"), ("News", [story("b")])), created_at=NOW)
    archive.mark_sent("W47", sent_at=NOW + timedelta(hours=1))
    later = dataclasses.replace(
        issue("W48", None, ("News", [story("c", hour=200)])),
        period=Period(WEEK.end, WEEK.end + timedelta(days=7)),
    )
    archive.record_issue(later, created_at=NOW + timedelta(days=7))
    records = archive.issue_records()
    assert [(r.id, r.articles) for r in records] == [("W48", 1), ("W47", 2)]
    assert records[1].period == WEEK and records[1].created_at == NOW
    assert records[1].sent_at == NOW + timedelta(hours=1)
    assert records[0].sent_at is None


def test_an_issue_sent_before_its_period_ended_is_followed_from_its_send(
    archive: Archive,
) -> None:
    """A period sent ahead of its end could not carry what was published after the send
    began, so the next period starts then, not at the period's end."""
    began = WEEK.start + timedelta(days=3)
    archive.record_issue(issue("w47", None), created_at=began)
    archive.mark_sent("w47", sent_at=began + timedelta(minutes=1))
    assert archive.last_sent_period_end() == began


def test_a_skipped_period_is_remembered_and_its_start_waits(archive: Archive) -> None:
    """`digest run` remembers a skip (once) so it stands till the next due time; with nothing
    sent yet, the next period starts where the first skipped one began."""
    assert archive.skip_reason(WEEK.end) is None and archive.unsent_since() is None
    archive.skip_period("w47", WEEK, reason="too few", at=NOW)
    archive.skip_period("w47", WEEK, reason="said twice", at=NOW)
    assert archive.skip_reason(WEEK.end) == "too few"
    assert archive.unsent_since() == WEEK.start
    archive.upsert_articles([story("a")], seen_at=NOW)
    archive.record_issue(issue("w48", story("a")), created_at=NOW)
    archive.mark_sent("w48", sent_at=NOW)
    assert archive.unsent_since() == WEEK.end  # a sent issue's end wins
