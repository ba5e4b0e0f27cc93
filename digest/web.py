"""The reader's pages: one-click unsubscribe (RFC 8058), a confirm page, and preferences.

    POST /unsubscribe?t=TOKEN    body List-Unsubscribe=One-Click: unsubscribe, answer 200 (no page)
                                 body confirm=yes (the confirm form): unsubscribe, show a page
    GET  /unsubscribe?t=TOKEN    a confirm button; changes nothing (mail scanners follow links)
    GET  /preferences?t=TOKEN    sections and language, as a form
    POST /preferences?t=TOKEN    save them; or, with resubscribe=yes, subscribe again

The application is plain WSGI on the standard library (routing on PATH_INFO, forms parsed with
urllib.parse and, for multipart/form-data, the email package) with Jinja2 pages: three routes do not
need a framework. It is served by waitress: a production-grade, pure-Python WSGI server from the
Pylons project, maintained for more than a decade, with a thread pool, keep-alive, and limits on
header and body sizes; no C extension to build, the same on every platform. wsgiref's server is
documented as not meant for production. Put it behind an HTTPS reverse proxy: tokens travel in URLs.

The token is the only credential: it names the address and proves we made the link. Changes reach
the subscriber file through SubscriberFile, the same locked, atomic write the commands use. A
refusal (a bad token, an unknown page, a wrong method, a large body) is a plain page, never a
traceback. Pages are sent with no-store, no-referrer (the token must not leak in a Referer) and a
Content-Security-Policy that allows only the inlined style sheet.
"""

from __future__ import annotations

import base64
import hashlib
import signal
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from babel import Locale, UnknownLocaleError
from babel.messages.pofile import read_po
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape
from waitress.server import BaseWSGIServer, MultiSocketServer
from waitress.server import create_server as waitress_server

from digest import tokens
from digest.config import Config
from digest.errors import DigestError, ServeError, TokenError
from digest.models import Subscriber, SubscriberStatus
from digest.project import data_dir
from digest.subscribers import SubscriberFile

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8026
MAX_BODY = 10 * 1024  # bytes; our forms send well under 1 KB
MAX_FIELDS = 100
SOURCE_LANGUAGE = "en"  # the pages' own strings
# A reader may choose these, and any language the email has a catalog for (render's; web may not
# import render): digest/locales/<language>.po.
LANGUAGES = ("en", "es")
EMAIL_LOCALES = Path(__file__).resolve().parent / "locales"

Clock = Callable[[], datetime]
Server = MultiSocketServer | BaseWSGIServer
Form = Mapping[str, list[str]]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def make_app(config: Config, *, clock: Clock = _utc_now) -> WSGIApplication:
    """The WSGI application; checks DIGEST_SECRET and loads the page templates once, up front."""
    return _Site(config, clock)


def create_server(
    config: Config, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, clock: Clock = _utc_now
) -> Server:
    """A waitress server for the app, bound but not yet running (port 0: any free port)."""
    app = make_app(config, clock=clock)
    try:
        return waitress_server(
            app,
            host=host,
            port=port,
            ident="digest",
            max_request_body_size=MAX_BODY,
            # Behind a proxy that keeps public_url's path (/digest/unsubscribe), strip it; a
            # proxy that strips it itself sends /unsubscribe, which is left alone.
            url_prefix=urlsplit(config.newsletter.public_url).path.rstrip("/"),
        )
    except OSError as err:  # the port is taken, the host is not ours, a name does not resolve
        raise ServeError(
            f"cannot listen on {host}:{port}: {err.strerror or err}",
            hint="choose another --port or --host, or stop what is listening there",
        ) from err


def addresses(server: Server) -> list[str]:
    """Where the server listens, as http:// URLs."""
    if isinstance(server, MultiSocketServer):
        found = [(str(host), int(port)) for host, port in server.effective_listen]
    else:
        assert server.socket is not None
        host, port = server.socket.getsockname()[:2]
        found = [(str(host), int(port))]
    return [f"http://[{h}]:{p}" if ":" in h else f"http://{h}:{p}" for h, p in found]


def serve(
    config: Config,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    announce: Callable[[str], None] = lambda line: None,
) -> None:
    """Serve the pages until Ctrl-C, SIGINT or SIGTERM; requests under way finish first."""
    server = create_server(config, host=host, port=port)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop, like Ctrl-C
    try:
        announce(f"serving on {', '.join(addresses(server))} (Ctrl-C stops)")
        server.run()  # on KeyboardInterrupt: waits up to 5 s for the worker threads, returns
    finally:
        server.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@dataclass(frozen=True, slots=True)
class _Reply:
    status: HTTPStatus
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class _Refusal(Exception):
    """Ends a request with a plain page: what went wrong and what the reader can do.

    `form` names what is wrong with a form (a key of _FORM_PROBLEMS), so the page says that
    rather than that the link is incomplete; `language` is the reader's, once a token names one."""

    def __init__(
        self,
        status: HTTPStatus,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        form: str = "",
        language: str = "",
    ) -> None:
        super().__init__(status.phrase)
        self.status, self.headers, self.form = status, headers, form
        self.language = language


@dataclass(frozen=True, slots=True)
class _Visit:
    """A request whose token verified: the address it names, and the token for the page's links."""

    email: str
    token: str


# What each refusal tells the reader: a heading, then paragraphs.
_PROBLEMS: dict[HTTPStatus, tuple[str, tuple[str, ...]]] = {
    HTTPStatus.BAD_REQUEST: (
        "This link is incomplete",
        (
            "Part of the address seems to be missing.",
            "Open the link from your latest email again, or reply to that email and we will "
            "make the change for you.",
        ),
    ),
    HTTPStatus.FORBIDDEN: (
        "This link doesn't work",
        (
            "It may have been cut short or changed on the way.",
            "Open the link from your latest email again, or reply to that email and we will "
            "make the change for you.",
        ),
    ),
    HTTPStatus.NOT_FOUND: (
        "Page not found",
        ("Use the unsubscribe or preferences link at the bottom of any issue.",),
    ),
    HTTPStatus.METHOD_NOT_ALLOWED: (
        "That doesn't work here",
        ("Use the unsubscribe or preferences link at the bottom of any issue.",),
    ),
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: (
        "That was too much",
        ("The form sent more than this page accepts. Go back and try again.",),
    ),
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: (
        "That doesn't work here",
        ("The form was sent in a way this page does not read. Go back and try again.",),
    ),
}
_PROBLEMS[HTTPStatus.INTERNAL_SERVER_ERROR] = _PROBLEMS[HTTPStatus.SERVICE_UNAVAILABLE] = (
    "Something went wrong",
    (
        "Nothing was changed. Please try again in a few minutes, or reply to any issue and we "
        "will make the change for you.",
    ),
)
_NOTHING_CHANGED = (
    "Nothing was changed. Go back, reload the page and try again, or reply to your latest "
    "email and we will make the change for you."
)
_FORM_PROBLEMS: dict[str, tuple[str, tuple[str, ...]]] = {
    reason: ("This form could not be saved", (words, _NOTHING_CHANGED))
    for reason, words in {
        "section": "It named a section this newsletter does not have.",
        "language": "It asked for a language this newsletter does not offer.",
        "resubscribe": "Only a reader who unsubscribed can subscribe again here.",
        "unreadable": "Part of it was missing or could not be read.",
    }.items()
}
_ALLOW = (("Allow", "GET, HEAD, POST"),)


class _Site:
    """The application: verified tokens in, subscriber-file changes and pages out."""

    def __init__(self, config: Config, clock: Clock) -> None:
        self.config, self.clock = config, clock
        self.list_id = tokens.list_id(config)
        self.secret = tokens.secret_from(config)
        folder = data_dir() / "templates" / "web"
        self.pages = Environment(
            loader=FileSystemLoader(folder),
            autoescape=select_autoescape(["html.j2"]),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        css = (folder / "page.css").read_text(encoding="utf-8")
        self.style = Markup(css)  # our own file, and the CSP allows exactly these bytes
        digest = base64.b64encode(hashlib.sha256(css.encode("utf-8")).digest()).decode("ascii")
        self.headers = (
            ("Cache-Control", "no-store"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Robots-Tag", "noindex, nofollow"),
            (
                "Content-Security-Policy",
                f"default-src 'none'; style-src 'sha256-{digest}'; form-action 'self'; "
                "frame-ancestors 'none'; base-uri 'none'",
            ),
        )
        self.catalogs = _catalogs(folder / "locale")
        self.section_names = tuple(section.name for section in config.sections)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            reply = self.route(environ)
        except _Refusal as refusal:
            reply = self.problem(refusal)
        except DigestError as err:  # the subscriber file is locked too long, unreadable, ...
            environ["wsgi.errors"].write(f"digest serve: {err}\n")
            unavailable = _Refusal(HTTPStatus.SERVICE_UNAVAILABLE, headers=(("Retry-After", "60"),))
            reply = self.problem(unavailable)
        except Exception:  # a bug: logged for us, a plain page for the reader
            environ["wsgi.errors"].write(traceback.format_exc())
            reply = self.problem(_Refusal(HTTPStatus.INTERNAL_SERVER_ERROR))
        start_response(
            f"{reply.status.value} {reply.status.phrase}",
            [
                ("Content-Type", reply.content_type),
                ("Content-Length", str(len(reply.body))),
                *self.headers,
                *reply.headers,
            ],
        )
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else reply.body]

    def route(self, environ: WSGIEnvironment) -> _Reply:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        routes = {
            "/unsubscribe": (self.show_unsubscribe, self.unsubscribe),
            "/preferences": (self.show_preferences, self.save_preferences),
        }
        if path not in routes:
            raise _Refusal(HTTPStatus.NOT_FOUND)
        if method not in ("GET", "HEAD", "POST"):
            raise _Refusal(HTTPStatus.METHOD_NOT_ALLOWED, headers=_ALLOW)
        show, change = routes[path]
        visit = self.visit(environ)
        return change(visit, _read_form(environ)) if method == "POST" else show(visit)

    def visit(self, environ: WSGIEnvironment) -> _Visit:
        found = parse_qs(environ.get("QUERY_STRING", ""), max_num_fields=MAX_FIELDS).get("t", [])
        if len(found) != 1:
            raise _Refusal(HTTPStatus.BAD_REQUEST)
        try:
            email = tokens.verify_token(found[0], list_id=self.list_id, secret=self.secret)
        except TokenError as err:
            raise _Refusal(HTTPStatus.FORBIDDEN) from err
        return _Visit(email, found[0])

    # --- /unsubscribe

    def show_unsubscribe(self, visit: _Visit) -> _Reply:
        subscriber = _file(self.config).find(visit.email)
        if subscriber is None or subscriber.status is not SubscriberStatus.SUBSCRIBED:
            return self.unsubscribed(visit, subscriber, just_now=False)
        return self.page(
            "unsubscribe.html.j2", subscriber.language, email=subscriber.email, token=visit.token
        )

    def unsubscribe(self, visit: _Visit, form: Form) -> _Reply:
        one_click = form.get("List-Unsubscribe") == ["One-Click"]
        if not one_click and form.get("confirm") != ["yes"]:
            raise _Refusal(HTTPStatus.BAD_REQUEST, form="unreadable")
        subscribers = _file(self.config)
        subscribers.unsubscribe(visit.email, at=self.clock())  # False: not there, or already
        if one_click:  # a mail provider's request; nobody reads the answer
            return _Reply(HTTPStatus.OK, b"unsubscribed\n", "text/plain; charset=utf-8")
        return self.unsubscribed(visit, subscribers.find(visit.email), just_now=True)

    def unsubscribed(
        self, visit: _Visit, subscriber: Subscriber | None, *, just_now: bool
    ) -> _Reply:
        return self.page(
            "unsubscribed.html.j2",
            subscriber.language if subscriber else "",
            email=subscriber.email if subscriber else visit.email,
            token=visit.token,
            just_now=just_now,
            # Only someone who left on their own may come back; a bounce or complaint may not.
            can_resubscribe=subscriber is not None
            and subscriber.status is SubscriberStatus.UNSUBSCRIBED,
        )

    # --- /preferences

    def show_preferences(self, visit: _Visit, *, notice: str = "") -> _Reply:
        """The form; `notice` says what was just done: "saved" or "resubscribed"."""
        subscriber = _file(self.config).find(visit.email)
        if subscriber is None:
            return self.unsubscribed(visit, None, just_now=False)
        chosen = set(subscriber.sections) if subscriber.sections else set(self.section_names)
        return self.page(
            "preferences.html.j2",
            subscriber.language,
            email=subscriber.email,
            token=visit.token,
            notice=notice,
            subscribed=subscriber.status is SubscriberStatus.SUBSCRIBED,
            can_resubscribe=subscriber.status is SubscriberStatus.UNSUBSCRIBED,
            sections=self.section_names,
            chosen=chosen,
            languages=self.language_choices(subscriber.language),
            chosen_language=subscriber.language or self.config.newsletter.language,
        )

    def save_preferences(self, visit: _Visit, form: Form) -> _Reply:
        subscribers = _file(self.config)
        subscriber = subscribers.find(visit.email)
        if subscriber is None:
            return self.unsubscribed(visit, None, just_now=False)
        own = subscriber.language  # a page about their form is in their language
        if form.get("resubscribe") == ["yes"]:
            if subscriber.status is not SubscriberStatus.UNSUBSCRIBED:
                raise _Refusal(HTTPStatus.BAD_REQUEST, form="resubscribe", language=own)
            subscribers.set_status(visit.email, SubscriberStatus.SUBSCRIBED, at=self.clock())
            return self.show_preferences(visit, notice="resubscribed")
        picked = form.get("section", [])
        languages = form.get("language", [])
        known = {code for code, _ in self.language_choices(subscriber.language)}
        if not set(picked) <= set(self.section_names):
            raise _Refusal(HTTPStatus.BAD_REQUEST, form="section", language=own)
        if len(languages) != 1:
            raise _Refusal(HTTPStatus.BAD_REQUEST, form="unreadable", language=own)
        if languages[0] not in known:
            raise _Refusal(HTTPStatus.BAD_REQUEST, form="language", language=own)
        # None ticked, or all: every section, including sections added later.
        everything = set(picked) in (set(), set(self.section_names))
        sections = () if everything else tuple(n for n in self.section_names if n in picked)
        # The newsletter's language, unchanged, stays "" (follow the newsletter).
        unchanged = languages[0] == (subscriber.language or self.config.newsletter.language)
        language = subscriber.language if unchanged else languages[0]
        subscribers.update_preferences(visit.email, sections=sections, language=language)
        return self.show_preferences(visit, notice="saved")

    def language_choices(self, current: str) -> list[tuple[str, str]]:
        """(code, name in that language): the email's languages, and the reader's own if other."""
        codes = {*LANGUAGES, self.config.newsletter.language}
        codes.update(path.stem for path in EMAIL_LOCALES.glob("*.po"))
        if current:
            codes.add(current)
        return sorted(((code, _language_name(code)) for code in codes), key=lambda c: c[1])

    # --- pages

    def page(
        self,
        template: str,
        language: str,  # the reader's; "" for the newsletter's
        /,
        *,
        status: HTTPStatus = HTTPStatus.OK,
        **context: Any,
    ) -> _Reply:
        """Render a page in the reader's language if we have its strings, else English."""
        lang = self.page_language(language)
        catalog = self.catalogs[lang]

        def translate(message: str, **params: object) -> Markup:
            text = escape(catalog.get(message) or message)  # the catalog's words are text
            return text % params if params else text  # Markup's % escapes each parameter

        html = self.pages.get_template(template).render(
            newsletter=self.config.newsletter, lang=lang, style=self.style, _=translate, **context
        )
        return _Reply(status, html.encode("utf-8"))

    def page_language(self, language: str) -> str:
        """The reader's language (else the newsletter's) if the pages come in it, else English."""
        wanted = language or self.config.newsletter.language
        return wanted if wanted in self.catalogs else SOURCE_LANGUAGE

    def problem(self, refusal: _Refusal) -> _Reply:
        """A refusal's page, in the reader's language when a token named them, else in the
        newsletter's."""
        status, form = refusal.status, refusal.form
        heading, paragraphs = _FORM_PROBLEMS[form] if form else _PROBLEMS[status]
        catalog = self.catalogs[self.page_language(refusal.language)]
        page = self.page(
            "problem.html.j2",
            refusal.language,
            status=status,
            heading=catalog.get(heading) or heading,
            paragraphs=tuple(catalog.get(p) or p for p in paragraphs),
        )
        return _Reply(status, page.body, headers=refusal.headers)


def _file(config: Config) -> SubscriberFile:
    """A SubscriberFile per request: it holds no state between requests, and threads share none."""
    return SubscriberFile(config.subscribers_path)


def _read_form(environ: WSGIEnvironment) -> dict[str, list[str]]:
    """The request body's fields; urlencoded (browsers) or multipart (RFC 8058 recommends it)."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError as err:
        raise _Refusal(HTTPStatus.BAD_REQUEST, form="unreadable") from err
    if length < 0:
        raise _Refusal(HTTPStatus.BAD_REQUEST, form="unreadable")
    if length > MAX_BODY:
        raise _Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    body = environ["wsgi.input"].read(length) if length else b""
    content_type = environ.get("CONTENT_TYPE") or ""
    kind = content_type.partition(";")[0].strip().lower()
    if kind in ("", "application/x-www-form-urlencoded"):
        try:
            return parse_qs(
                body.decode("ascii"),
                keep_blank_values=True,
                max_num_fields=MAX_FIELDS,
                errors="strict",
            )
        except ValueError as err:  # non-ASCII bytes, bad percent-escapes, too many fields
            raise _Refusal(HTTPStatus.BAD_REQUEST, form="unreadable") from err
    if kind == "multipart/form-data":
        return _multipart(content_type, body)
    raise _Refusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE)


def _multipart(content_type: str, body: bytes) -> dict[str, list[str]]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise _Refusal(HTTPStatus.BAD_REQUEST, form="unreadable")
    fields: dict[str, list[str]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes) and not part.get_filename():
            fields.setdefault(name, []).append(payload.decode("utf-8", "replace"))
        if sum(len(values) for values in fields.values()) > MAX_FIELDS:
            raise _Refusal(HTTPStatus.BAD_REQUEST, form="unreadable")
    return fields


def _catalogs(folder: Path) -> dict[str, dict[str, str]]:
    """message -> translation for each `<language>.po` in `folder`, plus English as written."""
    catalogs: dict[str, dict[str, str]] = {SOURCE_LANGUAGE: {}}
    for path in sorted(folder.glob("*.po")):
        with path.open("rb") as handle:
            catalog = read_po(handle, locale=path.stem)
        catalogs[path.stem] = {
            message.id: message.string
            for message in catalog
            if isinstance(message.id, str) and isinstance(message.string, str)
            if message.id and message.string and not message.fuzzy
        }
    return catalogs


def _language_name(code: str) -> str:
    """Each language named in itself ("Español" for "es"), so its readers recognise it."""
    try:
        name = Locale.parse(code.replace("-", "_")).get_display_name(code.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return code
    return (name[:1].upper() + name[1:]) if name else code
