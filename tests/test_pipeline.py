"""The pipeline joins the steps: collect into the archive over HTTP, then select from it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest import pipeline
from digest.archive import Archive
from digest.config import Config, load_config
from digest.errors import SourceError
from tests.conftest import HttpServer

NOW = datetime(2018, 2, 1, 12, 0, tzinfo=UTC)  # the day after the Guardian fixture was captured


def project(tmp_path: Path, *urls: str) -> Config:
    """A config whose sources are the given URLs, with Guardian-style sections."""
    sources = "".join(
        f'[[sources]]\nname = "Source {n}"\nurl = "{url}"\n' for n, url in enumerate(urls)
    )
    (tmp_path / "digest.toml").write_text(
        '[newsletter]\nname = "Weekly"\ntimezone = "America/New_York"\nlanguage = "en"\n'
        'from = "Weekly <weekly@news.example.org>"\npublic_url = "https://news.example.org/d"\n'
        'address = "PO Box 1"\n'
        + sources
        + '[[sections]]\nname = "US"\ncategories = ["US news", "US politics"]\n'
        '[[sections]]\nname = "Everything else"\ncatch_all = true\n',
        encoding="utf-8",
    )
    return load_config(tmp_path / "digest.toml", environ={})


def test_second_collect_sends_validators_and_reports_not_modified(
    tmp_path: Path, http_server: HttpServer
) -> None:
    """The archive keeps each source's ETag, so the next collect is a cheap 304."""
    config = project(tmp_path, http_server.url("/conditional/feeds/news-guardian-us-2018.rss"))
    first = pipeline.collect(config, now=NOW)
    counts = first.reports[0].counts
    assert counts is not None and counts.new > 0
    second = pipeline.collect(config, now=NOW)
    assert second.reports[0].result.not_modified
    assert http_server.requests_to("/conditional")[-1].headers["if-none-match"] == '"v1"'


def test_one_source_failing_is_reported_and_all_failing_raises(
    tmp_path: Path, http_server: HttpServer
) -> None:
    """A 404 beside a good feed is one failed report; two 404s is an error."""
    good, bad = http_server.url("/feeds/news-guardian-us-2018.rss"), http_server.url("/status/404")
    report = pipeline.collect(project(tmp_path, good, bad), now=NOW)
    assert [r.result.failed for r in report.reports] == [False, True]
    report.raise_if_all_failed()
    with pytest.raises(SourceError, match="every source failed"):
        pipeline.collect(project(tmp_path, bad, bad + "?again"), now=NOW).raise_if_all_failed()


def test_after_a_sent_issue_the_next_period_starts_where_it_ended(
    tmp_path: Path, http_server: HttpServer
) -> None:
    """Articles a sent issue carried are not offered again, and the default period follows it."""
    config = project(tmp_path, http_server.url("/feeds/news-guardian-us-2018.rss"))
    pipeline.collect(config, now=NOW)
    week = pipeline.PeriodRequest(since=date(2018, 1, 25), until=date(2018, 1, 31))
    first = pipeline.select(config, week, now=NOW)
    assert first.articles
    with Archive.open(config.archive_path) as archive:
        archive.record_issue(first, created_at=NOW)
        archive.mark_sent(first.id, sent_at=NOW)
    again = pipeline.select(config, week, now=NOW)
    assert not {a.id for a in again.articles} & {a.id for a in first.articles}
    following = pipeline.select(config, pipeline.PeriodRequest(), now=NOW)
    assert following.period.start == first.period.end
