"""html_to_text and make_excerpt: feed HTML in, clean plain text of bounded length out."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.text import html_to_text, make_excerpt

WORDPRESS_DESCRIPTION = (
    "<p>Our reporters spent a week on the night buses, riding every route from the depot "
    "to the coast and back again [&hellip;]</p>\n"
    '<p>The post <a rel="nofollow" href="https://example.org/night-buses/">Night buses: '
    "a week on the road</a> appeared first on "
    '<a rel="nofollow" href="https://example.org">Example Gazette</a>.</p>\n'
)


def test_wordpress_description_loses_its_marker_and_signature() -> None:
    """The "[…]" marker becomes an ellipsis; the "The post … appeared first on …" line goes."""
    assert make_excerpt(WORDPRESS_DESCRIPTION, 500) == (
        "Our reporters spent a week on the night buses, riding every route from the depot "
        "to the coast and back again…"
    )


def test_signature_alone_leaves_a_complete_text_without_ellipsis() -> None:
    """A full description followed only by WordPress's signature is not marked as cut."""
    signature = "<p>The post <a href='/x'>Rain</a> appeared first on <a href='/'>Gazette</a>.</p>"
    assert make_excerpt(f"<p>It rained.</p>{signature}", 500) == "It rained."


@pytest.mark.parametrize(
    "tail",
    [
        "[…]",
        "[...]",
        "[&hellip;]",
        "&hellip;",
        "...",
        "<a href='/x'>Continue reading →</a>",
        "<a href='/x'>Continue reading &raquo;</a>",
        '<a href="/x">Continue reading<span> &#8220;Night buses&#8221;</span></a>',
        "<a class='more-link' href='/x'>Read more</a>",
        "[read more]",
        "(more…)",
        "[…] <a href='/x'>Read more</a>",
    ],
)
def test_trailing_read_more_boilerplate_is_removed(tail: str) -> None:
    """Each kind of feed "read more" ending becomes one ellipsis, alone or several in a row."""
    assert make_excerpt(f"<p>The council met on Tuesday {tail}</p>", 500) == (
        "The council met on Tuesday…"
    )


def test_boilerplate_words_inside_the_text_are_kept() -> None:
    """Only the end of the text is cleaned; the same words earlier on are prose."""
    text = "The post office said people read more [...] than before. Rain is due."
    assert make_excerpt(text, 500) == text


def test_script_contents_never_reach_the_text() -> None:
    """Scripts, styles and other non-prose elements vanish with their contents."""
    markup = (
        "<head><title>Page</title></head><p>Before</p><script>alert(1)</script>"
        "<style>p { color: red }</style><noscript>Enable JS</noscript>"
        '<iframe src="https://example.org"><p>frame</p></iframe>'
        "<svg><title>icon</title><text>svg text</text></svg>"
        "<template><p>later</p></template><p>After</p>"
    )
    assert html_to_text(markup) == "Before After"


def test_missing_head_end_tag_does_not_swallow_the_body() -> None:
    """A document whose </head> is missing still gives its body text."""
    assert html_to_text("<html><head><title>T</title><body><p>Body text</p>") == "Body text"


def test_entities_are_decoded_including_double_encoded_ones() -> None:
    """Named, numeric and doubly encoded entities all end up as characters."""
    markup = "<p>Tom &amp; Jerry&#8217;s &#x201C;show&#x201D; &amp;#8217; caf&eacute;</p>"
    assert html_to_text(markup) == "Tom & Jerry’s “show” ’ café"


def test_block_elements_separate_words() -> None:
    """Words in adjacent blocks get a space between them; inline elements do not."""
    markup = (
        "<h2>Title</h2><p>One</p><p>two<br>three</p><ul><li>four</li><li>five</li></ul>"
        "<table><tr><td>six</td><td>seven</td></tr></table><blockquote>eight</blockquote>"
        "<figure><img src='x.png'><figcaption>nine</figcaption></figure>"
        "<p>te<b>n</b><em>!</em></p>"
    )
    assert html_to_text(markup) == "Title One two three four five six seven eight nine ten!"


def test_bom_nbsp_and_zero_width_spaces_are_folded() -> None:
    """A byte order mark and invisible spaces go; runs of any whitespace become one space."""
    assert html_to_text("\ufeff  Hello&nbsp;\u00a0 wide\u200b\n\tworld \u2003 ") == (
        "Hello wide world"
    )


@pytest.mark.parametrize(
    "text",
    [
        "Café prices rose 5% (a < b, 3 > 2); 👩‍👩‍👧 visited — “quoted”.",
        "Why a<b matters",
        "Nested <!-- not a comment",
    ],
)
def test_plain_text_comes_through_unchanged(text: str) -> None:
    """Text without tags keeps every character, a "<" or emoji sequences included."""
    assert html_to_text(text) == text


@pytest.mark.parametrize(
    ("markup", "expected"),
    [
        ("<p>Unclosed <b>bold <i>italic", "Unclosed bold italic"),
        ('<p>Cut off in a tag <a href="https://exa', "Cut off in a tag"),
        ("Cut off in a comment <!-- note > more", "Cut off in a comment"),
        ("Stray < in text", "Stray < in text"),
        ("<![ bogus ]>after", "after"),
        ("<![CDATA[hidden]]>shown", "shown"),
        ("</p></div>closing only", "closing only"),
        ("", ""),
    ],
)
def test_malformed_html_gives_its_text(markup: str, expected: str) -> None:
    """Unclosed, truncated and bogus markup is read the way a browser would, never raising."""
    assert html_to_text(markup) == expected


def test_long_unterminated_markup_is_read_in_linear_time() -> None:
    """Thousands of tags left open at the end are cut at once, not rescanned per "<"."""
    # html.parser alone takes about a minute on this input.
    assert html_to_text("<p>Kept</p> " + "<a " * 20_000) == "Kept"
    assert html_to_text("<p>Kept</p> <!-- " + "<!--" * 20_000) == "Kept"


def test_text_within_the_limit_is_unchanged() -> None:
    """No ellipsis is added when nothing had to be cut."""
    assert make_excerpt("Exactly twenty chars", 20) == "Exactly twenty chars"


def test_long_text_is_cut_between_words_with_an_ellipsis() -> None:
    """The cut drops the partial word and the punctuation before the ellipsis."""
    assert make_excerpt("One two three, four five six", 18) == "One two three…"


def test_a_first_word_longer_than_the_limit_is_hard_cut() -> None:
    """With no word boundary in reach, the word itself is cut to fit."""
    assert make_excerpt("Donaudampfschifffahrtsgesellschaft ahoy", 20) == "Donaudampfschifffah…"


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_tiny_limits_are_respected(limit: int) -> None:
    """Even a limit of one character is honoured."""
    assert len(make_excerpt("Some words here", limit)) <= limit


# Hypothesis: the invariants hold for any text, not just the examples above.

WORDS = st.lists(
    st.from_regex(r"[A-Za-zéü0-9][A-Za-zéü0-9'’,;:.]{0,14}", fullmatch=True),
    min_size=1,
    max_size=40,
)


@given(text=st.text(), limit=st.integers(min_value=1, max_value=300))
def test_excerpt_never_exceeds_the_limit(text: str, limit: int) -> None:
    """Whatever the input, the excerpt including its ellipsis fits the limit."""
    assert len(make_excerpt(text, limit)) <= limit


@given(text=st.text(), limit=st.integers(min_value=1, max_value=300))
def test_excerpt_is_a_prefix_of_the_text(text: str, limit: int) -> None:
    """Cutting only ever removes the end; nothing is rewritten."""
    excerpt = make_excerpt(text, limit)
    assert html_to_text(text).startswith(excerpt.removesuffix("…"))


@given(words=WORDS, limit=st.integers(min_value=20, max_value=200))
def test_excerpt_cuts_between_words(words: list[str], limit: int) -> None:
    """The character after the cut is a space (after any dropped punctuation), or the end."""
    text = " ".join(words)
    excerpt = make_excerpt(text, limit)
    rest = text[len(excerpt.removesuffix("…")) :]
    assert re.match(r"[,;:.]*(?: |\Z)", rest)
    assert excerpt.endswith("…") == (len(text) > limit)


TAGS = st.sampled_from(
    [
        "<p>",
        "</p>",
        "<br/>",
        '<a href="https://example.org/?a=1&amp;b=2">',
        "</a>",
        "<img src='x.png' alt='x'>",
        "<script>if (a < b) {}</script>",
        "<!-- comment -->",
        "<div class=\"x\" data-y='<z>'>",
        "<![CDATA[x]]>",
        "<!DOCTYPE html>",
        "</unknown>",
    ]
)
PLAIN = st.text(alphabet=st.characters(blacklist_characters="<&"))


@given(st.lists(st.one_of(TAGS, PLAIN)))
def test_no_tag_survives_html_to_text(pieces: list[str]) -> None:
    """Text stitched together with tags comes out without any of them."""
    assert not re.search(r"<[A-Za-z/!]", html_to_text("".join(pieces)))


@given(st.text(alphabet="<>!/[]-&#;abp =\"'x\n"))
def test_html_to_text_never_raises(markup: str) -> None:
    """Markup-heavy garbage is handled without an exception."""
    html_to_text(markup)
