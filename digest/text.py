"""Plain text from untrusted feed HTML, and excerpts cut to length between words (pure)."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

# Elements whose contents are never prose: code, styling, embeds and document metadata.
_DROPPED = frozenset({"script", "style", "template", "noscript", "iframe", "svg", "head"})

# Elements a browser lays out on their own line, so the words on either side stay apart.
_BLOCKS = frozenset(
    """address article aside blockquote br caption dd details dialog div dl dt fieldset
    figcaption figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr legend li main nav ol
    p pre section summary table tbody td tfoot th thead tr ul""".split()  # noqa: SIM905
)

# Invisible characters that only get in the way in plain text: zero-width space, word
# joiner, byte order mark and the C0 controls that are not whitespace. Zero-width
# (non-)joiners stay: emoji sequences and some scripts need them.
_INVISIBLE = dict.fromkeys([0x200B, 0x2060, 0xFEFF, 0x7F, *range(0x00, 0x09), *range(0x0E, 0x1C)])

# Feeds often escape their HTML twice, so "&amp;#8217;" is still an entity after parsing.
_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")

# Where html.parser sees a tag, comment or declaration begin.
_TAG_START = re.compile(r"<[A-Za-z/!?]")


class _TextCollector(HTMLParser):
    """Keeps the text nodes outside dropped elements, with a space for each block edge."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.dropping: list[str] = []  # open dropped elements, innermost last

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROPPED:
            self.dropping.append(tag)
        elif tag == "body" and "head" in self.dropping:
            # A missing </head> must not swallow the whole body, as in a browser.
            del self.dropping[self.dropping.index("head") :]
        if tag in _BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.dropping:
            # Closing an element also closes whatever was left open inside it.
            last = len(self.dropping) - 1 - self.dropping[::-1].index(tag)
            del self.dropping[last:]
        if tag in _BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self.dropping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Reduce feed HTML to one line of plain text; never raises, whatever the markup."""
    collector = _TextCollector()
    collector.feed(_parseable(markup))
    collector.close()
    text = "".join(collector.parts)
    if _ENTITY.search(text):
        text = html.unescape(text)
    return " ".join(text.translate(_INVISIBLE).split())


def _parseable(markup: str) -> str:
    """The markup as html.parser should see it to read it like a browser, quickly and safely."""
    if ">" not in markup:
        # No tag anywhere: plain text, such as a title, where "<" is just a character.
        return markup.replace("<", "&lt;")
    # html.parser raises AssertionError on some "<![" sections; HTML5 reads them all as bogus
    # comments (up to the next ">"), which is what "<!-[" becomes.
    markup = markup.replace("<![", "<!-[")
    # A comment or tag left open at the end (a truncated description) runs to the end in
    # HTML5. html.parser would print it as text instead, after scanning to the end once per
    # "<" in it: minutes for a long one.
    closed = markup.rfind("-->")
    comment = markup.find("<!--", closed + 1 if closed >= 0 else 0)
    if comment >= 0:
        markup = markup[:comment]
    tag = _TAG_START.search(markup, markup.rfind(">") + 1)
    return markup[: tag.start()] if tag else markup


# What feeds and WordPress append to a description: "[…]" markers, "Read more" links and
# the "The post … appeared first on …" signature. Only ever matched at the very end.
_BOILERPLATE = re.compile(
    r"""\s*(?:
        \[\s*(?:…|\.\.\.|&hellip;)\s*\]
        | …
        | \.\.\.
        | \(more…\)
        | Continue\ [Rr]eading(?:\ [“"][^”"]*[”"])?(?:\ ?[→»›])?
        | Read\ [Mm]ore(?:\ ?[→»›…])?
        | \[\s*[Rr]ead\ [Mm]ore\s*\]
        | The\ post\ (?:(?!The\ post\ ).)+\ appeared\ first\ on\ (?:(?!The\ post\ ).)+
    )\Z""",
    re.VERBOSE,
)

# Punctuation that reads badly right before an ellipsis.
_BEFORE_ELLIPSIS = " ,;:.-–—([{"


def make_excerpt(markup: str, limit: int) -> str:
    """Plain text without feed boilerplate, cut between words to at most `limit` characters.

    The result ends in "…" whenever text is missing: cut here, or cut by the feed already.
    """
    text = html_to_text(markup)
    cut_off = False  # a "[…]" or "Read more" says the feed already shortened the text
    while match := _BOILERPLATE.search(text):
        cut_off = cut_off or not match.group().lstrip().startswith("The post ")
        text = text[: match.start()]
    if len(text) <= limit and not cut_off:
        return text
    if len(text) < limit and text.rstrip(_BEFORE_ELLIPSIS):
        return text.rstrip(_BEFORE_ELLIPSIS) + "…"
    budget = limit - 1  # room left for the ellipsis
    space = text.rfind(" ", 0, budget + 1)
    head = text[:space].rstrip(_BEFORE_ELLIPSIS) if space > 0 else ""
    # No word fits whole (a long first word, say): cut it where the room ends.
    return (head or text[:budget].rstrip(_BEFORE_ELLIPSIS) or text[:budget]) + "…"
