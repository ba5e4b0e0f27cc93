"""The select step: periods, issue ids, which article goes where, and the JSON of an issue."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.config import SectionConfig
from digest.errors import SelectionError
from digest.models import Article, Image, Issue, Period, Section
from digest.selector import issue_id, issue_to_json, resolve_period, select_issue

NEW_YORK = ZoneInfo("America/New_York")
MADRID = ZoneInfo("Europe/Madrid")
# Monday 2026-11-16 to Sunday 2026-11-22, both included.
WEEK = Period(
    start=datetime(2026, 11, 16, tzinfo=NEW_YORK), end=datetime(2026, 11, 23, tzinfo=NEW_YORK)
)


def story(
    id: str,
    *,
    hour: float = 12,
    categories: Sequence[str] = (),
    source: str = "Riverside Gazette",
    url: str | None = None,
    title: str = "",
    bylines: Sequence[str] = (),
    image: Image | None = None,
    excerpt: str = "",
) -> Article:
    """An article published `hour` hours after WEEK starts."""
    return Article(
        id=id,
        url=url or f"https://news.example/{id}",
        title=title or f"Story {id}",
        published=WEEK.start + timedelta(hours=hour),
        source=source,
        excerpt=excerpt,
        bylines=tuple(bylines),
        categories=tuple(categories),
        image=image,
    )


def section(
    name: str,
    categories: Sequence[str] = (),
    *,
    cap: int = 5,
    catch_all: bool = False,
    sources: Sequence[str] = (),
) -> SectionConfig:
    """A section as config.py builds it: categories casefolded, `sources` pinned to it."""
    return SectionConfig(
        name=name,
        categories=frozenset(c.casefold() for c in categories),
        max_articles=cap,
        catch_all=catch_all,
        sources=frozenset(sources),
    )


def select(
    articles: Sequence[Article],
    sections: Sequence[SectionConfig],
    *,
    featured: Article | None = None,
    featured_category: str | None = None,
) -> Issue:
    """select_issue over WEEK."""
    return select_issue(
        articles,
        sections,
        WEEK,
        issue_id="2026-W47",
        featured=featured,
        featured_category=featured_category,
    )


def layout(issue: Issue) -> dict[str, list[str]]:
    """Section name -> article ids, in order: what an assertion about placement needs."""
    return {s.name: [a.id for a in s.articles] for s in issue.sections}


# --- which section an article goes to -----------------------------------------------------------


def test_pinned_source_claims_its_articles_whatever_their_categories() -> None:
    """An article from a source pinned to a section goes there, not to its category's section."""
    sections = [section("Local", sources=["Oakdale Times"]), section("Sports", ["sports"])]
    issue = select([story("a", categories=["Sports"], source="Oakdale Times")], sections)
    assert layout(issue) == {"Local": ["a"]}


def test_a_pin_wins_even_over_an_earlier_category_section() -> None:
    """A source pinned to a later section still sends every article there."""
    sections = [section("Sports", ["sports"]), section("Local", sources=["Oakdale Times"])]
    articles = [
        story("match", categories=["Sports"], source="Oakdale Times"),
        story("game", categories=["Sports"], source="Valley Wire"),
    ]
    assert layout(select(articles, sections)) == {"Sports": ["game"], "Local": ["match"]}


def test_first_section_in_config_order_wins_a_shared_category() -> None:
    """An article matching two sections goes to the one listed first, and only there."""
    sections = [section("City", ["politics"]), section("State", ["politics", "courts"])]
    issue = select([story("a", categories=["Courts", "Politics"])], sections)
    assert layout(issue) == {"City": ["a"]}


def test_categories_match_ignoring_case_and_surrounding_spaces() -> None:
    """A feed's " SPORTS " is the configured "sports"."""
    issue = select([story("a", categories=[" SPORTS "])], [section("Sports", ["Sports"])])
    assert layout(issue) == {"Sports": ["a"]}


def test_catch_all_takes_only_what_no_other_section_claims() -> None:
    """A catch-all listed first still leaves claimed articles to their own sections."""
    sections = [section("More", ["sports"], catch_all=True), section("Arts", ["arts"])]
    articles = [
        story("play", categories=["Arts"]),
        story("recipe", categories=["Food"]),
        story("bare"),
    ]
    assert layout(select(articles, sections)) == {"More": ["bare", "recipe"], "Arts": ["play"]}


def test_catch_all_still_claims_its_own_categories_in_config_order() -> None:
    """A catch-all's own categories claim like any section's, before later sections."""
    sections = [section("More", ["sports"], catch_all=True), section("Sports", ["sports"])]
    assert layout(select([story("a", categories=["Sports"])], sections)) == {"More": ["a"]}


def test_unclaimed_articles_are_left_out_without_a_catch_all() -> None:
    """With no catch-all section, an article no section claims is not in the issue."""
    issue = select([story("a", categories=["Food"])], [section("Arts", ["arts"])])
    assert issue.articles == ()


def test_full_section_drops_the_overflow_rather_than_moving_it() -> None:
    """The articles beyond a section's cap are dropped, not given to the next section that fits."""
    sections = [section("Arts", ["arts"], cap=2), section("Culture", ["arts", "music"])]
    articles = [story(str(n), hour=n, categories=["Arts", "Music"]) for n in range(4)]
    assert layout(select(articles, sections)) == {"Arts": ["3", "2"]}


def test_catch_all_respects_its_cap_too() -> None:
    """The catch-all shows at most its max_articles, the newest."""
    articles = [story(str(n), hour=n) for n in range(5)]
    issue = select(articles, [section("More", cap=3, catch_all=True)])
    assert layout(issue) == {"More": ["4", "3", "2"]}


def test_sections_without_articles_are_left_out_and_the_rest_keep_config_order() -> None:
    """Only sections with articles appear, in the order the config lists them."""
    sections = [section("Sports", ["sports"]), section("Arts", ["arts"]), section("Food", ["food"])]
    articles = [story("meal", hour=1, categories=["Food"]), story("match", categories=["Sports"])]
    assert list(layout(select(articles, sections))) == ["Sports", "Food"]


def test_sections_list_newest_first_with_ties_in_id_order() -> None:
    """Within a section the newest article comes first; articles published together go by id."""
    articles = [story("b", hour=5), story("old", hour=1), story("a", hour=5), story("new", hour=9)]
    issue = select(articles, [section("More", catch_all=True)])
    assert layout(issue) == {"More": ["new", "a", "b", "old"]}


def test_only_articles_published_in_the_period_count() -> None:
    """The period includes its first moment and excludes its end."""
    articles = [
        story("first-moment", hour=0),
        story("before", hour=-0.001),
        story("last-moment", hour=7 * 24 - 1 / 3600),
        story("at-end", hour=7 * 24),
    ]
    issue = select(articles, [section("More", catch_all=True)])
    assert layout(issue) == {"More": ["last-moment", "first-moment"]}


def test_an_article_appears_once_even_if_given_twice() -> None:
    """Two copies of one id, or two ids for one URL, are one story: the newest copy is kept."""
    articles = [
        story("a", hour=1, title="Old headline", url="https://news.example/a?utm_source=rss"),
        story("a", hour=3, title="New headline"),
        story("b", hour=2, url="https://news.example/shared"),
        story("c", hour=4, url="https://news.example/shared"),
    ]
    issue = select(articles, [section("More", catch_all=True)])
    assert [(a.id, a.title) for a in issue.articles] == [("c", "Story c"), ("a", "New headline")]


# --- the featured article -----------------------------------------------------------------------


def test_featured_article_leads_and_is_not_repeated_in_its_section() -> None:
    """The featured article is on top and left out of the section it would have gone to."""
    articles = [story("lead", hour=2, categories=["Arts"]), story("other", categories=["Arts"])]
    issue = select(articles, [section("Arts", ["arts"])], featured=articles[0])
    assert issue.featured == articles[0]
    assert layout(issue) == {"Arts": ["other"]}
    assert issue.articles[0] == articles[0]


def test_featured_category_picks_its_newest_article() -> None:
    """Without an explicit choice, the newest article in featured_category leads the issue."""
    articles = [
        story("older", hour=1, categories=["Investigations"]),
        story("newer", hour=5, categories=["Arts", "investigations "]),
        story("newest", hour=9, categories=["Arts"]),
    ]
    issue = select(articles, [section("Arts", ["arts"])], featured_category="Investigations")
    assert issue.featured is not None
    assert issue.featured.id == "newer"
    assert layout(issue) == {"Arts": ["newest"]}


def test_featured_category_without_a_match_features_nothing() -> None:
    """When no article in the period has featured_category, there is no featured article."""
    issue = select(
        [story("a", categories=["Arts"])], [section("Arts", ["arts"])], featured_category="Data"
    )
    assert issue.featured is None
    assert layout(issue) == {"Arts": ["a"]}


def test_featured_category_ignores_articles_outside_the_period() -> None:
    """An article in featured_category but from last week is not featured."""
    articles = [story("last-week", hour=-24, categories=["Data"])]
    assert select(articles, [], featured_category="Data").featured is None


def test_explicitly_featured_article_leads_even_from_outside_the_period() -> None:
    """The editor's chosen article is featured even when it was published before the period."""
    chosen = story("archive-piece", hour=-24 * 30, categories=["Arts"])
    issue = select(
        [chosen, story("a", categories=["Arts"])], [section("Arts", ["arts"])], featured=chosen
    )
    assert issue.featured == chosen
    assert layout(issue) == {"Arts": ["a"]}


def test_explicit_featured_wins_over_featured_category() -> None:
    """Naming an article overrides the featured_category choice."""
    chosen = story("chosen", hour=1)
    articles = [chosen, story("data", hour=5, categories=["Data"])]
    issue = select(
        articles, [section("More", catch_all=True)], featured=chosen, featured_category="Data"
    )
    assert issue.featured == chosen
    assert layout(issue) == {"More": ["data"]}


def test_same_selection_whatever_the_input_order() -> None:
    """Shuffled input gives the same issue: the selection does not depend on archive order."""
    articles = [
        story(f"s{n}", hour=n % 7, categories=[("Arts", "Food", "Data")[n % 3]]) for n in range(30)
    ]
    sections = [section("Arts", ["arts"], cap=4), section("More", cap=6, catch_all=True)]
    shuffled = articles[:]
    random.Random(7).shuffle(shuffled)
    assert select(shuffled, sections) == select(articles, sections)


# --- the period ---------------------------------------------------------------------------------


def period(
    *,
    since: date | None = None,
    until: date | None = None,
    days: int | None = None,
    now: datetime = datetime(2026, 11, 23, 9, 30, tzinfo=NEW_YORK),
    last_sent_end: datetime | None = None,
    timezone: ZoneInfo = NEW_YORK,
    default_days: int = 7,
) -> Period:
    """resolve_period for a New York newsletter on Monday 2026-11-23 at 09:30."""
    return resolve_period(
        since=since,
        until=until,
        days=days,
        timezone=timezone,
        now=now,
        last_sent_end=last_sent_end,
        default_days=default_days,
    )


def elapsed(p: Period) -> timedelta:
    """Real time between the bounds (subtracting times in one zone gives wall-clock time)."""
    return p.end.astimezone(UTC) - p.start.astimezone(UTC)


def test_default_period_runs_from_the_last_sent_issue_to_now() -> None:
    """With no options, the issue picks up where the last sent one ended."""
    last_end = datetime(2026, 11, 16, 5, 0, tzinfo=UTC)
    now = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
    assert period(last_sent_end=last_end, now=now) == Period(last_end, now)


def test_default_period_before_any_issue_is_default_days_back_from_now() -> None:
    """Before the first issue is sent, the period is the last default_days days."""
    now = datetime(2026, 11, 23, 9, 30, tzinfo=NEW_YORK)
    assert period(now=now, default_days=3) == Period(
        datetime(2026, 11, 20, 9, 30, tzinfo=NEW_YORK), now
    )


def test_since_and_until_are_whole_local_days_both_included() -> None:
    """--since and --until run from the first day's midnight to the midnight after the last."""
    resolved = period(since=date(2026, 11, 16), until=date(2026, 11, 22))
    assert resolved == WEEK
    assert resolved.start.isoformat() == "2026-11-16T00:00:00-05:00"
    assert resolved.end.isoformat() == "2026-11-23T00:00:00-05:00"


def test_period_times_are_in_the_newsletter_timezone() -> None:
    """Every bound comes back in the newsletter's zone, whatever zone `now` was given in."""
    resolved = period(
        now=datetime(2026, 11, 23, 14, 30, tzinfo=UTC),
        last_sent_end=datetime(2026, 11, 16, tzinfo=UTC),
    )
    assert resolved.start.tzinfo is NEW_YORK
    assert resolved.end.tzinfo is NEW_YORK
    assert resolved.end.isoformat() == "2026-11-23T09:30:00-05:00"


def test_week_across_the_end_of_daylight_saving_runs_midnight_to_midnight() -> None:
    """A week spanning 2026-11-01 in New York starts at EDT midnight and ends at EST midnight."""
    resolved = period(since=date(2026, 10, 26), until=date(2026, 11, 1))
    assert resolved.start.isoformat() == "2026-10-26T00:00:00-04:00"
    assert resolved.end.isoformat() == "2026-11-02T00:00:00-05:00"
    assert elapsed(resolved) == timedelta(days=7, hours=1)
    assert period(days=7, until=date(2026, 11, 1)) == resolved


def test_days_back_from_now_across_daylight_saving_keeps_the_local_time() -> None:
    """--days counts calendar days: seven days before 12:00 EST is 12:00 EDT."""
    now = datetime(2026, 11, 4, 12, 0, tzinfo=NEW_YORK)
    resolved = period(days=7, now=now)
    assert resolved.start.isoformat() == "2026-10-28T12:00:00-04:00"
    assert resolved.end == now


def test_midnight_skipped_by_daylight_saving_starts_at_the_first_real_moment() -> None:
    """In Santiago clocks jump from 00:00 to 01:00 on 2026-09-06, so that day starts at 01:00."""
    santiago = ZoneInfo("America/Santiago")
    resolved = period(since=date(2026, 9, 6), until=date(2026, 9, 6), timezone=santiago)
    assert resolved.start.isoformat() == "2026-09-06T01:00:00-03:00"
    assert elapsed(resolved) == timedelta(hours=23)


def test_since_alone_runs_to_now() -> None:
    """--since without --until ends the period now."""
    now = datetime(2026, 11, 20, 8, 0, tzinfo=NEW_YORK)
    assert period(since=date(2026, 11, 16), now=now) == Period(WEEK.start, now)


def test_until_alone_covers_default_days_ending_that_day() -> None:
    """--until without --since or --days covers default_days days up to and including that day."""
    assert period(until=date(2026, 11, 22), last_sent_end=datetime(2026, 11, 1, tzinfo=UTC)) == WEEK


def test_days_counts_back_from_the_end_of_until() -> None:
    """--days N --until DAY is the N days ending with DAY."""
    assert period(days=7, until=date(2026, 11, 22)) == WEEK
    assert period(days=1, until=date(2026, 11, 22)).start.isoformat() == "2026-11-22T00:00:00-05:00"


def test_days_alone_counts_back_from_now() -> None:
    """--days N without --until is the N days ending now, ignoring the last sent issue."""
    now = datetime(2026, 11, 23, 9, 30, tzinfo=NEW_YORK)
    resolved = period(days=2, now=now, last_sent_end=datetime(2026, 11, 16, tzinfo=UTC))
    assert resolved == Period(datetime(2026, 11, 21, 9, 30, tzinfo=NEW_YORK), now)


def test_until_in_the_future_is_allowed() -> None:
    """An --until after today means the period runs up to the end of that day."""
    resolved = period(since=date(2026, 11, 23), until=date(2026, 11, 29))
    assert resolved.end.isoformat() == "2026-11-30T00:00:00-05:00"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"days": 7, "since": date(2026, 11, 16)}, "not both"),
        ({"days": 0}, "--days must be at least 1"),
        ({"days": -3, "until": date(2026, 11, 22)}, "--days must be at least 1"),
        ({"since": date(2026, 11, 22), "until": date(2026, 11, 16)}, "is after --until"),
        ({"since": date(2026, 11, 24)}, "is in the future"),
        ({"last_sent_end": datetime(2026, 11, 23, 9, 30, tzinfo=NEW_YORK)}, "nothing is new"),
    ],
    ids=["days-and-since", "zero-days", "negative-days", "reversed", "future-since", "nothing-new"],
)
def test_impossible_periods_are_errors_with_a_hint(options: dict[str, Any], message: str) -> None:
    """Contradictory or empty periods raise a SelectionError that says what to do instead."""
    with pytest.raises(SelectionError, match=message) as caught:
        period(**options)
    assert caught.value.hint


# --- the issue id -------------------------------------------------------------------------------


def test_issue_id_is_the_iso_week_of_the_periods_last_day() -> None:
    """Monday 2023-09-25 to Sunday 2023-10-01 is week 39 of 2023."""
    week = period(since=date(2023, 9, 25), until=date(2023, 10, 1))
    assert issue_id(week, timezone=NEW_YORK, fmt="%G-W%V") == "2023-W39"


def test_issue_id_is_taken_in_the_newsletter_timezone() -> None:
    """An end given in UTC still names the local Sunday's week, not the UTC Monday's."""
    week = Period(datetime(2023, 9, 25, 4, tzinfo=UTC), datetime(2023, 10, 2, 4, tzinfo=UTC))
    assert issue_id(week, timezone=NEW_YORK, fmt="%G-W%V") == "2023-W39"


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (date(2020, 12, 28), date(2021, 1, 3), "2020-W53"),
        (date(2024, 12, 30), date(2025, 1, 5), "2025-W01"),
    ],
)
def test_issue_id_uses_the_iso_year_at_the_year_boundary(
    since: date, until: date, expected: str
) -> None:
    """%G is the ISO week's year, which differs from the calendar year around New Year."""
    week = period(since=since, until=until, timezone=MADRID)
    assert issue_id(week, timezone=MADRID, fmt="%G-W%V") == expected


def test_issue_id_follows_a_custom_format() -> None:
    """Any strftime format works, such as the date of the last day."""
    assert issue_id(WEEK, timezone=NEW_YORK, fmt="%Y-%m-%d") == "2026-11-22"


@pytest.mark.parametrize("fmt", ["%Y/%m/%d", "", "issue %V", "%Y:%V", "..", "%"])
def test_issue_id_unfit_for_a_file_name_is_an_error(fmt: str) -> None:
    """An id that is empty or holds a slash, space or other unsafe character is refused."""
    with pytest.raises(SelectionError, match="file name") as caught:
        issue_id(WEEK, timezone=NEW_YORK, fmt=fmt)
    assert "selection.issue_id_format" in caught.value.hint


# --- JSON ---------------------------------------------------------------------------------------


def sample_issue() -> Issue:
    lead = story(
        "lead",
        hour=30.25,
        title="La ciudad aprueba el presupuesto",
        bylines=["Ana Pérez", "Bo Li"],
        categories=["Política"],
        image=Image("https://news.example/lead.jpg", alt="El pleno, el martes"),
        excerpt="El pleno votó «sí» por 7 a 2.",
    )
    plain = story("plain", hour=2, source="KRVR Radio")
    trio = story("trio", hour=1, bylines=["Zoë Laurent", "Sven Ødegård", "Wen Zhao"])
    return Issue("2026-W47", WEEK, lead, (Section("Más noticias", (plain, trio)),))


def test_json_has_the_documented_shape_in_key_order() -> None:
    """The JSON holds id, period, featured and sections; each article has eight keys, in order."""
    document = json.loads(issue_to_json(sample_issue(), timezone=NEW_YORK))
    assert list(document) == ["id", "period", "featured", "sections"]
    assert document["period"] == {
        "start": "2026-11-16T00:00:00-05:00",
        "end": "2026-11-23T00:00:00-05:00",
    }
    assert document["featured"] == {
        "id": "lead",
        "title": "La ciudad aprueba el presupuesto",
        "url": "https://news.example/lead",
        "byline": "Ana Pérez and Bo Li",
        "published": "2026-11-17T06:15:00-05:00",
        "excerpt": "El pleno votó «sí» por 7 a 2.",
        "image": {"url": "https://news.example/lead.jpg", "alt": "El pleno, el martes"},
        "categories": ["Política"],
    }
    assert list(document["featured"]) == [
        "id", "title", "url", "byline", "published", "excerpt", "image", "categories",
    ]  # fmt: skip
    [more] = document["sections"]
    assert list(more) == ["name", "articles"]
    assert [(a["id"], a["byline"], a["image"]) for a in more["articles"]] == [
        ("plain", "", None),
        ("trio", "Zoë Laurent, Sven Ødegård and Wen Zhao", None),
    ]


def test_json_without_featured_or_sections_uses_null_and_an_empty_list() -> None:
    """An empty issue is still valid JSON of the same shape."""
    document = json.loads(issue_to_json(Issue("x", WEEK, None, ()), timezone=NEW_YORK))
    assert document["featured"] is None
    assert document["sections"] == []


def test_json_keeps_non_ascii_text_readable() -> None:
    """Accents and guillemets are written as themselves, not as \\u escapes."""
    text = issue_to_json(sample_issue(), timezone=NEW_YORK)
    assert "Pérez" in text and "«sí»" in text and "Más noticias" in text
    assert "\\u" not in text


def test_json_times_use_the_newsletter_timezone_to_the_second() -> None:
    """Times are ISO 8601 in the newsletter's zone with its offset, without fractions."""
    moment = WEEK.start + timedelta(hours=3, microseconds=123456)
    article = Article("a", "https://news.example/a", "A", moment.astimezone(UTC), "Wire")
    text = issue_to_json(Issue("x", WEEK, article, ()), timezone=MADRID)
    assert json.loads(text)["featured"]["published"] == "2026-11-16T09:00:00+01:00"


def test_json_is_byte_identical_for_the_same_inputs() -> None:
    """Building the same issue twice, from shuffled archives, prints exactly the same bytes."""
    articles = list(sample_issue().articles)
    sections = [section("Más noticias", catch_all=True)]
    outputs = set()
    for seed in range(5):
        shuffled = articles[:]
        random.Random(seed).shuffle(shuffled)
        issue = select(shuffled, sections, featured_category="política")
        outputs.add(issue_to_json(issue, timezone=NEW_YORK).encode())
    [output] = outputs
    assert output.endswith(b"}\n")
    assert output.decode().startswith('{\n  "id": "2026-W47",\n')


# --- properties ---------------------------------------------------------------------------------

CATEGORY_POOL = ("arts", "food", "data", "sports", "courts")
# How feeds spell them: the selector must match these to the pool's casefolded names.
SPELLINGS = (*CATEGORY_POOL, " ARTS", "Food ", "DATA", "Sports")
SOURCE_POOL = ("Gazette", "Times", "Radio", "Wire")


def numbered_article(
    id: int, url: int, minutes: int, source: str, categories: list[str]
) -> Article:
    """An article published `minutes` after WEEK starts."""
    return Article(
        id=f"id{id}",
        url=f"https://news.example/{url}",
        title="t",
        published=WEEK.start + timedelta(minutes=minutes),
        source=source,
        categories=tuple(categories),
    )


# Few ids and URLs, so repeats are common; times from before the period to after it.
archives = st.lists(
    st.builds(
        numbered_article,
        id=st.integers(0, 10),
        url=st.integers(0, 10),
        minutes=st.integers(-3 * 1440, 10 * 1440),
        source=st.sampled_from(SOURCE_POOL),
        categories=st.lists(st.sampled_from(SPELLINGS), max_size=3),
    ),
    min_size=15,
    max_size=40,
)


@st.composite
def section_lists(draw: st.DrawFn) -> list[SectionConfig]:
    """One to five sections; each source pinned to at most one; at most one catch-all."""
    count = draw(st.integers(1, 5))
    catch_all = draw(st.one_of(st.none(), st.integers(0, count - 1)))
    pins = {source: draw(st.integers(0, 2 * count)) for source in SOURCE_POOL}
    return [
        SectionConfig(
            name=f"S{n}",
            categories=frozenset(draw(st.lists(st.sampled_from(CATEGORY_POOL), max_size=3))),
            max_articles=draw(st.integers(1, 6)),
            catch_all=n == catch_all,
            sources=frozenset(s for s, pinned in pins.items() if pinned == n),
        )
        for n in range(count)
    ]


def first_claimant(article: Article, sections: Sequence[SectionConfig]) -> SectionConfig | None:
    """The rule, spelled out the slow way: the pinned section, else the first by category."""
    for s in sections:
        if article.source in s.sources:
            return s
    for s in sections:
        if any(c.strip().casefold() in s.categories for c in article.categories):
            return s
    return next((s for s in sections if s.catch_all), None)


Case = tuple[list[Article], list[SectionConfig], Period, Issue, Article | None]


@st.composite
def selections(draw: st.DrawFn) -> Case:
    """A random archive, sections and period, and the issue select_issue makes of them."""
    articles = draw(archives)
    sections = draw(section_lists())
    # Around one of the articles: a window drawn apart from them would mostly hold none.
    anchor = draw(st.sampled_from(articles)).published if articles else WEEK.start
    start = anchor - timedelta(hours=draw(st.sampled_from([0, 1, 24, 72])))
    window = Period(start, start + timedelta(hours=draw(st.sampled_from([1, 24, 72, 240]))))
    featured = draw(st.one_of(st.none(), st.sampled_from(articles))) if articles else None
    featured_category = draw(st.one_of(st.none(), st.sampled_from(CATEGORY_POOL)))
    issue = select_issue(
        articles,
        sections,
        window,
        issue_id="x",
        featured=featured,
        featured_category=featured_category,
    )
    return articles, sections, window, issue, featured


@given(selections())
def test_property_no_article_or_url_appears_twice(case: Case) -> None:
    """Whatever the archive holds, each id and each URL appears at most once in an issue."""
    issue = case[3]
    assert len({a.id for a in issue.articles}) == len(issue.articles)
    assert len({a.url for a in issue.articles}) == len(issue.articles)


@given(selections())
def test_property_no_section_exceeds_its_cap(case: Case) -> None:
    """No section in an issue holds more articles than its max_articles."""
    _, sections, _, issue, _ = case
    caps = {s.name: s.max_articles for s in sections}
    assert all(0 < len(s.articles) <= caps[s.name] for s in issue.sections)


@given(selections())
def test_property_only_an_explicit_featured_article_is_outside_the_period(case: Case) -> None:
    """Every article is in the period, except one the editor explicitly featured."""
    _, _, window, issue, featured = case
    outside = [a for a in issue.articles if a.published not in window]
    assert outside in ([], [featured])
    if outside:
        assert issue.featured == featured


@given(selections())
def test_property_sections_are_newest_first(case: Case) -> None:
    """Within every section, publication times never increase."""
    for s in case[3].sections:
        times = [a.published for a in s.articles]
        assert times == sorted(times, reverse=True)


@given(selections())
def test_property_each_article_sits_in_the_section_that_claims_it(case: Case) -> None:
    """An article is in the first section claiming it, or in the catch-all if none does."""
    _, sections, _, issue, _ = case
    for placed in issue.sections:
        for article in placed.articles:
            claimant = first_claimant(article, sections)
            assert claimant is not None and claimant.name == placed.name


@given(selections())
def test_property_an_article_is_left_out_only_for_a_reason(case: Case) -> None:
    """A one-off article from the period is shown unless it is unclaimed or its section is full."""
    articles, sections, window, issue, featured = case
    in_window = [a for a in articles if a.published in window] + ([featured] if featured else [])
    counts = {s.name: len(s.articles) for s in issue.sections}
    for article in in_window:
        others = [a for a in in_window if a is not article]
        if article in issue.articles or any(
            a.id == article.id or a.url == article.url for a in others
        ):
            continue
        claimant = first_claimant(article, sections)
        if claimant is not None:
            assert counts.get(claimant.name) == claimant.max_articles
