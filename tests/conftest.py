"""Shared fixtures: a real HTTP server on 127.0.0.1 serving tests/fixtures/ and fault routes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
ETAG = '"v1"'
LAST_MODIFIED = "Wed, 01 May 2024 10:00:00 GMT"
WORDPRESS_PAGES = 2  # tests/fixtures/wordpress/posts-page-{1,2}.json
SITE_PAGE = b"<!doctype html><html><head><title>Harbour Lights</title></head><body></body></html>"
_TYPES = {".json": "application/json", ".html": "text/html; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class Request:
    """One GET the server answered: its target, headers (lower-case names) and timing."""

    path: str  # with the query string
    headers: Mapping[str, str]
    started: float  # time.monotonic() when it arrived
    answered: float  # ... and when the answer began, after any delay


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    sized: bool = True  # False: no Content-Length; the body ends when the connection closes


class HttpServer(ThreadingHTTPServer):
    """Serves tests/fixtures/ plus routes that misbehave on purpose.

    /<fixture path>                   the file (e.g. /feeds/news-guardian-us-2018.rss)
    /conditional/<fixture path>       with ETag and Last-Modified; 304 when the client has them
    /redirect?to=<path>               302 to that path; /loop redirects to itself forever
    /status/<code>                    that status, e.g. /status/404
    /slow/<seconds>/<fixture path>    the file after a delay
    /large/<bytes>                    that many bytes, no Content-Length (read to the end)
    /declares/<bytes>                 a Content-Length of that many bytes, then a short body
    /site/                            a web page, not a feed, with the WordPress REST API at
    /site/wp-json/wp/v2/posts?page=N  X-WP-TotalPages and 400 past the last page, like WordPress
    /plain/                           a web page on a site without that API
    anything given to respond()
    """

    daemon_threads = True  # a slow route must not hold up shutdown

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[Request] = []
        self.arrived: list[str] = []  # every request's target, as it arrives
        self.custom: dict[str, Reply] = {}
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def respond(self, path: str, body: bytes, *, status: int = 200, **headers: str) -> None:
        """Serve `body` at `path` (headers as keyword arguments, `_` for `-`)."""
        named = {name.replace("_", "-"): value for name, value in headers.items()}
        self.custom[path] = Reply(status, named, body)

    def requests_to(self, prefix: str) -> list[Request]:
        with self.lock:
            return [request for request in self.requests if request.path.startswith(prefix)]

    def record(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)

    def route(self, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str]) -> Reply:
        if path in self.custom:
            return self.custom[path]
        first, _, rest = path.lstrip("/").partition("/")
        if first == "conditional":
            validators = (headers.get("if-none-match"), headers.get("if-modified-since"))
            if ETAG in validators or LAST_MODIFIED in validators:
                return Reply(304, {"ETag": ETAG})
            reply = _file(rest)
            return Reply(reply.status, {**reply.headers, **_VALIDATORS}, reply.body)
        if path == "/redirect":
            return Reply(302, {"Location": query["to"][0]})
        if path == "/loop":
            return Reply(302, {"Location": "/loop"})
        if first == "status":
            return Reply(int(rest), {"Content-Type": "text/plain"}, b"status route\n")
        if first == "slow":
            seconds, _, target = rest.partition("/")
            time.sleep(float(seconds))
            return _file(target)
        if first == "large":
            body = b"<rss>" + b" " * int(rest)
            return Reply(200, {"Content-Type": "application/xml"}, body, sized=False)
        if first == "declares":
            return Reply(200, {"Content-Length": rest}, b"<rss>")
        if path == "/site/wp-json/wp/v2/posts":
            return _wordpress_page(int(query.get("page", ["1"])[0]))
        if path in ("/site/", "/plain/"):
            return Reply(200, {"Content-Type": _TYPES[".html"]}, SITE_PAGE)
        return _file(path.lstrip("/"))


_VALIDATORS = {"ETag": ETAG, "Last-Modified": LAST_MODIFIED}


def _file(relative: str) -> Reply:
    path = (FIXTURES / relative).resolve()
    if not path.is_file() or FIXTURES.resolve() not in path.parents:
        return Reply(404, {"Content-Type": "text/plain"}, b"no such fixture\n")
    content_type = _TYPES.get(path.suffix, "application/xml")
    return Reply(200, {"Content-Type": content_type}, path.read_bytes())


def _wordpress_page(page: int) -> Reply:
    if not 1 <= page <= WORDPRESS_PAGES:
        body = (
            b'{"code":"rest_post_invalid_page_number","message":"The page number requested is'
            b' larger than the number of pages available.","data":{"status":400}}'
        )
        return Reply(400, {"Content-Type": "application/json; charset=UTF-8"}, body)
    reply = _file(f"wordpress/posts-page-{page}.json")
    totals = {"X-WP-Total": "5", "X-WP-TotalPages": str(WORDPRESS_PAGES)}
    return Reply(200, {**reply.headers, **totals}, reply.body)


class _Handler(BaseHTTPRequestHandler):
    server: HttpServer

    def do_GET(self) -> None:
        started = time.monotonic()
        target = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        with self.server.lock:
            self.server.arrived.append(self.path)
        reply = self.server.route(target.path, parse_qs(target.query), headers)
        # Recorded before answering, so a client that has its answer sees the record.
        self.server.record(Request(self.path, headers, started, time.monotonic()))
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.sized and "Content-Length" not in reply.headers:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except ConnectionError:
            pass  # the client gave up on purpose: a size cap or a timeout under test

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep pytest's output clean


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    """A real HTTP server on 127.0.0.1 (port 0) that serves the fixtures and records requests."""
    server = HttpServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()
