"""The collect step: real feeds from tests/fixtures/, and a real HTTP server for the network."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

import hypothesis
import pytest
from conftest import ETAG, FIXTURES, LAST_MODIFIED, HttpServer
from hypothesis import given
from hypothesis import strategies as st

from digest import sources
from digest.config import CollectSettings, SourceConfig, SourceType, TrackingSettings
from digest.errors import SourceError
from digest.models import Article, FetchState, Image, ImageSize
from digest.render import tracked
from digest.sources import SourceResult, collect, parse_feed, parse_wordpress_posts

ZONE = ZoneInfo("America/Toronto")
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SETTINGS = CollectSettings(timeout=5.0)
FEEDS = FIXTURES / "feeds"
WORDPRESS = FIXTURES / "wordpress"
SHAPES = FIXTURES / "shapes"  # small documents of our own, one real-world shape each

# Nine levels of ten: a billion "lol"s if anything expanded it.
ENTITY_BOMB = (
    b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n  <!ENTITY lol0 "lol">\n'
    + b"".join(
        b'  <!ENTITY lol%d "%s">\n' % (n, b"".join(b"&lol%d;" % (n - 1) for _ in range(10)))
        for n in range(1, 10)
    )
    + b']>\n<rss version="2.0"><channel><title>Bomb</title><link>https://example.org/</link>'
    b"<item><title>&lol9;</title><link>https://example.org/a</link></item></channel></rss>\n"
)
EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
    b'<rss version="2.0"><channel><title>t</title><item><title>&secret;</title>'
    b"<link>https://example.org/a</link></item></channel></rss>\n"
)


def rss(items: str, *, link: str = "https://example.org/") -> bytes:
    """A small RSS 2.0 document around some <item> elements."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:media="http://search.yahoo.com/mrss/">\n'
        f"<channel><title>Test</title><link>{link}</link><description>d</description>\n"
        f"{items}\n</channel></rss>\n"
    ).encode()


def read(data: bytes | str, *, base_url: str = "") -> tuple[list[Article], list[str]]:
    """parse_feed on bytes, or on a fixture file named by a string."""
    if isinstance(data, str):
        data = (FEEDS / data).read_bytes()
    source = SourceConfig(name="test", url="/feeds/test.xml")
    return parse_feed(
        data, source=source, base_url=base_url, timezone=ZONE, now=NOW, excerpt_length=280
    )


def shape(name: str) -> bytes:
    return (SHAPES / name).read_bytes()


def articles(data: bytes | str, *, base_url: str = "") -> list[Article]:
    return read(data, base_url=base_url)[0]


def run(
    configs: Sequence[SourceConfig],
    *,
    states: Mapping[str, FetchState] | None = None,
    settings: CollectSettings = SETTINGS,
) -> list[SourceResult]:
    return asyncio.run(collect(configs, states or {}, settings, timezone=ZONE, now=NOW))


def one(server: HttpServer, path: str, kind: SourceType = "auto", **settings: Any) -> SourceResult:
    """Collect a single source at `path` on the test server (settings as keywords)."""
    config = SourceConfig(name="one", url=server.url(path), type=kind)
    return run([config], settings=CollectSettings(**{"timeout": 5.0, **settings}))[0]


# --- Feed formats, with real feeds -------------------------------------------------------


def test_wordpress_rss_gives_every_item_with_byline_category_and_a_clean_excerpt() -> None:
    """WordPress 6.1 RSS: 100 items, dc:creator bylines, categories, no "[…]" or footer."""
    found = articles("wp-rsscom-blog-wp6.1-100items.xml")
    assert len(found) == 100
    second = found[1]
    assert second.id == "https://rss.com/blog/?p=15283"
    assert second.url == "https://rss.com/blog/q4-2022-rss-com-product-updates/"
    assert second.title == "Q4 2022 RSS.com Product Updates"
    assert second.bylines == ("brian",)
    assert second.categories == ("Uncategorized",)
    assert second.published == datetime(2023, 1, 17, 18, 33, tzinfo=UTC)
    assert not second.date_estimated
    for article in found:
        assert "[…]" not in article.excerpt and "appeared first on" not in article.excerpt
        assert len(article.excerpt) <= 280


# Where each real feed's articles linked when the links were first checked by hand.
PINNED_URLS = json.loads((FIXTURES / "feeds-article-urls.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(PINNED_URLS))
def test_real_feeds_keep_linking_where_they_did(name: str) -> None:
    """Every real feed's articles keep the URLs they had, in order."""
    base = "https://www.qemu.org/feed.xml" if name.startswith("jekyll") else ""
    assert [a.url for a in articles(name, base_url=base)] == PINNED_URLS[name]


def test_rss_090_without_dates_gives_articles_dated_now_and_marked_estimated() -> None:
    """heise's RDF feed has no dates at all, so each article is first seen now."""
    found = articles("news-heise-rss090-rdf-nodates.xml")
    assert len(found) == 60
    assert all(a.published == NOW and a.date_estimated for a in found)
    assert found[1].title == "Mega-Deal: IBM übernimmt Red Hat"


def test_unreadable_dates_fall_back_to_now_and_are_marked_estimated() -> None:
    """UOL's Portuguese RFC 822 dates ("Seg, 24 Set 2018") parse nowhere: first seen now."""
    found = articles("news-uol-brazil-latin1-nodecl.rss")
    assert len(found) == 15
    assert all(a.date_estimated and a.published == NOW for a in found)
    assert found[0].title.startswith("Ibope: Bolsonaro perde de Haddad")


def test_atom_html_titles_become_plain_text_with_entities_decoded() -> None:
    """Google Alerts' <b> markup and WordPress's &#8230; inside an html-typed CDATA title."""
    alerts = articles("google-alerts-atom-html-titles.xml")
    assert alerts[1].title == "Slack Stock Has a Compelling Story and the Numbers to Back It Up"
    assert all("<" not in a.title and "&nbsp;" not in a.excerpt for a in alerts)
    wordpress = articles("wp-atom10-norm2782-wp2.8.xml")
    assert wordpress[0].title == "Wth… reading books?"
    assert wordpress[0].categories == ("New Zealand", "Personal", "Programming", "Study")


def test_html_inside_an_rss_title_is_removed() -> None:
    """Livemint wraps the rupee sign in a <span> inside its CDATA title."""
    titles = [a.title for a in articles("news-livemint-html-in-title.xml")]
    assert "SmartCity Kochi to raise ₹4,000 crore from investors" in titles
    assert not any("<" in title for title in titles)


def test_json_feed_1_0_uses_the_item_url_and_the_singular_author() -> None:
    """pxlnv's JSON Feed 1.0 (http://jsonfeed.org/version/1): url over external_url."""
    found = articles("jsonfeed-1.0-pxlnv-wordpress.json")
    first = found[0]
    assert first.url == "https://pxlnv.com/linklog/uber-losses-2017/"
    assert first.title == "Uber Lost $4.5 Billion in 2017"
    assert first.bylines == ("Nick Heer",)
    assert first.published == datetime(2018, 2, 13, 23, 23, 12, tzinfo=UTC)
    assert first.excerpt.startswith("Eric Newcomer, Bloomberg:")


def test_json_feed_1_1_gives_authors_tags_image_and_summary() -> None:
    """lukedorny.com's JSON Feed 1.1 with escaped slashes, authors[], tags and image."""
    found = articles("jsonfeed-1.1-lukedorny.json")
    assert len(found) == 30
    first = found[0]
    assert first.id == first.url == "https://lukedorny.com/updates/new-font"
    assert first.bylines == ("Author: Luke, most likely.",)
    assert first.categories == ("Design",)
    assert first.excerpt == "A Journey with links"
    assert first.image is not None and first.image.url.endswith("/asketch1-500x-crop.jpg")
    assert first.published == datetime(2025, 1, 6, 1, 40, tzinfo=UTC)


def test_json_feed_is_recognised_by_its_content_whatever_the_url_says() -> None:
    """A JSON Feed read as if it came from a .xml URL is still a JSON Feed."""
    data = (FEEDS / "jsonfeed-1.0-pxlnv-wordpress.json").read_bytes()
    assert articles(data, base_url="https://pxlnv.com/feed.xml")


def test_json_without_a_json_feed_version_is_not_a_feed() -> None:
    """A JSON object that does not name a jsonfeed.org version is refused."""
    with pytest.raises(SourceError, match="not a feed"):
        read(json.dumps({"version": "1.0", "items": []}).encode())


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("enc-latin1-no-declaration-cerclepsy.xml", "La criminalité liée surtout à... l'ennui ?"),
        ("enc-utf8-bom-donthitsave.xml", "Skipping Around"),
        ("enc-windows-1251-ibash.xml", "Цитата #17703"),
    ],
)
def test_feeds_in_other_encodings_decode_to_the_right_text(name: str, title: str) -> None:
    """Latin-1 without a declaration, a UTF-8 BOM and windows-1251 all read correctly."""
    titles = [a.title for a in articles(name)]
    assert title in titles
    assert not any("\ufffd" in t or "Ã" in t for t in titles)


def test_truncated_feed_whose_only_entry_is_empty_fails_instead_of_giving_an_article() -> None:
    """feedparser reads one empty entry from a document cut off in CDATA: that is no article."""
    with pytest.raises(SourceError, match=r"^malformed XML at line \d+: "):
        read("bad-incomplete-cdata.xml")


def test_malformed_feed_with_readable_entries_is_used_with_a_warning() -> None:
    """TechCrunch's blank line before <?xml is not well-formed, but all 20 items are read."""
    found, warnings = read("wpcom-techcrunch-2011-media.xml")
    assert len(found) == 20
    assert warnings[0].startswith("malformed XML at line 3:")


def test_largest_media_content_is_the_image() -> None:
    """The Guardian gives each item a 140 px and a 460 px media:content: the larger wins."""
    first = articles("news-guardian-us-2018.rss")[0]
    assert first.image is not None and "w=460" in first.image.url
    assert first.bylines == ("David Smith in Washington",)
    assert "US politics" in first.categories


def test_gravatar_media_content_never_becomes_the_image() -> None:
    """TechCrunch lists the author's gravatar as media:content; the article picture wins."""
    found = articles("wpcom-techcrunch-2011-media.xml")
    assert found[0].image == Image(
        "http://tctechcrunch2011.files.wordpress.com/2011/11/angies-list.jpeg?w=150",
        "angies-list",  # its media:title
    )
    assert not any(a.image and "gravatar.com" in a.image.url for a in found)


def test_empty_media_width_is_ignored_and_video_is_not_an_image() -> None:
    """HuffPost's media:content has width="" and a video beside the picture."""
    found = articles("news-huffpost-canada-2017.xml")
    assert found[0].title == "Winnipeg High School Orders Custom Hijabs For Muslim Athletes"
    assert found[0].image is not None and found[0].image.url.endswith(
        "Untitled+design+%2857%29.png"
    )
    assert found[0].bylines == ("Canadian Press",)


def test_categories_are_distinct_whatever_their_case() -> None:
    """HuffPost repeats "Living", "living" and "LIVING": each name is kept once."""
    categories = articles("news-huffpost-canada-2017.xml")[0].categories
    assert [c.casefold() for c in categories].count("living") == 1
    assert categories[:3] == ("Dakota Collegiate", "hijab", "Living")


def test_atom_category_label_is_preferred_to_its_term() -> None:
    """BBC Chinese labels term "world" as 国际新闻, which is what readers see."""
    categories = articles("news-bbc-chinese-atom.atom")[0].categories
    assert "国际新闻" in categories and "world" not in categories


def test_small_avatar_thumbnails_are_not_article_images() -> None:
    """GitHub's commit feed attaches the committer's 30 px avatar to every entry."""
    found = articles("github-commits-atom.xml")
    assert found and all(a.image is None for a in found)
    assert found[0].bylines == ("fguillot",)


def test_first_image_in_the_content_is_used_with_its_alt_text() -> None:
    """A feed with no media elements gets the first <img> of the description."""
    first = articles("enc-utf8-bom-donthitsave.xml")[0]
    assert first.image == Image(
        "https://donthitsave.com/comicimages/dhs_2019-05-24_skipping-around.png", "Skipping Around"
    )


def test_local_feed_reads_relative_urls_against_its_channel_link() -> None:
    """A file on disk has no URL, so fcutrecht's /pictures/... is read against its <link>."""
    first = articles("bad-prolog-phpxml-relative-img.rss")[0]
    assert first.image == Image("https://www.fcutrecht.net/pictures/100/scheids.jpg")
    assert first.bylines == ()  # <author> is only an email address


def test_local_feed_with_only_relative_links_skips_its_entries_with_a_warning() -> None:
    """qemu's Jekyll feed is all relative links, its channel link too: nothing to resolve."""
    found, warnings = read("jekyll-qemu-atom-relative-links.atom")
    assert found == []
    assert warnings == ["skipped 10 entries without an http(s) link"]


# --- Entry rules, with small feeds written here -------------------------------------------


def test_entries_with_neither_id_nor_link_are_skipped_and_counted() -> None:
    """Two entries with no way to identify them are dropped, and the warning says so."""
    data = rss(
        "<item><title>Kept</title><link>https://example.org/kept</link></item>"
        "<item><title>No id, no link</title></item><item><description>x</description></item>"
    )
    found, warnings = read(data)
    assert [a.title for a in found] == ["Kept"]
    assert warnings == ["skipped 2 entries with neither id nor link"]


def test_an_entry_whose_only_link_is_not_http_is_skipped() -> None:
    """javascript: and data: links never become article URLs."""
    data = rss(
        "<item><title>A</title><link>javascript:alert(1)</link></item>"
        "<item><title>B</title><link>data:text/html,hi</link></item>"
    )
    found, warnings = read(data)
    assert found == []
    assert warnings == ["skipped 2 entries without an http(s) link"]


def test_id_is_the_guid_else_the_absolute_link() -> None:
    """A guid with a scheme is kept as the id; without a guid the resolved link is."""
    data = rss(
        '<item><title>A</title><guid isPermaLink="false">tag:example.org,2026:1</guid>'
        "<link>/a</link></item><item><title>B</title><link>/b</link></item>"
    )
    first, second = articles(data)
    assert (first.id, first.url) == ("tag:example.org,2026:1", "https://example.org/a")
    assert second.id == second.url == "https://example.org/b"


def test_a_bare_guid_is_qualified_by_the_article_host() -> None:
    """Guids like "23246627" are unique only within their feed, so the host is prefixed."""
    data = rss(
        '<item><title>A</title><guid isPermaLink="false">23246627</guid><link>/a</link></item>'
    )
    assert articles(data)[0].id == "example.org:23246627"


def test_an_absolute_guid_stands_in_for_a_missing_link() -> None:
    """An entry with an http(s) guid and no link is read at its guid."""
    data = rss('<item><title>A</title><guid isPermaLink="false">https://ex.org/?p=7</guid></item>')
    assert articles(data)[0].url == "https://ex.org/?p=7"


def test_protocol_relative_urls_become_https() -> None:
    """//host/path links and images get https, not the scheme of wherever they were read."""
    data = rss(
        "<item><title>A</title><link>//news.example.org/a</link>"
        '<media:thumbnail url="//cdn.example.org/a.jpg" width="600"/></item>'
    )
    article = articles(data, base_url="http://example.org/feed")[0]
    assert article.url == "https://news.example.org/a"
    assert article.image == Image("https://cdn.example.org/a.jpg")


def test_unsafe_image_urls_are_passed_over_for_the_next_http_one() -> None:
    """javascript: and data: <img> sources are skipped; the first http(s) one is used."""
    data = rss(
        "<item><title>A</title><link>https://example.org/a</link><description>"
        '&lt;img src="javascript:alert(1)"&gt;&lt;img src="data:image/png;base64,AAAA"&gt;'
        '&lt;img src="/ok.png" alt="fine"&gt;</description></item>'
    )
    assert articles(data)[0].image == Image("https://example.org/ok.png", "fine")


def test_enclosure_with_an_image_type_is_the_image_and_tiny_ones_are_not() -> None:
    """An image/* enclosure is used; a 1 px tracking <img> and a video enclosure are not."""
    data = rss(
        "<item><title>A</title><link>https://example.org/a</link>"
        '<enclosure url="https://example.org/v.mp4" type="video/mp4" length="1"/>'
        '<enclosure url="https://example.org/e.jpg" type="image/jpeg" length="0"/></item>'
        "<item><title>B</title><link>https://example.org/b</link><description>"
        '&lt;img src="https://example.org/pixel.gif" width="1" height="1"&gt;</description></item>'
    )
    first, second = articles(data)
    assert first.image == Image("https://example.org/e.jpg")
    assert second.image is None


def test_no_markup_reaches_titles_excerpts_or_bylines() -> None:
    """Scripts, tags and escaped tags in a feed come out as plain text only."""
    data = rss(
        "<item><title>&lt;script&gt;alert(1)&lt;/script&gt;Big &lt;b&gt;news&lt;/b&gt;</title>"
        "<link>https://example.org/a</link>"
        "<description><![CDATA[<p onclick='x()'>Hello <script>alert(2)</script>"
        "<iframe src='https://evil.example'></iframe>world</p>]]></description>"
        "<dc:creator><![CDATA[<a href='https://evil.example'>Ana</a> &amp; Bo]]></dc:creator>"
        "</item>"
    )
    article = articles(data)[0]
    assert article.title == "Big news"
    assert article.excerpt == "Hello world"
    assert article.bylines == ("Ana & Bo",)


def test_missing_title_falls_back_to_the_excerpt_start_then_the_url() -> None:
    """An untitled entry shows its first words (cut near 80 characters), else its URL."""
    words = "word " * 40
    data = rss(
        f"<item><title></title><link>https://example.org/a</link><description>{words}"
        "</description></item><item><link>https://example.org/b</link></item>"
    )
    first, second = articles(data)
    assert first.title.startswith("word word") and first.title.endswith("…")
    assert len(first.title) <= 80
    assert second.title == "https://example.org/b"


def test_email_authors_give_the_name_in_parentheses_or_nothing() -> None:
    """ "jo@x.org (Jo Bloggs)" is Jo Bloggs; a bare address is not a byline."""
    data = rss(
        "<item><title>A</title><link>https://example.org/a</link>"
        "<author>jo@example.org (Jo Bloggs)</author></item>"
        "<item><title>B</title><link>https://example.org/b</link>"
        "<author>webmaster@example.org</author></item>"
        "<item><title>C</title><link>https://example.org/c</link>"
        "<dc:creator>ed@example.org (Ed Ng)</dc:creator></item>"
    )
    assert [a.bylines for a in articles(data)] == [("Jo Bloggs",), (), ("Ed Ng",)]


def test_odd_marked_sections_in_content_do_not_stop_the_image_search() -> None:
    """ "<![foo]>" makes html.parser assert; the <img> after it is still found."""
    data = rss(
        "<item><title>A</title><link>https://example.org/a</link><description>"
        '&lt;![foo]&gt;&lt;img src="https://example.org/i.jpg"&gt;</description></item>'
    )
    assert articles(data)[0].image == Image("https://example.org/i.jpg")


# Pieces of hostile or broken feed content, mixed with arbitrary text below.
TRICKY = st.sampled_from(
    [
        "<script>alert(1)</script>",
        "<![foo]>",
        "<img src='javascript:alert(1)'>",
        "<img src=//cdn.example.org/x.jpg width=300>",
        "&amp;lt;b&amp;gt;",
        "&#8217;",
        "]]>",
        "<!--",
        "javascript:alert(1)",
        "//example.org/x",
        "/relative",
        "data:text/html,x",
        "Mon, 06 Sep 2021 12:17:00",
        "2021-13-45T99:99",
    ]
)
TEXT = st.lists(st.one_of(TRICKY, st.text(max_size=20)), max_size=4).map("".join)


@hypothesis.settings(max_examples=60, deadline=None)
@given(title=TEXT, link=TEXT, description=TEXT, date=TEXT)
def test_any_entry_gives_safe_articles_or_a_source_error(
    title: str, link: str, description: str, date: str
) -> None:
    """Whatever an item holds, parsing gives http(s) URLs and aware dates, or a SourceError."""
    fields = (
        f"<title>{escape(title)}</title><link>{escape(link)}</link>"
        f"<description>{escape(description)}</description><pubDate>{escape(date)}</pubDate>"
    )
    clean = "".join(c for c in fields if c.isprintable() or c in "\n\t")
    try:
        found = articles(rss(f"<item>{clean}</item>"), base_url="https://example.org/feed")
    except SourceError:
        return
    for article in found:
        assert article.url.startswith(("http://", "https://"))
        assert article.published.tzinfo is not None
        assert article.title and "\n" not in article.title
        assert article.image is None or article.image.url.startswith(("http://", "https://"))


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("<pubDate>Mon, 06 Sep 2021 12:17:00</pubDate>", datetime(2021, 9, 6, 12, 17, tzinfo=ZONE)),
        ("<dc:date>2021-09-06T12:17:00</dc:date>", datetime(2021, 9, 6, 12, 17, tzinfo=ZONE)),
        ("<dc:date>2021-09-06</dc:date>", datetime(2021, 9, 6, tzinfo=ZONE)),
        (
            "<pubDate>Mon, 06 Sep 2021 12:17:00 GMT</pubDate>",
            datetime(2021, 9, 6, 12, 17, tzinfo=UTC),
        ),
        (
            "<pubDate>Mon, 06 Sep 2021 12:17:00 -0000</pubDate>",
            datetime(2021, 9, 6, 12, 17, tzinfo=UTC),
        ),
        (
            "<pubDate>Mon, 06 Sep 2021 12:17:00 +0200</pubDate>",
            datetime(2021, 9, 6, 10, 17, tzinfo=UTC),
        ),
    ],
)
def test_times_without_a_zone_are_read_in_the_newsletter_timezone(
    written: str, expected: datetime
) -> None:
    """A date with no zone is the newsletter's local time; one with a zone keeps it."""
    data = rss(f"<item><title>A</title><link>https://example.org/a</link>{written}</item>")
    article = articles(data)[0]
    assert article.published == expected
    assert article.published.tzinfo is not None and not article.date_estimated


def test_updated_stands_in_for_a_missing_published_date() -> None:
    """An Atom entry with only <updated> is dated by it."""
    data = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><id>urn:t</id>
<updated>2024-05-02T10:00:00Z</updated>
<entry><title>A</title><id>urn:a</id><link href="https://example.org/a"/>
<updated>2024-05-01T08:30:00+02:00</updated></entry></feed>"""
    article = articles(data)[0]
    assert article.published == datetime(2024, 5, 1, 6, 30, tzinfo=UTC)
    assert not article.date_estimated


def test_entity_bomb_is_refused_before_feedparser_sees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A billion-laughs feed is refused, and feedparser is never handed the bytes."""

    def must_not_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("feedparser was called")

    monkeypatch.setattr(sources.feedparser, "parse", must_not_parse)
    with pytest.raises(SourceError, match=r"^refused: the XML declares entities"):
        read(ENTITY_BOMB)


def test_external_entity_is_refused() -> None:
    """A feed whose entity would read a local file is refused."""
    with pytest.raises(SourceError, match=r"^refused"):
        read(EXTERNAL_ENTITY)


def test_web_page_is_not_a_feed() -> None:
    """An HTML page fails with "not a feed" and the parser's reason."""
    with pytest.raises(SourceError, match=r"^not a feed: "):
        read(b"<!doctype html><html><head><title>Hi</title></head><body><p>Hi<br></body></html>")


def test_empty_document_is_not_a_feed() -> None:
    """Zero bytes fail with a reason that says so."""
    with pytest.raises(SourceError, match=r"^not a feed: it is empty$"):
        read(b"")


# --- WordPress REST API -----------------------------------------------------------------


def test_wordpress_posts_become_articles_with_authors_categories_and_featured_image() -> None:
    """Posts from /wp-json/wp/v2/posts?_embed: embedded author, categories, featured media."""
    pages = [(WORDPRESS / f"posts-page-{n}.json").read_bytes() for n in (1, 2)]
    source = SourceConfig(name="wp", url="https://harbourlights.example.org")
    found, warnings = parse_wordpress_posts(
        pages, source=source, base_url="", timezone=ZONE, now=NOW, excerpt_length=280
    )
    assert warnings == []
    assert len(found) == 5
    plan, festival, interview, match, minutes = found
    assert plan.id == "https://harbourlights.example.org/?p=4812"
    assert plan.url == "https://harbourlights.example.org/2024/05/14/councils-harbour-plan/"
    assert plan.title == "Council’s harbour plan: what changes on Pier 4"
    assert plan.published == datetime(2024, 5, 14, 22, 30, tzinfo=UTC)  # date_gmt
    assert plan.bylines == ("Amara Okafor",)
    assert plan.categories == ("City Hall", "Harbour & Waterfront", "ferries", "Pier 4")
    assert plan.image is not None
    assert (plan.image.url, plan.image.alt) == (
        "https://harbourlights.example.org/wp-content/uploads/2024/05/ferry-terminal.jpg",
        "The ferry terminal at dusk, seen from the breakwater",
    )
    assert plan.excerpt.endswith("and the Saturday stalls…")  # "… Continue reading" cut
    # No featured media: the first <img> of the content, read against the post's link.
    assert festival.image == Image(
        "https://harbourlights.example.org/wp-content/uploads/2024/05/festival-stage.jpg",
        "The main stage at last year’s festival",
    )
    assert interview.title == "Q&A: the Tidewater author on her debut novel"
    assert interview.bylines == ()  # the embedded author is an error object
    assert match.image is not None and match.image.alt == ""
    assert minutes.excerpt == "" and minutes.title == "Members’ meeting minutes, April"


def test_wordpress_page_that_is_not_a_list_of_posts_fails() -> None:
    """A REST error object where a page of posts belongs is a SourceError."""
    source = SourceConfig(name="wp", url="https://harbourlights.example.org")
    with pytest.raises(SourceError, match="not a list of posts"):
        parse_wordpress_posts(
            [b'{"code": "rest_no_route"}'],
            source=source,
            base_url="",
            timezone=ZONE,
            now=NOW,
            excerpt_length=280,
        )


def test_wordpress_site_is_read_page_by_page_up_to_x_wp_totalpages(
    http_server: HttpServer,
) -> None:
    """Both pages are fetched, and nothing past the last one the API announced."""
    result = one(http_server, "/site", "wordpress")
    assert not result.failed and len(result.articles) == 5
    pages = sorted(r.path for r in http_server.requests_to("/site/wp-json/"))
    assert pages == [
        "/site/wp-json/wp/v2/posts?_embed&per_page=100&page=1",
        "/site/wp-json/wp/v2/posts?_embed&per_page=100&page=2",
    ]


def test_wordpress_pages_stop_at_wordpress_max_pages(http_server: HttpServer) -> None:
    """With wordpress_max_pages = 1 only the first page is fetched."""
    result = one(http_server, "/site/", "wordpress", wordpress_max_pages=1)
    assert len(result.articles) == 3
    assert len(http_server.requests_to("/site/wp-json/")) == 1


def test_auto_source_on_a_web_page_tries_the_wordpress_rest_api(http_server: HttpServer) -> None:
    """A site URL that gives HTML, not a feed, is read through /wp-json/wp/v2/posts."""
    result = one(http_server, "/site/")
    assert not result.failed and len(result.articles) == 5
    assert result.state is None


def test_auto_source_on_a_site_with_neither_feed_nor_api_names_both_problems(
    http_server: HttpServer,
) -> None:
    """The error says it was not a feed and that the REST API answered 404."""
    result = one(http_server, "/plain/")
    assert result.error is not None
    assert result.error.startswith("not a feed: ")
    assert "no WordPress REST API: HTTP 404 Not Found from http://127.0.0.1:" in result.error


def test_local_wordpress_json_file_is_read_as_one_page_of_posts() -> None:
    """A JSON list on disk is a page of posts, for type auto and wordpress alike."""
    path = str(WORDPRESS / "posts-page-1.json")
    results = run(
        [SourceConfig(name="a", url=path), SourceConfig(name="w", url=path, type="wordpress")]
    )
    assert [len(r.articles) for r in results] == [3, 3]


def test_feed_type_refuses_a_wordpress_json_list() -> None:
    """type = "feed" on a JSON list fails and suggests the wordpress type."""
    path = str(WORDPRESS / "posts-page-1.json")
    result = run([SourceConfig(name="f", url=path, type="feed")])[0]
    assert result.error is not None and 'type = "wordpress"' in result.error


# --- HTTP -------------------------------------------------------------------------------


def test_remote_feed_links_resolve_against_the_url_it_was_fetched_from(
    http_server: HttpServer,
) -> None:
    """qemu's relative links and per-entry xml:base become URLs on the server it came from."""
    result = one(http_server, "/feeds/jekyll-qemu-atom-relative-links.atom")
    assert len(result.articles) == 10
    assert result.articles[0].url == http_server.url("/2025/08/26/qemu-10-1-0/")
    assert result.articles[0].categories == ("releases", "qemu 10.1")


def test_redirects_are_followed_and_links_resolve_against_the_final_url(
    http_server: HttpServer,
) -> None:
    """After a redirect, a path-relative link is read against where the feed really is."""
    http_server.respond(
        "/deep/dir/feed.xml",
        rss("<item><title>A</title><link>post-1</link></item>", link="post-0"),
        Content_Type="application/rss+xml",
    )
    result = one(http_server, "/redirect?to=/deep/dir/feed.xml")
    assert [a.url for a in result.articles] == [http_server.url("/deep/dir/post-1")]


def test_more_than_five_redirects_fail(http_server: HttpServer) -> None:
    """A redirect loop stops after five hops with a one-line reason."""
    result = one(http_server, "/loop")
    assert result.error == f"more than 5 redirects from {http_server.url('/loop')}"


def test_user_agent_from_the_settings_is_sent(http_server: HttpServer) -> None:
    """Every request carries collect.user_agent."""
    one(http_server, "/feeds/enc-utf8-bom-donthitsave.xml", user_agent="digest-test/1.0")
    (request,) = http_server.requests_to("/feeds/")
    assert request.headers["user-agent"] == "digest-test/1.0"


def test_conditional_request_sends_validators_and_a_304_keeps_the_state(
    http_server: HttpServer,
) -> None:
    """The ETag and Last-Modified come back as If-None-Match/If-Modified-Since; 304 is kept."""
    config = SourceConfig(
        name="c", url=http_server.url("/conditional/feeds/enc-utf8-bom-donthitsave.xml")
    )
    first = run([config])[0]
    assert len(first.articles) == 10 and not first.not_modified
    assert first.state == FetchState(etag=ETAG, last_modified=LAST_MODIFIED)
    again = run([config], states={"c": first.state})[0]
    assert again == SourceResult("c", state=first.state, not_modified=True)
    sent = http_server.requests_to("/conditional/")[-1].headers
    assert (sent["if-none-match"], sent["if-modified-since"]) == (ETAG, LAST_MODIFIED)


def test_feed_without_validators_gives_no_state(http_server: HttpServer) -> None:
    """A server that sends neither ETag nor Last-Modified leaves nothing to store."""
    assert one(http_server, "/feeds/enc-utf8-bom-donthitsave.xml").state is None


def test_response_larger_than_max_bytes_fails_while_streaming(http_server: HttpServer) -> None:
    """A body with no Content-Length is cut off once it passes collect.max_bytes."""
    result = one(http_server, "/large/100000", max_bytes=2048)
    assert result.error == (
        f"{http_server.url('/large/100000')} is larger than 2048 bytes"
        " (hint: raise collect.max_bytes)"
    )


def test_declared_content_length_over_max_bytes_fails_before_reading(
    http_server: HttpServer,
) -> None:
    """A Content-Length over the cap fails at once, even though less is actually sent."""
    result = one(http_server, "/declares/999999", max_bytes=2048)
    assert result.error is not None and "is larger than 2048 bytes" in result.error


@pytest.mark.parametrize(
    ("code", "reason"), [(404, "Not Found"), (500, "Internal Server Error"), (403, "Forbidden")]
)
def test_http_errors_fail_with_status_and_url(
    http_server: HttpServer, code: int, reason: str
) -> None:
    """An HTTP error status is one line: the code, its reason and the URL."""
    result = one(http_server, f"/status/{code}")
    assert result.failed
    assert result.error == f"HTTP {code} {reason} from {http_server.url(f'/status/{code}')}"


def test_connection_refused_fails_with_a_one_line_reason() -> None:
    """Nothing listening on the port: "cannot reach URL: connection refused"."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/feed"
    result = run([SourceConfig(name="gone", url=url)])[0]
    assert result.error == f"cannot reach {url}: connection refused"


def test_slow_server_times_out(http_server: HttpServer) -> None:
    """A server slower than collect.timeout fails with the limit in the reason."""
    path = "/slow/2/feeds/enc-utf8-bom-donthitsave.xml"
    result = one(http_server, path, timeout=0.3)
    assert result.error == f"no answer from {http_server.url(path)} within 0.3 s"


def test_sources_are_fetched_concurrently(http_server: HttpServer) -> None:
    """Two slow sources are both asked before either answers."""
    configs = [
        SourceConfig(name=name, url=http_server.url(f"/slow/0.3/feeds/{file}"))
        for name, file in (
            ("a", "enc-utf8-bom-donthitsave.xml"),
            ("b", "news-heise-rss090-rdf-nodates.xml"),
        )
    ]
    results = run(configs)
    assert [len(r.articles) for r in results] == [10, 60]
    first, second = http_server.requests_to("/slow/")
    assert max(first.started, second.started) < min(first.answered, second.answered)


def test_one_failing_source_does_not_stop_the_others(http_server: HttpServer) -> None:
    """A 404 and a missing file fail on their own; results stay in config order."""
    missing = str(FEEDS / "no-such-feed.xml")
    configs = [
        SourceConfig(name="good", url=http_server.url("/feeds/news-guardian-us-2018.rss")),
        SourceConfig(name="broken", url=http_server.url("/status/404")),
        SourceConfig(name="gone", url=missing),
        SourceConfig(name="local", url=str(FEEDS / "news-heise-rss090-rdf-nodates.xml")),
    ]
    results = run(configs)
    assert [r.source for r in results] == ["good", "broken", "gone", "local"]
    assert [r.failed for r in results] == [False, True, True, False]
    assert results[2].error == f"no file at {missing}"
    assert len(results[0].articles) == 55 and len(results[3].articles) == 60
    assert all(a.source == "good" for a in results[0].articles)


def test_entity_bomb_from_a_server_fails_that_source(http_server: HttpServer) -> None:
    """The refusal reaches the SourceResult as a one-line error."""
    http_server.respond("/bomb.xml", ENTITY_BOMB, Content_Type="application/rss+xml")
    result = one(http_server, "/bomb.xml")
    assert result.error is not None and result.error.startswith("refused")


def test_local_path_relative_to_nothing_reads_the_file_given(tmp_path: Path) -> None:
    """A local source is read from disk, warnings included."""
    path = tmp_path / "feed.xml"
    path.write_bytes(rss("<item><title>No link</title></item>"))
    result = run([SourceConfig(name="l", url=str(path))])[0]
    assert result == SourceResult("l", warnings=("skipped 1 entry with neither id nor link",))


def test_a_local_feed_file_larger_than_max_bytes_fails_as_a_download_would(
    tmp_path: Path,
) -> None:
    """collect.max_bytes caps local files too: one failing source, the same words as a URL's."""
    big = tmp_path / "big.xml"
    big.write_bytes(rss("<item><title>A</title><link>https://example.org/a</link></item>" * 200))
    config = SourceConfig(name="big", url=str(big))
    result = run([config], settings=CollectSettings(max_bytes=2048))[0]
    assert result.error == f"{big} is larger than 2048 bytes (hint: raise collect.max_bytes)"
    assert run([config], settings=CollectSettings())[0].articles


# --- Real-world shapes -------------------------------------------------------------------


def test_characters_xml_forbids_are_removed_so_the_whole_feed_reads_without_warning() -> None:
    """A raw U+0007 and a &#7; reference do not cut the feed short or warn on every collect."""
    found, warnings = read(shape("rss-forbidden-characters.xml"))
    assert warnings == []
    assert [a.title for a in found] == ["Bell ringer", "Second story", "Third story"]
    assert found[0].excerpt == "The bell rang twice."


def test_an_rss_item_links_to_its_own_link_never_to_the_stories_nested_in_it() -> None:
    """Related-story <atom:link href title> inside an <item> are not its URL, before or after."""
    found = articles(shape("rss-nested-links.xml"))
    assert [a.url for a in found] == [
        "https://news.example.org/2026/11/harbour-plan.html",
        "https://news.example.org/2026/11/related-first.html",
        "https://news.example.org/2026/11/guid-only.html",  # the permalink guid
    ]


def test_an_atom_entry_links_to_its_first_own_alternate_link() -> None:
    """rel="related" and the links of <source> are not the entry's; the first alternate is."""
    (entry,) = articles(shape("atom-entry-links.xml"))
    assert entry.url == "https://blog.example.org/2026/two-alternates/"


def test_feedburner_items_link_to_the_original_and_tracking_goes_on_it() -> None:
    """feedburner:origLink is the URL, never the feedproxy.google.com redirect."""
    (story,) = articles(shape("rss-feedburner.xml"))
    assert story.url == "https://www.example.org/2026/11/18/proxied-story/"
    utm = TrackingSettings(utm_source="digest", utm_medium="email")
    assert tracked(story.url, utm, "2026-w47") == (
        "https://www.example.org/2026/11/18/proxied-story/?utm_source=digest&utm_medium=email"
    )


def test_categories_are_the_items_own_and_media_keywords_are_not_among_them() -> None:
    """<category> and dc:subject are categories; media:keywords only describe the media."""
    first = articles(shape("rss-media-sizes.xml"))[0]
    assert first.categories == ("Economía", "Transporte")


def wordpress(name: str) -> tuple[list[Article], list[str]]:
    """parse_wordpress_posts on one page of posts from tests/fixtures/shapes/."""
    source = SourceConfig(name="harbour", url="https://harbourlights.example.org")
    return parse_wordpress_posts(
        [shape(name)], source=source, base_url="", timezone=ZONE, now=NOW, excerpt_length=280
    )


def test_wordpress_categories_are_the_terms_of_the_category_and_tag_taxonomies() -> None:
    """Category and post_tag terms are categories; author terms are not."""
    terminal, pier = wordpress("wordpress-coauthors.json")[0]
    assert terminal.categories == ("Harbour & Waterfront", "Ferries", "Pier 4")
    assert pier.categories == ("Harbour & Waterfront",)


def test_wordpress_co_authors_are_every_author_term_in_order() -> None:
    """Co-Authors Plus and PublishPress Authors terms give every author, display names first."""
    terminal, pier = wordpress("wordpress-coauthors.json")[0]
    assert terminal.bylines == ("Amara Okafor", "Joao Silva")  # a guest author: nicename words
    assert pier.bylines == ("Ana Pérez", "Bo Li", "Cy Wu")


def test_several_creator_elements_are_several_authors() -> None:
    """Two dc:creator elements are two authors, in order."""
    assert articles(shape("rss-media-sizes.xml"))[1].bylines == ("Ana Pérez", "Bo Li")


def test_one_creator_listing_names_with_commas_is_split_where_the_parts_are_names() -> None:
    """ "Francesco Manetto,Javier Lafuente" is two people; "Lafuente, Javier" stays one."""
    found = articles(shape("rss-media-sizes.xml"))
    assert found[0].bylines == ("Francesco Manetto", "Javier Lafuente")
    assert found[2].bylines == ("Lafuente, Javier",)
    assert sources._names("Ana de la Torre; Bo van Dijk") == ["Ana de la Torre", "Bo van Dijk"]
    assert sources._names("Reuters, 2026") == ["Reuters, 2026"]


def test_wordpress_posts_without_embedded_come_through_with_a_warning_saying_what_is_missing(
    http_server: HttpServer,
) -> None:
    """A WordPress answer without _embedded still gives its posts, and a warning names the loss."""
    # As a cache that ignores the query string serves it.
    http_server.respond(
        "/cached/wp-json/wp/v2/posts",
        shape("wordpress-no-embed.json"),
        Content_Type="application/json",
        X_WP_TotalPages="1",
    )
    result = one(http_server, "/cached", "wordpress")
    assert [a.title for a in result.articles] == ["Posted without embedding", "Also without"]
    assert all(a.bylines == () and a.categories == () for a in result.articles)
    (warning,) = result.warnings
    assert warning.startswith("2 of 2 WordPress posts came without _embedded")
    assert "bylines, categories or featured pictures" in warning


def test_alt_text_is_the_pictures_own_description_or_caption_else_empty() -> None:
    """media:description (HTML made plain), WordPress alt_text, else its caption; never made up."""
    terminal, pier, last = articles(shape("rss-media-sizes.xml"))
    assert terminal.image is not None and pier.image is not None and last.image is not None
    assert terminal.image.alt == "La terminal de ferris, vista desde el espigón al atardecer"
    assert pier.image.alt == "Ana and Bo at the pier"  # the media:group's, markup removed
    assert last.image.alt == ""
    wp_terminal, wp_pier = wordpress("wordpress-coauthors.json")[0]
    assert wp_terminal.image is not None and wp_pier.image is not None
    assert wp_terminal.image.alt == "The ferry terminal at dusk, from the breakwater"  # caption
    assert wp_pier.image.alt == "Three people on the pier"  # alt_text


def test_pictures_carry_every_size_the_site_offers() -> None:
    """media:content sizes and WordPress media_details.sizes arrive narrowest first."""
    terminal = articles(shape("rss-media-sizes.xml"))[0]
    assert terminal.image is not None
    assert terminal.image.url == "https://img.example.org/terminal-4000.jpg"
    assert [s.width for s in terminal.image.sizes] == [150, 300, 1200, 1600, 4000]
    wp_terminal = wordpress("wordpress-coauthors.json")[0][0]
    assert wp_terminal.image is not None
    assert wp_terminal.image.url.endswith("/2026/11/terminal.jpg")  # the original
    assert [s.width for s in wp_terminal.image.sizes] == [150, 300, 768, 1024, 1536, 2048, 6000]
    assert wp_terminal.image.sizes[1] == ImageSize(
        "https://harbourlights.example.org/wp-content/uploads/2026/11/terminal-300x200.jpg",
        300,
        200,
    )


@pytest.mark.parametrize(
    ("slot", "width"),
    [(120, 300), (552, 1200), (1000, 4000), (3000, 4000)],
)
def test_a_slot_gets_the_smallest_size_twice_its_width_else_the_largest(
    slot: int, width: int
) -> None:
    """Sharp on phones without downloading the original: 2x the slot, else the widest."""
    image = articles(shape("rss-media-sizes.xml"))[0].image
    assert image is not None
    assert image.url_for(slot) == f"https://img.example.org/terminal-{width}.jpg"
    assert Image("https://img.example.org/only.jpg").url_for(slot).endswith("only.jpg")


def test_a_feed_only_the_lenient_parser_reads_still_links_to_each_items_first_link() -> None:
    """Malformed XML (a bare "&") gets feedparser's first alternate link, not its last."""
    broken = shape("rss-nested-links.xml").replace(b"Harbour plan", b"Harbour & plan")
    found, warnings = read(broken)
    assert warnings[0].startswith("malformed XML")
    assert found[0].url == "https://news.example.org/2026/11/harbour-plan.html"
    (story,) = articles(shape("rss-feedburner.xml").replace(b"Proxied story", b"Proxied & story"))
    assert story.url == "https://www.example.org/2026/11/18/proxied-story/"


def test_categories_wrapped_in_a_categories_element_are_the_items_own() -> None:
    """Macworld wraps each item's <category> elements in a non-standard <categories>."""
    found = articles("news-macworld-enclosure-leading-blank.rss")
    assert found[0].categories == ("Connected Home", "Bluetooth", "Home Tech")
    assert any(a.bylines == ("Macworld Staff", "Glenn Fleishman") for a in found)


def test_text_encoded_twice_as_utf_8_is_repaired_in_categories() -> None:
    """rss.com writes the category "EspaÃ±ol" (UTF-8 read as Latin-1): it reads "Español"."""
    found = articles("wp-rsscom-blog-wp6.1-100items.xml")
    assert any("Español" in a.categories for a in found)
    assert not any("Ã" in name for a in found for name in a.categories)


def test_an_empty_link_under_xml_base_is_no_link_and_a_sizeless_media_is_no_picture() -> None:
    """xml:base alone is not the article's URL, nor a picture's: the permalink guid is."""
    (found,) = articles(
        rss(
            '<item xml:base="https://example.org/section/"><title>t</title><link></link>'
            '<guid>https://example.org/a</guid><media:content medium="image"/></item>'
        )
    )
    assert found.url == "https://example.org/a"
    assert found.image is None
