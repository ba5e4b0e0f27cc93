"""The domain: plain frozen dataclasses that every step shares and none mutates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


@dataclass(frozen=True, slots=True)
class Image:
    """A picture for an article card; only http(s) URLs ever get this far."""

    url: str
    alt: str = ""


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
