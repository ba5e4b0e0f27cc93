"""The render step: an issue as the email's HTML and plain text, one variant at a time.

A variant is what differs between copies before anyone's name is in them: the language and the
sections a reader chose. Each variant is rendered (and, by the pipeline, inlined) once, with the
per-subscriber values left as placeholders; `Rendered.personalise` fills them for each reader,
cheaply, escaping them for HTML.

Templates format; Python decides. Sections, excerpts, tracked links, bylines, localised dates and
the preheader arrive as data (`Card`, `SectionView`), so a publication overriding a template never
re-implements a rule. The Jinja environment is built per run with `StrictUndefined`, so a typo in
a template is a `TemplateError` naming the file and line, never an empty string.
"""

from __future__ import annotations

import hashlib
import io
import re
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_interval, format_skeleton
from babel.lists import format_list
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from digest.config import LOCALES, Config, TrackingSettings, available_languages
from digest.errors import ConfigError, TemplateError
from digest.models import Article, Issue, Period
from digest.project import data_dir

TEXT_WIDTH = 78  # the plain-text twin's lines, as RFC 5322 recommends
# Featured and thumbnail image boxes (3:2). Feeds give no sizes: the box holds the layout while
# images load or are blocked, and `height: auto` lets a loaded image keep its own proportions.
FEATURED_IMAGE = (552, 368)
THUMBNAIL = (120, 80)
PREHEADER_LENGTH = 150  # inbox previews show 90-140 characters
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)

# Per-subscriber values, filled in after inlining by `Rendered.personalise`.
PERSONAL_FIELDS = ("email", "greeting", "unsubscribe_url", "preferences_url")
REQUIRED_FIELDS = ("unsubscribe_url",)  # an email without a way out must not be sent


def packaged_templates() -> Path:
    """The default templates: inside the wheel, or templates/email in the source tree."""
    return data_dir() / "templates" / "email"


@dataclass(frozen=True, slots=True)
class Variant:
    """What differs between copies before personalising: the language and the chosen sections."""

    language: str
    sections: frozenset[str] | None = None  # section names; None: every section


@dataclass(frozen=True, slots=True)
class Recipient:
    """One reader's own values, filled into a rendered variant."""

    email: str
    unsubscribe_url: str
    preferences_url: str
    name: str = ""  # for the greeting; "" greets without a name


@dataclass(frozen=True, slots=True)
class Email:
    """One reader's copy as they read it: the subject, preheader, HTML and text."""

    subject: str
    preheader: str
    html: str
    text: str


@dataclass(frozen=True, slots=True)
class Picture:
    """An image as the templates place it: a box of known size, even before it loads."""

    url: str
    alt: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Card:
    """One article as the templates show it; every value already decided and localised."""

    title: str
    url: str  # tracked; "" when the feed's URL is not http(s), and then nothing links
    byline: str  # "Ana, Bo and Cy", in the language
    date: str  # "22 de noviembre de 2026"; "" when the feed gave no date
    excerpt: str
    image: Picture | None


@dataclass(frozen=True, slots=True)
class SectionView:
    name: str
    cards: tuple[Card, ...]


@dataclass(frozen=True, slots=True)
class Rendered:
    """A variant rendered once, cut at its placeholders so personalising is only joining."""

    variant: Variant
    subject: str
    preheader: str
    html_parts: tuple[str, ...]  # literal text, odd indexes are field names
    text_parts: tuple[str, ...]
    greetings: tuple[str, str]  # with a name ("Hi %(name)s,"), without ("Hi there,")

    def values(self, recipient: Recipient) -> dict[str, str]:
        """This reader's value for each personal field, as the text shows it (unescaped)."""
        greeting = self.greetings[1]
        if recipient.name.strip():
            greeting = self.greetings[0] % {"name": " ".join(recipient.name.split())}
        return {
            "email": recipient.email,
            "greeting": greeting,
            "unsubscribe_url": recipient.unsubscribe_url,
            "preferences_url": recipient.preferences_url,
        }

    def personalise(self, recipient: Recipient) -> Email:
        """This reader's copy: their values escaped in the HTML, as they are in the text."""
        values = self.values(recipient)
        escaped = {key: escape(value) for key, value in values.items()}
        return Email(
            subject=self.subject,
            preheader=self.preheader,
            html=_fill(self.html_parts, escaped),
            text=_fill(self.text_parts, values),
        )


@dataclass(frozen=True, slots=True)
class Draft:
    """A variant rendered with placeholders, its HTML not yet inlined."""

    variant: Variant
    subject: str
    preheader: str
    html: str
    text: str
    placeholders: Mapping[str, str]  # field name -> the placeholder standing for it
    greetings: tuple[str, str]

    def finish(self, html: str) -> Rendered:
        """Cut `html` (this draft's HTML, inlined) and the text at the placeholders.

        The placeholders must have survived inlining, and the unsubscribe link must be in both
        parts: a template that drops it is refused here rather than mailed to anyone.
        """
        shown = _COMMENT.sub("", html)  # a link inside <!-- --> is in no reader's email
        for field in REQUIRED_FIELDS:
            for part, content in (("HTML", shown), ("text", self.text)):
                if self.placeholders[field] not in content:
                    raise TemplateError(
                        f"the {part} email has no {field.replace('_', ' ')}",
                        where="digest.html.j2" if part == "HTML" else "digest.txt.j2",
                        hint="keep {{ personal.unsubscribe_url }} in the footer (see the "
                        "packaged partials/footer.html.j2 and digest.txt.j2)",
                    )
        pattern = re.compile("|".join(re.escape(p) for p in self.placeholders.values()))
        field_of = {placeholder: field for field, placeholder in self.placeholders.items()}
        return Rendered(
            variant=self.variant,
            subject=self.subject,
            preheader=self.preheader,
            html_parts=_cut(html, pattern, field_of),
            text_parts=_cut(self.text, pattern, field_of),
            greetings=self.greetings,
        )


def variant_for(config: Config, language: str = "", sections: Sequence[str] = ()) -> Variant:
    """A reader's variant: their language if we have its strings, else the newsletter's."""
    wanted = language.strip().replace("_", "-")
    known = available_languages()
    if not wanted or (wanted not in known and wanted.split("-")[0] not in known):
        wanted = config.newsletter.language
    chosen = frozenset(name.strip() for name in sections if name.strip())
    return Variant(language=wanted, sections=chosen or None)


def environment(config: Config, language: str) -> jinja2.Environment:
    """A Jinja environment for one run and language: the user's folder before the packaged one."""
    folders = [packaged_templates()]
    if config.email.templates is not None:
        folders.insert(0, config.email.templates)
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([_Utf8Loader(folder) for folder in folders]),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(["html.j2"], default_for_string=False),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    env.filters["wrap"] = wrap
    return env


class _Utf8Loader(jinja2.FileSystemLoader):
    """Templates from one folder; a file that is not UTF-8 is named itself, not its includer."""

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        try:
            return super().get_source(environment, template)
        except UnicodeDecodeError as err:
            path = Path(self.searchpath[0]) / template
            line = err.object[: err.start].count(b"\n") + 1
            raise TemplateError(
                f"not UTF-8 text ({err.reason})",
                where=f"{path}:{line}",
                hint="save it as UTF-8",
            ) from err


def translations(language: str) -> NullTranslations:
    """The packaged catalog for `language` ("es-MX" falls back to "es"); none for English."""
    for name in _language_candidates(language):
        path = LOCALES / f"{name}.po"
        if path.is_file():
            with path.open("rb") as po:
                catalog = read_po(po, locale=name, domain="digest")
            compiled = io.BytesIO()
            write_mo(compiled, catalog)
            compiled.seek(0)
            return Translations(compiled, domain="digest")
    return NullTranslations()


def render_variant(
    config: Config,
    issue: Issue,
    variant: Variant,
    *,
    note: str = "",
    env: jinja2.Environment | None = None,
) -> Draft:
    """Render the issue's HTML, text and subject for one variant, personal values as placeholders.

    `env` is the run's environment for `variant.language` (built here when not given); `note` is
    the editor's plain-text note, paragraphs separated by blank lines.
    """
    env = env if env is not None else environment(config, variant.language)
    locale = _locale(variant.language)
    zone = config.newsletter.timezone
    seed = repr((issue, variant.language, sorted(variant.sections or ()), note))
    nonce = hashlib.sha256(seed.encode("utf-8")).hexdigest()[:12]
    # Derived from everything the feeds put in: no feed text can contain its own hash, so a
    # placeholder can only come from the templates.
    placeholders = {
        field: f"x-digest-{nonce}-{field.replace('_', '-')}" for field in PERSONAL_FIELDS
    }
    cards = _Cards(config.tracking, issue.id, locale, zone)
    wanted = variant.sections
    sections = tuple(
        SectionView(name=section.name, cards=tuple(cards.card(a) for a in section.articles))
        for section in issue.sections
        if wanted is None or section.name in wanted
    )
    featured = None
    if issue.featured is not None:
        featured = cards.card(issue.featured, image_size=FEATURED_IMAGE)
    shown = ([issue.featured] if issue.featured else []) + [
        a for s in issue.sections if wanted is None or s.name in wanted for a in s.articles
    ]
    last_day = (issue.period.end - timedelta(microseconds=1)).astimezone(zone)
    strings = translations(variant.language)
    facts = {
        "id": issue.id,
        "date": format_date(last_day, "long", locale=locale),
        "period": period_text(issue.period, zone, variant.language),
        "span": span_text(
            issue.period, zone, variant.language, every=config.schedule.every, strings=strings
        ),
        "article_count": len(shown),
        "featured_title": issue.featured.title if issue.featured else "",
        "web_url": web_url(config, issue.id),
    }
    newsletter = {
        "name": config.newsletter.name,
        "address": config.newsletter.address,
        "public_url": config.newsletter.public_url,
    }
    subject = _render_subject(env, config, newsletter, facts)
    preheader = _preheader([a.title for a in shown])
    gettext = strings.gettext
    context = {
        "lang": str(locale).replace("_", "-"),
        "newsletter": newsletter,
        "issue": facts,
        "subject": subject,
        "preheader": preheader,
        "note": _paragraphs(note),
        "featured": featured,
        "sections": sections,
        "personal": placeholders,
    }
    return Draft(
        variant=variant,
        subject=subject,
        preheader=preheader,
        html=_unindent(_render(env, "digest.html.j2", context)),
        text=_tidy(_render(env, "digest.txt.j2", context)),
        placeholders=placeholders,
        # The greeting changes shape without a name, so it is filled whole, per reader.
        greetings=(gettext("Hi %(name)s,"), gettext("Hi there,")),
    )


def period_text(period: Period, zone: ZoneInfo, language: str) -> str:
    """The period as the email's dateline shows it: "Nov 16 – 22, 2026", in the language."""
    last_day = (period.end - timedelta(microseconds=1)).astimezone(zone)
    start = period.start.astimezone(zone).date()
    return format_interval(start, last_day.date(), "yMMMMd", locale=_locale(language))


def span_text(
    period: Period,
    zone: ZoneInfo,
    language: str,
    *,
    every: str = "week",
    strings: NullTranslations | None = None,
) -> str:
    """How the intro names the period, in the language: "from this week", "from this month",
    "from these two weeks", "since yesterday" (a daily schedule's day), "from November 3" (one
    calendar day), else "since November 3". Judged on the wall clock in `zone`, so a week
    across a DST change is a week; `strings` is the language's catalog, when at hand."""
    gettext = (strings or translations(language)).gettext
    start = period.start.astimezone(zone).replace(tzinfo=None)
    end = period.end.astimezone(zone).replace(tzinfo=None)
    length = end - start  # a difference, not start + days: a period can end on 9999-12-31
    if length == timedelta(days=7):
        return gettext("from this week")
    if length == timedelta(days=14):
        return gettext("from these two weeks")
    if end == _month_after(start):
        return gettext("from this month")
    if length == timedelta(days=1) and every == "day":
        return gettext("since yesterday")
    last_day = (end - timedelta(microseconds=1)).date()
    skeleton = "MMMMd" if start.year == last_day.year else "yMMMMd"
    first = format_skeleton(skeleton, start.date(), locale=_locale(language))
    if last_day == start.date():
        return gettext("from %(date)s") % {"date": first}
    return gettext("since %(date)s") % {"date": first}


def _month_after(moment: datetime) -> datetime | None:
    """The same day and time a month later; None when that month has no such day."""
    year, month = divmod(moment.year * 12 + moment.month, 12)  # month is 0-11 here
    try:
        return moment.replace(year=year, month=month + 1)
    except ValueError:
        return None


def web_page(issue_id: str) -> str:
    """The file `digest archive` writes an issue's page to: its name under archive_url too."""
    return f"{issue_id}.html"


def web_url(config: Config, issue_id: str) -> str:
    """Where the issue's "view in browser" page is hosted; "" without [newsletter] archive_url."""
    base = config.newsletter.archive_url
    return "" if base is None else f"{base}/{quote(web_page(issue_id), safe='')}"


def tracked(url: str, tracking: TrackingSettings, issue_id: str) -> str:
    """`url` with the configured UTM parameters; its own query is kept, except those keys."""
    wanted = {
        key: value.replace("{issue_id}", issue_id)
        for key, value in (
            ("utm_source", tracking.utm_source),
            ("utm_medium", tracking.utm_medium),
            ("utm_campaign", tracking.utm_campaign),
        )
        if value is not None
    }
    if not wanted:
        return url
    parts = urlsplit(url)
    # Kept as written (no decoding and re-encoding), so a server that reads "+" literally still
    # gets what the feed linked to.
    kept = [pair for pair in parts.query.split("&") if pair and pair.split("=")[0] not in wanted]
    added = [f"{key}={quote(value, safe='')}" for key, value in wanted.items()]
    return urlunsplit(parts._replace(query="&".join(kept + added)))


def wrap(text: str, width: int = TEXT_WIDTH, indent: str = "") -> str:
    """Fill a paragraph to `width` columns, breaking only at spaces (URLs stay whole)."""
    return textwrap.fill(
        " ".join(str(text).split()),
        width=width,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


class _Cards:
    """Turns articles into cards, with the run's tracking, locale and time zone."""

    def __init__(
        self, tracking: TrackingSettings, issue_id: str, locale: Locale, zone: ZoneInfo
    ) -> None:
        self.tracking, self.issue_id, self.locale, self.zone = tracking, issue_id, locale, zone

    def card(self, article: Article, image_size: tuple[int, int] = THUMBNAIL) -> Card:
        image = article.image
        picture = None
        if image is not None and _is_http(image.url):
            url = image.url_for(image_size[0])  # the size the site offers for this slot
            picture = Picture(url, " ".join(image.alt.split()), *image_size)
        url = tracked(article.url, self.tracking, self.issue_id) if _is_http(article.url) else ""
        byline = format_list(list(article.bylines), locale=self.locale) if article.bylines else ""
        published = article.published.astimezone(self.zone)
        # No-break spaces: "November / 19, 2026" split over two lines reads badly.
        date = "\u00a0".join(format_date(published, "long", self.locale).split())
        return Card(
            title=article.title,
            url=url,
            byline=byline,
            date="" if article.date_estimated else date,
            excerpt=article.excerpt,
            image=picture,
        )


def _is_http(url: str) -> bool:
    # Feeds are checked when collected; this keeps a `javascript:` link out whatever the source.
    return url.lower().startswith(("https://", "http://")) and not any(c in url for c in "\r\n")


def _locale(language: str) -> Locale:
    try:
        return Locale.parse(language.replace("-", "_"))
    except (UnknownLocaleError, ValueError) as err:
        raise ConfigError(
            f"no dates or strings for the language {language!r}",
            where="newsletter.language",
            hint='use a language code such as "en" or "es"',
        ) from err


def _language_candidates(language: str) -> list[str]:
    full = language.replace("-", "_")
    return [full, full.split("_")[0]] if "_" in full else [full]


def _paragraphs(note: str) -> tuple[str, ...]:
    """Plain text into paragraphs: blank lines separate them, line breaks inside are spaces."""
    blocks = re.split(r"\n\s*\n", note.replace("\r\n", "\n").strip())
    return tuple(" ".join(block.split()) for block in blocks if block.strip())


def _preheader(titles: Sequence[str]) -> str:
    """The inbox preview line: the stories' titles, as many as fit."""
    text = ""
    for title in titles:
        candidate = f"{text} · {title}" if text else title
        if len(candidate) > PREHEADER_LENGTH and text:
            break
        text = candidate
    return text[:PREHEADER_LENGTH]


def _render_subject(
    env: jinja2.Environment,
    config: Config,
    newsletter: Mapping[str, str],
    facts: Mapping[str, object],
) -> str:
    context = {"newsletter": newsletter, "issue": facts}
    if config.email.subject is not None:
        try:
            template = env.from_string(config.email.subject)
            subject = template.render(context)
        except Exception as err:
            raise _template_error(err, where="email.subject") from err
    else:
        subject = _render(env, "subject.txt.j2", context)
    subject = " ".join(subject.split())  # one line: a newline in a header would end it
    if not subject:
        raise TemplateError("the subject is empty", where="email.subject")
    return subject


def _render(env: jinja2.Environment, name: str, context: Mapping[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except Exception as err:
        raise _template_error(err, where=name) from err


def _template_error(err: Exception, *, where: str) -> TemplateError:
    """A template's mistake as one line naming its file and line; anything else re-raised."""
    if isinstance(err, jinja2.TemplateSyntaxError):
        place = f"{err.filename}:{err.lineno}" if err.filename else where
        return TemplateError(err.message or "syntax error", where=place)
    if isinstance(err, TemplateError):
        return err  # a template file that is not UTF-8, already named
    frames = list(_template_frames(err.__traceback__))
    if isinstance(err, jinja2.TemplateNotFound):
        # Included from a template: name the include's file and line, not the layout's.
        place = f"{frames[-1][0]}:{frames[-1][1]}" if frames else where
        return TemplateError(f"no template named {err.name!r}", where=place)
    if not frames:
        raise err  # not a template's doing: a bug in digest
    filename, line = frames[-1]
    message = str(err) if isinstance(err, jinja2.TemplateError) else f"{type(err).__name__}: {err}"
    # A template from a string (the configured subject) has no file: name the setting instead.
    return TemplateError(message, where=where if filename.startswith("<") else f"{filename}:{line}")


def _template_frames(tb: TracebackType | None) -> Iterator[tuple[str, int]]:
    """(file, line) of each template frame Jinja put into a render error's traceback."""
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            yield tb.tb_frame.f_code.co_filename, tb.tb_lineno
        tb = tb.tb_next


def _unindent(html: str) -> str:
    """Drop the templates' indentation: a tenth of a big issue's bytes, and Gmail clips at 102 KB.

    A newline stays where each was, so words on either side stay apart; only <pre> would notice.
    """
    return html if "<pre" in html.lower() else re.sub(r"\n[ \t]+", "\n", html)


def _tidy(text: str) -> str:
    """No trailing spaces (but the "-- " signature line), at most two blank lines in a row."""
    lines = [line if line == "-- " else line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{4,}", "\n\n\n", "\n".join(lines).strip("\n")) + "\n"


def _cut(content: str, pattern: re.Pattern[str], field_of: Mapping[str, str]) -> tuple[str, ...]:
    pieces = pattern.split(content)  # no groups: only the literal text between placeholders
    found = [field_of[match] for match in pattern.findall(content)]
    parts: list[str] = [pieces[0]]
    for field, piece in zip(found, pieces[1:], strict=True):
        parts += (field, piece)
    return tuple(parts)


def _fill(parts: tuple[str, ...], values: Mapping[str, str]) -> str:
    # Even indexes are literal text, odd ones field names.
    return "".join(part if n % 2 == 0 else values[part] for n, part in enumerate(parts))
