"""Past issues on a real send: `digest issues`, `digest issues show`, `digest archive` and the
"view in browser" link, from the example project delivered to a real SMTP server."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import filelock
import pytest
from chromium import launch, needs_chromium
from click.testing import CliRunner, Result
from example_issue import NOW, READER, WEEK, example_project
from smtp_server import SmtpRecorder, running

from digest import history, pipeline, render
from digest.archive import Archive
from digest.cli import cli
from digest.config import Config, load_config
from digest.errors import ArchiveError
from digest.ledger import RowState
from digest.models import Article
from digest.subscribers import Details, SubscriberFile

SECRET = "Qm3kd9Zp2Lx8Wv1Rt7Yb4Nc6Hs0Jf5Ga"
ISSUE = "2026-W47"
REFUSED = "bo.li@example.net"
# Dan reads every section in English: the default variant, so the send freezes it.
READERS = {"ana.perez@example.org", REFUSED, "cy.okoro@example.com", "dan.moss@example.org"}
NAMES = ("Ana", "Pérez", "Bo", "Li", "Cy", "Okoro", "Dan", "Moss")
# A story whose feed text is markup: it must reach every page as text.
HOSTILE = Article(
    id="https://dispatch.example.org/2026/11/22/hostile",
    url="https://dispatch.example.org/2026/11/22/hostile/",
    title='Dockers & "Owners" <script>alert(1)</script>',
    published=datetime(2026, 11, 22, 23, 0, tzinfo=UTC),
    source="Harbor Dispatch",
    excerpt="<img src=x onerror=alert(1)> was in the feed",
    categories=("Featured",),
)
ARCHIVE_URL = "https://dispatch.example.org/digest/archive"


@dataclasses.dataclass(frozen=True)
class Sent:
    """The example project after its week was sent: one reader refused, the rest delivered."""

    config: Config

    def copy(self, folder: Path) -> Config:
        """The project copied into `folder`, for a test that changes it."""
        shutil.copytree(self.config.root, folder)
        return load_config(folder / "digest.toml", environ={"DIGEST_SECRET": SECRET})


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> Sent:
    with running(SmtpRecorder()) as smtp:
        environ = {
            "DIGEST_SECRET": SECRET,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp.port),
            "SMTP_SECURITY": "none",
        }
        config, _ = example_project(tmp_path_factory.mktemp("sent") / "news", environ)
        with Archive.open(config.archive_path) as archive:
            archive.upsert_articles([HOSTILE], seen_at=NOW)
        SubscriberFile(config.subscribers_path).add(
            "dan.moss@example.org", Details(first_name="Dan", last_name="Moss"), at=NOW
        )
        smtp.refuse(REFUSED, "550 5.1.1 no such mailbox")
        outcome = pipeline.send_issue(config, WEEK, pipeline.SendOptions(), now=NOW)
        assert (outcome.issue_id, outcome.report.sent, outcome.report.failed) == (ISSUE, 3, 1)
        assert smtp.recipients() == READERS - {REFUSED}
    return Sent(config)


def run(config: Config, *args: str) -> Result:
    return CliRunner().invoke(
        cli, ["--config", str(config.path), *args], env={"DIGEST_SECRET": SECRET}
    )


def record_more_issues(config: Config) -> None:
    """Add the week before, marked sent with no ledger rows (as an older digest would leave
    it), and the week after, recorded but not sent."""
    later = NOW + timedelta(days=7)
    before = pipeline.select(
        config, pipeline.PeriodRequest(date(2026, 11, 9), date(2026, 11, 15)), now=later
    )
    after = pipeline.select(
        config, pipeline.PeriodRequest(date(2026, 11, 23), date(2026, 11, 29)), now=later
    )
    with Archive.open(config.archive_path) as archive:
        archive.record_issue(before, created_at=NOW)
        archive.mark_sent(before.id, sent_at=NOW)
        archive.record_issue(after, created_at=later)


# -- the listing and one issue ---------------------------------------------------------------


def test_the_listing_joins_the_archive_and_the_ledger_and_its_counts_add_up(sent: Sent) -> None:
    """The sent week lists its articles, one copy per reader by state, and when it went out."""
    (record,) = history.list_issues(sent.config)
    with Archive.open(sent.config.archive_path) as archive:
        recorded = archive.issue(ISSUE)
    assert recorded is not None and record.articles == len(recorded.articles) == 15
    counts = record.counts
    assert (counts.sent, counts.failed, counts.unknown, counts.pending) == (3, 1, 0, 0)
    assert counts.total == len(READERS)
    assert record.sent_at == record.frozen_at == record.created_at == NOW


def test_show_gives_the_articles_by_section_and_the_refused_copy(sent: Sent) -> None:
    """An issue's detail holds its featured story, its sections and the 550 with its reply."""
    detail = history.issue_detail(sent.config, ISSUE)
    assert detail.issue.featured is not None and detail.issue.featured.id == HOSTILE.id
    assert sum(len(s.articles) for s in detail.issue.sections) == 14
    (problem,) = detail.problems
    assert (problem.address, problem.state, problem.reply_code) == (REFUSED, RowState.FAILED, 550)
    assert problem.reply_text is not None and "no such mailbox" in problem.reply_text


def test_an_unknown_issue_is_an_archive_error(sent: Sent) -> None:
    """Asking for an issue that was never recorded names it and says how to list them."""
    with pytest.raises(ArchiveError, match="no issue 2026-W01") as caught:
        history.issue_detail(sent.config, "2026-W01")
    assert "digest issues" in caught.value.hint


def test_digest_issues_prints_an_aligned_table(sent: Sent, tmp_path: Path) -> None:
    """One header and one row per issue, newest first, columns aligned; unsent ones say so."""
    config = sent.copy(tmp_path / "news")
    record_more_issues(config)
    result = run(config, "issues")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["id", "period", "articles", "sent", "failed", "unknown", "sent", "at"]
    assert [row.split()[0] for row in rows] == ["2026-W48", ISSUE, "2026-W46"]
    assert rows[1].split()[:8] == [ISSUE, "2026-11-16", "–", "2026-11-22", "15", "3", "1", "0"]
    when = header.index("sent at")
    assert [row[when:] for row in rows] == [
        "interrupted, 0 pending",
        "2026-11-23 09:00",
        "2026-11-23 09:00",
    ]
    articles = header.index("articles") + len("articles")  # numbers are right-aligned under it
    assert [row[articles - 3 : articles] for row in rows] == ["  0", " 15", "  3"]


def test_an_unsent_issue_is_sending_while_a_send_holds_the_lock(sent: Sent, tmp_path: Path) -> None:
    """An issue not yet sent says "sending" while a send of the list runs, not "interrupted"."""
    config = sent.copy(tmp_path / "news")
    record_more_issues(config)
    lock = (config.archive_path.parent / pipeline.LEDGER_FILE).with_suffix(".lock")
    with filelock.FileLock(lock, timeout=0):
        result = run(config, "issues")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].endswith("sending, 0 pending")


def test_digest_issues_says_so_before_the_first_issue(tmp_path: Path) -> None:
    """A new project has no issues, and the command says that rather than print an empty table."""
    config, _ = example_project(tmp_path / "news")
    result = run(config, "issues")
    assert (result.exit_code, result.stdout) == (0, "no issues yet\n")


def test_digest_issues_show_prints_articles_and_failures(sent: Sent) -> None:
    """`show ID` prints the copies' counts, each section's titles and links, and the refusal."""
    result = run(sent.config, "issues", "show", ISSUE)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"{ISSUE}: 2026-11-16 – 2026-11-22, 15 articles\n")
    assert "copies    3 sent, 1 failed, 0 unknown, 0 pending" in out
    assert "\nTop story\n  - Dockers &" in out and "\nLabor\n" in out
    assert "    https://dispatch.example.org/2026/11/22/hostile/" in out
    assert f"  failed   {REFUSED}  550 5.1.1 no such mailbox" in out


def test_digest_issues_show_with_an_unknown_id_is_one_line_and_exit_1(sent: Sent) -> None:
    """A missing issue is an error line on stderr, nothing on stdout, exit code 1."""
    result = run(sent.config, "issues", "show", "2026-W01")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


# -- the web archive ---------------------------------------------------------------------------


def test_the_web_archive_has_a_page_per_sent_issue_and_an_index_newest_first(
    sent: Sent, tmp_path: Path
) -> None:
    """Sent issues get ISSUE_ID.html (one without ledger rows rendered now); an unsent one none;
    the index links each, newest first, under its localised dates."""
    config = sent.copy(tmp_path / "news")
    record_more_issues(config)
    out = tmp_path / "site"
    paths = history.write_web_archive(config, out)
    assert paths == [out / f"{ISSUE}.html", out / "2026-W46.html", out / "index.html"]
    assert sorted(p.name for p in out.iterdir()) == ["2026-W46.html", f"{ISSUE}.html", "index.html"]
    index = (out / "index.html").read_text(encoding="utf-8")
    assert re.findall(r'<a href="([^"]+)">', index) == [f"{ISSUE}.html", "2026-W46.html"]
    dates = [" ".join(d.split()) for d in re.findall(r'<a href="[^"]+">([^<]+)</a>', index)]
    assert dates == ["Nov 16 – 22, 2026", "Nov 9 – 15, 2026"]  # Babel's spaces are thin ones
    assert "15 stories" in index and "3 stories" in index
    older = (out / "2026-W46.html").read_text(encoding="utf-8")
    assert "Nov 9 – 15, 2026" in " ".join(older.split()) and "Here are the 3 stories" in older


def test_no_page_holds_a_readers_address_token_or_name(sent: Sent, tmp_path: Path) -> None:
    """The pages greet nobody by name and carry no address, token or personal link."""
    history.write_web_archive(sent.config, tmp_path)
    for path in tmp_path.iterdir():
        html = path.read_text(encoding="utf-8")
        assert "?t=" not in html and "x-digest" not in html
        assert "unsubscribe" not in html.lower() and "preferences" not in html.lower()
        assert not any(address in html for address in READERS)
        assert not re.search(rf"\b({'|'.join(NAMES)})\b", html), path.name
    page = (tmp_path / f"{ISSUE}.html").read_text(encoding="utf-8")
    assert "<p>Hi there,</p>" in page or ">Hi there,</p>" in page
    assert "Harbor Dispatch, PO Box 1234" in page  # the footer keeps the postal address


def test_feed_text_stays_escaped_on_the_page_and_the_index(sent: Sent, tmp_path: Path) -> None:
    """A title and an excerpt made of markup show as text, never as elements."""
    history.write_web_archive(sent.config, tmp_path)
    for name in (f"{ISSUE}.html", "index.html"):
        html = (tmp_path / name).read_text(encoding="utf-8")
        assert "<script" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = (tmp_path / f"{ISSUE}.html").read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_the_page_is_the_copy_frozen_for_the_send(sent: Sent, tmp_path: Path) -> None:
    """A subject changed after the send does not reach the page: it shows what was mailed."""
    changed = dataclasses.replace(
        sent.config, email=dataclasses.replace(sent.config.email, subject="Changed later")
    )
    history.write_web_archive(changed, tmp_path)
    page = (tmp_path / f"{ISSUE}.html").read_text(encoding="utf-8")
    assert "<title>The Harbor Dispatch Weekly: Nov 16 – 22, 2026</title>" in " ".join(page.split())
    assert "Changed later" not in page


def test_writing_again_gives_the_same_bytes_and_no_stray_files(sent: Sent, tmp_path: Path) -> None:
    """A second run rewrites the same files byte for byte and leaves no temporary file."""
    first = {p: p.read_bytes() for p in history.write_web_archive(sent.config, tmp_path)}
    second = {p: p.read_bytes() for p in history.write_web_archive(sent.config, tmp_path)}
    assert first == second
    assert sorted(os.listdir(tmp_path)) == [f"{ISSUE}.html", "index.html"]
    assert all(path.stat().st_mode & 0o777 == 0o644 for path in first)


def test_digest_archive_writes_beside_the_config_by_default(sent: Sent, tmp_path: Path) -> None:
    """Without DIR the pages go to archive/ beside the config, and the command prints them."""
    config = sent.copy(tmp_path / "news")
    result = run(config, "archive")
    assert result.exit_code == 0, result.output
    folder = config.root / "archive"
    assert result.stdout.splitlines() == [str(folder / f"{ISSUE}.html"), str(folder / "index.html")]
    elsewhere = run(config, "archive", str(tmp_path / "www"))
    assert elsewhere.exit_code == 0, elsewhere.output
    assert (tmp_path / "www" / "index.html").is_file()


# -- the "view in browser" link ----------------------------------------------------------------


def email_of(config: Config, language: str = "en", archive_url: str | None = None) -> render.Email:
    newsletter = dataclasses.replace(config.newsletter, archive_url=archive_url)
    config = dataclasses.replace(config, newsletter=newsletter)
    with Archive.open(config.archive_path) as archive:
        issue = archive.issue(ISSUE)
    assert issue is not None
    variant = render.variant_for(config, language)
    return pipeline.render_issue(config, issue, variant).personalise(READER)


def test_the_view_in_browser_link_is_there_exactly_when_archive_url_is_set(sent: Sent) -> None:
    """With archive_url the HTML and the text link to the issue's page; without, neither does."""
    page = f"{ARCHIVE_URL}/{ISSUE}.html"
    linked = email_of(sent.config, archive_url=ARCHIVE_URL)
    assert f'<a href="{page}"' in linked.html and ">View in browser</a>" in linked.html
    assert f"View in browser:\n{page}\n" in linked.text
    plain = email_of(sent.config)
    assert "View in browser" not in plain.html and "View in browser" not in plain.text
    assert ARCHIVE_URL not in plain.html + plain.text
    spanish = email_of(sent.config, "es", archive_url=ARCHIVE_URL)
    assert ">Ver en el navegador</a>" in spanish.html
    assert f"Ver en el navegador:\n{page}\n" in spanish.text


def test_the_archived_page_drops_the_link_to_itself(sent: Sent, tmp_path: Path) -> None:
    """A page made from a copy that had the link does not link to itself."""
    config = sent.copy(tmp_path / "news")
    linked = dataclasses.replace(
        config, newsletter=dataclasses.replace(config.newsletter, archive_url=ARCHIVE_URL)
    )
    with Archive.open(config.archive_path) as archive:
        issue = archive.issue(ISSUE)
    assert issue is not None
    rendered = pipeline.render_issue(linked, issue, render.variant_for(linked))
    assert ARCHIVE_URL in rendered.personalise(READER).html
    assert ARCHIVE_URL not in history.public_html(rendered)
    assert "View in browser" not in history.public_html(rendered)


# -- in Chromium -------------------------------------------------------------------------------


@needs_chromium
def test_pages_fit_and_meet_contrast_in_chromium(sent: Sent, tmp_path: Path) -> None:
    """The archived page, the index and the email with its link fit 600 and 375 px, light and
    dark, with every text at 4.5:1 or more; screenshots are kept beside the others."""
    from playwright.sync_api import sync_playwright
    from test_in_browser import TEXT_COLOURS, contrast, open_email

    history.write_web_archive(sent.config, tmp_path)
    documents = {
        "page": (tmp_path / f"{ISSUE}.html").read_text(encoding="utf-8"),
        "index": (tmp_path / "index.html").read_text(encoding="utf-8"),
        "email": email_of(sent.config, archive_url=ARCHIVE_URL).html,
    }
    folder = Path(os.environ.get("DIGEST_SCREENSHOTS") or tmp_path)
    low: list[Any] = []
    with sync_playwright() as playwright:
        browser = launch(playwright)
        for name, html in documents.items():
            for width in (600, 375):
                for scheme in ("light", "dark"):
                    page = open_email(browser, html, width, scheme)
                    assert page.evaluate("document.documentElement.scrollWidth") <= width
                    pairs = page.evaluate(TEXT_COLOURS)
                    low += [
                        (name, scheme, p["text"])
                        for p in pairs
                        if contrast(p["color"], p["background"]) < 4.5
                    ]
                    shot = folder / f"history-{name}-{width}-{scheme}.png"
                    page.screenshot(path=str(shot), full_page=True)
                    page.close()
        browser.close()
    assert not low
