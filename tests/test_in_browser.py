"""The built email in headless Chromium: at 600 and 375 px, light and dark, nothing overflows,
pictures keep their boxes, and text contrast meets WCAG AA. Screenshots are kept to look at:
in $DIGEST_SCREENSHOTS if set, else in pytest's temporary folder (`screenshots/`)."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import launch, needs_chromium
from example_issue import READER, example_project
from playwright.sync_api import Browser, Page, Route, sync_playwright

from digest import pipeline, render

WIDTHS = (600, 375)
SCHEMES = ("light", "dark")
NOTE = "We spent the week at the port.\n\nWrite back: every letter is read."

pytestmark = needs_chromium


def placeholder_png(width: int = 1200, height: int = 800) -> bytes:
    """A soft gradient PNG, standing in for the example's pictures, which live nowhere."""
    rows = b"".join(
        b"\x00" + bytes(c for x in range(width) for c in (96 + 64 * x // width, 132, 164))
        for _ in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))


@pytest.fixture(scope="module")
def built_html(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The example week as READER receives it, with an editor's note."""
    config, issue = example_project(tmp_path_factory.mktemp("example"))
    rendered = pipeline.render_issue(config, issue, render.variant_for(config), note=NOTE)
    return rendered.personalise(READER).html


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("DIGEST_SCREENSHOTS") or tmp_path_factory.getbasetemp())
    folder = folder / "screenshots" if "DIGEST_SCREENSHOTS" not in os.environ else folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(built_html: str) -> Iterator[Browser]:
    # Depends on built_html so the email is built first: collecting uses asyncio.run, which
    # cannot run inside the event loop Playwright's sync API keeps going.
    with sync_playwright() as playwright:
        launched = launch(playwright)
        yield launched
        launched.close()


def open_email(
    browser: Browser, html: str, width: int, scheme: str, *, images: bool = True
) -> Page:
    """A page showing `html` at `width` px in `scheme`, offline: pictures are a local PNG (or
    blocked), and every other request is refused."""
    picture = placeholder_png()

    def answer(route: Route) -> None:
        if images and route.request.resource_type == "image":
            route.fulfill(status=200, content_type="image/png", body=picture)
        else:
            route.abort()

    page = browser.new_page(viewport={"width": width, "height": 900})
    page.route("**/*", answer)
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
    page.set_content(html, wait_until="load")
    return page


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
def test_nothing_overflows_and_a_screenshot_is_kept(
    browser: Browser, built_html: str, screenshots: Path, width: int, scheme: str
) -> None:
    """At 600 and 375 px, light and dark, the page is no wider than the screen."""
    page = open_email(browser, built_html, width, scheme)
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        widest = page.evaluate(
            "Math.max(...[...document.querySelectorAll('body *')]"
            ".map(e => e.getBoundingClientRect().right))"
        )
        assert widest <= width
        page.screenshot(path=str(screenshots / f"email-{width}-{scheme}.png"), full_page=True)
    finally:
        page.close()
    assert (screenshots / f"email-{width}-{scheme}.png").stat().st_size > 10_000


@pytest.mark.parametrize("width", WIDTHS)
def test_blocked_pictures_keep_their_boxes(browser: Browser, built_html: str, width: int) -> None:
    """With images off (as many clients start), each picture still holds its 3:2 box; one with
    alt text may grow taller to show it, never wider."""
    page = open_email(browser, built_html, width, "light", images=False)
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        boxes = page.evaluate(
            "[...document.images].map(i => [i.getBoundingClientRect().width,"
            " i.getBoundingClientRect().height, i.alt])"
        )
    finally:
        page.close()
    assert len(boxes) == 5 and any(alt for _, _, alt in boxes)
    for box_width, box_height, alt in boxes:
        assert box_width >= 60
        if alt:
            assert box_height >= box_width / 1.5 - 1
        else:
            assert abs(box_width / box_height - 1.5) < 0.05


@pytest.mark.parametrize("scheme", SCHEMES)
def test_text_and_links_meet_wcag_aa_contrast(
    browser: Browser, built_html: str, scheme: str
) -> None:
    """Every visible text (links included) has at least 4.5:1 contrast with what is behind it."""
    page = open_email(browser, built_html, 600, scheme)
    try:
        pairs: list[dict[str, Any]] = page.evaluate(TEXT_COLOURS)
    finally:
        page.close()
    assert len(pairs) > 50 and any(p["tag"] == "A" for p in pairs)
    low = [
        (p["tag"], p["text"], round(contrast(p["color"], p["background"]), 2))
        for p in pairs
        if contrast(p["color"], p["background"]) < 4.5
    ]
    assert not low


# Each element with visible text of its own: its colour and the first opaque background behind it.
TEXT_COLOURS = """
() => {
  const out = [];
  const hidden = e => e.closest('.preheader') || e.getClientRects().length === 0;
  const background = e => {
    for (let n = e; n; n = n.parentElement) {
      const c = getComputedStyle(n).backgroundColor;
      if (c && !c.endsWith(', 0)') && c !== 'transparent') return c;
    }
    return 'rgb(255, 255, 255)';
  };
  for (const e of document.body.querySelectorAll('*')) {
    const own = [...e.childNodes].filter(n => n.nodeType === 3).map(n => n.data).join('').trim();
    if (!own || hidden(e)) continue;
    out.push({tag: e.tagName, text: own.slice(0, 40),
              color: getComputedStyle(e).color, background: background(e)});
  }
  return out;
}
"""


def contrast(foreground: str, background: str) -> float:
    """WCAG 2 contrast ratio of two CSS rgb()/rgba() colours."""

    def luminance(css: str) -> float:
        channels = [float(v) for v in css[css.index("(") + 1 : -1].split(",")[:3]]
        linear = [
            c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
            for c in (v / 255 for v in channels)
        ]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (light + 0.05) / (dark + 0.05)
