"""The README's walk-through, run as written: every `digest` line in it, in order.

The prose around the commands asks the reader to do a few things by hand (fill in `.env`, point
the sources at their feeds, have an export to import); `HANDS` does those between the lines, as
a reader would. A line that cannot run in a test says in `COVERED_ELSEWHERE` which test runs it.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner
from smtp_server import SmtpRecorder, starttls_relay
from test_run import feed
from test_schedule import write_crontab_program
from test_send import SECRET

from digest.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FIXTURES = Path(__file__).parent / "fixtures"

COVERED_ELSEWHERE = {
    "pip install .": "tests/test_packaging.py builds the wheel and installs it alone",
    "digest preview": "serves until Ctrl-C; tests/test_preview.py drives it in Chromium",
}


def walkthrough() -> list[str]:
    """The command lines of the README's walk-through, comments removed, in order."""
    part = README.split("## Ten minutes")[1].split("\n## ")[0]
    blocks = re.findall(r"```sh\n(.*?)```", part, flags=re.DOTALL)
    return [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]


def test_the_walkthrough_has_the_commands_a_publication_needs() -> None:
    """The walk-through goes from init to the weekly cron line (guards the parser above too)."""
    lines = walkthrough()
    assert lines[:3] == ["pip install .", "digest init my-digest", "cd my-digest"]
    for needed in ("digest doctor", "digest send", "digest schedule --install", "digest -v run"):
        assert needed in lines


@pytest.fixture
def relay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpRecorder]:
    """The reader's relay: STARTTLS with a certificate this machine trusts, and a login."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    with starttls_relay(ca, username="news", password="s3cret") as recorder:
        yield recorder


def test_the_walkthrough_runs_as_written(
    tmp_path: Path, relay: SmtpRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each line exits 0 and does what the README says it does."""
    crontab = write_crontab_program(tmp_path / "cron")
    monkeypatch.setenv("DIGEST_CRONTAB", str(crontab))
    for name in ("DIGEST_SECRET", "SMTP_HOST", "DIGEST_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)

    def fill_in_env() -> None:
        Path(".env").write_text(
            Path(".env.example")
            .read_text(encoding="utf-8")
            .replace("DIGEST_SECRET=\n", f"DIGEST_SECRET={SECRET}\n")
            .replace("SMTP_HOST=\n", "SMTP_HOST=127.0.0.1\n")
            .replace("SMTP_PORT=587\n", f"SMTP_PORT={relay.port}\n")
            .replace("SMTP_USERNAME=\n", "SMTP_USERNAME=news\n")
            .replace("SMTP_PASSWORD=\n", "SMTP_PASSWORD=s3cret\n"),
            encoding="utf-8",
        )
        # "point [[sources]] at your feeds": a feed with this week's stories.
        now = datetime.now(UTC)
        stories = [now - timedelta(days=days) for days in (1, 2, 3)]
        Path("feeds/dispatch.rss").write_text(feed(stories), encoding="utf-8")

    def have_an_export() -> None:
        shutil.copy(FIXTURES / "subscribers" / "mailchimp-subscribed.csv", "members.csv")

    hands: dict[str, Callable[[], None]] = {
        "cp .env.example .env": fill_in_env,
        "digest subscribers import members.csv --dry-run": have_an_export,
    }
    outputs: dict[str, str] = {}
    for line in walkthrough():
        if line in COVERED_ELSEWHERE:
            continue
        if line.startswith("cd "):
            monkeypatch.chdir(line.removeprefix("cd "))
            continue
        if line.startswith("cp "):
            shutil.copy(*shlex.split(line)[1:])
            hands.pop(line)()
            continue
        if line in hands:
            hands.pop(line)()
        assert line.startswith("digest "), f"the walk-through has a line no test runs: {line}"
        result = CliRunner().invoke(cli, shlex.split(line)[1:])
        assert result.exit_code == 0, f"{line}\n{result.output}"
        outputs[line] = result.output

    assert not hands
    assert "OK    smtp: STARTTLS offered and negotiated" in outputs["digest doctor"]
    test_copies = [m for m in relay.messages if m.recipients == ("editor@example.org",)]
    assert len(test_copies) == 2
    assert relay.copies()["s1@example.com"] == 1
    assert Path("public/index.html").is_file()
    (cron_line,) = (tmp_path / "cron" / "table").read_text(encoding="utf-8").splitlines()
    assert cron_line.endswith(f"# digest: {Path('digest.toml').resolve()}")
    assert "already sent" in outputs["digest -v run"]
    sent_issue = relay.messages[-1].data.split(b"Message-ID: <")[1].split(b".")[0].decode()
    assert outputs["digest issues"].splitlines()[1].startswith(sent_issue)


def demo_block() -> list[str]:
    """The commands the README says `make demo` runs."""
    part = README.split("`make demo` runs the main job")[1]
    block: str = re.findall(r"```sh\n(.*?)```", part, flags=re.DOTALL)[0]
    return block.strip().splitlines()


def test_make_demo_runs_the_commands_the_readme_shows() -> None:
    """The README's demo block is the Makefile's demo recipe, variables expanded."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    week = re.search(r"^DEMO_WEEK := (.*)$", makefile, flags=re.MULTILINE)
    assert week is not None
    recipe = makefile.split("\ndemo:")[1].split("\n\n")[0].splitlines()[1:]
    ran = [
        re.sub(r"^(\S+=\S* )*\$\(BIN\)/", "", line.strip()).replace("$(DEMO_WEEK)", week[1])
        for line in recipe
    ]
    assert ran == demo_block()


def test_the_demo_commands_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a copy of examples/ (with the example readers, as `make demo` copies them): the issue's
    three files, one outbox copy per subscribed reader, and the issue listed as sent."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns(
        ".digest", "out", "outbox", "subscribers.csv"))  # fmt: skip
    shutil.copy(ROOT / "subscribers.example.csv", tmp_path / "examples" / "subscribers.csv")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIGEST_SECRET", SECRET)
    monkeypatch.delenv("SMTP_HOST", raising=False)
    outputs = []
    for line in demo_block():
        result = CliRunner().invoke(cli, shlex.split(line)[1:])
        assert result.exit_code == 0, f"{line}\n{result.output}"
        outputs.append(result.output)
    assert len(list((tmp_path / "examples" / "out").glob("2026-W47.*"))) == 3
    assert len(list((tmp_path / "examples" / "outbox" / "new").iterdir())) == 3
    issue_row = outputs[2].splitlines()[1].split()
    assert issue_row[0] == "2026-W47" and issue_row[4:8] == ["14", "3", "0", "0"]
