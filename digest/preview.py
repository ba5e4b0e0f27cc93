"""`digest preview`: the issue in a browser, as readers will get it, while you edit.

    GET /                       the page: the inbox line (from, subject, preheader), the email at
                                desktop width and at 375 px, its plain text, and a reader picker
    GET /email.html?for=EMAIL   that subscriber's HTML, as sent (without `for`: the sample reader)
    GET /email.txt?for=EMAIL    ... and the plain text
    GET /version                a fingerprint of the inputs; the page polls it and reloads

Nothing is collected: the issue is selected from the archive as it is, so the preview works
offline. Each request first fingerprints the inputs by their sizes and modification times: the
config and its .env, the user's and the packaged templates and strings, the archive, the subscriber
file and the editor's note. While the fingerprint stays the same the selected issue and each
rendered variant are kept, so a request only personalises; when it changes, the config is read
again and the issue selected again. A mistake (a template that does not compile, a config that
does not parse) is shown on the page instead of stopping the server, and the page comes back by
itself once the file is fixed.

Served by waitress as `digest serve` is, but on 127.0.0.1 only, since the page shows subscribers'
names and addresses; for the same reason a request must name this machine in its Host header, so
a web page elsewhere cannot read the preview through DNS rebinding.
"""

from __future__ import annotations

import base64
import hashlib
import signal
import threading
import traceback
import webbrowser
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from waitress.server import BaseWSGIServer
from waitress.server import create_server as waitress_server

from digest import pipeline, render
from digest.config import LOCALES, Config, load_config
from digest.errors import DigestError, ServeError, SubscriberFileError
from digest.models import Issue, Subscriber, email_key
from digest.project import data_dir
from digest.subscribers import SubscriberFile

HOST = "127.0.0.1"  # never anything else: the page shows subscribers' names and addresses
DEFAULT_PORT = 8025
PICKER_LIMIT = 500  # subscribers listed in the picker; ?for=EMAIL shows anyone
POLL_SECONDS = 1  # how often the page asks /version whether to reload

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class IssueOptions:
    """Which issue to show, as `digest build` takes it: the period, the top story, the note."""

    request: pipeline.PeriodRequest = field(default_factory=pipeline.PeriodRequest)
    feature_url: str | None = None
    note_path: Path | None = None  # None: [email] note


def _utc_now() -> datetime:
    return datetime.now(UTC)


def make_app(
    config: Config,
    options: IssueOptions | None = None,
    *,
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Clock = _utc_now,
) -> WSGIApplication:
    """The WSGI application. `config` is read again from its file when that or the .env changes,
    with `env_file` and `environ` as `load_config` takes them (None: os.environ)."""
    return _Preview(
        config,
        options or IssueOptions(),
        reload=lambda: load_config(config.path, env_file=env_file, environ=environ),
        env_path=env_file if env_file is not None else config.root / ".env",
        clock=clock,
    )


def create_server(
    config: Config,
    options: IssueOptions | None = None,
    *,
    port: int = DEFAULT_PORT,
    env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Clock = _utc_now,
) -> BaseWSGIServer:
    """A waitress server on 127.0.0.1, bound but not yet running (port 0: any free port)."""
    app = make_app(config, options, env_file=env_file, environ=environ, clock=clock)
    try:
        server = waitress_server(app, host=HOST, port=port, ident="digest preview")
    except OSError as err:  # the port is taken
        raise ServeError(
            f"cannot listen on {HOST}:{port}: {err.strerror or err}",
            hint="choose another --port, or stop what is listening there",
        ) from err
    assert isinstance(server, BaseWSGIServer)  # one host and port: one socket
    return server


def url_of(server: BaseWSGIServer) -> str:
    """The preview page's address, with the port the server got."""
    assert server.socket is not None
    return f"http://{HOST}:{server.socket.getsockname()[1]}/"


def serve(
    config: Config,
    options: IssueOptions | None = None,
    *,
    port: int = DEFAULT_PORT,
    open_browser: bool = True,
    env_file: Path | None = None,
    announce: Callable[[str], None] = lambda line: None,
) -> None:
    """Serve the preview until Ctrl-C or SIGTERM, opening it in the browser unless told not to."""
    server = create_server(config, options, port=port, env_file=env_file)
    url = url_of(server)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        announce(f"previewing on {url} (Ctrl-C stops)")
        if open_browser:
            # In a thread: without a desktop, webbrowser may run a console browser and wait for
            # it, and that browser would wait for this server.
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
        server.run()  # on KeyboardInterrupt: lets requests under way finish, returns
    finally:
        server.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# --- what the inputs are, and when they change


def _stamp(paths: Iterable[Path | None]) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime in ns, size) of each file, of each file under each folder; -1s if missing."""
    found: list[tuple[str, int, int]] = []
    for path in paths:
        if path is None:
            continue
        files = [path]
        if path.is_dir():
            try:
                files = sorted(p for p in path.rglob("*") if p.is_file())
            except OSError:  # changing while it is listed: the next request looks again
                files = [path]
        for file in files:
            try:
                status = file.stat()
            except OSError:  # missing, or gone since the folder was listed
                found.append((str(file), -1, -1))
            else:
                found.append((str(file), status.st_mtime_ns, status.st_size))
    return tuple(found)


def watched(config: Config, options: IssueOptions, env_path: Path) -> tuple[Path | None, ...]:
    """Every file and folder a preview depends on."""
    archive = config.archive_path
    return (
        config.path,
        env_path,
        config.email.templates,
        render.packaged_templates(),
        LOCALES,
        archive,
        # The archive is in WAL mode: a write lands in this file before the archive's own.
        archive.with_name(archive.name + "-wal"),
        config.subscribers_path,
        options.note_path if options.note_path is not None else config.email.note,
    )


@dataclass(slots=True)
class _State:
    """The inputs as of one fingerprint: the config, the issue, and each variant once rendered."""

    fingerprint: str
    config: Config
    now: datetime
    issue: Issue | None = None
    note: str = ""
    error: DigestError | None = None  # the config or the issue could not be had
    rendered: dict[render.Variant, render.Rendered | DigestError] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Choice:
    """A reader in the picker."""

    email: str  # "" for the sample reader
    label: str
    selected: bool = False


@dataclass(frozen=True, slots=True)
class _Reply:
    status: HTTPStatus
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class _Preview:
    """The application: one lock guards the current state, so each input change is handled once."""

    def __init__(
        self,
        config: Config,
        options: IssueOptions,
        *,
        reload: Callable[[], Config],
        env_path: Path,
        clock: Clock,
    ) -> None:
        self.options, self.reload, self.env_path, self.clock = options, reload, env_path, clock
        self.lock = threading.Lock()
        self.config = config  # the last that loaded: its paths are watched even while broken
        self.config_error: DigestError | None = None
        self.config_stamp = _stamp((config.path, env_path))
        self.state: _State | None = None
        folder = data_dir() / "templates" / "preview"
        self.pages = Environment(
            loader=FileSystemLoader(folder),
            autoescape=select_autoescape(["html.j2"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        style = (folder / "preview.css").read_text(encoding="utf-8")
        script = (folder / "preview.js").read_text(encoding="utf-8")
        self.style, self.script = Markup(style), Markup(script)  # our files; the CSP pins them
        self.page_headers = (
            (
                "Content-Security-Policy",
                f"default-src 'none'; style-src '{_sha256(style)}'; "
                f"script-src '{_sha256(script)}'; connect-src 'self'; frame-src 'self'; "
                "form-action 'self'; base-uri 'none'; frame-ancestors 'self'",
            ),
        )
        # The email as a mail client shows it: its pictures load, nothing else, no script runs.
        self.email_headers = (
            (
                "Content-Security-Policy",
                "default-src 'none'; img-src http: https: data:; style-src 'unsafe-inline'; "
                "frame-ancestors 'self'",
            ),
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            reply = self.route(environ)
        except Exception as err:  # a bug in digest: the traceback in the terminal, one line here
            environ["wsgi.errors"].write(traceback.format_exc())
            reply = self.problem_page(
                f"unexpected {type(err).__name__}: {err}",
                hint="this is a bug in digest; the traceback is in the terminal, please report it",
            )
        start_response(
            f"{reply.status.value} {reply.status.phrase}",
            [
                ("Content-Type", reply.content_type),
                ("Content-Length", str(len(reply.body))),
                ("Cache-Control", "no-store"),
                ("Referrer-Policy", "no-referrer"),
                ("X-Content-Type-Options", "nosniff"),
                *reply.headers,
            ],
        )
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else reply.body]

    def route(self, environ: WSGIEnvironment) -> _Reply:
        if not _names_this_machine(environ.get("HTTP_HOST", "")):
            return _plain(HTTPStatus.FORBIDDEN, "the preview answers only to 127.0.0.1\n")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            reply = _plain(HTTPStatus.METHOD_NOT_ALLOWED, "the preview is read-only\n")
            return _Reply(reply.status, reply.body, reply.content_type, (("Allow", "GET, HEAD"),))
        path = environ.get("PATH_INFO", "")
        reader = parse_qs(environ.get("QUERY_STRING", "")).get("for", [""])[0].strip()
        if path == "/version":
            with self.lock:
                return _plain(HTTPStatus.OK, self.fingerprint())
        if path == "/":
            return self.page(reader)
        if path in ("/email.html", "/email.txt"):
            return self.email(reader, html=path.endswith(".html"))
        return _plain(HTTPStatus.NOT_FOUND, "not found: the preview is at /\n")

    # --- the state

    def fingerprint(self) -> str:
        """The inputs' fingerprint; reads the config again first if it changed. Lock held."""
        stamp = _stamp((self.config.path, self.env_path))
        if stamp != self.config_stamp:
            self.config_stamp = stamp
            try:
                self.config, self.config_error = self.reload(), None
            except DigestError as err:  # shown on the page until the file is fixed
                self.config_error = err
        stamps = _stamp(watched(self.config, self.options, self.env_path))
        return hashlib.sha256(repr(stamps).encode("utf-8")).hexdigest()[:16]

    def current(self) -> _State:
        """The state for the inputs as they are now: selected again if anything changed."""
        with self.lock:
            fingerprint = self.fingerprint()
            if self.state is None or self.state.fingerprint != fingerprint:
                self.state = self.select(fingerprint)
            return self.state

    def select(self, fingerprint: str) -> _State:
        state = _State(fingerprint, self.config, self.clock())
        if self.config_error is not None:
            state.error = self.config_error
            return state
        options = self.options
        try:
            state.issue = pipeline.select(
                self.config, options.request, now=state.now, feature_url=options.feature_url
            )
            note = options.note_path if options.note_path is not None else self.config.email.note
            state.note = pipeline.read_note(note)
        except DigestError as err:
            state.error = err
        return state

    def copy(self, state: _State, email: str) -> pipeline.Sample:
        """This reader's copy; a variant is rendered once per state. DigestError if it fails."""
        if state.error is not None:
            raise state.error
        assert state.issue is not None
        reader = pipeline.reader_for(state.config, email or None)
        with self.lock:  # one thread renders a variant; the others wait and reuse it
            rendered = state.rendered.get(reader.variant)
            if rendered is None:
                try:
                    rendered = pipeline.render_issue(
                        state.config, state.issue, reader.variant, note=state.note
                    )
                except DigestError as err:
                    rendered = err
                state.rendered[reader.variant] = rendered
        if isinstance(rendered, DigestError):
            raise rendered
        return pipeline.copy_for(state.config, state.issue, rendered, reader, now=state.now)

    # --- replies

    def email(self, reader: str, *, html: bool) -> _Reply:
        try:
            copy = self.copy(self.current(), reader)
        except DigestError as err:
            if html:
                return self.problem_page(err.message, where=err.where, hint=err.hint)
            return _plain(HTTPStatus.INTERNAL_SERVER_ERROR, f"error: {err}\n")
        if html:
            return _Reply(
                HTTPStatus.OK, copy.email.html.encode("utf-8"), headers=self.email_headers
            )
        return _plain(HTTPStatus.OK, copy.email.text)

    def page(self, reader: str) -> _Reply:
        state = self.current()
        choices, picker_note = self.choices(state.config, reader)
        context: dict[str, Any] = {
            "state": state,
            "choices": choices,
            "picker_note": picker_note,
            "query": f"?{urlencode({'for': reader})}" if reader else "",
            "error": None,
            "copy": None,
            "warnings": [],
        }
        try:
            copy = self.copy(state, reader)
        except DigestError as err:
            context["error"] = err
        else:
            assert state.issue is not None
            context.update(copy=copy, **_inbox(copy, state))
            context["warnings"] = list(copy.reader.warnings)
            if not state.issue.articles:
                context["warnings"].append(
                    "no articles in this period: run `digest collect`, or choose the period "
                    "with --since and --until (or --days)"
                )
        # A broken email is still a working preview page: it says what to fix, and reloads.
        return self.render_page(
            "page.html.j2", HTTPStatus.OK, fingerprint=state.fingerprint, **context
        )

    def choices(self, config: Config, chosen: str) -> tuple[list[_Choice], str]:
        """The picker: the sample reader, then subscribers in file order; and a note if any."""
        sample = _Choice("", f"Sample reader · {pipeline.SAMPLE_READER} · every section")
        found: list[_Choice] = []
        note = ""
        file = SubscriberFile(config.subscribers_path)
        if not file.exists():
            note = f"No subscriber file at {config.subscribers_path}."
        else:
            try:
                for subscriber in file:
                    if len(found) == PICKER_LIMIT:
                        note = f"The first {PICKER_LIMIT} subscribers; ?for=EMAIL shows anyone."
                        break
                    found.append(_Choice(subscriber.email, _label(subscriber)))
            except SubscriberFileError as err:
                note = f"The subscriber file cannot be read: {err}"
        wanted = email_key(chosen)
        if chosen and not any(email_key(c.email) == wanted for c in found):
            found.append(_Choice(chosen, chosen))
        choices = [sample, *found]
        # Addresses compare case-insensitively: ?for=Bo.Li@... still selects Bo in the list.
        selected = next((c for c in choices if email_key(c.email) == wanted), sample)
        return [replace(c, selected=c is selected) for c in choices], note

    def render_page(
        self, template: str, status: HTTPStatus, *, fingerprint: str, **context: Any
    ) -> _Reply:
        html = self.pages.get_template(template).render(
            style=self.style,
            script=self.script,
            poll_ms=POLL_SECONDS * 1000,
            fingerprint=fingerprint,
            newsletter=self.config.newsletter.name,
            **context,
        )
        return _Reply(status, html.encode("utf-8"), headers=self.page_headers)

    def problem_page(self, message: str, *, where: str = "", hint: str = "") -> _Reply:
        """An email that could not be made, as a page that says why (for the frames)."""
        with self.lock:
            fingerprint = self.fingerprint()
        return self.render_page(
            "problem.html.j2",
            HTTPStatus.INTERNAL_SERVER_ERROR,
            message=message,
            where=where,
            hint=hint,
            fingerprint=fingerprint,
        )


def _plain(status: HTTPStatus, text: str) -> _Reply:
    return _Reply(status, text.encode("utf-8"), "text/plain; charset=utf-8")


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def _names_this_machine(host: str) -> bool:
    """True for a Host header naming 127.0.0.1 or localhost (with any port), or none at all."""
    name = host.rpartition(":")[0] if host.rpartition(":")[2].isdigit() else host
    return name.lower() in ("", HOST, "localhost")


def _label(subscriber: Subscriber) -> str:
    name = f"{subscriber.first_name} {subscriber.last_name}".strip()
    parts = [name] if name else []
    parts.append(subscriber.email)
    if subscriber.language:
        parts.append(subscriber.language)
    parts.append(", ".join(subscriber.sections) if subscriber.sections else "every section")
    if not subscriber.receives_mail:
        parts.append(subscriber.status.value)
    return " · ".join(parts)


def _inbox(copy: pipeline.Sample, state: _State) -> dict[str, str]:
    """What the page's inbox line and header show."""
    assert state.issue is not None
    zone = state.config.newsletter.timezone
    period = state.issue.period
    first = period.start.astimezone(zone)
    last = (period.end - timedelta(microseconds=1)).astimezone(zone)
    sender = copy.message["From"].addresses[0]
    return {
        "sender_name": sender.display_name or sender.addr_spec,
        "sender": str(copy.message["From"]),
        "to": str(copy.message["To"]),
        "period": f"{first:%b} {first.day} – {last:%b} {last.day}, {last.year}",
        "time": f"{state.now.astimezone(zone):%H:%M}",
    }
