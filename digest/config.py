"""Load digest.toml and the environment once into a typed, immutable Config.

Every key is checked: unknown keys, wrong types and missing required keys are one ConfigError that
names the file, the line, the key and what was expected. docs/configuration.md documents each key.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import jinja2.meta
import jinja2.nodes
from babel import Locale, UnknownLocaleError
from dotenv import dotenv_values
from email_validator import EmailNotValidError, validate_email

from digest.errors import ConfigError

CONFIG_FILENAME = "digest.toml"
CONFIG_ENV_VAR = "DIGEST_CONFIG"
DEFAULT_ARCHIVE = ".digest/archive.sqlite3"
DEFAULT_SUBSCRIBERS = "subscribers.csv"

LOCALES = Path(__file__).resolve().parent / "locales"  # <language>.po, read at run time
SOURCE_LANGUAGE = "en"  # the templates' own strings; needs no catalog
# What a configured subject may use: the names render gives it (docs/configuration.md lists them).
SUBJECT_NAMES: Mapping[str, Mapping[str, object]] = {
    "newsletter": {"name": "", "address": "", "public_url": ""},
    "issue": {
        "id": "",
        "date": "",
        "period": "",
        "span": "",
        "article_count": 1,
        "featured_title": "",
        "web_url": "",
    },
}

SourceType = Literal["auto", "feed", "wordpress"]
SOURCE_TYPES: tuple[SourceType, ...] = ("auto", "feed", "wordpress")


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """One place articles come from: a feed or WordPress site, local path or http(s) URL."""

    name: str
    url: str  # an http(s) URL, or an absolute local path (resolved against the config file)
    type: SourceType = "auto"
    section: str | None = None  # pins every article of this source to that section

    @property
    def is_remote(self) -> bool:
        return self.url.startswith(("http://", "https://"))


@dataclass(frozen=True, slots=True)
class SectionConfig:
    """A section rule: which articles it claims and how many it shows."""

    name: str
    categories: frozenset[str] = frozenset()  # casefolded
    max_articles: int = 5
    catch_all: bool = False
    sources: frozenset[str] = frozenset()  # names of sources pinned to this section


@dataclass(frozen=True, slots=True)
class CollectSettings:
    """How the collect step fetches and trims what sources give."""

    timeout: float = 20.0  # seconds, per request
    max_bytes: int = 10_000_000  # a larger response is refused
    user_agent: str = "digest/0.1 (newsletter digest; feed reader)"
    excerpt_length: int = 280  # characters, ellipsis included
    wordpress_max_pages: int = 3  # pages of /wp-json/wp/v2/posts (100 posts each)


@dataclass(frozen=True, slots=True)
class SelectionSettings:
    """Defaults for choosing an issue's period and featured article."""

    days: int = 7  # default period length when no issue was sent yet
    featured_category: str | None = None
    issue_id_format: str = "%G-W%V"  # strftime of the period's last moment: ISO week


@dataclass(frozen=True, slots=True)
class EmailSettings:
    """How the email is rendered: the user's template folder, subject and editor's note."""

    templates: Path | None = None  # looked up before the packaged templates, partial by partial
    subject: str | None = None  # a Jinja template; None: the packaged one in the language
    note: Path | None = None  # the editor's note shown under the header (plain text)


@dataclass(frozen=True, slots=True)
class TrackingSettings:
    """UTM parameters added to article links; "{issue_id}" in a value becomes the issue id."""

    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None


@dataclass(frozen=True, slots=True)
class SendSettings:
    """Defaults for `digest send` and `digest run`: the pool, the pace and the retries."""

    concurrency: int = 4  # SMTP connections at once, over all the sending processes
    processes: int | None = None  # sending processes for a large list; None: one per 2 CPUs
    rate: float | None = None  # messages per second across the pool; None: as fast as allowed
    per_hour: int | None = None  # provider caps (SES, Google Workspace), counted within a run
    per_day: int | None = None
    max_attempts: int = 5  # tries per message for 4xx replies and dropped connections
    retry_delay: float = 1.0  # seconds before the first retry, doubling after each
    timeout: float = 60.0  # seconds per SMTP command
    mark_bounced: bool = True  # a permanent refusal marks the reader bounced in the CSV


Every = Literal["day", "week", "month"]
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    """When `digest run` sends, in the newsletter's time zone."""

    every: Every = "week"
    day: int = 5  # week: weekday, Monday = 0; month: day of the month, 1-28; day: unused
    time: time = time(8, 0)
    min_articles: int = 1  # fewer new articles than this: the run skips the period


@dataclass(frozen=True, slots=True)
class Newsletter:
    name: str
    timezone: ZoneInfo
    language: str
    sender: str  # the `from` key
    public_url: str
    address: str
    archive_url: str | None = None  # where `digest archive` pages are hosted: "view in browser"


@dataclass(frozen=True, slots=True)
class Config:
    """Everything a run needs, loaded once by the CLI and passed down."""

    path: Path  # the config file itself
    newsletter: Newsletter
    sources: tuple[SourceConfig, ...]
    sections: tuple[SectionConfig, ...]
    archive_path: Path
    subscribers_path: Path
    collect: CollectSettings = CollectSettings()
    selection: SelectionSettings = SelectionSettings()
    email: EmailSettings = EmailSettings()
    tracking: TrackingSettings = TrackingSettings()
    send: SendSettings = SendSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    env: Mapping[str, str] = field(default_factory=dict)  # os.environ over the .env file

    @property
    def root(self) -> Path:
        return self.path.parent


def find_config(explicit: Path | None, environ: Mapping[str, str]) -> Path:
    """--config PATH, else $DIGEST_CONFIG, else ./digest.toml."""
    if explicit is not None:
        path, how = explicit, "--config"
    elif environ.get(CONFIG_ENV_VAR):
        path, how = Path(environ[CONFIG_ENV_VAR]), f"${CONFIG_ENV_VAR}"
    else:
        path, how = Path(CONFIG_FILENAME), "the current folder"
    if not path.is_file():
        raise ConfigError(
            f"no config file at {path} (from {how})",
            hint="run `digest init` to create a project, or pass --config PATH",
        )
    return path.resolve()


def load_env(
    env_file: Path | None, config_path: Path, environ: Mapping[str, str]
) -> dict[str, str]:
    """The process environment over the .env file (beside the config unless --env-file)."""
    path = env_file if env_file is not None else config_path.parent / ".env"
    if env_file is not None and not path.is_file():
        raise ConfigError(f"no env file at {path}", where="--env-file")
    from_file = (
        {k: v for k, v in dotenv_values(path).items() if v is not None} if path.is_file() else {}
    )
    return {**from_file, **environ}


def load_config(
    explicit: Path | None = None,
    *,
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Find, read and validate the config; the one entry point the CLI calls."""
    environ = os.environ if environ is None else environ
    path = find_config(explicit, environ)
    try:
        text = path.read_text(encoding="utf-8-sig")  # Notepad starts UTF-8 with a BOM
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the config: {err}", where=str(path)) from err
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise _toml_error(err, path, text.splitlines()) from err
    env = load_env(env_file, path, environ)
    return parse_config(data, path=path, text=text, env=env)


def available_languages() -> frozenset[str]:
    """Languages the packaged strings come in: the source language and each catalog."""
    return frozenset({SOURCE_LANGUAGE, *(path.stem for path in LOCALES.glob("*.po"))})


def language_warning(config: Config) -> str | None:
    """What to tell the editor when the emails' own words cannot be in their language."""
    language = config.newsletter.language
    known = available_languages()
    if language.replace("_", "-") in known or re.split("[_-]", language)[0] in known:
        return None
    return (
        f"{config.path.name}: newsletter.language {language!r} has dates in the language but "
        f"no catalog, so the emails' own words are English (digest ships: "
        f"{', '.join(sorted(known))})"
    )


_TOML_PLACE = re.compile(r"(.*) \(at line (\d+), column (\d+)\)", re.DOTALL)


def _toml_error(err: tomllib.TOMLDecodeError, path: Path, lines: list[str]) -> ConfigError:
    """tomllib's complaint as ours: file:line, and for a table or key given twice, what to do."""
    place = _TOML_PLACE.fullmatch(str(err))
    if place is None:
        return ConfigError(f"not valid TOML: {err}", where=path.name)
    what, line = place[1], int(place[2])
    where = f"{path.name}:{line}"
    written = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    declared = re.fullmatch(r"Cannot declare \((.*)\) twice", what)
    if declared:
        name = ".".join(re.findall(r"'((?:[^'\\]|\\.)*)'", declared[1]))
        first = _line_of(lines, name)
        earlier = f" (first on line {first})" if first and first != line else ""
        return ConfigError(
            f"[{name}] is declared twice{earlier}",
            where=where,
            hint=f"write each table once: merge the keys into one [{name}]",
        )
    if what in ("Cannot overwrite a value", "Cannot mutate immutable namespace"):
        name = written.split("=")[0].strip() if not written.startswith("[") else written
        return ConfigError(
            f"{name} is given twice", where=where, hint="keep one: each key and table is set once"
        )
    return ConfigError(f"not valid TOML: {what} (column {place[3]})", where=where)


def parse_config(
    data: Mapping[str, Any], *, path: Path, text: str = "", env: Mapping[str, str] | None = None
) -> Config:
    """Validate an already-parsed TOML document; `text` lets errors point at a line."""
    reader = _Reader(path, text)
    reader.keys("", data, required={"newsletter", "sources", "sections"}, allowed=_TOP_KEYS)
    newsletter = _newsletter(reader, reader.table("newsletter", data["newsletter"]))
    sources = tuple(
        _source(reader, f"sources[{n}]", raw, path.parent)
        for n, raw in enumerate(reader.array_of_tables("sources", data["sources"]))
    )
    _unique(reader, "sources", [s.name for s in sources])
    raw_sections = reader.array_of_tables("sections", data["sections"])
    sections = _sections(reader, raw_sections, sources)
    collect = _collect(reader, reader.table("collect", data.get("collect", {})))
    selection = _selection(reader, reader.table("selection", data.get("selection", {})))
    subscribers = reader.table("subscribers", data.get("subscribers", {}))
    reader.keys("subscribers", subscribers, allowed={"file"})
    subscribers_file = reader.optional(
        "subscribers.file", subscribers, "file", str, "a file path", DEFAULT_SUBSCRIBERS
    )
    email = _email(reader, reader.table("email", data.get("email", {})), path.parent)
    tracking = _tracking(reader, reader.table("tracking", data.get("tracking", {})))
    send = _send(reader, reader.table("send", data.get("send", {})))
    schedule = _schedule(reader, reader.table("schedule", data.get("schedule", {})))
    archive = reader.table("archive", data.get("archive", {}))
    reader.keys("archive", archive, allowed={"path"})
    archive_path = reader.optional(
        "archive.path", archive, "path", str, "a file path", DEFAULT_ARCHIVE
    )
    return Config(
        path=path,
        newsletter=newsletter,
        sources=sources,
        sections=sections,
        collect=collect,
        selection=selection,
        archive_path=path.parent / archive_path,
        subscribers_path=path.parent / subscribers_file,
        email=email,
        tracking=tracking,
        send=send,
        schedule=schedule,
        env=dict(env or {}),
    )


_TOP_KEYS = {
    "newsletter",
    "sources",
    "sections",
    "collect",
    "selection",
    "archive",
    "subscribers",
    "email",
    "tracking",
    "send",
    "schedule",
}
T = TypeVar("T")


class _Reader:
    """Type-checks values and words errors with the file, the key's line and the fix."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, text.splitlines()

    def error(self, key: str, message: str, hint: str = "") -> ConfigError:
        line = _line_of(self.lines, key)
        where = f"{self.path.name}:{line}" if line else self.path.name
        return ConfigError(f"{key}: {message}", where=where, hint=hint)

    def keys(
        self,
        prefix: str,
        table: Mapping[str, Any],
        *,
        allowed: set[str],
        required: Collection[str] = (),
    ) -> None:
        dotted = (lambda k: f"{prefix}.{k}") if prefix else (lambda k: k)
        for key in table:
            if key not in allowed:
                raise self.error(
                    dotted(key),
                    "unknown key",
                    hint=f"known keys: {', '.join(sorted(allowed))} (docs/configuration.md)",
                )
        for key in sorted(set(required) - table.keys()):
            raise self.error(dotted(key), "missing, and it is required")

    def table(self, key: str, value: Any) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table [{key}], got {_kind(value)}")
        return value

    def array_of_tables(self, key: str, value: Any) -> list[Mapping[str, Any]]:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, f"expected [[{key}]] tables, got {_kind(value)}")
        if not value:
            raise self.error(key, f"at least one [[{key}]] is required")
        return value

    def typed(
        self, dotted: str, table: Mapping[str, Any], key: str, kind: type[T], expected: str
    ) -> T:
        value = table.get(key)
        # bool is an int in Python; a true/false where a number belongs is still a mistake.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self.error(dotted, f"expected {expected}, got {_kind(value)}")
        return value

    def optional(
        self,
        dotted: str,
        table: Mapping[str, Any],
        key: str,
        kind: type[T],
        expected: str,
        default: T,
    ) -> T:
        return self.typed(dotted, table, key, kind, expected) if key in table else default

    def text(self, dotted: str, table: Mapping[str, Any], key: str, what: str = "a string") -> str:
        value = self.typed(dotted, table, key, str, what).strip()
        if not value:
            raise self.error(dotted, f"expected {what}, got an empty string")
        return value

    def checked(self, dotted: str, value: T, ok: Callable[[T], bool], expected: str) -> T:
        if not ok(value):
            raise self.error(dotted, f"expected {expected}, got {value!r}")
        return value


def _newsletter(r: _Reader, raw: Mapping[str, Any]) -> Newsletter:
    keys = {"name", "timezone", "language", "from", "public_url", "address"}
    r.keys("newsletter", raw, allowed=keys | {"archive_url"}, required=keys)
    zone_name = r.text("newsletter.timezone", raw, "timezone", "an IANA time zone")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise r.error(
            "newsletter.timezone",
            f"unknown time zone {zone_name!r}",
            hint='use an IANA name such as "America/New_York" or "UTC"',
        ) from err
    sender = _sender(r, r.text("newsletter.from", raw, "from", 'an address like "Name <a@b.org>"'))
    public_url = r.text("newsletter.public_url", raw, "public_url", "an http(s) URL")
    r.checked("newsletter.public_url", public_url, _is_http_url, "an http(s) URL")
    archive_url = None
    if "archive_url" in raw:
        archive_url = r.text("newsletter.archive_url", raw, "archive_url", "an http(s) URL")
        r.checked("newsletter.archive_url", archive_url, _is_http_url, "an http(s) URL")
    language = r.text("newsletter.language", raw, "language", 'a language code such as "en"')
    r.checked("newsletter.language", language, _is_language, 'a code such as "en" or "es"')
    try:
        Locale.parse(language.replace("-", "_"))
    except (UnknownLocaleError, ValueError) as err:
        raise r.error(
            "newsletter.language",
            f"no language has the code {language!r}",
            hint=f"digest ships strings in {', '.join(sorted(available_languages()))}; "
            'other codes such as "fr" or "pt-BR" get local dates and English words',
        ) from err
    return Newsletter(
        name=r.text("newsletter.name", raw, "name"),
        timezone=zone,
        language=language,
        sender=sender,
        public_url=public_url.rstrip("/"),
        address=r.text("newsletter.address", raw, "address", "the publication's postal address"),
        archive_url=None if archive_url is None else archive_url.rstrip("/"),
    )


def _source(r: _Reader, key: str, raw: Mapping[str, Any], root: Path) -> SourceConfig:
    r.keys(key, raw, allowed={"name", "url", "type", "section"}, required={"name", "url"})
    url = r.text(f"{key}.url", raw, "url", "a local path or an http(s) URL")
    if "://" in url and not _is_http_url(url):
        raise r.error(f"{key}.url", f"expected a local path or an http(s) URL, got {url!r}")
    source_type = r.optional(f"{key}.type", raw, "type", str, "a string", "auto")
    r.checked(f"{key}.type", source_type, SOURCE_TYPES.__contains__, "auto, feed or wordpress")
    section = raw.get("section")
    if section is not None:
        section = r.text(f"{key}.section", raw, "section", "a section name")
    return SourceConfig(
        name=r.text(f"{key}.name", raw, "name"),
        url=url if _is_http_url(url) else str((root / url).resolve()),
        type=cast(SourceType, source_type),
        section=section,
    )


def _sections(
    r: _Reader, raws: list[Mapping[str, Any]], sources: tuple[SourceConfig, ...]
) -> tuple[SectionConfig, ...]:
    sections = []
    for n, raw in enumerate(raws):
        key = f"sections[{n}]"
        r.keys(
            key, raw, allowed={"name", "categories", "max_articles", "catch_all"}, required={"name"}
        )
        name = r.text(f"{key}.name", raw, "name")
        categories = r.optional(f"{key}.categories", raw, "categories", list, "a list of names", [])
        if not all(isinstance(c, str) and c.strip() for c in categories):
            raise r.error(f"{key}.categories", "expected a list of non-empty strings")
        cap = r.optional(f"{key}.max_articles", raw, "max_articles", int, "a whole number", 5)
        r.checked(f"{key}.max_articles", cap, lambda n: n >= 1, "a whole number of at least 1")
        sections.append(
            SectionConfig(
                name=name,
                categories=frozenset(c.strip().casefold() for c in categories),
                max_articles=cap,
                catch_all=r.optional(
                    f"{key}.catch_all", raw, "catch_all", bool, "true or false", False
                ),
                sources=frozenset(s.name for s in sources if s.section == name),
            )
        )
    _unique(r, "sections", [s.name for s in sections])
    if sum(s.catch_all for s in sections) > 1:
        raise r.error("sections", "more than one section has catch_all = true", hint="keep one")
    names = {s.name for s in sections}
    for n, source in enumerate(sources):
        if source.section is not None and source.section not in names:
            raise r.error(
                f"sources[{n}].section",
                f"no section is named {source.section!r}",
                hint=f"use one of: {', '.join(sorted(names))}",
            )
    return tuple(sections)


def _collect(r: _Reader, raw: Mapping[str, Any]) -> CollectSettings:
    d = CollectSettings()
    r.keys(
        "collect",
        raw,
        allowed={"timeout", "max_bytes", "user_agent", "excerpt_length", "wordpress_max_pages"},
    )
    timeout = r.optional("collect.timeout", raw, "timeout", (int, float), "seconds", d.timeout)  # type: ignore[arg-type]
    return CollectSettings(
        timeout=r.checked(
            "collect.timeout", float(timeout), lambda t: 0 < t < math.inf, "a positive number"
        ),
        max_bytes=r.checked(
            "collect.max_bytes",
            r.optional("collect.max_bytes", raw, "max_bytes", int, "a whole number", d.max_bytes),
            lambda n: n >= 1024,
            "at least 1024 bytes",
        ),
        user_agent=r.optional(
            "collect.user_agent", raw, "user_agent", str, "a string", d.user_agent
        ),
        excerpt_length=r.checked(
            "collect.excerpt_length",
            r.optional(
                "collect.excerpt_length",
                raw,
                "excerpt_length",
                int,
                "a whole number",
                d.excerpt_length,
            ),
            lambda n: n >= 20,
            "at least 20 characters",
        ),
        wordpress_max_pages=r.checked(
            "collect.wordpress_max_pages",
            r.optional(
                "collect.wordpress_max_pages",
                raw,
                "wordpress_max_pages",
                int,
                "a whole number",
                d.wordpress_max_pages,
            ),
            lambda n: n >= 1,
            "at least 1 page",
        ),
    )


def _selection(r: _Reader, raw: Mapping[str, Any]) -> SelectionSettings:
    d = SelectionSettings()
    r.keys("selection", raw, allowed={"days", "featured_category", "issue_id_format"})
    days = r.optional("selection.days", raw, "days", int, "a whole number of days", d.days)
    featured = raw.get("featured_category")
    if featured is not None:
        featured = r.text(
            "selection.featured_category", raw, "featured_category", "a category name"
        )
    return SelectionSettings(
        days=r.checked("selection.days", days, lambda n: n >= 1, "at least 1 day"),
        featured_category=featured,
        issue_id_format=r.text(
            "selection.issue_id_format", raw, "issue_id_format", "a strftime format"
        )
        if "issue_id_format" in raw
        else d.issue_id_format,
    )


def _email(r: _Reader, raw: Mapping[str, Any], root: Path) -> EmailSettings:
    r.keys("email", raw, allowed={"templates", "subject", "note"})

    def path(key: str) -> Path | None:
        return root / r.text(f"email.{key}", raw, key, "a path") if key in raw else None

    templates, note = path("templates"), path("note")
    if templates is not None and not templates.is_dir():
        raise r.error("email.templates", f"no folder at {templates}")
    if note is not None and not note.is_file():
        raise r.error("email.note", f"no file at {note}")
    subject = r.text("email.subject", raw, "subject", "a template") if "subject" in raw else None
    if subject is not None:
        _check_subject(r, subject)
    return EmailSettings(templates=templates, subject=subject, note=note)


def _check_subject(r: _Reader, subject: str) -> None:
    """Render the subject against the names it will get, so a typo fails now, not at a send."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, extensions=["jinja2.ext.i18n"])
    env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
    env.filters["wrap"] = lambda text, *args, **kwargs: str(text)  # render's own filter
    known = ", ".join(f"{group}.{name}" for group, names in SUBJECT_NAMES.items() for name in names)
    try:
        tree = env.parse(subject)
        unknown = sorted(jinja2.meta.find_undeclared_variables(tree) - env.globals.keys())
        unknown = [name for name in unknown if name not in SUBJECT_NAMES]
        for node in tree.find_all(jinja2.nodes.Getattr):
            group = node.node.name if isinstance(node.node, jinja2.nodes.Name) else ""
            if group in SUBJECT_NAMES and node.attr not in SUBJECT_NAMES[group]:
                unknown.append(f"{group}.{node.attr}")
        if unknown:
            raise r.error("email.subject", f"unknown name {unknown[0]!r}", hint=f"use {known}")
        env.from_string(tree).render(SUBJECT_NAMES)
    except jinja2.TemplateError as err:
        raise r.error("email.subject", f"not a template that renders: {err.message}") from err


def _tracking(r: _Reader, raw: Mapping[str, Any]) -> TrackingSettings:
    keys = ("utm_source", "utm_medium", "utm_campaign")
    r.keys("tracking", raw, allowed=set(keys))
    values = {k: r.text(f"tracking.{k}", raw, k) if k in raw else None for k in keys}
    return TrackingSettings(**values)


def _send(r: _Reader, raw: Mapping[str, Any]) -> SendSettings:
    d = SendSettings()
    r.keys("send", raw, allowed=set(SendSettings.__dataclass_fields__))

    def count(key: str, least: int) -> int | None:
        if key not in raw:
            return None
        value = r.typed(f"send.{key}", raw, key, int, "a whole number")
        return r.checked(f"send.{key}", value, lambda n: n >= least, f"at least {least}")

    def seconds(key: str) -> float | None:
        if key not in raw:
            return None
        value: float = r.typed(f"send.{key}", raw, key, (int, float), "a number")  # type: ignore[arg-type]
        return r.checked(
            f"send.{key}", float(value), lambda v: 0 < v < math.inf, "a positive number"
        )

    concurrency, max_attempts = count("concurrency", 1), count("max_attempts", 1)
    retry_delay, timeout = seconds("retry_delay"), seconds("timeout")
    return SendSettings(
        concurrency=d.concurrency if concurrency is None else concurrency,
        processes=count("processes", 1),
        rate=seconds("rate"),
        per_hour=count("per_hour", 1),
        per_day=count("per_day", 1),
        max_attempts=d.max_attempts if max_attempts is None else max_attempts,
        retry_delay=d.retry_delay if retry_delay is None else retry_delay,
        timeout=d.timeout if timeout is None else timeout,
        mark_bounced=r.optional(
            "send.mark_bounced", raw, "mark_bounced", bool, "true or false", d.mark_bounced
        ),
    )


def _schedule(r: _Reader, raw: Mapping[str, Any]) -> ScheduleSettings:
    d = ScheduleSettings()
    r.keys("schedule", raw, allowed={"every", "day", "time", "min_articles"})
    every = r.optional("schedule.every", raw, "every", str, '"day", "week" or "month"', d.every)
    if every not in ("day", "week", "month"):
        raise r.error("schedule.every", f'expected "day", "week" or "month", got {every!r}')
    day = d.day if every == "week" else 1
    if "day" in raw and every == "week":
        name = r.text("schedule.day", raw, "day", 'a weekday such as "saturday"').lower()
        day = WEEKDAYS.index(r.checked("schedule.day", name, WEEKDAYS.__contains__, "a weekday"))
    elif "day" in raw and every == "month":
        number = r.typed("schedule.day", raw, "day", int, "a day of the month (1-28)")
        day = r.checked("schedule.day", number, lambda n: 1 <= n <= 28, "a day from 1 to 28")
    elif "day" in raw:
        raise r.error("schedule.day", "a daily schedule has no day", hint="remove the key")
    clock = r.optional("schedule.time", raw, "time", str, 'a time such as "08:00"', "08:00")
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", clock.strip())
    if match is None:
        raise r.error("schedule.time", f'expected a time such as "08:00", got {clock!r}')
    min_articles = r.optional(
        "schedule.min_articles", raw, "min_articles", int, "a whole number", d.min_articles
    )
    return ScheduleSettings(
        every=cast(Every, every),
        day=day,
        time=time(int(match[1]), int(match[2])),
        min_articles=r.checked(
            "schedule.min_articles", min_articles, lambda n: n >= 0, "0 or more"
        ),
    )


def _unique(r: _Reader, key: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise r.error(key, f"two entries are named {name!r}", hint="names must be unique")
        seen.add(name)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1 and localhost."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_language(value: str) -> bool:
    return re.fullmatch(r"[a-z]{2,3}([_-][A-Za-z]{2,4})?", value) is not None


def _is_http_url(value: str) -> bool:
    return re.fullmatch(r"https?://[^\s/]+(/\S*)?", value) is not None


def _sender(r: _Reader, written: str) -> str:
    """`from` as written, "Name <address>" or an address, with the name quoted where it needs
    to be ("Die, Workwear!" <a@b.org>): whatever reads it (parseaddr, the header registry) then
    finds that name and the address the angle brackets hold."""
    bracketed = re.fullmatch(r"(?s)(.*?)\s*<([^<>]*)>", written)
    name, address = (bracketed[1], bracketed[2].strip()) if bracketed else ("", written)
    if len(name) >= 2 and name[0] == name[-1] == '"':  # quoted already: the name is inside
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    hint = "write the name, then the address in angle brackets: Name <news@example.org>"
    if _HEADER_BREAKING.search(name):
        raise r.error("newsletter.from", f"a name with a line break or <>: {written!r}", hint)
    try:  # as strict as composing is: syntax only, ASCII for any SMTP server
        validate_email(address, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as err:
        message = f"expected an address, got {written!r} ({err})"
        raise r.error("newsletter.from", message, hint) from err
    if not name:
        return address
    if _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


# In a name, a control character or line break could start a header, and <> an address.
_HEADER_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029<>]")
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')  # RFC 5322: a name holding one is quoted


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    names = {
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"[:80]


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")


def _line_of(lines: list[str], dotted: str) -> int | None:
    """The 1-based line where `sections[2].max_articles` (or a table header) is written."""
    match = re.fullmatch(r"([A-Za-z0-9_]+)(?:\[(\d+)\])?(?:\.([A-Za-z0-9_]+))?", dotted)
    if not match:
        return None
    table, index, key = match.group(1), match.group(2), match.group(3)
    if index is None and key is None:
        table, key = "", table  # a top-level key, or a table named by itself
    wanted_index = int(index) if index is not None else 0
    current, seen, header_line = "", -1, None
    for number, line in enumerate(lines, start=1):
        header = _HEADER.match(line)
        if header:
            current = header.group(2)
            if current == table:
                seen += 1
                if seen == wanted_index:
                    header_line = number
            elif table == "" and current == key:
                return number
            continue
        in_target = current == table and (seen == wanted_index)
        if in_target and key and re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return header_line
