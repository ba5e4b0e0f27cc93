"""The domain: plain frozen dataclasses that every step shares and none mutates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


@dataclass(frozen=True, slots=True)
class ImageSize:
    """One size a site offers of a picture (WordPress `media_details.sizes`, media:content)."""

    url: str
    width: int  # pixels, as the site declares them
    height: int | None = None


@dataclass(frozen=True, slots=True)
class Image:
    """A picture for an article card; only http(s) URLs ever get this far."""

    url: str  # the largest or only picture known
    alt: str = ""
    sizes: tuple[ImageSize, ...] = ()  # what the site offers, narrowest first; may be empty

    def url_for(self, slot_width: int) -> str:
        """The smallest offered size at least twice the slot (sharp on phones), else the largest.

        The slot is only known when rendering: a card shows the picture at 120 px, the top
        story at full width, and linking a 6,000 px original to either costs readers megabytes.
        """
        if not self.sizes:
            return self.url
        wide_enough = [size for size in self.sizes if size.width >= 2 * slot_width]
        if wide_enough:
            return min(wide_enough, key=lambda size: size.width).url
        return max(self.sizes, key=lambda size: size.width).url


@dataclass(frozen=True, slots=True)
class Article:
    """One archived story; immutable, so every step can share it."""

    id: str  # guid, else canonical URL
    url: str  # absolute http(s) URL
    title: str  # plain text
    published: datetime  # aware; the first-seen time when the feed gives no date
    source: str  # name of the configured source it came from
    excerpt: str = ""  # plain text, already cut to length
    bylines: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    image: Image | None = None
    # True when the feed gave no date and `published` is when we first saw the article.
    date_estimated: bool = False

    def __post_init__(self) -> None:
        _require_aware("Article.published", self.published)


@dataclass(frozen=True, slots=True)
class Period:
    """The half-open interval [start, end) an issue covers."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        _require_aware("Period.start", self.start)
        _require_aware("Period.end", self.end)
        if self.end <= self.start:
            raise ValueError(f"period ends ({self.end}) before it starts ({self.start})")

    def __contains__(self, moment: object) -> bool:
        return isinstance(moment, datetime) and self.start <= moment < self.end


@dataclass(frozen=True, slots=True)
class Section:
    """A section of one issue: its articles, newest first."""

    name: str
    articles: tuple[Article, ...]


@dataclass(frozen=True, slots=True)
class Issue:
    """What one digest contains; the output of the select step."""

    id: str
    period: Period
    featured: Article | None
    sections: tuple[Section, ...]

    @property
    def articles(self) -> tuple[Article, ...]:
        """Every article in the issue, the featured one first."""
        lead = (self.featured,) if self.featured else ()
        return lead + tuple(a for section in self.sections for a in section.articles)


@dataclass(frozen=True, slots=True)
class FetchState:
    """HTTP validators from a source's last fetch, sent back as a conditional request."""

    etag: str | None = None
    last_modified: str | None = None


class SubscriberStatus(StrEnum):
    """Where a subscriber stands; only `subscribed` rows receive mail."""

    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"  # a permanent delivery failure
    COMPLAINED = "complained"  # marked a message as spam


def email_key(address: str) -> str:
    """How addresses compare: case-insensitively, stray spaces ignored.

    `lower()`, not `casefold()`: casefolding turns "ß" into "ss", which would make two different
    internationalised addresses one.
    """
    return address.strip().lower()


def address_as_written(address: str) -> str:
    """The address with its domain in Unicode, as the list holds it: a relay is given and
    answers with the ASCII form (`xn--` labels) of a domain such as exämple.org."""
    local, at, domain = address.rpartition("@")
    if not at or "xn--" not in domain.lower():
        return address
    try:
        return f"{local}@{domain.encode('ascii').decode('idna')}"
    except UnicodeError:  # not a valid A-label: leave the address as it came
        return address


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One reader on the list, as a row of the subscriber file."""

    email: str  # as written, without surrounding spaces; compare `key`
    first_name: str = ""
    last_name: str = ""
    status: SubscriberStatus = SubscriberStatus.SUBSCRIBED
    sections: tuple[str, ...] = ()  # section names; empty: every section
    language: str = ""  # empty: the newsletter's language
    subscribed_at: datetime | None = None  # aware
    unsubscribed_at: datetime | None = None  # aware; when they stopped receiving mail
    source: str = ""  # how they joined: "signup-form", "cli", "import:mailchimp", ...
    # Columns the project does not know, (header, value) in the file's order, kept on rewrite.
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.subscribed_at is not None:
            _require_aware("Subscriber.subscribed_at", self.subscribed_at)
        if self.unsubscribed_at is not None:
            _require_aware("Subscriber.unsubscribed_at", self.unsubscribed_at)

    @property
    def key(self) -> str:
        """The address as compared: two rows with the same key are the same reader."""
        return email_key(self.email)

    @property
    def receives_mail(self) -> bool:
        return self.status is SubscriberStatus.SUBSCRIBED
