"""Collect: fetch every source at once and read its entries as Articles.

A source is a feed (RSS 0.9x/1.0/2.0 and Atom through feedparser, JSON Feed 1.0/1.1 read
here) or a WordPress site's REST API, from an http(s) URL or a local file. Everything a
source gives is untrusted: titles, excerpts and bylines leave as plain text, URLs only as
absolute http(s), and XML that declares entities is refused before any parser expands them.
"""

from __future__ import annotations

import asyncio
import calendar
import codecs
import html
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit
from xml.sax import SAXException, SAXParseException
from xml.sax.handler import ContentHandler, feature_namespaces
from xml.sax.xmlreader import InputSource
from zoneinfo import ZoneInfo

import defusedxml.sax
import feedparser
import httpx
from defusedxml import DefusedXmlException

from digest.config import CollectSettings, SourceConfig
from digest.errors import SourceError
from digest.models import Article, FetchState, Image, ImageSize
from digest.text import html_to_text, make_excerpt

MAX_REDIRECTS = 5
WORDPRESS_POSTS_PATH = "/wp-json/wp/v2/posts?_embed&per_page=100"
JSON_FEED_VERSIONS = ("https://jsonfeed.org/version/", "http://jsonfeed.org/version/")
FALLBACK_TITLE_LENGTH = 80  # characters of the excerpt that stand in for a missing title
MIN_IMAGE_WIDTH = 100  # pixels; narrower declared images are avatars, icons or tracking pixels
# Author pictures that feeds attach like article images (WordPress.com, GitHub).
_AVATAR_HOST = re.compile(r"(?:^|\.)gravatar\.com$|^avatars\d*\.githubusercontent\.com$")


@dataclass(frozen=True, slots=True)
class SourceResult:
    """What collecting one source gave; a failure is data, so the other sources go on."""

    source: str  # the SourceConfig.name
    articles: tuple[Article, ...] = ()
    state: FetchState | None = None  # validators to store for the next conditional request
    not_modified: bool = False  # HTTP 304: nothing new, keep what the archive has
    warnings: tuple[str, ...] = ()  # e.g. "skipped 2 entries with neither id nor link"
    error: str | None = None  # set when the whole source failed: a one-line reason

    @property
    def failed(self) -> bool:
        return self.error is not None


async def collect(
    sources: Sequence[SourceConfig],
    states: Mapping[str, FetchState],
    settings: CollectSettings,
    *,
    timezone: ZoneInfo,
    now: datetime,
) -> list[SourceResult]:
    """Fetch and read every source concurrently; one result per source, in config order."""
    async with httpx.AsyncClient(
        timeout=settings.timeout,
        headers={"User-Agent": settings.user_agent},
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
    ) as client:
        jobs = (
            _collect_one(client, source, states.get(source.name), settings, timezone, now)
            for source in sources
        )
        return list(await asyncio.gather(*jobs))


def parse_feed(
    data: bytes,
    *,
    source: SourceConfig,
    base_url: str,
    timezone: ZoneInfo,
    now: datetime,
    excerpt_length: int,
) -> tuple[list[Article], list[str]]:
    """Articles and warnings from RSS, RDF, Atom or JSON Feed bytes; SourceError if unusable.

    `base_url` is where the bytes came from (after redirects); relative links are read against
    it. Give "" for a local file: the feed's own http(s) link stands in.
    """
    context = _Context(source.name, base_url if _http_url(base_url, "") else "", timezone, now)
    kind = _json_kind(data)
    if kind == "list":
        raise _NotAFeed('not a feed: a JSON list (WordPress posts? then type = "wordpress")')
    if kind == "object":
        return _read_json_feed(_json(data), context, excerpt_length)
    data = _without_forbidden_characters(data)
    _refuse_entities(data)
    # A stream, never bytes: feedparser tries to open() a bytes argument as a file name. No
    # base URL either: it would make "//host/x" http on an http feed; we resolve links.
    parsed = feedparser.parse(io.BytesIO(data), resolve_relative_uris=True, sanitize_html=True)
    if not context.base:
        context = replace(context, base=_channel_link(parsed))
    problem = _xml_problem(parsed)
    if not parsed.get("version") and not parsed.entries:
        if not data.strip():
            raise _NotAFeed("not a feed: it is empty")
        raise _NotAFeed(f"not a feed: {problem or 'no RSS, Atom or JSON Feed in it'}")
    facts = _ItemReader.read(data, parsed.get("encoding") or "", len(parsed.entries))
    owns: Sequence[_ItemFacts | None] = facts or [None] * len(parsed.entries)
    entries = (
        _feed_entry(entry, own, timezone) for entry, own in zip(parsed.entries, owns, strict=True)
    )
    articles, warnings = _articles(entries, context, excerpt_length)
    if problem and not articles:
        raise SourceError(problem)  # a broken document that gave nothing is a failure
    if problem:
        warnings.insert(0, f"{problem}; read what could be read")
    return articles, warnings


def parse_wordpress_posts(
    pages: Sequence[bytes],
    *,
    source: SourceConfig,
    base_url: str,
    timezone: ZoneInfo,
    now: datetime,
    excerpt_length: int,
) -> tuple[list[Article], list[str]]:
    """Articles and warnings from pages of `/wp-json/wp/v2/posts?_embed` (JSON lists of posts)."""
    posts: list[Any] = []
    for number, page in enumerate(pages, start=1):
        decoded = _json(page)
        if not isinstance(decoded, list):
            raise SourceError(f"WordPress page {number} is not a list of posts")
        posts.extend(post for post in decoded if isinstance(post, dict))
    context = _Context(source.name, base_url if _http_url(base_url, "") else "", timezone, now)
    articles, warnings = _articles(
        (_wordpress_entry(post, timezone) for post in posts), context, excerpt_length
    )
    bare = sum(1 for post in posts if not isinstance(post.get("_embedded"), dict))
    if bare:
        # A cache that drops the query string, or a plugin that turns embedding off.
        warnings.append(
            f"{bare} of {len(posts)} WordPress posts came without _embedded, so they have no "
            "bylines, categories or featured pictures; check that ?_embed reaches the site "
            "(a cache or a plugin may drop it)"
        )
    return articles, warnings


# --- Fetching ---------------------------------------------------------------------------


class _NotAFeed(SourceError):
    """The document is readable but holds no feed: a site's page, say, for "auto" to retry."""


@dataclass(frozen=True, slots=True)
class _Response:
    url: str  # after redirects
    body: bytes
    headers: httpx.Headers
    not_modified: bool = False


async def _collect_one(
    client: httpx.AsyncClient,
    source: SourceConfig,
    state: FetchState | None,
    settings: CollectSettings,
    timezone: ZoneInfo,
    now: datetime,
) -> SourceResult:
    reader = _Reader(source, timezone, now, settings.excerpt_length)
    try:
        if not source.is_remote:
            return await asyncio.to_thread(_collect_file, reader, settings.max_bytes)
        if source.type == "wordpress":
            return await _collect_wordpress(client, reader, state, settings)
        return await _collect_url(client, reader, state, settings)
    except SourceError as err:
        return SourceResult(source.name, error=str(err))


@dataclass(frozen=True, slots=True)
class _Reader:
    """Reads one source's documents into Articles, with the settings every parse needs."""

    source: SourceConfig
    timezone: ZoneInfo
    now: datetime
    excerpt_length: int

    def document(self, data: bytes, base_url: str) -> tuple[list[Article], list[str]]:
        """One feed, or one page of WordPress posts (a JSON list) when the type allows it."""
        kind = self.source.type
        if kind == "wordpress" or (kind == "auto" and _json_kind(data) == "list"):
            return self.wordpress([data], base_url)
        return parse_feed(
            data,
            source=self.source,
            base_url=base_url,
            timezone=self.timezone,
            now=self.now,
            excerpt_length=self.excerpt_length,
        )

    def wordpress(self, pages: Sequence[bytes], base_url: str) -> tuple[list[Article], list[str]]:
        return parse_wordpress_posts(
            pages,
            source=self.source,
            base_url=base_url,
            timezone=self.timezone,
            now=self.now,
            excerpt_length=self.excerpt_length,
        )


def _collect_file(reader: _Reader, limit: int) -> SourceResult:
    path = Path(reader.source.url)
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)  # a file is capped as a download is
    except FileNotFoundError as err:
        raise SourceError(f"no file at {path}") from err
    except OSError as err:
        raise SourceError(f"cannot read {path}: {err.strerror or err}") from err
    if len(data) > limit:
        raise SourceError(f"{path} is larger than {limit} bytes", hint="raise collect.max_bytes")
    articles, warnings = reader.document(data, "")
    return SourceResult(reader.source.name, tuple(articles), warnings=tuple(warnings))


async def _collect_url(
    client: httpx.AsyncClient,
    reader: _Reader,
    state: FetchState | None,
    settings: CollectSettings,
) -> SourceResult:
    source = reader.source
    response = await _fetch(client, source.url, settings, state)
    if response.not_modified:
        return SourceResult(source.name, state=state, not_modified=True)
    try:
        articles, warnings = await asyncio.to_thread(reader.document, response.body, response.url)
    except _NotAFeed as err:
        if source.type != "auto":
            raise
        try:
            found = await _collect_wordpress(client, reader, None, settings)
        except SourceError as wp_err:
            raise SourceError(f"{err.message}, and no WordPress REST API: {wp_err}") from wp_err
        # Validators of the API's first page would be sent to the site's URL next time.
        return replace(found, state=None)
    return SourceResult(
        source.name, tuple(articles), state=_state(response), warnings=tuple(warnings)
    )


async def _collect_wordpress(
    client: httpx.AsyncClient,
    reader: _Reader,
    state: FetchState | None,
    settings: CollectSettings,
) -> SourceResult:
    api = reader.source.url.rstrip("/") + WORDPRESS_POSTS_PATH
    first = await _fetch(client, f"{api}&page=1", settings, state)
    if first.not_modified:
        return SourceResult(reader.source.name, state=state, not_modified=True)
    try:
        total = int(first.headers.get("X-WP-TotalPages", "1"))
    except ValueError:
        total = 1
    rest = await asyncio.gather(
        *(
            _fetch(client, f"{api}&page={n}", settings, None)
            for n in range(2, min(total, settings.wordpress_max_pages) + 1)
        )
    )
    pages = [first.body, *(response.body for response in rest)]
    articles, warnings = await asyncio.to_thread(reader.wordpress, pages, first.url)
    return SourceResult(
        reader.source.name, tuple(articles), state=_state(first), warnings=tuple(warnings)
    )


async def _fetch(
    client: httpx.AsyncClient, url: str, settings: CollectSettings, state: FetchState | None
) -> _Response:
    """GET `url` within the time and size limits; SourceError, one line, for any failure."""
    headers = {}
    if state is not None and state.etag:
        headers["If-None-Match"] = state.etag
    if state is not None and state.last_modified:
        headers["If-Modified-Since"] = state.last_modified
    try:
        # httpx times each step; this bounds the whole request, so a trickle cannot stall us.
        async with asyncio.timeout(settings.timeout):
            async with client.stream("GET", url, headers=headers) as response:
                if response.status_code == 304:
                    return _Response(str(response.url), b"", response.headers, not_modified=True)
                if not response.is_success:
                    raise SourceError(
                        f"HTTP {response.status_code} {response.reason_phrase} from {response.url}"
                    )
                body = await _read_capped(response, settings.max_bytes)
                return _Response(str(response.url), body, response.headers)
    except (TimeoutError, httpx.TimeoutException) as err:
        raise SourceError(f"no answer from {url} within {settings.timeout:g} s") from err
    except httpx.TooManyRedirects as err:
        raise SourceError(f"more than {MAX_REDIRECTS} redirects from {url}") from err
    except httpx.ConnectError as err:
        raise SourceError(f"cannot reach {url}: {_reason(err)}") from err
    except httpx.HTTPError as err:
        raise SourceError(f"cannot fetch {url}: {_reason(err)}") from err


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    too_big = SourceError(
        f"{response.url} is larger than {limit} bytes", hint="raise collect.max_bytes"
    )
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in response.aiter_bytes():  # decompressed, so a gzip bomb stops here too
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


def _state(response: _Response) -> FetchState | None:
    etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
    return FetchState(etag=etag, last_modified=modified) if etag or modified else None


def _reason(err: Exception) -> str:
    """The root cause in a few words: "connection refused", not "All connection attempts failed"."""
    text = str(err) or type(err).__name__
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            text = os.strerror(cause.errno) if cause.errno > 0 else cause.strerror or text
        cause = cause.__cause__ or cause.__context__
    line = text.splitlines()[0]
    return line[:1].lower() + line[1:]


# --- Reading documents ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Context:
    source: str
    base: str  # an absolute http(s) URL that relative links are read against, or ""
    timezone: ZoneInfo
    now: datetime


@dataclass(frozen=True, slots=True)
class _Picture:
    url: str  # as written: maybe relative
    alt: str = ""  # markup
    width: int | None = None  # as declared
    height: int | None = None
    sizes: tuple[ImageSize, ...] = ()  # the other sizes the site offers of it, if it says


@dataclass(frozen=True, slots=True)
class _Entry:
    """One entry as its format gives it, before the checks every format shares."""

    id: str
    links: tuple[str, ...]  # article URL candidates as written, best first
    title: str  # markup
    summary: str  # markup for the excerpt
    published: datetime | None
    bylines: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    pictures: tuple[_Picture, ...] = ()  # the format's own image fields, best first
    bodies: tuple[str, ...] = ()  # markup whose first <img> is the image when pictures fail
    base: str = ""  # this entry's own base URL when its format gives one


def _articles(
    entries: Iterable[_Entry], context: _Context, excerpt_length: int
) -> tuple[list[Article], list[str]]:
    articles: list[Article] = []
    skipped: Counter[str] = Counter()
    for entry in entries:
        base = entry.base or context.base
        # The id stands in for a missing link only when it is an absolute URL itself.
        candidates = (*(_http_url(link, base) for link in entry.links), _http_url(entry.id, ""))
        url = next((found for found in candidates if found), None)
        if url is None:
            has_link = entry.id.strip() or any(link.strip() for link in entry.links)
            skipped["without an http(s) link" if has_link else "with neither id nor link"] += 1
            continue
        excerpt = make_excerpt(entry.summary, excerpt_length)
        title = (
            html_to_text(entry.title) or make_excerpt(entry.summary, FALLBACK_TITLE_LENGTH) or url
        )
        articles.append(
            Article(
                id=_stable_id(entry.id, url),
                url=url,
                title=title,
                published=entry.published or context.now,
                source=context.source,
                excerpt=excerpt,
                bylines=_distinct(name for raw in entry.bylines for name in _names(_byline(raw))),
                categories=_distinct(html_to_text(name) for name in entry.categories),
                image=_image(entry, base),
                date_estimated=entry.published is None,
            )
        )
    warnings = [
        f"skipped {count} {'entry' if count == 1 else 'entries'} {why}"
        for why, count in skipped.items()
    ]
    return articles, warnings


def _stable_id(guid: str, url: str) -> str:
    """The guid when it is globally unique (a URL, tag: or urn:), else qualified by the host.

    Bare guids such as "23246627" are only unique within one feed, and the archive keys
    articles from every source by id.
    """
    guid = guid.strip()
    if not guid:
        return url
    if _HAS_SCHEME.match(guid):
        return guid
    return f"{urlsplit(url).netloc}:{guid}"


_HAS_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def _image(entry: _Entry, base: str) -> Image | None:
    """The entry's picture with the sizes offered of it; the first <img> when it names none.

    A format's own pictures (media:content, media:thumbnail, WordPress featured media) are
    taken as sizes of one picture, widest first, so the render can pick one per slot.
    """
    own = [usable for picture in entry.pictures if (usable := _usable(picture, base))]
    found = own or [
        usable
        for body in entry.bodies
        for picture in _ImageFinder.scan(body)
        if (usable := _usable(picture, base))
    ]
    if not found:
        return None
    lead = found[0]
    sizes = lead.sizes
    if not sizes and lead.width and own:
        sizes = tuple(ImageSize(p.url, p.width, p.height) for p in own if p.width)
    # One size may carry the description the others lack.
    alt = lead.alt or next((p.alt for p in own if p.alt), "")
    ordered = sorted(set(sizes), key=lambda size: (size.width, size.url))
    # One size is no choice: the picture's URL says it all.
    return Image(lead.url, html_to_text(alt), tuple(ordered) if len(ordered) > 1 else ())


def _usable(picture: _Picture, base: str) -> _Picture | None:
    """The picture with absolute http(s) URLs, or None if it is no article picture at all."""
    url = _http_url(picture.url, base)
    if url is None or (picture.width is not None and picture.width < MIN_IMAGE_WIDTH):
        return None
    if _AVATAR_HOST.search(urlsplit(url).hostname or ""):
        return None
    sizes = tuple(
        replace(size, url=absolute)
        for size in picture.sizes
        if size.width >= MIN_IMAGE_WIDTH and (absolute := _http_url(size.url, base))
    )
    return replace(picture, url=url, sizes=sizes)


class _ImageFinder(HTMLParser):
    """The <img> elements of some HTML, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[_Picture] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img" and attributes.get("src"):
            alt, width = attributes.get("alt") or "", attributes.get("width") or ""
            self.found.append(
                _Picture(attributes["src"] or "", alt, int(width) if width.isdigit() else None)
            )

    @classmethod
    def scan(cls, markup: str) -> list[_Picture]:
        finder = cls()
        # html.parser raises AssertionError on some "<![" sections; HTML5 reads "<!-[" alike.
        finder.feed(markup.replace("<![", "<!-["))
        finder.close()
        return finder.found


def _http_url(url: str, base: str) -> str | None:
    """`url` made absolute against `base`; None unless that is an http(s) URL."""
    url = url.strip()
    if not url:
        return None
    if url.startswith("//"):
        url = "https:" + url
    absolute = urljoin(base, url) if base else url
    try:
        parts = urlsplit(absolute)
    except ValueError:  # e.g. a malformed IPv6 host
        return None
    return absolute if parts.scheme in ("http", "https") and parts.hostname else None


def _byline(raw: str) -> str:
    """A display name: "jo@x.org (Jo Bloggs)" gives "Jo Bloggs", a bare address nothing."""
    name = html_to_text(raw)
    wrapped = re.fullmatch(r"\S+@\S+\s*\((.+)\)", name)
    if wrapped:
        return wrapped.group(1).strip()
    return "" if re.fullmatch(r"\S+@\S+", name) else name


# Lower-case words that are part of names ("Ana de la Torre", "Vincent van Gogh").
_NAME_PARTICLE = re.compile(r"al|bin|d[aiou]|das|dos|de[lr]?|della|el|l[ae]s?|los|v[ao]n|y|zu")


def _names(byline: str) -> list[str]:
    """One field that lists several people ("Francesco Manetto,Javier Lafuente") split up.

    Only where every part is clearly a name of two to five words, each capitalised or a
    particle: "Lafuente, Javier" (last, first) and "Jo Bloggs, 1990" stay as written.
    """
    parts = [part.strip() for part in re.split(r"[,;]", byline)]
    if len(parts) > 1 and all(_is_full_name(part) for part in parts):
        return parts
    return [byline]


def _is_full_name(text: str) -> bool:
    words = text.split()
    return 2 <= len(words) <= 5 and all(
        _NAME_PARTICLE.fullmatch(word) or (word[0].isupper() and not any(c.isdigit() for c in word))
        for word in words
    )


def _distinct(names: Iterable[str]) -> tuple[str, ...]:
    """Non-empty names, each once whatever its case, as first spelled."""
    seen: dict[str, str] = {}
    for name in names:
        if name and name.casefold() not in seen:
            seen[name.casefold()] = name
    return tuple(seen.values())


def _time(raw: object, timezone: tzinfo) -> datetime | None:
    """An ISO 8601 or RFC 822 date as an aware datetime; without a zone it is the newsletter's."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if text.endswith("-0000"):  # RFC 5322: UTC, the writer's own zone unknown
            return moment.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone)


# --- XML feeds (feedparser) -------------------------------------------------------------


# C0 controls other than tab, newline and carriage return, raw or as character references.
_FORBIDDEN_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_FORBIDDEN_REFERENCES = re.compile(
    rb"&#(?:0*(?:[0-8]|1[124-9]|2[0-9]|3[01])|[xX]0*(?:[0-8bBcCeEfF]|1[0-9a-fA-F]));"
)


def _without_forbidden_characters(data: bytes) -> bytes:
    """The document without the characters XML 1.0 forbids (a stray BEL, say).

    One of them makes the whole document malformed: the strict parser stops there and the
    lenient one warns on every collect. UTF-16 and UTF-32 are left alone: their bytes for
    ordinary characters include these values.
    """
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or b"\x00" in data[:4]:
        return data
    return _FORBIDDEN_REFERENCES.sub(b"", _FORBIDDEN_BYTES.sub(b"", data))


def _refuse_entities(data: bytes) -> None:
    """Refuse entity declarations (bombs, external entities) before feedparser sees them."""
    try:
        defusedxml.sax.parseString(
            data, ContentHandler(), forbid_dtd=False, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as err:
        raise SourceError(
            f"refused: the XML declares entities ({type(err).__name__}), which can expand "
            "without bound or read other files"
        ) from err
    except SAXException:
        pass  # malformed, but feedparser's lenient parser may still read it


def _channel_link(parsed: Any) -> str:
    feed = parsed.get("feed", {})
    links = [feed.get("link", ""), *(link.get("href", "") for link in feed.get("links", []))]
    return next((link for link in links if _http_url(link, "")), "")


def _xml_problem(parsed: Any) -> str:
    """The XML error that made feedparser fall back to its lenient parser, or ""."""
    error = parsed.get("bozo_exception")
    if isinstance(error, SAXParseException):
        return f"malformed XML at line {error.getLineNumber()}: {error.getMessage()}"
    # The "nobody cares" ones are about encodings and media types, not the XML itself.
    if error is None or isinstance(error, feedparser.ThingsNobodyCaresAboutButMe):
        return ""
    return f"malformed XML: {error}"


def _feed_entry(entry: Any, own: _ItemFacts | None, timezone: ZoneInfo) -> _Entry:
    """An entry from feedparser's reading, with the item's own links, categories and media.

    feedparser gathers every link inside an item, the related stories some publishers nest in
    it too (its `link` is the last of them), and files media:keywords as categories: `own`,
    read from the item's own child elements, says what the item says about itself. Without
    it (a document only the lenient parser reads), feedparser's first alternate link is used.
    """
    content = [part.get("value", "") for part in entry.get("content", [])]
    summary = entry.get("summary", "")
    links = entry.get("links", [])
    enclosures = tuple(
        _Picture(link.get("href", ""))
        for link in links
        if link.get("rel") == "enclosure" and (link.get("type") or "").startswith("image/")
    )
    if own is None:
        keywords = {k.strip() for k in entry.get("media_keywords", "").split(",")}
        own = _ItemFacts(
            links=(
                entry.get("feedburner_origlink", ""),
                *(link.get("href", "") for link in links if link.get("rel") == "alternate"),
                entry.get("link", ""),
            ),
            categories=tuple(
                tag.get("label") or tag.get("term") or ""
                for tag in entry.get("tags", [])
                if tag.get("label") or tag.get("term") not in keywords
            ),
            pictures=(
                *_widest(
                    _Picture(m.get("url") or "", width=_pixels(m.get("width")))
                    for m in entry.get("media_content", [])
                    if _is_image(m)
                ),
                *_widest(
                    _Picture(m.get("url") or "", width=_pixels(m.get("width")))
                    for m in entry.get("media_thumbnail", [])
                ),
            ),
        )
    return _Entry(
        id=entry.get("id", ""),
        links=own.links,
        title=entry.get("title", ""),
        summary=summary or next(iter(content), ""),
        published=_feed_time(entry, "published", timezone)
        or _feed_time(entry, "updated", timezone),
        bylines=tuple(a.get("name", "") for a in entry.get("authors", []))
        or (entry.get("author", ""),),
        categories=own.categories,
        pictures=(*own.pictures, *enclosures),
        bodies=(*content, summary),
    )


def _feed_time(entry: Any, key: str, timezone: ZoneInfo) -> datetime | None:
    # Our own reading first: feedparser's *_parsed is UTC even when the feed gave no zone.
    # dict.get: FeedParserDict.get("updated") would answer (and warn) with "published".
    moment = _time(dict.get(entry, key), timezone)
    parsed = dict.get(entry, f"{key}_parsed")
    if moment is None and parsed:  # one of feedparser's rarer formats; it converted to UTC
        moment = datetime.fromtimestamp(calendar.timegm(parsed), UTC)
    return moment


def _is_image(media: Mapping[str, str]) -> bool:
    """A media:content that is a picture; one that says neither medium nor type may be."""
    if media.get("medium"):
        return media["medium"] == "image"
    return (media.get("type") or "image/").startswith("image/")


def _widest(pictures: Iterable[_Picture]) -> list[_Picture]:
    """Pictures widest first; an empty or missing width sorts last, in document order."""
    return sorted(pictures, key=lambda picture: picture.width or 0, reverse=True)


def _pixels(raw: object) -> int | None:
    """A declared width or height (a number, or digits), else unknown: HuffPost writes width=""."""
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw)
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0 else None


_RSS = ("", "http://purl.org/rss/1.0/", "http://my.netscape.com/rdf/simple/0.9/")
_ATOM = ("http://www.w3.org/2005/Atom", "http://purl.org/atom/ns#")
_MEDIA = ("http://search.yahoo.com/mrss/", "http://search.yahoo.com/mrss")
_DC = "http://purl.org/dc/elements/1.1/"
_FEEDBURNER = "http://rssnamespace.org/feedburner/ext/1.0"
_XML = "http://www.w3.org/XML/1998/namespace"
_MEDIA_TEXTS = ("description", "title", "text")  # what describes a picture, best first


@dataclass(frozen=True, slots=True)
class _ItemFacts:
    """What an item says about itself, in its own child elements."""

    links: tuple[str, ...]  # feedburner:origLink, its own link, a permalink guid: best first
    categories: tuple[str, ...]  # <category>, dc:subject, Atom categories (not media:keywords)
    pictures: tuple[_Picture, ...]  # media:content and media:thumbnail, widest first


@dataclass(slots=True)
class _Media:
    """A media:content or media:thumbnail while it is read; `texts` are its own descriptions."""

    url: str
    width: int | None
    height: int | None
    image: bool
    texts: dict[str, str]  # media:title / media:text / media:description, as markup
    group: dict[str, str] | None  # the descriptions of the media:group around it


@dataclass(slots=True)
class _OpenItem:
    depth: int  # of the item element itself
    atom: bool  # an Atom entry, not an RSS item: its own links are atom:link elements
    own_link: str = ""
    orig_link: str = ""
    permalink: str = ""
    categories: list[str] = field(default_factory=list)
    media: list[_Media] = field(default_factory=list)
    group: dict[str, str] | None = None  # the open media:group's descriptions

    def facts(self) -> _ItemFacts:
        pictures = (
            _Picture(
                m.url,
                next((m.texts[k] for k in _MEDIA_TEXTS if m.texts.get(k)), "")
                or next((m.group[k] for k in _MEDIA_TEXTS if m.group and m.group.get(k)), ""),
                m.width,
                m.height,
            )
            for m in self.media
            if m.image
        )
        return _ItemFacts(
            links=(self.orig_link, self.own_link, self.permalink),
            categories=tuple(self.categories),
            pictures=tuple(_widest(pictures)),
        )


class _ItemReader(ContentHandler):
    """Reads each item's own child elements (namespace-aware SAX), in document order."""

    def __init__(self, utf8: bool) -> None:
        super().__init__()
        self.utf8 = utf8  # the document is UTF-8: repair text that was encoded twice
        self.items: list[_ItemFacts] = []
        self._open: list[tuple[str, str]] = []  # (namespace, name) of each open element
        self._bases: list[str] = [""]  # xml:base in force, as far as it resolves
        self._text: list[str] = []
        self._item: _OpenItem | None = None
        self._media: _Media | None = None
        self._html = False  # the open element says type="html"
        self._permalink = True  # the open element is no guid with isPermaLink="false"

    @classmethod
    def read(cls, data: bytes, encoding: str, expected: int) -> list[_ItemFacts] | None:
        """One `_ItemFacts` per item, or None when the document is not well-formed XML.

        feedparser's reading of the encoding is tried when the document's own fails (a
        Latin-1 feed without a declaration, say). None too when the count differs from
        feedparser's, so the two readings are never paired wrongly.
        """
        # Blank lines before the declaration only upset the strict parser.
        data = data.removeprefix(codecs.BOM_UTF8).lstrip()
        for forced in ("", encoding):
            reader = cls(utf8=(forced or encoding).lower().replace("_", "-") == "utf-8")
            source = InputSource()
            source.setByteStream(io.BytesIO(data))
            if forced:
                source.setEncoding(forced)
            try:
                parser = defusedxml.sax.make_parser()
                parser.setFeature(feature_namespaces, True)
                parser.setContentHandler(reader)
                parser.parse(source)
            except (SAXException, DefusedXmlException, LookupError, ValueError):
                continue
            return reader.items if len(reader.items) == expected else None
        return None

    def startElementNS(self, name: tuple[str | None, str], qname: str | None, attrs: Any) -> None:
        space, local = name[0] or "", name[1]
        base = attrs.get((_XML, "base"))
        self._bases.append(urljoin(self._bases[-1], base) if base else self._bases[-1])
        parent = self._open[-1] if self._open else ("", "")
        self._open.append((space, local))
        self._text = []
        # Read when the element ends; the elements they belong to hold only text.
        self._html = (attrs.get((None, "type")) or "").strip() == "html"
        self._permalink = (attrs.get((None, "isPermaLink")) or "").strip().lower() != "false"
        item = self._item
        if item is None:
            if (local == "item" and space in _RSS) or (local == "entry" and space in _ATOM):
                self._item = _OpenItem(len(self._open), atom=local == "entry")
            return
        own = len(self._open) == item.depth + 1
        if own and item.atom and space in _ATOM and local == "link":
            href = (attrs.get((None, "href")) or "").strip()
            rel = (attrs.get((None, "rel")) or "alternate").strip()
            if rel == "alternate" and href and not item.own_link:
                item.own_link = urljoin(self._bases[-1], href)
        elif own and space in _ATOM and local == "category":
            label = attrs.get((None, "label")) or attrs.get((None, "term")) or ""
            item.categories.append(html.escape(self._repaired(label)))
        elif own and space in _MEDIA and local == "group":
            item.group = {}
        elif space in _MEDIA and local in ("content", "thumbnail"):
            in_group = parent[0] in _MEDIA and parent[1] == "group"
            if not (own or in_group or (parent[0] in _MEDIA and parent[1] == "content")):
                return  # a picture of something else the item mentions
            medium, kind = attrs.get((None, "medium")) or "", attrs.get((None, "type")) or ""
            is_image = local == "thumbnail" or _is_image({"medium": medium, "type": kind})
            url = (attrs.get((None, "url")) or "").strip()
            self._media = _Media(
                urljoin(self._bases[-1], url) if url else "",
                _pixels(attrs.get((None, "width"))),
                _pixels(attrs.get((None, "height"))),
                is_image,
                {},
                item.group if in_group else None,
            )
            item.media.append(self._media)

    def endElementNS(self, name: tuple[str | None, str], qname: str | None) -> None:
        space, local = name[0] or "", name[1]
        text = self._repaired("".join(self._text).strip())
        self._text = []
        item, depth = self._item, len(self._open)
        parent = self._open[-2] if depth > 1 else ("", "")
        self._open.pop()
        base = self._bases.pop()
        if item is None:
            return
        if depth == item.depth:
            self.items.append(item.facts())
            self._item = None
            return
        own = depth == item.depth + 1
        if space in _MEDIA and local in _MEDIA_TEXTS:
            holder = (
                self._media.texts
                if self._media is not None and parent[0] in _MEDIA and parent[1] == "content"
                else item.group
                if parent[0] in _MEDIA and parent[1] == "group"
                else None
            )
            if holder is not None and text:
                holder.setdefault(local, text if self._html else html.escape(text))
        elif space in _MEDIA and local in ("content", "thumbnail"):
            self._media = None
        elif space in _MEDIA and local == "group":
            item.group = None
        elif space in _RSS and local == "category" and parent == ("", "categories"):
            item.categories.append(html.escape(text))  # Macworld wraps them in <categories>
        elif not own or not text:
            return
        elif space in _RSS and local == "link" and not item.own_link:
            item.own_link = urljoin(base, text)
        elif space == _FEEDBURNER and local == "origLink":
            item.orig_link = text
        elif space in _RSS and local == "guid" and self._permalink:
            item.permalink = urljoin(base, text)
        elif (space in _RSS and local == "category") or (space == _DC and local == "subject"):
            item.categories.append(html.escape(text))

    def characters(self, content: str) -> None:
        self._text.append(content)

    def _repaired(self, text: str) -> str:
        """ "EspaÃ±ol" as "Español": UTF-8 taken for Latin-1 and encoded again (feedparser too)."""
        if not self.utf8:
            return text
        try:
            return text.encode("iso-8859-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return text


# --- JSON Feed and WordPress (json) -----------------------------------------------------


def _json_kind(data: bytes) -> str:
    """ "object" or "list" when the bytes look like JSON, else "" (so: XML, or nothing)."""
    start = data.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
    return {b"{": "object", b"[": "list"}.get(start, "")


def _json(data: bytes) -> Any:
    try:
        return json.loads(data.removeprefix(codecs.BOM_UTF8))
    except (ValueError, UnicodeDecodeError) as err:
        raise SourceError(f"malformed JSON: {err}") from err


def _read_json_feed(
    feed: Any, context: _Context, excerpt_length: int
) -> tuple[list[Article], list[str]]:
    version = feed.get("version") if isinstance(feed, dict) else None
    if not isinstance(version, str) or not version.startswith(JSON_FEED_VERSIONS):
        raise _NotAFeed('not a feed: JSON without a JSON Feed "version"')
    items = feed.get("items")
    if not isinstance(items, list):
        raise SourceError('JSON Feed without an "items" list')
    if not context.base:
        homes = (_string(feed.get("home_page_url")), _string(feed.get("feed_url")))
        context = replace(context, base=next((u for u in homes if _http_url(u, "")), ""))
    # Items without authors have the feed's (JSON Feed 1.1, "authors").
    feed_authors = _json_authors(feed)
    entries = (
        _json_feed_entry(item, feed_authors, context.timezone)
        for item in items
        if isinstance(item, dict)
    )
    return _articles(entries, context, excerpt_length)


def _json_feed_entry(item: Mapping[str, Any], authors: tuple[str, ...], zone: ZoneInfo) -> _Entry:
    content = _string(item.get("content_html")) or html.escape(_string(item.get("content_text")))
    summary = _string(item.get("summary"))
    tags = item.get("tags")
    return _Entry(
        id=_string(item.get("id")),
        links=(_string(item.get("url")), _string(item.get("external_url"))),
        title=_string(item.get("title")),
        summary=summary or content,
        published=_time(item.get("date_published"), zone) or _time(item.get("date_modified"), zone),
        bylines=_json_authors(item) or authors,
        categories=tuple(_string(tag) for tag in tags) if isinstance(tags, list) else (),
        pictures=(
            _Picture(_string(item.get("image"))),
            _Picture(_string(item.get("banner_image"))),
        ),
        bodies=(content, summary),
    )


def _json_authors(holder: Mapping[str, Any]) -> tuple[str, ...]:
    """Names from JSON Feed 1.1 "authors", or 1.0's single "author"."""
    authors = holder.get("authors")
    if not isinstance(authors, list):
        authors = [holder.get("author")]
    return tuple(_string(a.get("name")) for a in authors if isinstance(a, dict))


def _wordpress_entry(post: Mapping[str, Any], timezone: ZoneInfo) -> _Entry:
    embedded = post.get("_embedded")
    embedded = embedded if isinstance(embedded, dict) else {}
    content = _rendered(post, "content")
    link = _string(post.get("link"))
    media = _first(embedded.get("wp:featuredmedia"))
    return _Entry(
        id=_rendered(post, "guid"),
        links=(link,),
        title=_rendered(post, "title"),
        summary=_rendered(post, "excerpt") or content,
        # date_gmt is UTC written without a zone; date is the site's clock, its zone unknown.
        published=_time(post.get("date_gmt"), UTC) or _time(post.get("date"), timezone),
        bylines=_wordpress_authors(embedded),
        categories=tuple(
            _string(term.get("name"))
            for group in _items(embedded.get("wp:term"))
            for term in _dicts(group)
            if term.get("taxonomy") in ("category", "post_tag")
        ),
        pictures=(_wordpress_picture(media),),
        bodies=(content,),
        base=link if _http_url(link, "") else "",
    )


def _wordpress_authors(embedded: Mapping[str, Any]) -> tuple[str, ...]:
    """Every author, in order: co-author plugins' `author` terms, else the post's own author.

    Co-Authors Plus names a term after the user's nicename ("amara-okafor", slug
    "cap-amara-okafor"); the embedded user of that nicename gives the display name, and a
    guest author without one gets the nicename's words. PublishPress Authors names terms
    with the display name itself.
    """
    users = {
        _string(user.get("slug")): _string(user.get("name"))
        for user in _dicts(embedded.get("author"))
    }
    names = []
    for group in _items(embedded.get("wp:term")):
        for term in _dicts(group):
            if term.get("taxonomy") != "author":
                continue
            name, slug = _string(term.get("name")), _string(term.get("slug"))
            nicename = slug.removeprefix("cap-")
            if slug.startswith("cap-") and name == nicename:
                name = users.get(nicename) or " ".join(w.capitalize() for w in name.split("-"))
            names.append(name)
    return tuple(names) or tuple(name for name in users.values())


def _wordpress_picture(media: Mapping[str, Any]) -> _Picture:
    """Featured media with every size WordPress made of it (thumbnail, medium, large, ...)."""
    details = media.get("media_details")
    details = details if isinstance(details, dict) else {}
    url = _string(media.get("source_url"))
    width, height = _pixels(details.get("width")), _pixels(details.get("height"))
    offered = details.get("sizes")
    sizes = [
        ImageSize(_string(size.get("source_url")), w, _pixels(size.get("height")))
        for size in (offered.values() if isinstance(offered, dict) else ())
        if isinstance(size, dict) and (w := _pixels(size.get("width")))
    ]
    if width:
        sizes.append(ImageSize(url, width, height))
    # alt_text is plain text; the caption is HTML (a <p>, maybe a link).
    alt = html.escape(_string(media.get("alt_text")).strip()) or _rendered(media, "caption")
    return _Picture(url, alt, width, height, tuple(sizes))


def _rendered(post: Mapping[str, Any], key: str) -> str:
    """WordPress's {"rendered": "..."} fields."""
    field = post.get(key)
    return _string(field.get("rendered")) if isinstance(field, dict) else ""


def _string(value: object) -> str:
    """Text from untyped JSON: ids may be numbers; anything else that is not text is ""."""
    if isinstance(value, bool):
        return ""
    return value if isinstance(value, str) else str(value) if isinstance(value, int) else ""


def _items(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: object) -> Iterator[Mapping[str, Any]]:
    return (item for item in _items(value) if isinstance(item, dict))


def _first(value: object) -> Mapping[str, Any]:
    return next(_dicts(value), {})
