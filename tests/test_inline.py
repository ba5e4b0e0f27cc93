"""Inlining CSS: rules move into style attributes, kept blocks stay, nothing fetched or printed."""

from __future__ import annotations

import pytest
from conftest import HttpServer
from lxml import html as lxml_html

from digest.errors import TemplateError
from digest.inline import inline_css

PAGE = """<!DOCTYPE html>
<html lang="en"><head>
<style>
  .card { padding: 16px 0; color: #1d232a; }
  .card a { color: #0a58a5; }
  img.thumb { width: 100%; }
</style>
<style data-premailer="ignore">
  @media (prefers-color-scheme: dark) { .card { color: #e4e8ec !important; } }
</style>
</head><body>
<table role="presentation"><tr><td class="card"><a href="https://example.org/?a=1&amp;b=2">Story</a>
<img class="thumb" src="https://example.org/x.jpg" width="120" height="80" alt=""></td></tr></table>
</body></html>"""


def parse(markup: str) -> lxml_html.HtmlElement:
    return lxml_html.document_fromstring(markup)


def test_rules_become_style_attributes_and_the_plain_style_block_goes() -> None:
    """Each matching element gets the rule's declarations; the inlined <style> is removed."""
    doc = parse(inline_css(PAGE).html)
    (cell,) = doc.find_class("card")
    assert cell.get("style") == "padding:16px 0; color:#1d232a"
    assert next(cell.iter("a")).get("style") == "color:#0a58a5"
    assert all("@media" in (style.text or "") for style in doc.iter("style"))


def test_the_ignored_block_is_kept_as_written_without_its_marker() -> None:
    """Media queries and dark mode stay in a <style> block, !important intact."""
    result = inline_css(PAGE).html
    doc = parse(result)
    (kept,) = [s for s in doc.iter("style")]
    assert "@media (prefers-color-scheme: dark)" in (kept.text or "")
    assert "!important" in (kept.text or "")
    assert "data-premailer" not in result


def test_pixel_width_attributes_are_not_overwritten_by_css() -> None:
    """`width: 100%` in CSS does not replace the width="120" that Outlook sizes images by."""
    img = next(parse(inline_css(PAGE).html).iter("img"))
    assert (img.get("width"), img.get("height")) == ("120", "80")
    assert "width:100%" in img.get("style", "")


def test_links_and_doctype_come_through_unchanged() -> None:
    """Query strings stay escaped as they were, and the doctype is kept."""
    result = inline_css(PAGE).html
    assert result.startswith("<!DOCTYPE html>")
    assert 'href="https://example.org/?a=1&amp;b=2"' in result


def test_a_linked_stylesheet_is_never_fetched(http_server: HttpServer) -> None:
    """allow_network is off: a <link rel=stylesheet> to a server is not requested."""
    url = http_server.url("/styles.css")
    http_server.respond("/styles.css", b".card { color: red; }", Content_Type="text/css")
    page = PAGE.replace("</head>", f'<link rel="stylesheet" href="{url}"></head>')
    doc = parse(inline_css(page).html)
    assert http_server.requests_to("/styles.css") == []
    assert "red" not in next(iter(doc.find_class("card"))).get("style", "")


def test_css_complaints_are_returned_not_printed(capfd: pytest.CaptureFixture[str]) -> None:
    """cssutils' warnings about a broken stylesheet come back as data; stderr stays quiet."""
    broken = PAGE.replace(".card a { color: #0a58a5; }", ".card a { color: ; } }} @bogus {")
    result = inline_css(broken)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    assert result.warnings


def test_markup_premailer_cannot_read_is_a_template_error() -> None:
    """An empty document cannot be inlined; the error says so in one line."""
    with pytest.raises(TemplateError):
        inline_css("")
