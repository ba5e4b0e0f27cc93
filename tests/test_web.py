"""The reader pages, through a real waitress server and a real HTTP client, once in Chromium."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin
from wsgiref.util import setup_testing_defaults

import pytest
from babel.messages.pofile import read_po
from chromium import launch, needs_chromium
from click.testing import CliRunner
from waitress.server import BaseWSGIServer

from digest import tokens, web
from digest.cli import cli
from digest.config import Config, load_config
from digest.errors import ConfigError
from digest.models import SubscriberStatus
from digest.subscribers import SubscriberFile

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "digest.toml"
SECRET = "k3Vq8yN2-pLx7RfT0cWd5HsJ9mBz4GaE"
NOW = datetime(2026, 11, 23, 15, 4, 5, tzinfo=UTC)
SUBSCRIBERS = """\
email,first_name,last_name,status,sections,language,subscribed_at,unsubscribed_at,source
ana.perez@example.org,Ana,Pérez,subscribed,,es,2025-03-14T09:12:00+00:00,,signup-form
Bo.Li@Example.net,Bo,Li,subscribed,Labor;US Politics,en,2025-06-02T17:40:00+00:00,,cli
dee.morgan@example.org,Dee,Morgan,unsubscribed,,,2024-11-05T08:00:00+00:00,2026-02-11T21:03:00+00:00,cli
eli.santos@example.com,Eli,Santos,bounced,Climate,pt,2025-09-09T10:30:00+00:00,,import:substack
"""


@dataclasses.dataclass
class Answer:
    status: int
    headers: Any
    text: str


@dataclasses.dataclass
class Site:
    """A running server for a project in tmp_path, and what a test needs to talk to it."""

    url: str
    config: Config
    csv_path: Path

    def token(self, email: str) -> str:
        return tokens.make_token(email, list_id=tokens.list_id(self.config), secret=SECRET.encode())

    def page(self, name: str, email: str) -> str:
        return f"{self.url}/{name}?t={self.token(email)}"

    def row(self, email: str) -> dict[str, str]:
        """The subscriber's row as it is on disk now."""
        with self.csv_path.open(encoding="utf-8", newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r["email"].lower() == email.lower()]
        assert len(rows) == 1
        return rows[0]


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """The example publication with its subscriber file in tmp_path and a signing secret."""
    (tmp_path / "subscribers.csv").write_text(SUBSCRIBERS, encoding="utf-8")
    loaded = load_config(EXAMPLE, environ={})
    return dataclasses.replace(
        loaded, subscribers_path=tmp_path / "subscribers.csv", env={"DIGEST_SECRET": SECRET}
    )


@pytest.fixture
def site(config: Config) -> Iterator[Site]:
    """`digest serve`'s own server (web.create_server) on 127.0.0.1, a free port, in a thread."""
    server = web.create_server(config, host="127.0.0.1", port=0, clock=lambda: NOW)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        (address,) = web.addresses(server)
        yield Site(address, config, config.subscribers_path)
    finally:
        stop(server, thread)


def stop(server: web.Server, thread: threading.Thread) -> None:
    """End server.run() now: its loop stops when its socket map is empty, checked on each wake."""
    assert isinstance(server, BaseWSGIServer)
    server.task_dispatcher.shutdown()
    channels = list(server._map.values())
    server._map.clear()
    server.pull_trigger()  # wake the loop from its poll, rather than wait out the 1 s timeout
    thread.join(timeout=10)
    assert not thread.is_alive()
    for channel in channels:
        channel.close()


# No proxies: the environment's http_proxy must not see requests to 127.0.0.1.
_client = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(
    url: str,
    *,
    method: str = "GET",
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _client.open(request, timeout=10) as response:
            return Answer(response.status, response.headers, response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        with err:
            return Answer(err.code, err.headers, err.read().decode("utf-8"))


def post(url: str, fields: list[tuple[str, str]] | dict[str, str]) -> Answer:
    body = urlencode(fields).encode("ascii")
    return fetch(
        url,
        method="POST",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


class Page(HTMLParser):
    """What a test asserts about a page: its structure, not its exact markup."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self._in: list[str] = []
        self.headings: list[str] = []
        self.title = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in and self._in[-1] == "h1":
            self.headings.append(data.strip())
        if self._in and self._in[-1] == "title":
            self.title += data

    def all(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.tags
            if t == tag and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())
        ]

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


# --- one-click and the confirm page


def test_one_click_post_unsubscribes_and_answers_200(site: Site) -> None:
    """RFC 8058: POST List-Unsubscribe=One-Click changes the row on disk and answers 200."""
    answer = post(
        site.page("unsubscribe", "ana.perez@example.org"), {"List-Unsubscribe": "One-Click"}
    )
    assert answer.status == 200
    row = site.row("ana.perez@example.org")
    assert row["status"] == "unsubscribed"
    assert row["unsubscribed_at"] == "2026-11-23T15:04:05+00:00"
    assert row["first_name"] == "Ana" and row["last_name"] == "Pérez"  # the rest of the row stays


def test_one_click_works_with_a_row_that_is_not_utf8_in_the_list(site: Site) -> None:
    """A Latin-1 byte in another reader's row does not stop this one leaving, and stays."""
    with site.csv_path.open("ab") as handle:
        handle.write(b"zz@example.org,Ren\xe9,,subscribed\n")
    answer = post(
        site.page("unsubscribe", "ana.perez@example.org"), {"List-Unsubscribe": "One-Click"}
    )
    assert answer.status == 200
    ana = SubscriberFile(site.csv_path).find("ana.perez@example.org")
    assert ana is not None and ana.status is SubscriberStatus.UNSUBSCRIBED
    assert site.csv_path.read_bytes().endswith(b"zz@example.org,Ren\xe9,,subscribed\n")


def test_one_click_accepts_multipart_form_data(site: Site) -> None:
    """RFC 8058 says senders SHOULD post multipart/form-data; that unsubscribes too."""
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        b"One-Click\r\n"
        b"--XyZ--\r\n"
    )
    answer = fetch(
        site.page("unsubscribe", "Bo.Li@Example.net"),
        method="POST",
        data=body,
        headers={"Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    assert answer.status == 200
    assert site.row("bo.li@example.net")["status"] == "unsubscribed"


def test_one_click_twice_or_for_a_row_that_left_is_still_200(site: Site) -> None:
    """Repeating the POST, or posting for a bounced address, answers 200 and changes nothing."""
    url = site.page("unsubscribe", "ana.perez@example.org")
    assert post(url, {"List-Unsubscribe": "One-Click"}).status == 200
    after_first = site.csv_path.read_bytes()
    assert post(url, {"List-Unsubscribe": "One-Click"}).status == 200
    bounced = site.page("unsubscribe", "eli.santos@example.com")
    assert post(bounced, {"List-Unsubscribe": "One-Click"}).status == 200
    assert site.csv_path.read_bytes() == after_first
    assert site.row("eli.santos@example.com")["status"] == "bounced"


def test_get_and_head_change_nothing(site: Site) -> None:
    """A mail scanner following the link (GET or HEAD) leaves the file byte for byte as it was."""
    before = site.csv_path.read_bytes()
    url = site.page("unsubscribe", "ana.perez@example.org")
    assert fetch(url).status == 200
    assert fetch(url, method="HEAD").status == 200
    assert fetch(site.page("preferences", "ana.perez@example.org")).status == 200
    assert site.csv_path.read_bytes() == before


def test_confirm_page_posts_to_itself_and_shows_you_are_unsubscribed(site: Site) -> None:
    """The GET page's form, submitted as a browser would, unsubscribes and says so."""
    url = site.page("unsubscribe", "Bo.Li@Example.net")
    page = Page(fetch(url).text)
    assert page.headings == ["Unsubscribe from The Harbor Dispatch Weekly?"]
    (form,) = page.all("form", method="post")
    fields = [(i["name"], i["value"]) for i in page.all("input", type="hidden")]
    assert site.row("bo.li@example.net")["status"] == "subscribed"
    done = post(urljoin(url, form["action"]), fields)
    assert done.status == 200
    assert Page(done.text).headings == ["You're unsubscribed"]
    assert site.row("bo.li@example.net")["status"] == "unsubscribed"


def test_visiting_when_already_unsubscribed_offers_a_way_back(site: Site) -> None:
    """An unsubscribed reader sees so, with a button that subscribes them again."""
    url = site.page("unsubscribe", "dee.morgan@example.org")
    page = Page(fetch(url).text)
    assert page.headings == ["You're unsubscribed"]
    (form,) = page.all("form", method="post")
    fields = [(i["name"], i["value"]) for i in page.all("input", type="hidden")]
    back = post(urljoin(url, form["action"]), fields)
    assert back.status == 200 and "subscribed again" in Page(back.text).words
    row = site.row("dee.morgan@example.org")
    assert (row["status"], row["subscribed_at"], row["unsubscribed_at"]) == (
        "subscribed",
        "2026-11-23T15:04:05+00:00",
        "",
    )


def test_a_bounced_address_is_not_offered_resubscription(site: Site) -> None:
    """A bounced address gets no way back: no button, and a crafted POST is refused."""
    page = Page(fetch(site.page("unsubscribe", "eli.santos@example.com")).text)
    assert page.headings == ["You're unsubscribed"] and not page.all("form")
    crafted = post(site.page("preferences", "eli.santos@example.com"), {"resubscribe": "yes"})
    assert crafted.status == 400
    assert site.row("eli.santos@example.com")["status"] == "bounced"


def test_a_post_without_a_known_field_changes_nothing(site: Site) -> None:
    """Neither One-Click nor confirm=yes: 400, and the row stays."""
    answer = post(site.page("unsubscribe", "ana.perez@example.org"), {"confirm": "no"})
    assert answer.status == 400
    assert site.row("ana.perez@example.org")["status"] == "subscribed"


# --- preferences


def test_preferences_show_the_config_sections_and_the_readers_choices(site: Site) -> None:
    """One checkbox per [[sections]], ticked as the row says; the reader's language chosen."""
    page = Page(fetch(site.page("preferences", "Bo.Li@Example.net")).text)
    boxes = page.all("input", type="checkbox", name="section")
    assert [b["value"] for b in boxes] == [s.name for s in site.config.sections]
    assert {b["value"] for b in boxes if "checked" in b} == {"Labor", "US Politics"}
    (chosen,) = [r["value"] for r in page.all("input", type="radio") if "checked" in r]
    assert chosen == "en"
    assert {r["value"] for r in page.all("input", type="radio")} >= {"en", "es"}


def test_everything_is_ticked_for_a_reader_who_gets_every_section(site: Site) -> None:
    """An empty sections cell means every section, so every box is ticked."""
    page = Page(fetch(site.page("preferences", "ana.perez@example.org")).text)
    boxes = page.all("input", type="checkbox", name="section")
    assert all("checked" in b for b in boxes) and len(boxes) == len(site.config.sections)


def test_preferences_are_saved_to_the_file(site: Site) -> None:
    """Ticking two sections and Spanish writes `Labor;Climate` and `es` into the row."""
    url = site.page("preferences", "Bo.Li@Example.net")
    answer = post(url, [("section", "Climate"), ("section", "Labor"), ("language", "es")])
    assert answer.status == 200
    row = site.row("bo.li@example.net")
    assert (row["sections"], row["language"], row["status"]) == (
        "Labor;Climate",
        "es",
        "subscribed",
    )
    assert Page(answer.text).all("p", role="status")


@pytest.mark.parametrize("ticked", [[], ["US Politics", "Latin America", "Labor", "Climate"]])
def test_none_or_all_ticked_means_every_section(site: Site, ticked: list[str]) -> None:
    """No box, or every box: the sections cell is empty, so sections added later come too."""
    fields = [("section", name) for name in ticked] + [("language", "en")]
    if len(ticked) == 4:
        fields.append(("section", "More from the Dispatch"))
    assert post(site.page("preferences", "Bo.Li@Example.net"), fields).status == 200
    assert site.row("bo.li@example.net")["sections"] == ""


def test_keeping_the_newsletters_language_leaves_the_cell_empty(site: Site) -> None:
    """A reader with no language who submits the newsletter's keeps following the newsletter."""
    url = site.page("preferences", "dee.morgan@example.org")
    assert post(url, [("section", "Labor"), ("language", "en")]).status == 200
    assert site.row("dee.morgan@example.org")["language"] == ""


@pytest.mark.parametrize(
    "fields",
    [
        [("section", "Sports"), ("language", "en")],
        [("section", "Labor"), ("language", "xx")],
        [("section", "Labor")],
        [("section", "Labor"), ("language", "en"), ("language", "es")],
    ],
    ids=["unknown-section", "unknown-language", "no-language", "two-languages"],
)
def test_a_bad_preferences_form_is_refused(site: Site, fields: list[tuple[str, str]]) -> None:
    """Anything the page could not have sent is 400, and the file does not change."""
    before = site.csv_path.read_bytes()
    assert post(site.page("preferences", "Bo.Li@Example.net"), fields).status == 400
    assert site.csv_path.read_bytes() == before


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ([("section", "Sports"), ("language", "en")], "a section this newsletter does not have"),
        ([("section", "Labor"), ("language", "xx")], "a language this newsletter does not offer"),
        ([("section", "Labor")], "Part of it was missing or could not be read."),
        ([("resubscribe", "yes")], "Only a reader who unsubscribed can subscribe again here."),
    ],
    ids=["unknown-section", "unknown-language", "no-language", "resubscribe-subscribed"],
)
def test_a_bad_form_gets_a_page_saying_what_is_wrong_with_it(
    site: Site, fields: list[tuple[str, str]], says: str
) -> None:
    """Not "This link is incomplete": the page names the form's problem and that nothing changed."""
    page = Page(post(site.page("preferences", "Bo.Li@Example.net"), fields).text)
    assert page.headings == ["This form could not be saved"]
    assert says in page.words and "Nothing was changed." in page.words


def test_a_bad_form_from_a_spanish_reader_gets_its_page_in_spanish(site: Site) -> None:
    """The token names the reader, so the page about their form speaks their language."""
    fields = [("section", "Labor"), ("language", "xx")]
    page = Page(post(site.page("preferences", "ana.perez@example.org"), fields).text)
    assert page.all("html", lang="es")
    assert "No se cambió nada." in page.words


def test_a_spanish_reader_gets_spanish_pages(site: Site) -> None:
    """A row with language `es` gets the pages in Spanish, with lang="es"."""
    html = fetch(site.page("unsubscribe", "ana.perez@example.org")).text
    page = Page(html)
    assert page.all("html", lang="es")
    assert page.all("button") and "Cancelar la suscripción" in page.words


# --- refusals


def test_a_forged_or_altered_token_is_refused_with_a_plain_page(site: Site) -> None:
    """403 with a page that says what to do; no traceback, and the file does not change."""
    before = site.csv_path.read_bytes()
    real = site.token("ana.perez@example.org")
    other_list = tokens.make_token(
        "ana.perez@example.org", list_id="news.other.example", secret=SECRET.encode()
    )
    altered = real[:-1] + ("A" if real[-1] != "A" else "B")
    for token in (altered, other_list, "bm9ib2R5.x", real[:20]):
        for method in ("GET", "POST"):
            answer = fetch(
                f"{site.url}/unsubscribe?t={token}",
                method=method,
                data=b"List-Unsubscribe=One-Click" if method == "POST" else None,
            )
            assert answer.status == 403, token
            page = Page(answer.text)
            assert page.headings == ["This link doesn't work"]
            assert "Traceback" not in answer.text and "TokenError" not in answer.text
    assert site.csv_path.read_bytes() == before


@pytest.mark.parametrize("query", ["", "?t=", "?x=1", "?t=a&t=b"])
def test_a_missing_token_is_a_bad_request(site: Site, query: str) -> None:
    """No token (or two) is 400 with a plain page."""
    answer = fetch(f"{site.url}/unsubscribe{query}")
    assert answer.status == 400
    assert Page(answer.text).headings


def test_unknown_paths_are_404_and_other_methods_405(site: Site) -> None:
    """Only two pages exist; PUT and DELETE are refused with an Allow header."""
    missing = fetch(f"{site.url}/admin")
    assert missing.status == 404 and Page(missing.text).headings == ["Page not found"]
    assert fetch(f"{site.url}/").status == 404
    for method in ("PUT", "DELETE"):
        answer = fetch(site.page("unsubscribe", "ana.perez@example.org"), method=method)
        assert answer.status == 405
        assert answer.headers["Allow"] == "GET, HEAD, POST"


def test_an_oversized_body_is_refused_by_the_server(site: Site) -> None:
    """More than 10 KB is 413 before the application sees it; the file does not change."""
    before = site.csv_path.read_bytes()
    body = b"List-Unsubscribe=One-Click&pad=" + b"x" * (web.MAX_BODY + 1)
    answer = fetch(
        site.page("unsubscribe", "ana.perez@example.org"),
        method="POST",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status == 413
    assert site.csv_path.read_bytes() == before


def call_app(config: Config, environ: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    """Call the WSGI application directly, as any other WSGI server would."""
    setup_testing_defaults(environ)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(web.make_app(config, clock=lambda: NOW)(environ, start_response))
    return seen["status"], seen["headers"], body


def test_the_application_caps_bodies_under_any_server(config: Config) -> None:
    """Served by something other than waitress, a large Content-Length is still 413, unread."""
    token = tokens.make_token(
        "ana.perez@example.org", list_id=tokens.list_id(config), secret=SECRET.encode()
    )
    status, _, body = call_app(
        config,
        {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/unsubscribe",
            "QUERY_STRING": f"t={token}",
            "CONTENT_TYPE": "application/x-www-form-urlencoded",
            "CONTENT_LENGTH": str(10 * 1024 * 1024),
            "wsgi.input": io.BytesIO(b"List-Unsubscribe=One-Click"),
        },
    )
    assert status.startswith("413 ")
    assert b"<h1>" in body


def test_a_broken_subscriber_file_is_a_plain_503(config: Config) -> None:
    """When the list cannot be read the reader gets a retry page; the error goes to the log."""
    config.subscribers_path.unlink()
    token = tokens.make_token(
        "ana.perez@example.org", list_id=tokens.list_id(config), secret=SECRET.encode()
    )
    errors = io.StringIO()
    status, headers, body = call_app(
        config,
        {"PATH_INFO": "/unsubscribe", "QUERY_STRING": f"t={token}", "wsgi.errors": errors},
    )
    assert status.startswith("503 ") and headers["Retry-After"] == "60"
    assert b"Something went wrong" in body and b"Traceback" not in body
    assert "no subscriber list here" in errors.getvalue()


def test_a_missing_secret_stops_the_app_before_it_serves(config: Config) -> None:
    """make_app checks DIGEST_SECRET up front: a ConfigError, not a 500 on the first click."""
    with pytest.raises(ConfigError, match="DIGEST_SECRET"):
        web.make_app(dataclasses.replace(config, env={}))


# --- the pages themselves


def test_pages_are_accessible_and_self_contained(site: Site) -> None:
    """lang, a title naming the newsletter, one h1, labelled inputs, no script, nothing external."""
    for url in (
        site.page("unsubscribe", "Bo.Li@Example.net"),
        site.page("preferences", "Bo.Li@Example.net"),
        f"{site.url}/unsubscribe?t=forged.token",
    ):
        answer = fetch(url)
        page = Page(answer.text)
        assert page.all("html", lang="en")
        assert "The Harbor Dispatch Weekly" in page.title
        assert len(page.all("h1")) == 1
        assert page.all("meta", name="viewport")
        assert not page.all("script") and "<script" not in answer.text
        assert not re.search(r'(src|href)="(https?:)?//', answer.text)
        for box in page.all("input", type="checkbox") + page.all("input", type="radio"):
            assert re.search(
                rf'<label[^>]*><input[^>]*value="{re.escape(box["value"])}"', answer.text
            )
        assert "Harbor Dispatch, PO Box 1234" in page.words


def test_pages_forbid_caching_referrers_and_anything_but_their_style(site: Site) -> None:
    """no-store, no-referrer (the token is in the URL), and a CSP with only the style's hash."""
    headers = fetch(site.page("preferences", "Bo.Li@Example.net")).headers
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "style-src 'sha256-" in csp
    assert "unsafe-inline" not in csp


def test_names_are_escaped(config: Config) -> None:
    """A newsletter or section name with markup in it is shown as text."""
    name = 'Harbor & <b>"Dispatch"</b>'
    config = dataclasses.replace(
        config, newsletter=dataclasses.replace(config.newsletter, name=name)
    )
    token = tokens.make_token(
        "Bo.Li@Example.net", list_id=tokens.list_id(config), secret=SECRET.encode()
    )
    _, _, body = call_app(config, {"PATH_INFO": "/preferences", "QUERY_STRING": f"t={token}"})
    assert b"<b>" not in body and b"Harbor &amp; &lt;b&gt;" in body


# --- `digest serve`


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_digest_serve_serves_until_stopped(
    config: Config, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    """`digest serve --port 0` prints where it listens, answers, and exits 0 on Ctrl-C or TERM."""
    project = tmp_path / "digest.toml"  # beside the fixture's subscribers.csv
    project.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    env = {**os.environ, "DIGEST_SECRET": SECRET}
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(project), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        token = tokens.make_token(
            "Bo.Li@Example.net", list_id="weekly.dispatch.example.org", secret=SECRET.encode()
        )
        answer = fetch(f"{match[0]}/unsubscribe?t={token}")
        assert answer.status == 200
    finally:
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


def test_digest_serve_warns_off_loopback_and_names_a_taken_port(tmp_path: Path) -> None:
    """--host 0.0.0.0 is allowed with an HTTPS warning; a port in use is one error line, exit 1."""
    project = tmp_path / "digest.toml"
    project.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(
            cli,
            ["--config", str(project), "serve", "--host", "0.0.0.0", "--port", port],
            env={"DIGEST_SECRET": SECRET},
        )
    assert result.exit_code == 1, result.output
    warning, error = result.stderr.splitlines()
    assert warning.startswith("warning: listening on 0.0.0.0") and "HTTPS" in warning
    assert error.startswith(f"error: cannot listen on 0.0.0.0:{port}")


def test_every_page_string_has_a_spanish_translation() -> None:
    """Each `_("...")` in templates/web and each refusal's words is in locale/es.po."""
    folder = ROOT / "templates" / "web"
    with (folder / "locale" / "es.po").open("rb") as handle:
        spanish = {m.id for m in read_po(handle) if m.id and m.string}
    used = {
        message
        for template in folder.glob("*.html.j2")
        for message in re.findall(r'_\("([^"]+)"', template.read_text(encoding="utf-8"))
    }
    for heading, paragraphs in [*web._PROBLEMS.values(), *web._FORM_PROBLEMS.values()]:
        used.update((heading, *paragraphs))
    assert used and used <= spanish, used - spanish


# --- `digest subscribers unsubscribe --token`


def unsubscribe_cli(tmp_path: Path, *args: str) -> Any:
    project = tmp_path / "digest.toml"  # beside the fixture's subscribers.csv
    project.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    return CliRunner().invoke(
        cli,
        ["--config", str(project), "subscribers", "unsubscribe", *args],
        env={"DIGEST_SECRET": SECRET},
    )


def test_unsubscribe_by_token_or_whole_link(config: Config, tmp_path: Path) -> None:
    """--token (the t= value, or the link pasted whole) names the reader; no EMAIL needed."""
    ana = tokens.make_token(
        "ana.perez@example.org", list_id="weekly.dispatch.example.org", secret=SECRET.encode()
    )
    result = unsubscribe_cli(tmp_path, "--token", ana)
    assert result.exit_code == 0, result.output
    assert "unsubscribed ana.perez@example.org" in result.stdout
    bo = tokens.make_token(
        "Bo.Li@Example.net", list_id="weekly.dispatch.example.org", secret=SECRET.encode()
    )
    link = tokens.unsubscribe_url(config, bo)
    assert unsubscribe_cli(tmp_path, "bo.li@example.net", "--token", link).exit_code == 0
    statuses = [
        r["status"]
        for r in csv.DictReader(io.StringIO(config.subscribers_path.read_text(encoding="utf-8")))
    ]
    assert statuses[:2] == ["unsubscribed", "unsubscribed"]


def test_unsubscribe_refuses_a_bad_token_or_a_mismatch(config: Config, tmp_path: Path) -> None:
    """A forged token is exit 1 naming --token; a token for someone else than EMAIL, exit 2."""
    before = config.subscribers_path.read_bytes()
    forged = unsubscribe_cli(tmp_path, "--token", "YW5hQGV4YW1wbGUub3Jn." + "A" * 43)
    assert forged.exit_code == 1
    assert forged.stderr.startswith("error: --token: the token does not verify")
    bo = tokens.make_token(
        "Bo.Li@Example.net", list_id="weekly.dispatch.example.org", secret=SECRET.encode()
    )
    mismatch = unsubscribe_cli(tmp_path, "ana.perez@example.org", "--token", bo)
    assert mismatch.exit_code == 2 and "the token is for Bo.Li@Example.net" in mismatch.stderr
    assert unsubscribe_cli(tmp_path).exit_code == 2
    assert config.subscribers_path.read_bytes() == before


# --- once in Chromium


@needs_chromium
def test_in_chromium_confirm_unsubscribes(site: Site, tmp_path: Path) -> None:
    """Headless Chromium at 375 px: nothing overflows; click Unsubscribe, see the row change.

    The screenshots stay in pytest's tmp_path for people to look at.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 375, "height": 740})
            for name in ("preferences", "unsubscribe"):
                page.goto(site.page(name, "Bo.Li@Example.net"))
                assert page.evaluate("document.documentElement.scrollWidth") <= 375, name
                page.screenshot(path=tmp_path / f"{name}-375.png", full_page=True)
            page.get_by_role("button", name="Unsubscribe").click()
            page.get_by_role("heading", name="You're unsubscribed").wait_for()
            assert site.row("bo.li@example.net")["status"] == "unsubscribed"
        finally:
            browser.close()
