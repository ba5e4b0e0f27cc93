"""Rendering the email: structure, the text twin, localisation, personalising, template errors."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import shutil
import subprocess
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from babel.messages.extract import extract_from_dir, extract_from_file
from babel.messages.pofile import read_po
from example_issue import NOW, READER, ZONE, example_project, synthetic_issue
from lxml import html as lxml_html

from digest import inline, pipeline, render
from digest.config import Config, SourceConfig, TrackingSettings
from digest.errors import TemplateError
from digest.models import Article, Image, Issue, Period, Section
from digest.sources import parse_wordpress_posts

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates" / "email"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Issue]:
    """The bundled example publication and its week of 2026-11-16."""
    return example_project(tmp_path_factory.mktemp("example"))


def build(config: Config, issue: Issue, language: str = "", note: str = "") -> render.Email:
    """The issue as READER receives it: rendered, inlined, personalised."""
    variant = render.variant_for(config, language)
    return pipeline.render_issue(config, issue, variant, note=note).personalise(READER)


def parse(markup: str) -> lxml_html.HtmlElement:
    return lxml_html.document_fromstring(markup)


def text_of(element: lxml_html.HtmlElement) -> str:
    return " ".join(element.text_content().split())


def with_email(config: Config, **settings: object) -> Config:
    return dataclasses.replace(config, email=dataclasses.replace(config.email, **settings))


# The document


def test_email_has_one_h1_then_a_section_h2_and_a_card_h3_per_article(
    example: tuple[Config, Issue],
) -> None:
    """Headings follow the issue: the newsletter's name, "Top story" and sections, each story."""
    config, issue = example
    doc = parse(build(config, issue).html)
    assert [text_of(h) for h in doc.iter("h1")] == ["The Harbor Dispatch Weekly"]
    assert [text_of(h) for h in doc.iter("h2")] == ["Top story"] + [s.name for s in issue.sections]
    assert [text_of(h) for h in doc.iter("h3")] == [a.title for a in issue.articles]
    order = [el.tag for el in doc.iter("h1", "h2", "h3")]
    assert order[0] == "h1" and order.count("h1") == 1
    assert ("h1", "h3") not in set(itertools.pairwise(order))  # no level skipped


def test_each_card_links_its_headline_and_a_read_more_that_names_the_story(
    example: tuple[Config, Issue],
) -> None:
    """Every article's URL is linked from its headline and from a labelled "Read more"."""
    config, issue = example
    doc = parse(build(config, issue).html)
    for article in issue.articles:
        links = [a for a in doc.iter("a") if a.get("href") == article.url]
        assert len(links) == 2, article.title
        headline, more = links
        assert text_of(headline) == article.title
        assert more.get("aria-label", "").endswith(f": {article.title}")


def test_cards_show_bylines_and_localised_dates(example: tuple[Config, Issue]) -> None:
    """Bylines are joined as prose and dates are long dates in the newsletter's time zone."""
    config, issue = example
    doc = parse(build(config, issue).html)
    metas = [text_of(p) for p in doc.find_class("meta")]
    assert "Lucía Ferreira and Tomás Reyes · November 19, 2026" in metas
    assert metas[0] == "Marisol Vega · November 22, 2026"  # the featured story
    assert len(metas) == len(issue.articles)


@pytest.mark.parametrize(
    ("language", "byline"),
    [("en", "Ana Pérez, Bo Li, and Cy Wu"), ("es", "Ana Pérez, Bo Li y Cy Wu")],  # CLDR's lists
)
def test_several_authors_are_joined_in_the_newsletters_language(
    example: tuple[Config, Issue], language: str, byline: str
) -> None:
    """Co-authors read as a list in each shipped language, in the order the source gave."""
    config, issue = example
    first = issue.sections[0].articles[0]
    authored = dataclasses.replace(first, bylines=("Ana Pérez", "Bo Li", "Cy Wu"))
    section = dataclasses.replace(issue.sections[0], articles=(authored,))
    issue = dataclasses.replace(issue, featured=None, sections=(section,))
    metas = [text_of(p) for p in parse(build(config, issue, language).html).find_class("meta")]
    assert metas[0].startswith(f"{byline} · ")


IMAGE_BUDGET = 1_500_000  # bytes of pictures one issue of 15 cards may make a reader download


def test_pictures_are_the_offered_size_for_their_slot_and_an_issue_stays_within_budget(
    example: tuple[Config, Issue],
) -> None:
    """With WordPress sizes on offer, 15 cards and a top story download well under 1.5 MB."""
    config, issue = example
    shape = ROOT / "tests" / "fixtures" / "shapes" / "wordpress-coauthors.json"
    source = SourceConfig(name="harbour", url="https://harbourlights.example.org")
    posts = [shape.read_bytes()]
    (story, _), _ = parse_wordpress_posts(
        posts, source=source, base_url="", timezone=ZONE, now=NOW, excerpt_length=200
    )
    media = json.loads(posts[0])[0]["_embedded"]["wp:featuredmedia"][0]["media_details"]
    bytes_of = {size["source_url"]: size["filesize"] for size in media["sizes"].values()}
    copies = [
        dataclasses.replace(story, id=f"{story.id}-{n}", url=f"{story.url}?copy={n}")
        for n in range(16)
    ]
    section = Section("News", tuple(copies[1:]))
    issue = dataclasses.replace(issue, featured=copies[0], sections=(section,))
    doc = parse(build(config, issue).html)
    sources = [img.get("src", "") for img in doc.iter("img") if "/uploads/" in img.get("src", "")]
    assert len(sources) == 16
    assert sources[0].endswith("terminal-1536x1024.jpg")  # 552 px wide: at least 1,104
    assert all(src.endswith("terminal-300x200.jpg") for src in sources[1:])  # 120 px: 240
    assert sum(bytes_of[src] for src in sources) < IMAGE_BUDGET


def test_document_declares_language_title_colour_schemes_and_no_scripts(
    example: tuple[Config, Issue],
) -> None:
    """lang, a <title>, light/dark color-scheme, no script, form, iframe or external CSS."""
    config, issue = example
    email = build(config, issue)
    doc = parse(email.html)
    assert email.html.startswith("<!DOCTYPE html>")
    assert doc.get("lang") == "en"
    assert text_of(doc.find(".//title")) == email.subject
    metas = {m.get("name"): m.get("content") for m in doc.iter("meta") if m.get("name")}
    assert metas["color-scheme"] == "light dark"
    assert "prefers-color-scheme: dark" in email.html
    for tag in ("script", "form", "iframe", "object", "embed", "link", "input"):
        assert not list(doc.iter(tag)), tag
    assert "@import" not in email.html and "@font-face" not in email.html


def test_every_table_is_presentational_and_every_image_has_a_box_and_alt(
    example: tuple[Config, Issue],
) -> None:
    """Layout tables say role="presentation"; images carry width, height and alt."""
    config, issue = example
    doc = parse(build(config, issue).html)
    assert all(t.get("role") == "presentation" for t in doc.iter("table"))
    images = list(doc.iter("img"))
    assert len(images) == sum(1 for a in issue.articles if a.image)
    for img in images:
        assert img.get("width", "").isdigit() and img.get("height", "").isdigit()
        assert img.get("alt") is not None
    featured = images[0]
    assert (featured.get("width"), featured.get("height")) == ("552", "368")
    # The feed's own alt text; "" (decorative: the headline beside it says what it shows) if none.
    alts = [a.image.alt for a in issue.articles if a.image]
    assert [img.get("alt") for img in images] == alts
    assert "Rows of solar panels in a field in central Texas" in alts


def test_preheader_is_hidden_and_leads_with_the_top_story(example: tuple[Config, Issue]) -> None:
    """The inbox preview line is the first thing in the body, hidden from eyes and readers."""
    config, issue = example
    email = build(config, issue)
    doc = parse(email.html)
    body = doc.find("body")
    assert body is not None
    (preheader,) = doc.find_class("preheader")
    assert preheader.get("aria-hidden") == "true"
    assert "display:none" in preheader.get("style", "").replace(" ", "")
    assert text_of(preheader).startswith(email.preheader)
    assert issue.featured is not None and email.preheader.startswith(issue.featured.title)
    assert len(email.preheader) <= render.PREHEADER_LENGTH
    first_text = next(el for el in body.iter() if (el.text or "").strip())
    assert first_text is preheader


def test_css_is_inlined_and_the_dark_mode_and_phone_rules_are_kept(
    example: tuple[Config, Issue],
) -> None:
    """Headlines carry their styles inline; the kept block has the media queries, once."""
    config, issue = example
    doc = parse(build(config, issue).html)
    headline = next(doc.iter("h3"))
    assert "font-family:Georgia" in headline.get("style", "").replace(" ", "")
    styles = [s.text or "" for s in doc.iter("style")]
    kept = [s for s in styles if "@media" in s]
    assert len(kept) == 1
    assert "prefers-color-scheme: dark" in kept[0] and "max-width: 480px" in kept[0]
    assert not any(".masthead {" in s and "@media" not in s for s in styles)  # not left behind


def test_packaged_stylesheet_gives_cssutils_nothing_to_say(example: tuple[Config, Issue]) -> None:
    """Our own CSS parses cleanly, so any warning in a user's run is about their CSS."""
    config, issue = example
    draft = render.render_variant(config, issue, render.variant_for(config))
    assert inline.inline_css(draft.html).warnings == ()


# The text twin


def test_text_twin_has_each_section_and_article_with_url_byline_and_date(
    example: tuple[Config, Issue],
) -> None:
    """The plain text shows every section as a heading and every story's title, URL and byline."""
    config, issue = example
    text = build(config, issue).text
    lines = text.splitlines()
    flat = " ".join(text.split())
    for section in issue.sections:
        heading = section.name.upper()
        assert heading in lines
        assert lines[lines.index(heading) + 1] == "-" * len(heading)
    for article in issue.articles:
        assert article.title in flat
        assert article.url in lines  # on a line of its own
    assert "Lucía Ferreira and Tomás Reyes · November 19, 2026" in lines
    assert lines[0] == "THE HARBOR DISPATCH WEEKLY"


def test_text_twin_lines_fit_78_columns_except_urls(example: tuple[Config, Issue]) -> None:
    """Every line is at most 78 characters, unless it is a single URL, which cannot be broken."""
    config, issue = example
    text = build(config, issue, note="A note. " * 40).text
    for line in text.splitlines():
        assert len(line) <= 78 or re.fullmatch(r"https?://\S+", line), line


def test_text_twin_ends_with_the_readers_own_links(example: tuple[Config, Issue]) -> None:
    """The footer gives the reader's address and unsubscribe URL as they are, unescaped."""
    config, issue = example
    text = build(config, issue).text
    assert READER.unsubscribe_url in text.splitlines()
    assert READER.email in text.splitlines()
    assert "-- " in text.splitlines()


# Personalising


def test_every_placeholder_survives_inlining(example: tuple[Config, Issue]) -> None:
    """premailer keeps each personal placeholder exactly as many times as the template wrote it."""
    config, issue = example
    draft = render.render_variant(config, issue, render.variant_for(config))
    inlined = inline.inline_css(draft.html).html
    for field, placeholder in draft.placeholders.items():
        assert draft.html.count(placeholder) >= 1, field
        assert inlined.count(placeholder) == draft.html.count(placeholder), field
        assert placeholder in draft.text, field


def test_personalising_leaves_no_placeholder_and_escapes_values_in_html_only(
    example: tuple[Config, Issue],
) -> None:
    """The reader's values replace every placeholder: HTML-escaped in HTML, as is in the text."""
    config, issue = example
    rendered = pipeline.render_issue(config, issue, render.variant_for(config))
    reader = dataclasses.replace(READER, name='Zoë <b>"Z"</b> & Co')
    email = rendered.personalise(reader)
    assert "x-digest-" not in email.html and "x-digest-" not in email.text
    assert "Hi Zoë &lt;b&gt;&#x27;" not in email.html  # quotes are escaped, not mangled
    assert "Hi Zoë &lt;b&gt;&quot;Z&quot;&lt;/b&gt; &amp; Co," in email.html
    assert 'Hi Zoë <b>"Z"</b> & Co,' in email.text
    assert 'href="https://dispatch.example.org/digest/unsubscribe?t=abc.def&amp;x=1"' in email.html
    doc = parse(email.html)
    hrefs = {a.get("href") for a in doc.iter("a")}
    assert {READER.unsubscribe_url, READER.preferences_url} <= hrefs


def test_a_reader_without_a_name_gets_a_greeting_without_one(
    example: tuple[Config, Issue],
) -> None:
    """No first name: "Hi there," rather than "Hi ,"."""
    config, issue = example
    rendered = pipeline.render_issue(config, issue, render.variant_for(config))
    email = rendered.personalise(dataclasses.replace(READER, name=" "))
    assert "Hi there," in email.text.splitlines()
    assert "Hi ," not in email.html


def test_feed_text_that_looks_like_a_placeholder_stays_text(
    example: tuple[Config, Issue],
) -> None:
    """Placeholders are derived from the issue's own hash, so a feed cannot plant one."""
    config, issue = example
    draft = render.render_variant(config, issue, render.variant_for(config))
    planted = draft.placeholders["email"]
    assert issue.featured is not None
    forged = dataclasses.replace(issue.featured, title=f"Write to {planted}")
    issue2 = dataclasses.replace(issue, featured=forged)
    email = pipeline.render_issue(config, issue2, render.variant_for(config)).personalise(READER)
    assert f"Write to {planted}" in email.text


def test_same_issue_renders_byte_identical(example: tuple[Config, Issue]) -> None:
    """Rendering is deterministic: same issue, same bytes."""
    config, issue = example
    assert build(config, issue) == build(config, issue)


# Variants, localisation, subject and note


def test_a_variant_shows_only_the_chosen_sections_and_the_top_story(
    example: tuple[Config, Issue],
) -> None:
    """A reader who chose Labor sees the top story and Labor, nothing else."""
    config, issue = example
    variant = render.variant_for(config, "", ["Labor", "No Such Section"])
    email = pipeline.render_issue(config, issue, variant).personalise(READER)
    doc = parse(email.html)
    assert [text_of(h) for h in doc.iter("h2")] == ["Top story", "Labor"]
    assert "Here are the 5 stories from this week." in email.text


def test_spanish_email_has_spanish_dates_strings_and_lang(example: tuple[Config, Issue]) -> None:
    """language "es": "22 de noviembre de 2026", translated labels, lang="es"."""
    config, issue = example
    email = build(config, issue, language="es")
    doc = parse(email.html)
    assert doc.get("lang") == "es"
    assert next(text_of(h) for h in doc.iter("h2")) == "Noticia destacada"
    assert "Marisol Vega · 22 de noviembre de 2026" in [text_of(p) for p in doc.find_class("meta")]
    assert "Lucía Ferreira y Tomás Reyes · 19 de noviembre de 2026" in email.text
    assert "Hola, Ana:" in email.text.splitlines()
    assert "Estas son las 14 noticias de esta semana." in email.text
    assert "Cancelar la suscripción" in [text_of(a) for a in doc.iter("a")]
    assert email.subject == "The Harbor Dispatch Weekly: 16–22 de noviembre de 2026"


def local(*day: int, hour: int = 0) -> datetime:
    return datetime(*day, hour, tzinfo=ZONE)


# (period, [schedule] every, the intro in English, in Spanish); the example has 14 stories.
SPANS = {
    "week": (
        Period(local(2026, 11, 16), local(2026, 11, 23)),
        "week",
        "Here are the 14 stories from this week.",
        "Estas son las 14 noticias de esta semana.",
    ),
    "week across the DST change": (
        Period(local(2026, 10, 29), local(2026, 11, 5)),
        "month",
        "Here are the 14 stories from this week.",
        "Estas son las 14 noticias de esta semana.",
    ),
    "scheduled week": (
        Period(local(2026, 11, 14, hour=8), local(2026, 11, 21, hour=8)),
        "week",
        "Here are the 14 stories from this week.",
        "Estas son las 14 noticias de esta semana.",
    ),
    "calendar month": (
        Period(local(2026, 11, 1), local(2026, 12, 1)),
        "week",
        "Here are the 14 stories from this month.",
        "Estas son las 14 noticias de este mes.",
    ),
    "scheduled month": (
        Period(local(2026, 10, 5, hour=8), local(2026, 11, 5, hour=8)),
        "month",
        "Here are the 14 stories from this month.",
        "Estas son las 14 noticias de este mes.",
    ),
    "two weeks": (
        Period(local(2026, 11, 9), local(2026, 11, 23)),
        "week",
        "Here are the 14 stories from these two weeks.",
        "Estas son las 14 noticias de estas dos semanas.",
    ),
    "scheduled day": (
        Period(local(2026, 11, 22, hour=8), local(2026, 11, 23, hour=8)),
        "day",
        "Here are the 14 stories since yesterday.",
        "Estas son las 14 noticias desde ayer.",
    ),
    "one day": (
        Period(local(2026, 11, 3), local(2026, 11, 4)),
        "week",
        "Here are the 14 stories from November 3.",
        "Estas son las 14 noticias del 3 de noviembre.",
    ),
    "odd span": (
        Period(local(2026, 11, 3), local(2026, 11, 23)),
        "week",
        "Here are the 14 stories since November 3.",
        "Estas son las 14 noticias desde el 3 de noviembre.",
    ),
    "odd span from last year": (
        Period(local(2025, 12, 20, hour=8), local(2026, 1, 5, hour=8)),
        "week",
        "Here are the 14 stories since December 20, 2025.",
        "Estas son las 14 noticias desde el 20 de diciembre de 2025.",
    ),
}


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("span", SPANS.keys())
def test_the_intro_names_the_period_the_issue_covers(
    example: tuple[Config, Issue], span: str, language: str
) -> None:
    """A week reads "this week", a month "this month", two weeks "these two weeks", and any
    other span "since November 3", in each shipped language, in the HTML and the text."""
    config, issue = example
    period, every, english, spanish = SPANS[span]
    config = dataclasses.replace(config, schedule=dataclasses.replace(config.schedule, every=every))
    variant = render.variant_for(config, language)
    assert render.available_languages() == {"en", "es"}  # a new catalog needs its cases here
    draft = render.render_variant(config, dataclasses.replace(issue, period=period), variant)
    expected = {"en": english, "es": spanish}[language]
    assert expected in [text_of(p) for p in parse(draft.html).iter("p")]
    assert expected in draft.text.splitlines()


def test_a_single_story_reads_as_one_whatever_the_period(example: tuple[Config, Issue]) -> None:
    """One story over a month: "Here is the story from this month.", "... de este mes."."""
    config, issue = example
    lone = dataclasses.replace(
        issue,
        period=SPANS["calendar month"][0],
        sections=tuple(dataclasses.replace(s, articles=()) for s in issue.sections),
    )
    for language, expected in (
        ("en", "Here is the story from this month."),
        ("es", "Esta es la noticia de este mes."),
    ):
        draft = render.render_variant(config, lone, render.variant_for(config, language))
        assert expected in draft.text.splitlines()


def test_an_unknown_reader_language_falls_back_to_the_newsletters(
    example: tuple[Config, Issue],
) -> None:
    """A subscriber who reads Portuguese gets the newsletter's language, not a mix."""
    config, _ = example
    assert render.variant_for(config, "pt").language == "en"
    assert render.variant_for(config, "es-MX").language == "es-MX"
    assert render.variant_for(config, "es_MX").language == "es-MX"


def test_every_template_string_has_a_spanish_translation() -> None:
    """Each string the templates (and render.py) translate is in locales/es.po, translated."""
    options = {"extensions": "jinja2.ext.i18n", "trim_blocks": "true", "lstrip_blocks": "true"}
    found = {
        message if isinstance(message, str) else message[0]
        for _, _, message, _, _ in extract_from_dir(
            TEMPLATES, method_map=[("**.j2", "jinja2")], options_map={"**.j2": options}
        )
    }
    found |= {
        message if isinstance(message, str) else message[0]
        for _, message, _, _ in extract_from_file("python", ROOT / "digest" / "render.py")
    }
    with (ROOT / "digest" / "locales" / "es.po").open("rb") as po:
        catalog = read_po(po)
    translated = {m.id if isinstance(m.id, str) else m.id[0]: m.string for m in catalog if m.id}
    assert found <= translated.keys(), found - translated.keys()
    assert all(translated[k] for k in found)
    assert len(found) >= 15


def test_subject_is_a_configurable_template(example: tuple[Config, Issue]) -> None:
    """[email] subject is Jinja with the issue's facts; whitespace is folded to one line."""
    config, issue = example
    assert build(config, issue).subject == "The Harbor Dispatch Weekly: Nov 16 – 22, 2026"
    custom = with_email(
        config, subject="{{ newsletter.name }} #{{ issue.id }}\n — {{ issue.featured_title }}"
    )
    assert build(custom, issue).subject == (
        "The Harbor Dispatch Weekly #2026-W47 — "
        "Senate Deal on Disaster Aid Leaves Out Public Housing Repairs"
    )


def test_a_mistake_in_the_subject_template_names_the_config_key(
    example: tuple[Config, Issue],
) -> None:
    """An undefined variable in [email] subject is a TemplateError about email.subject."""
    config, issue = example
    with pytest.raises(TemplateError) as caught:
        build(with_email(config, subject="{{ issue.nmae }}"), issue)
    assert str(caught.value).startswith("email.subject")
    assert "nmae" in str(caught.value)
    with pytest.raises(TemplateError) as caught:
        build(with_email(config, subject="{{ issue.id "), issue)
    assert caught.value.where == "email.subject"


def test_editors_note_is_escaped_and_keeps_its_paragraphs(example: tuple[Config, Issue]) -> None:
    """The note's blank lines make paragraphs; markup in it is shown, not obeyed."""
    config, issue = example
    note = "First line\nstill first.\n\n<b>Second</b> & last."
    doc = parse(build(config, issue, note=note).html)
    (box,) = doc.find_class("note")
    paragraphs = [text_of(p) for p in box.iter("p")]
    assert paragraphs == ["From the editor", "First line still first.", "<b>Second</b> & last."]
    assert not list(box.iter("b"))


# Links


def test_article_links_carry_utm_parameters_and_keep_their_own_query() -> None:
    """UTM values are added (issue id filled in), other parameters kept as written, fragment too."""
    tracking = TrackingSettings(
        utm_source="newsletter", utm_medium="email", utm_campaign="weekly-{issue_id}"
    )
    url = "https://example.org/a?b=1&utm_source=rss&q=a+b%20c#top"
    result = render.tracked(url, tracking, "2026-W47")
    parts = urlsplit(result)
    assert parts.fragment == "top"
    assert parts.query.startswith("b=1&q=a+b%20c&")
    assert dict(parse_qsl(parts.query))["utm_campaign"] == "weekly-2026-W47"
    assert [k for k, _ in parse_qsl(parts.query)].count("utm_source") == 1
    assert render.tracked(url, TrackingSettings(), "x") == url


def test_tracked_links_reach_the_email_but_not_the_readers_own_links(
    example: tuple[Config, Issue],
) -> None:
    """Articles get UTM parameters; unsubscribe and preferences links do not."""
    config, issue = example
    tracking = TrackingSettings(utm_source="newsletter", utm_campaign="{issue_id}")
    email = build(dataclasses.replace(config, tracking=tracking), issue)
    hrefs = [a.get("href", "") for a in parse(email.html).iter("a")]
    article_links = [h for h in hrefs if "dispatch.example.org/20" in h]
    assert article_links and all("utm_campaign=2026-W47" in h for h in article_links)
    assert READER.unsubscribe_url in hrefs


# Security


HOSTILE = '</table></td></tr><script>alert(1)</script><img src=x onerror="alert(2)"> "\' &'


def _issue_like(issue: Issue, text: str) -> Issue:
    """The example issue's shape with `text` in every feed-controlled string."""

    def article(a: Article) -> Article:
        image = Image(a.image.url, alt=text) if a.image else None
        return dataclasses.replace(a, title=text, excerpt=text, bylines=(text, text), image=image)

    return dataclasses.replace(
        issue,
        featured=article(issue.featured) if issue.featured else None,
        sections=tuple(
            Section(name=text + str(n), articles=tuple(article(a) for a in s.articles))
            for n, s in enumerate(issue.sections)
        ),
    )


def test_feed_markup_cannot_change_the_emails_markup(example: tuple[Config, Issue]) -> None:
    """Scripts, event handlers and a </table> in feed text leave the element tree as it was."""
    config, issue = example
    benign = parse(build(config, _issue_like(issue, "Plain words")).html)
    hostile_email = build(config, _issue_like(issue, HOSTILE))
    hostile = parse(hostile_email.html)
    assert [el.tag for el in hostile.iter()] == [el.tag for el in benign.iter()]
    assert not list(hostile.iter("script"))
    assert not [
        name for el in hostile.iter() for name in el.attrib if name.lower().startswith("on")
    ]
    assert next(h.text_content() for h in hostile.iter("h3")) == HOSTILE  # shown as text
    assert HOSTILE in hostile_email.text


def test_javascript_and_data_urls_are_never_linked(example: tuple[Config, Issue]) -> None:
    """A non-http(s) article or image URL leaves the headline unlinked and the picture out."""
    config, issue = example
    assert issue.featured is not None
    bad = dataclasses.replace(
        issue.featured,
        url="javascript:alert(1)",
        image=Image("data:image/svg+xml,<svg onload=alert(1)>", alt="x"),
    )
    email = build(config, dataclasses.replace(issue, featured=bad))
    doc = parse(email.html)
    for el in doc.iter("a", "img"):
        target = el.get("href") or el.get("src") or ""
        assert target.startswith(("https://", "http://")), target
    assert issue.featured.title in [text_of(h) for h in doc.iter("h3")]


# Size


def test_a_40_article_issue_stays_under_gmails_clipping_limit(
    example: tuple[Config, Issue],
) -> None:
    """Gmail clips messages over 102 KB; a heavy 40-article issue stays under 100 KB."""
    config, _ = example
    email = build(config, synthetic_issue(40))
    assert len(parse(email.html).find_class("headline")) == 40
    assert len(email.html.encode("utf-8")) < 100_000


# Template folder and errors


def test_a_user_template_overrides_one_partial_and_keeps_the_rest(
    example: tuple[Config, Issue], tmp_path: Path
) -> None:
    """A footer in [email] templates replaces the packaged one; the header is still packaged."""
    config, issue = example
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / "footer.html.j2").write_text(
        '<p class="mine">Bye from {{ newsletter.name }}. '
        '<a href="{{ personal.unsubscribe_url }}">Leave</a></p>\n',
        encoding="utf-8",
    )
    doc = parse(build(with_email(config, templates=tmp_path), issue).html)
    assert [text_of(p) for p in doc.find_class("mine")] == [
        "Bye from The Harbor Dispatch Weekly. Leave"
    ]
    assert text_of(next(doc.iter("h1"))) == "The Harbor Dispatch Weekly"


def documented_template_names() -> list[str]:
    """The names docs/configuration.md says the templates get, from its table."""
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    table = doc.split("### What the templates get")[1].split("\n\n`")[0]
    firsts = re.findall(r"^\| ([^|]+) \|", table, flags=re.MULTILINE)[2:]  # after the header
    return [name for cell in firsts for name in re.findall(r"`([a-z_.]+)`", cell)]


def test_every_documented_template_name_exists(
    example: tuple[Config, Issue], tmp_path: Path
) -> None:
    """A footer using each name the docs list renders (StrictUndefined would name a wrong one)."""
    config, issue = example
    names = documented_template_names()
    cards = [name for name in names if name in {"title", "url", "byline", "date", "excerpt"}]
    top = [name for name in names if name not in cards and name not in {"image", "sections"}]
    assert {"lang", "issue.web_url", "personal.greeting", "featured", "note"} <= set(top)
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / "footer.html.j2").write_text(
        "".join(f"<p>{{{{ {name} }}}}</p>" for name in top)
        + "{% for section in sections %}<p>{{ section.name }}</p>"
        + "{% for card in section.cards %}"
        + "".join(f"<p>{{{{ card.{field} }}}}</p>" for field in cards)
        + "{% if card.image %}<p>{{ card.image.url }} {{ card.image.alt }} "
        + "{{ card.image.width }} {{ card.image.height }}</p>{% endif %}"
        + "{% endfor %}{% endfor %}",
        encoding="utf-8",
    )
    html = build(with_email(config, templates=tmp_path), issue).html
    assert READER.unsubscribe_url.replace("&", "&amp;") in html


def test_an_undefined_name_is_an_error_with_the_file_and_line(
    example: tuple[Config, Issue], tmp_path: Path
) -> None:
    """StrictUndefined: a typo is a TemplateError naming the template and its line."""
    config, issue = example
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / "header.html.j2").write_text(
        "<tr><td>\n<h1>{{ newsletter.name }}</h1>\n<p>{{ issue.perod }}</p>\n</td></tr>\n",
        encoding="utf-8",
    )
    with pytest.raises(TemplateError) as caught:
        build(with_email(config, templates=tmp_path), issue)
    assert caught.value.where == f"{tmp_path / 'partials' / 'header.html.j2'}:3"
    assert "perod" in caught.value.message


def test_a_syntax_error_is_an_error_with_the_file_and_line(
    example: tuple[Config, Issue], tmp_path: Path
) -> None:
    """A broken tag names the file and line where Jinja stopped."""
    config, issue = example
    (tmp_path / "digest.txt.j2").write_text("line one\n{% if %}\n", encoding="utf-8")
    with pytest.raises(TemplateError) as caught:
        build(with_email(config, templates=tmp_path), issue)
    assert caught.value.where == f"{tmp_path / 'digest.txt.j2'}:2"


def test_a_template_without_an_unsubscribe_link_is_refused(
    example: tuple[Config, Issue], tmp_path: Path
) -> None:
    """A footer override that drops the unsubscribe link stops the build, with a hint."""
    config, issue = example
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / "footer.html.j2").write_text("<p>Bye.</p>\n", encoding="utf-8")
    with pytest.raises(TemplateError) as caught:
        build(with_email(config, templates=tmp_path), issue)
    assert "unsubscribe" in str(caught.value) and caught.value.hint


def test_an_unsubscribe_link_inside_a_comment_is_refused(
    example: tuple[Config, Issue], tmp_path: Path
) -> None:
    """A footer whose only unsubscribe link is in an HTML comment shows none: it is refused."""
    config, issue = example
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / "footer.html.j2").write_text(
        '<p>Bye.</p>\n<!-- <a href="{{ personal.unsubscribe_url }}">Unsubscribe</a> -->\n',
        encoding="utf-8",
    )
    with pytest.raises(TemplateError) as caught:
        build(with_email(config, templates=tmp_path), issue)
    assert caught.value.message == "the HTML email has no unsubscribe url"


def test_a_partial_that_is_not_utf8_is_named_with_its_line(
    example: tuple[Config, Issue], tmp_path: Path
) -> None:
    """A stray Latin-1 byte in the user's footer names that file and line, not the layout."""
    config, issue = example
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / "footer.html.j2").write_bytes(b"<p>Bye.</p>\n<p>Caf\xe9</p>\n")
    with pytest.raises(TemplateError) as caught:
        build(with_email(config, templates=tmp_path), issue)
    assert caught.value.where == f"{tmp_path / 'partials' / 'footer.html.j2'}:2"
    assert caught.value.message.startswith("not UTF-8 text")


def test_a_missing_include_names_the_partial_that_includes_it(
    example: tuple[Config, Issue], tmp_path: Path
) -> None:
    """An include of a template that does not exist names the including file and line."""
    config, issue = example
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / "footer.html.j2").write_text(
        '<p>Bye.</p>\n{% include "partials/signature.html.j2" %}\n', encoding="utf-8"
    )
    with pytest.raises(TemplateError) as caught:
        build(with_email(config, templates=tmp_path), issue)
    assert caught.value.where == f"{tmp_path / 'partials' / 'footer.html.j2'}:2"
    assert caught.value.message == "no template named 'partials/signature.html.j2'"


def test_a_feed_without_dates_shows_no_made_up_date(example: tuple[Config, Issue]) -> None:
    """An article whose date was estimated shows its byline without a date."""
    config, _ = example
    when = datetime(2026, 11, 20, 12, tzinfo=UTC)
    article = Article(
        id="x",
        url="https://example.org/x",
        title="Undated",
        published=when,
        source="s",
        bylines=("Bo Li",),
        date_estimated=True,
    )
    period = Period(datetime(2026, 11, 16, tzinfo=ZONE), datetime(2026, 11, 23, tzinfo=ZONE))
    issue = Issue("2026-W47", period, None, (Section("News", (article,)),))
    doc = parse(build(config, issue).html)
    assert [text_of(p) for p in doc.find_class("meta")] == ["Bo Li"]
    assert [text_of(h) for h in doc.iter("h2")] == ["News"]


# Email client support (doiuse-email, caniemail.com's data)

EMAIL_LINT = ROOT / "tests" / "email-lint"
LINT_CLI = EMAIL_LINT / "node_modules" / "doiuse-email" / "bin" / "cli.js"
ALLOW_LIST = ROOT / "tests" / "email-lint-allow.toml"
CLIENTS = "gmail.*,outlook.*,apple-mail.*,yahoo.*"


def test_every_email_client_finding_is_fixed_or_allowed_with_a_reason(
    example: tuple[Config, Issue], tmp_path: Path
) -> None:
    """doiuse-email over the built HTML for Gmail, Outlook, Apple Mail and Yahoo: each finding
    (unsupported or partly supported) is in tests/email-lint-allow.toml, and each entry there
    still matches a finding."""
    if shutil.which("node") is None or not LINT_CLI.is_file():
        pytest.fail("doiuse-email is not installed: run `make test` (npm ci in tests/email-lint)")
    config, issue = example
    built = tmp_path / "email.html"
    built.write_text(build(config, issue, note="A note.").html, encoding="utf-8")
    # The CLI exits 0 whatever it finds: the JSON it prints is the verdict.
    done = subprocess.run(
        ["node", str(LINT_CLI), "--email-clients", CLIENTS, str(built)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    report = json.loads(done.stdout)
    found: dict[str, set[str]] = {}
    for finding in report.get("errors", []) + report.get("warnings", []):
        feature, client = re.findall(r"`([^`]+)`", finding)[:2]
        found.setdefault(feature, set()).add(client)
    allowed = tomllib.loads(ALLOW_LIST.read_text(encoding="utf-8"))
    assert all(entry.get("reason", "").strip() for entry in allowed.values())
    unexplained = {f: sorted(c) for f, c in found.items() if f not in allowed}
    assert not unexplained, f"fix these or explain them in {ALLOW_LIST.name}: {unexplained}"
    stale = sorted(allowed.keys() - found.keys())
    assert not stale, f"no longer found, remove from {ALLOW_LIST.name}: {stale}"
