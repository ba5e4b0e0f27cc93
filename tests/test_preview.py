"""`digest preview` through a real waitress server: each route over HTTP, edits while it runs,
the command itself, and once in Chromium (pick a reader, read the text, edit, see it reload)."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from chromium import launch, needs_chromium
from click.testing import CliRunner
from example_issue import NOW, WEEK, example_project
from waitress.server import BaseWSGIServer

from digest import pipeline, preview, render
from digest.cli import cli
from digest.config import Config, load_config
from digest.models import Issue

SUBSCRIBERS = [
    "ana.perez@example.org",
    "bo.li@example.net",
    "cy.okoro@example.com",
    "dee.morgan@example.org",
    "eli.santos@example.com",
]
BO = "bo.li@example.net"
BROKEN = "{% if < %}broken{% endif %}\n"  # a syntax error whose message has a "<" in it


@dataclass
class Answer:
    status: int
    headers: Message
    text: str


# No proxies: the environment's http_proxy must not see requests to 127.0.0.1.
_client = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> Answer:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with _client.open(request, timeout=30) as response:
            return Answer(response.status, response.headers, response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        with err:
            return Answer(err.code, err.headers, err.read().decode("utf-8"))


class Page(HTMLParser):
    """What a test asserts about the preview page: elements, their text, not the markup."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text_of: dict[str, str] = {}  # element id -> its text
        self.words_: list[str] = []
        self._open: list[str | None] = []  # the ids of the open elements
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        self.tags.append((tag, found))
        if tag not in ("meta", "link", "br", "input", "img"):
            self._open.append(found.get("id"))

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        self.words_.append(data)
        for element in self._open:
            if element:
                self.text_of[element] = self.text_of.get(element, "") + data

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.words_).split())

    @property
    def options(self) -> list[str]:
        return [attrs["value"] for attrs in self.all("option")]

    @property
    def chosen(self) -> str:
        (value,) = [attrs["value"] for attrs in self.all("option") if "selected" in attrs]
        return value


_mtimes = itertools.count(time.time_ns() + 10**9, 10**9)


def edit(path: Path, text: str | None = None) -> None:
    """Write `text` to `path` (None: leave it) and give it a later mtime than any edit before,
    so each edit changes the fingerprint whatever the file system's timestamp resolution."""
    if text is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    stamp = next(_mtimes)
    os.utime(path, ns=(stamp, stamp))


@dataclass
class Running:
    """A preview server on 127.0.0.1 for the example project in tmp_path."""

    url: str  # ends with "/"
    config: Config
    issue: Issue

    @property
    def root(self) -> Path:
        return self.config.root

    def get(self, path: str = "", **headers: str) -> Answer:
        return fetch(self.url + path.lstrip("/"), headers=headers)

    def page(self, path: str = "") -> Page:
        answer = self.get(path)
        assert answer.status == 200, answer.text
        return Page(answer.text)

    def version(self) -> str:
        return self.get("version").text

    def sample(self, recipient: str | None = None) -> pipeline.Sample:
        """What `digest build` makes for this reader: the preview must show the same."""
        config = load_config(self.config.path, environ={})
        return pipeline.sample(config, self.issue, now=NOW, recipient=recipient)

    def configure(self, extra: str) -> None:
        """Append TOML to the project's digest.toml."""
        text = self.config.path.read_text(encoding="utf-8")
        edit(self.config.path, text + "\n" + extra)


@pytest.fixture
def project(tmp_path: Path) -> tuple[Config, Issue]:
    """`digest init` and `digest collect` in tmp_path, and the example week selected."""
    return example_project(tmp_path / "news", environ={})


def start(config: Config, **kw: Any) -> tuple[BaseWSGIServer, threading.Thread]:
    server = preview.create_server(
        config, preview.IssueOptions(request=WEEK), port=0, environ={}, clock=lambda: NOW, **kw
    )
    thread = threading.Thread(target=server.run)
    thread.start()
    return server, thread


def stop(server: BaseWSGIServer, thread: threading.Thread) -> None:
    """End server.run() now: its loop stops when its socket map is empty, checked on each wake."""
    server.task_dispatcher.shutdown()
    channels = list(server._map.values())
    server._map.clear()
    server.pull_trigger()
    thread.join(timeout=10)
    assert not thread.is_alive()
    for channel in channels:
        channel.close()


@pytest.fixture
def running(project: tuple[Config, Issue]) -> Iterator[Running]:
    config, issue = project
    server, thread = start(config)
    try:
        yield Running(preview.url_of(server), config, issue)
    finally:
        stop(server, thread)


# --- the routes


def test_the_page_shows_the_inbox_line_both_widths_the_text_and_the_picker(
    running: Running,
) -> None:
    """From, subject and preheader; two frames of the email; its text; every subscriber."""
    copy = running.sample()
    page = running.page()
    assert "The Harbor Dispatch <weekly@dispatch.example.org>" in page.words
    assert copy.email.subject in page.words and copy.email.preheader in page.words
    frames = {attrs["data-pane"]: attrs for attrs in page.all("iframe")}
    assert frames.keys() == {"desktop", "phone"}
    assert {attrs["src"] for attrs in frames.values()} == {"/email.html"}
    assert "allow-scripts" not in frames["desktop"]["sandbox"]
    assert page.text_of["text"] == copy.email.text
    assert page.options == ["", *SUBSCRIBERS] and page.chosen == ""
    assert "2026-W47" in page.words and "14 stories" in page.words
    assert "DIGEST_SECRET is unset" in page.words  # the reader's warnings are on the page


@pytest.mark.parametrize("reader", [None, BO, "ana.perez@example.org"])
def test_the_email_routes_serve_what_build_writes(running: Running, reader: str | None) -> None:
    """/email.html and /email.txt are byte for byte the copy `digest build --for` makes."""
    query = f"?for={reader}" if reader else ""
    copy = running.sample(reader)
    html, text = running.get(f"email.html{query}"), running.get(f"email.txt{query}")
    assert (html.status, text.status) == (200, 200)
    assert html.headers["Content-Type"] == "text/html; charset=utf-8"
    assert text.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert html.text == copy.email.html and text.text == copy.email.text


def test_choosing_a_reader_shows_their_greeting_sections_and_language(running: Running) -> None:
    """Bo gets his two sections in English, Ana every section in Spanish, the sample all."""
    sample = running.page()
    assert "Hi there," in sample.text_of["text"] and "LATIN AMERICA" in sample.text_of["text"]
    bo = running.page(f"?for={BO}")
    assert bo.chosen == BO
    assert "Hi Bo," in bo.text_of["text"]
    assert "LABOR" in bo.text_of["text"] and "LATIN AMERICA" not in bo.text_of["text"]
    assert {attrs["src"] for attrs in bo.all("iframe")} == {"/email.html?for=bo.li%40example.net"}
    assert "Bo Li <bo.li@example.net>" in bo.words
    ana = running.page("?for=ANA.PEREZ@example.org")  # addresses compare case-insensitively
    assert ana.chosen == "ana.perez@example.org"
    assert "Hola, Ana:" in ana.text_of["text"] and "Estas son las 14" in ana.text_of["text"]


def test_a_reader_not_on_the_list_is_explained_on_the_page(running: Running) -> None:
    """An unknown ?for= is an error on the page, with the picker still there; 500 for the email."""
    page = running.page("?for=nobody@example.org")
    assert "The email cannot be made" in page.words
    assert "no subscriber has the address nobody@example.org" in page.words
    assert "nobody@example.org" in page.options and page.all("iframe") == []
    assert running.get("email.html?for=nobody@example.org").status == 500
    answer = running.get("email.txt?for=nobody@example.org")
    assert answer.status == 500 and answer.text.startswith("error: ")


def test_a_broken_template_is_shown_and_the_page_recovers_once_it_is_fixed(
    running: Running,
) -> None:
    """A syntax error names its file and line (escaped), the server keeps going, and fixing the
    template brings the email back with the fix in it."""
    footer = running.root / "mine" / "partials" / "footer.html.j2"
    edit(footer, (render.packaged_templates() / "partials" / "footer.html.j2").read_text("utf-8"))
    running.configure('[email]\ntemplates = "mine"\n')
    assert running.get("email.html").status == 200

    edit(footer, BROKEN)
    answer = running.get()
    assert answer.status == 200  # the preview page works; the email it shows does not
    page = Page(answer.text)
    assert "The email cannot be made" in page.words and "footer.html.j2:1" in page.words
    assert "unexpected '<'" in page.words and "unexpected '<'" not in answer.text  # escaped
    for route in ("email.html", f"email.html?for={BO}", "email.txt"):
        assert running.get(route).status == 500, route
    problem = running.get("email.html")
    assert "footer.html.j2:1" in Page(problem.text).words

    edit(footer, "<p>Fixed: {{ personal.unsubscribe_url }}</p>\n")
    fixed = running.get("email.html")
    assert fixed.status == 200 and "Fixed: https://" in fixed.text
    assert "Hi there," in running.page().text_of["text"]


def test_a_broken_config_is_shown_and_the_page_recovers_once_it_is_fixed(
    running: Running,
) -> None:
    """A config that no longer parses is an error on the page until the file is right again."""
    good = running.config.path.read_text(encoding="utf-8")
    edit(running.config.path, good.replace("[newsletter]", "[newsletter", 1))
    page = running.page()
    assert "The email cannot be made" in page.words and "not valid TOML" in page.words
    assert running.get("email.html").status == 500
    edit(running.config.path, good + '\n[email]\nsubject = "Week {{ issue.id }}"\n')
    page = running.page()
    assert "Week 2026-W47" in page.words and "Hi there," in page.text_of["text"]


def test_the_fingerprint_changes_with_each_input_and_only_then(running: Running) -> None:
    """Config, .env, templates, note, subscribers and archive each change /version; showing the
    email does not (rendering writes nothing, not even to the archive)."""
    root = running.root
    edit(root / "mine" / "partials" / "spacer.txt", "unused\n")
    edit(root / "note.txt", "A note.\n")
    running.configure('[email]\ntemplates = "mine"\nnote = "note.txt"\n')
    seen = [running.version()]
    for route in ("", "email.html", f"email.txt?for={BO}", ""):
        running.get(route)
    assert running.version() == seen[0]
    assert "A note." in running.page().text_of["text"]

    def changed() -> bool:
        seen.append(running.version())
        return seen[-1] not in seen[:-1]

    edit(root / "digest.toml")
    assert changed()
    edit(root / ".env", "UNUSED=1\n")
    assert changed()
    edit(root / "mine" / "partials" / "spacer.txt")
    assert changed()
    edit(root / "note.txt", "Another note.\n")
    assert changed()
    edit(root / "subscribers.csv")
    assert changed()
    feed = root / "feeds" / "dispatch.rss"
    feed.write_text(
        feed.read_text("utf-8").replace("Senate Deal on Disaster Aid", "Senate Deal on Storm Aid"),
        encoding="utf-8",
    )
    pipeline.collect(load_config(running.config.path, environ={}), now=NOW)  # `digest collect`
    assert changed()
    text = running.page().text_of["text"]
    assert "Another note." in text and "Senate Deal on Storm Aid" in text


def test_each_variant_is_rendered_once_until_an_input_changes(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page and both frames share one rendering per variant; an edit renders again."""
    calls: list[render.Variant] = []
    original = pipeline.render_issue

    def counting(config: Config, issue: Issue, variant: render.Variant, **kw: Any) -> Any:
        calls.append(variant)
        return original(config, issue, variant, **kw)

    monkeypatch.setattr(pipeline, "render_issue", counting)
    for route in ("", "email.html", "email.html", "email.txt", "?for=cy.okoro@example.com"):
        assert running.get(route).status == 200
    assert len(calls) == 2  # the sample reader's variant, and Cy's (one section)
    running.get(f"?for={BO}")
    assert len(calls) == 3
    edit(running.root / "subscribers.csv")
    running.get()
    assert len(calls) == 4


def test_only_this_machine_and_only_reading(running: Running) -> None:
    """Bound to 127.0.0.1; another Host is refused (DNS rebinding); no method but GET/HEAD."""
    assert running.url.startswith("http://127.0.0.1:")
    assert running.get(Host="attacker.example").status == 403
    assert running.get(Host="localhost:8025").status == 200
    assert fetch(running.url, method="POST").status == 405
    head = fetch(running.url, method="HEAD")
    assert head.status == 200 and head.text == "" and int(head.headers["Content-Length"]) > 0
    assert running.get("nothing-here").status == 404
    assert running.get().headers["Cache-Control"] == "no-store"


def test_the_email_runs_no_script_and_the_page_only_its_own(running: Running) -> None:
    """The email's policy allows its pictures and styles, never a script; the page's pins its
    one script and style sheet by hash."""
    email = running.get("email.html").headers["Content-Security-Policy"]
    assert "default-src 'none'" in email and "script-src" not in email
    page = running.get().headers["Content-Security-Policy"]
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+';", page)
    assert "connect-src 'self'" in page


# --- the command


def test_preview_prints_its_address_serves_and_stops_on_ctrl_c(
    project: tuple[Config, Issue],
) -> None:
    """`digest preview --port 0 --no-open` prints the URL, serves the page, exits 0 on SIGINT."""
    config, _ = project
    command = [sys.executable, "-m", "digest", "--config", str(config.path), "preview"]
    options = ["--port", "0", "--no-open", "--since", "2026-11-16", "--until", "2026-11-22"]
    process = subprocess.Popen(
        command + options, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"previewing on (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)\n", line)
        assert match, line
        assert "2026-W47" in fetch(match.group(1)).text
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert err == ""


def test_preview_opens_the_browser_unless_told_not_to(
    project: tuple[Config, Issue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --no-open the page's address goes to webbrowser.open; with it, nothing does."""
    config, _ = project
    opened: list[str] = []
    done = threading.Event()

    def fake_open(url: str) -> bool:
        opened.append(url)
        done.set()
        return True

    def briefly(*args: Any, **kw: Any) -> BaseWSGIServer:
        """The real server, bound, that serves until the browser is opened (or for 1 s)."""
        server = original(*args, **kw)

        def run() -> None:
            done.wait(timeout=1)

        server.run = run  # type: ignore[method-assign]
        return server

    original: Callable[..., BaseWSGIServer] = preview.create_server
    monkeypatch.setattr(preview, "create_server", briefly)
    monkeypatch.setattr("webbrowser.open", fake_open)
    urls = []
    for flags in (["--port", "0"], ["--port", "0", "--no-open"]):
        done.clear()
        result = CliRunner().invoke(cli, ["--config", str(config.path), "preview", *flags])
        assert result.exit_code == 0, result.output
        match = re.match(r"previewing on (http://127\.0\.0\.1:\d+/) ", result.stdout)
        assert match, result.stdout
        urls.append(match.group(1))
    assert opened == urls[:1]


def test_a_taken_port_is_one_line_and_exit_1(project: tuple[Config, Issue]) -> None:
    """Another program on the port: an error naming it and the fix, no traceback."""
    config, _ = project
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(
            cli, ["--config", str(config.path), "preview", "--port", port, "--no-open"]
        )
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")
    assert "--port" in result.stderr


# --- in Chromium


@pytest.fixture
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("DIGEST_SCREENSHOTS") or tmp_path_factory.getbasetemp())
    folder = folder / "screenshots" if "DIGEST_SCREENSHOTS" not in os.environ else folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@needs_chromium
def test_in_chromium_choose_a_reader_read_the_text_and_see_edits_arrive(
    running: Running, screenshots: Path
) -> None:
    """Load the page, choose Bo, see his copy in both frames and the text; break a template and
    fix it, and the page follows by itself. Screenshots are kept."""
    from playwright.sync_api import Route, expect, sync_playwright

    def local_only(route: Route) -> None:
        # The example's pictures live nowhere: refuse everything but the preview.
        if route.request.url.startswith(running.url):
            route.continue_()
        else:
            route.abort()

    footer = running.root / "mine" / "partials" / "footer.html.j2"
    original_footer = (render.packaged_templates() / "partials" / "footer.html.j2").read_text(
        "utf-8"
    )
    edit(footer, original_footer)
    running.configure('[email]\ntemplates = "mine"\n')

    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.route("**/*", local_only)
            page.goto(running.url)
            desktop = page.frame_locator("iframe[data-pane=desktop]")
            phone = page.frame_locator("iframe[data-pane=phone]")
            expect(desktop.get_by_text("Hi there,")).to_be_visible()
            expect(page.locator("#text")).to_contain_text("Hi there,")
            # The phone frame shows the email 375 px wide, and nothing in it is wider.
            widths = phone.locator("html").evaluate("html => [html.clientWidth, html.scrollWidth]")
            assert widths == [375, 375]

            page.select_option("#reader", BO)
            page.wait_for_url("**/?for=bo.li%40example.net")
            expect(desktop.get_by_text("Hi Bo,")).to_be_visible()
            expect(phone.get_by_text("Hi Bo,")).to_be_visible()
            text = page.locator("#text")
            expect(text).to_contain_text("Hi Bo,")
            expect(text).not_to_contain_text("LATIN AMERICA")
            expect(page.locator(".subject")).to_have_text(running.sample(BO).email.subject)
            page.screenshot(path=str(screenshots / "preview-1600.png"))

            edit(footer, BROKEN)  # the page notices within a second or two
            expect(page.get_by_role("heading", name="The email cannot be made")).to_be_visible()
            expect(page.locator(".where")).to_have_text(
                re.compile(r"/mine/partials/footer.html.j2:1$")
            )
            page.screenshot(path=str(screenshots / "preview-broken-template.png"))
            edit(footer, original_footer.replace("<p>", "<p>Edited. ", 1))
            expect(desktop.get_by_text("Edited.")).to_be_visible()
            expect(page.locator("#reader")).to_have_value(BO)  # still Bo's copy

            page.set_viewport_size({"width": 1000, "height": 800})
            assert page.evaluate("document.documentElement.scrollWidth") <= 1000
            page.screenshot(path=str(screenshots / "preview-1000.png"), full_page=True)
        finally:
            browser.close()
