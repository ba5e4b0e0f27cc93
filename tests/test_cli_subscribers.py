"""`digest subscribers …`: what each command prints, changes and exits with."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from digest.cli import cli
from digest.models import SubscriberStatus
from digest.subscribers import SubscriberFile

FIXTURES = Path(__file__).parent / "fixtures" / "subscribers"


def run(*args: str | Path, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project from `digest init`: its config, beside the example subscribers.csv."""
    result = run("init", tmp_path / "news")
    assert result.exit_code == 0, result.output
    return tmp_path / "news" / "digest.toml"


def subs(project: Path, *args: str | Path, input: str | None = None) -> Result:
    return run("--config", project, "subscribers", *args, input=input)


def listing(project: Path) -> Path:
    return project.parent / "subscribers.csv"


def rows(project: Path) -> list[dict[str, str]]:
    with listing(project).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def status_of(project: Path, email: str) -> str:
    (row,) = [r for r in rows(project) if r["email"].lower() == email.lower()]
    return row["status"]


# -- list and stats -----------------------------------------------------------------------------


def test_list_prints_a_table_of_everyone(project: Path) -> None:
    """The table has a header and one line per subscriber, in file order."""
    result = subs(project, "list")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["email", "name", "status", "lang", "sections"]
    assert [line.split()[0] for line in lines[1:]] == [
        "ana.perez@example.org",
        "bo.li@example.net",
        "cy.okoro@example.com",
        "dee.morgan@example.org",
        "eli.santos@example.com",
    ]
    assert "Labor; US Politics" in lines[2] and "(all)" in lines[1]


def test_list_filters_by_status_and_by_section(project: Path) -> None:
    """--section keeps those who chose it and those who get every section."""
    unsubscribed = subs(project, "list", "--status", "unsubscribed", "--format", "json")
    assert [p["email"] for p in json.loads(unsubscribed.stdout)] == ["dee.morgan@example.org"]
    labor = subs(project, "list", "--section", "labor", "--status", "subscribed", "--format", "csv")
    emails = [r["email"] for r in csv.DictReader(io.StringIO(labor.stdout))]
    assert emails == ["ana.perez@example.org", "bo.li@example.net"]


def test_list_refuses_a_section_the_config_does_not_have(project: Path) -> None:
    """An unknown --section is an error listing the real ones."""
    result = subs(project, "list", "--section", "Sports")
    assert result.exit_code == 1
    assert "no section is named 'Sports'" in result.stderr and "Labor" in result.stderr


def test_a_missing_list_is_one_line_with_a_hint(project: Path) -> None:
    """Reading commands on a project without subscribers.csv say how to get one."""
    listing(project).unlink()
    for command in ("list", "stats", "validate", "export"):
        result = subs(project, command)
        assert result.exit_code == 1, command
        assert result.stderr.startswith("error: ") and "digest init" in result.stderr
        assert result.stderr.count("\n") == 1


def test_rows_that_cannot_be_read_are_a_warning_when_listing(project: Path) -> None:
    """list and export leave a broken row out, and say which line."""
    with listing(project).open("a", encoding="utf-8") as handle:
        handle.write("zed@example.org,Zed,,paused,,,,,\n")
    result = subs(project, "list")
    assert result.exit_code == 0 and "zed@" not in result.stdout
    assert "warning: subscribers.csv: left out 1 row(s) that cannot be read (line 7)" in (
        result.stderr
    )


def test_stats_counts_by_status_section_language_and_month(project: Path) -> None:
    """Every status, every configured section and each month appear with their counts."""
    result = subs(project, "stats")
    assert result.exit_code == 0, result.stderr
    lines = [" ".join(line.split()) for line in result.stdout.splitlines()]
    assert lines[0] == "subscribers.csv: 5 rows"
    for expected in (
        "subscribed 3",
        "unsubscribed 1",
        "bounced 1",
        "complained 0",
        "(all) 1",
        "Labor 1",
        "Climate 0",
        "en 2",
        "es 1",
        "2024-11 1",
        "2026-01 1",
    ):
        assert expected in lines, expected


# -- add, unsubscribe, remove -------------------------------------------------------------------


def test_add_puts_a_new_reader_on_the_list(project: Path) -> None:
    """Sections are matched to the config whatever their case; the row says it came from the CLI."""
    result = subs(
        project,
        "add",
        "Fay@Example.org",
        "--first-name",
        "Fay",
        "--sections",
        "climate; labor",
        "--language",
        "pt-BR",
    )
    assert (result.exit_code, result.stdout) == (0, "added Fay@Example.org\n")
    fay = rows(project)[-1]
    assert (fay["email"], fay["first_name"], fay["sections"], fay["language"]) == (
        "Fay@Example.org",
        "Fay",
        "Labor;Climate",
        "pt-BR",
    )
    assert (fay["status"], fay["source"]) == ("subscribed", "cli") and fay["subscribed_at"]


def test_adding_an_existing_address_says_so_and_changes_nothing(project: Path) -> None:
    """Without --update the file stays byte for byte the same."""
    before = listing(project).read_bytes()
    result = subs(project, "add", "BO.LI@example.net", "--first-name", "Robert")
    assert result.exit_code == 0
    assert result.stdout == (
        "bo.li@example.net is already on the list (subscribed); nothing changed "
        "(--update changes their details)\n"
    )
    assert listing(project).read_bytes() == before
    updated = subs(project, "add", "bo.li@example.net", "--first-name", "Robert", "--update")
    assert updated.stdout == "updated bo.li@example.net\n"
    assert rows(project)[1]["first_name"] == "Robert"


def test_re_subscribing_needs_resubscribe(project: Path) -> None:
    """An unsubscribed address is refused with the flag to use; with it, they are back."""
    refused = subs(project, "add", "dee.morgan@example.org")
    assert refused.exit_code == 1
    assert "dee.morgan@example.org unsubscribed on 2026-02-11; nothing changed" in refused.stderr
    assert "--resubscribe" in refused.stderr
    assert status_of(project, "dee.morgan@example.org") == "unsubscribed"
    back = subs(project, "add", "dee.morgan@example.org", "--resubscribe")
    assert back.stdout == "subscribed dee.morgan@example.org again\n"
    assert status_of(project, "dee.morgan@example.org") == "subscribed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-an-address"], "'not-an-address' is not a valid address"),
        (["fay@example.org", "--sections", "Sports"], "no section is named 'Sports'"),
        (["fay@example.org", "--language", "Portuguese"], "'Portuguese' is not a language code"),
        (["fay@example.org", "--language", "xx"], "'xx' is not a language code"),
        (
            ["fay@example.org", "--first-name", "Fay\r\nBcc: x@example.org"],
            "--first-name: 'Fay\\r\\nBcc: x@example.org' holds a line break or control character",
        ),
        (["fay@example.org", "--last-name", "Lo\x1b[31m"], "--last-name: 'Lo\\x1b[31m' holds"),
    ],
)
def test_add_refuses_bad_input_and_writes_nothing(
    project: Path, args: list[str], message: str
) -> None:
    """A bad address, section or language is one error line; the list is untouched."""
    before = listing(project).read_bytes()
    result = subs(project, "add", *args)
    assert result.exit_code == 1 and message in result.stderr
    assert listing(project).read_bytes() == before


def test_unsubscribe_stops_mail_and_keeps_the_row(project: Path) -> None:
    """The row stays with its status changed; a second time says it already was."""
    first = subs(project, "unsubscribe", "Ana.Perez@example.org")
    assert (first.exit_code, first.stdout) == (0, "unsubscribed Ana.Perez@example.org\n")
    assert status_of(project, "ana.perez@example.org") == "unsubscribed"
    assert rows(project)[0]["unsubscribed_at"]
    again = subs(project, "unsubscribe", "ana.perez@example.org")
    assert again.stdout == "ana.perez@example.org is already unsubscribed; nothing changed\n"
    bounced = subs(project, "unsubscribe", "eli.santos@example.com")
    assert bounced.stdout == "eli.santos@example.com is already bounced; nothing changed\n"


def test_a_row_that_is_not_utf8_blocks_no_unsubscribe_and_validate_names_its_line(
    project: Path,
) -> None:
    """A Latin-1 byte in one row: others still unsubscribe, that row's bytes stay as they were,
    and validate reports it as an error on its own line."""
    with listing(project).open("ab") as handle:
        handle.write(b"zz@example.org,Ren\xe9,,subscribed\n")
    left = subs(project, "unsubscribe", "ana.perez@example.org")
    assert left.exit_code == 0, left.output
    ana = SubscriberFile(listing(project)).find("ana.perez@example.org")
    assert ana is not None and ana.status is SubscriberStatus.UNSUBSCRIBED
    assert listing(project).read_bytes().endswith(b"zz@example.org,Ren\xe9,,subscribed\n")
    checked = subs(project, "validate")
    assert checked.exit_code == 1
    assert (
        checked.stdout == "subscribers.csv:7: not UTF-8 text (byte 0xE9); save the file as "
        "UTF-8 (in a spreadsheet: CSV UTF-8)\n"
    )
    assert "error: subscribers.csv: 1 problem(s)" in checked.stderr


def test_unsubscribing_someone_not_on_the_list_is_an_error(project: Path) -> None:
    """Exit 1 with a hint, so a typo is not taken for success."""
    result = subs(project, "unsubscribe", "nobody@example.org")
    assert result.exit_code == 1
    assert "nobody@example.org is not on the list" in result.stderr


def test_remove_asks_first(project: Path) -> None:
    """Answering no keeps the row (exit 1); yes deletes it; --yes does not ask."""
    kept = subs(project, "remove", "bo.li@example.net", input="n\n")
    assert kept.exit_code == 1 and "Delete bo.li@example.net" in kept.stderr
    assert len(rows(project)) == 5
    gone = subs(project, "remove", "bo.li@example.net", input="y\n")
    assert gone.exit_code == 0 and gone.stdout == "removed bo.li@example.net\n"
    assert "bo.li@example.net" not in [r["email"] for r in rows(project)]
    quiet = subs(project, "remove", "cy.okoro@example.com", "--yes")
    assert quiet.exit_code == 0 and len(rows(project)) == 3
    missing = subs(project, "remove", "cy.okoro@example.com", "--yes")
    assert missing.exit_code == 1 and "not on the list" in missing.stderr


def test_remove_without_a_terminal_or_yes_says_to_pass_yes(project: Path) -> None:
    """No answer to the question (stdin closed, as from cron): one line naming --yes, no change."""
    command = [sys.executable, "-m", "digest", "--config", str(project), "subscribers"]
    result = subprocess.run(
        [*command, "remove", "bo.li@example.net"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()[-1:]
    assert line.startswith("error: no answer") and "pass --yes" in line, result.stderr
    assert "Aborted" not in result.stderr and len(rows(project)) == 5


def test_commands_in_parallel_processes_lose_no_change(project: Path) -> None:
    """Six `digest` processes adding and unsubscribing at once: every change is in the file."""
    base = [sys.executable, "-m", "digest", "--config", str(project), "subscribers"]
    commands = [[*base, "add", f"p{n}@example.org"] for n in range(6)]
    commands += [
        [*base, "unsubscribe", "ana.perez@example.org"],
        [*base, "unsubscribe", "bo.li@example.net"],
    ]
    workers = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    emails = {r["email"]: r["status"] for r in rows(project)}
    assert all(emails[f"p{n}@example.org"] == "subscribed" for n in range(6))
    assert emails["ana.perez@example.org"] == emails["bo.li@example.net"] == "unsubscribed"
    assert len(emails) == 11


# -- validate -----------------------------------------------------------------------------------


def test_validate_passes_the_example(project: Path) -> None:
    """The starter list is valid: exit 0 and a one-line verdict."""
    result = subs(project, "validate")
    assert (result.exit_code, result.stdout) == (0, "subscribers.csv: no problems\n")


def test_validate_prints_each_problem_with_its_line_and_exits_1(project: Path) -> None:
    """Every problem is `file:line: what`; the summary is the error line."""
    with listing(project).open("a", encoding="utf-8") as handle:
        handle.write("BO.LI@example.net,,,,,,,,\n")
        handle.write("fay@example,,,,,,,,\n")
        handle.write('gus@example.org,,,retired,"Labor;Sport",,,,\n')
        handle.write("hal@example.org,,,,,,31/12/2025,,\n")
    result = subs(project, "validate")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "subscribers.csv:7: bo.li@example.net is already on line 3",
        "subscribers.csv:8: 'fay@example' is not a valid address: The part after the @-sign is "
        "not valid. It should have a period.",
        "subscribers.csv:9: unknown status 'retired' (use subscribed, unsubscribed, bounced or "
        "complained)",
        "subscribers.csv:10: subscribed_at: '31/12/2025' is not a date like "
        "2026-01-31T09:00:00+00:00",
    ]
    assert result.stderr.startswith("error: subscribers.csv: 4 problem(s)")


def test_validate_reports_unknown_languages_and_control_characters_in_names(
    project: Path,
) -> None:
    """A language no locale has, and a name with a line break or escape, are named by line."""
    with listing(project).open("a", encoding="utf-8", newline="") as handle:
        handle.write("fay@example.org,Fay,,,,xx,,,\n")
        handle.write('gus@example.org,"Gus\r\nBcc: x@example.org",,,,,,,\n')
        handle.write("hal@example.org,Hal,Lo\x07,,,pt,,,\n")
    result = subs(project, "validate")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "subscribers.csv:7: language 'xx' is not a code such as en or pt-BR",
        "subscribers.csv:8: first_name 'Gus\\r\\nBcc: x@example.org' holds a line break or "
        "control character",
        "subscribers.csv:10: last_name 'Lo\\x07' holds a line break or control character",
    ]


def test_import_skips_rows_with_an_unknown_language_or_a_control_character_in_a_name(
    project: Path, tmp_path: Path
) -> None:
    """Each such row is skipped with its line, one line each; the others come in."""
    export = tmp_path / "mine.csv"
    export.write_text(
        "email,first_name,last_name,language\n"
        "fay@example.org,Fay,,xx\n"
        'gus@example.org,"Gus\nBcc: x@example.org",,\n'
        "hal@example.org,Hal,,pt\n",
        encoding="utf-8",
    )
    result = subs(project, "import", export)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "skip line 2 (fay@example.org): language 'xx' is not a code such as en or pt-BR",
        "skip line 3 (gus@example.org): first_name 'Gus\\nBcc: x@example.org' holds a line "
        "break or control character",
        "add hal@example.org (line 5): subscribed",
        "mine.csv (csv): add 1, update 0, skip 2",
    ]


# -- import and export --------------------------------------------------------------------------


HUGE = "a" * 10_000 + "@example.org"


@pytest.mark.parametrize(
    "command",
    [
        ["add", HUGE],
        ["unsubscribe", HUGE],
        ["remove", "--yes", HUGE],
        ["import", "HUGE.csv"],
        ["validate"],
    ],
    ids=lambda command: command[0],
)
def test_a_huge_address_is_echoed_cut_to_60_characters_and_its_length(
    project: Path, command: list[str]
) -> None:
    """A 10,000-character address in an error or a skip line shows its first 60 characters,
    "…" and its length, not all of it."""
    (project.parent / "HUGE.csv").write_text(f"email\n{HUGE}\n", encoding="utf-8")
    if command == ["validate"]:
        with listing(project).open("a", encoding="utf-8") as file:
            file.write(f"{HUGE},,,subscribed,,,,,\n")
    result = subs(project, *[str(project.parent / c) if c == "HUGE.csv" else c for c in command])
    said = result.stdout + result.stderr
    assert "a" * 60 + "… (10,012 characters)" in said or "a" * 60 + "'… (10,012 characters)" in said
    assert "a" * 61 not in said and len(said) < 1000


def test_import_dry_run_reports_and_changes_nothing(project: Path) -> None:
    """A dry run prints each would-be change and the totals; the file is untouched."""
    before = listing(project).read_bytes()
    result = subs(project, "import", FIXTURES / "mailchimp-unsubscribed.csv", "--dry-run")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "would add u1@example.com (line 2): unsubscribed"
    assert lines[-1] == (
        "mailchimp-unsubscribed.csv (mailchimp): would add 5, would update 0, skip 0"
    )
    assert listing(project).read_bytes() == before


def test_import_merges_and_lists_rows_it_skipped(project: Path) -> None:
    """Buttondown's export: new readers added, invalid and unconfirmed rows named by line."""
    result = subs(project, "import", FIXTURES / "buttondown-subscribers.csv")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "skip line 7 (never.clicked@example.org): never confirmed their subscription (unactivated)",
        "skip line 8 (not-an-address): 'not-an-address' is not a valid address: An email "
        "address must have an @-sign.",
    ]
    assert lines[-1] == "buttondown-subscribers.csv (buttondown): add 5, update 0, skip 2"
    rosa = [r for r in rows(project) if r["email"] == "rosa.delgado@example.org"]
    assert rosa and rosa[0]["sections"] == "Labor;Climate"
    assert rosa[0]["source"] == "import:buttondown"


def test_an_import_never_brings_back_someone_who_left(project: Path, tmp_path: Path) -> None:
    """A platform that still lists an unsubscribed reader as active cannot re-subscribe them."""
    stale = tmp_path / "stale.csv"
    stale.write_text(
        "email,active_subscription,expiry,email_disabled,prefer_digests,created_at\n"
        "Dee.Morgan@example.org,true,,false,false,2020-01-01T00:00:00Z\n"
        "eli.santos@example.com,true,,false,false,2020-01-01T00:00:00Z\n"
        "bo.li@example.net,true,,true,false,2020-01-01T00:00:00Z\n",
        encoding="utf-8",
    )
    result = subs(project, "import", stale)
    assert result.stdout.splitlines() == [
        "skip Dee.Morgan@example.org (line 2): unsubscribed here; an import never re-subscribes",
        "skip eli.santos@example.com (line 3): bounced here; an import never re-subscribes",
        "update bo.li@example.net (line 4): status 'subscribed' -> 'unsubscribed'",
        "stale.csv (substack): add 0, update 1, skip 2",
    ]
    assert status_of(project, "dee.morgan@example.org") == "unsubscribed"
    assert status_of(project, "eli.santos@example.com") == "bounced"
    assert status_of(project, "bo.li@example.net") == "unsubscribed"


def test_import_with_the_wrong_format_is_refused(project: Path) -> None:
    """--format ghost on a Mailchimp export names the column it needs."""
    result = subs(project, "import", FIXTURES / "mailchimp-subscribed.csv", "--format", "ghost")
    assert result.exit_code == 1
    assert "no 'email' column, so it is not a ghost export" in result.stderr


def test_import_refuses_a_header_naming_a_column_twice(project: Path, tmp_path: Path) -> None:
    """Two email columns: which one is meant is unclear, so nothing is imported."""
    export = tmp_path / "twice.csv"
    export.write_text("email,name,Email\nfay@example.org,Fay,gus@example.org\n", encoding="utf-8")
    before = listing(project).read_bytes()
    result = subs(project, "import", export)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "error: twice.csv:1: the header names the column 'Email' twice (columns 1 and 3)"
    )
    assert listing(project).read_bytes() == before


def test_import_of_a_json_file_says_it_reads_csv(project: Path, tmp_path: Path) -> None:
    """A JSON export is named as JSON, with the formats import reads; not as odd CSV columns."""
    export = tmp_path / "members.json"
    export.write_text('[{"email": "fay@example.org", "name": "Fay"}]\n', encoding="utf-8")
    result = subs(project, "import", export)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: members.json: this looks like JSON")
    assert "mailchimp, substack" in result.stderr and "columns:" not in result.stderr


def test_export_neutralises_formulas_for_spreadsheets(project: Path, tmp_path: Path) -> None:
    """A name that is a formula comes out with a leading quote; the list itself keeps it."""
    subs(project, "add", "eve@example.org", "--first-name", "=1+2", "--last-name", "@cmd")
    out = tmp_path / "export.csv"
    result = subs(project, "export", "--status", "subscribed", "-o", out)
    assert result.exit_code == 0 and result.stdout == f"wrote 4 subscribers to {out}\n"
    exported = list(csv.DictReader(out.open(encoding="utf-8", newline="")))
    assert [r["email"] for r in exported][-1] == "eve@example.org"
    assert (exported[-1]["first_name"], exported[-1]["last_name"]) == ("'=1+2", "'@cmd")
    assert rows(project)[-1]["first_name"] == "=1+2"


def test_export_json_to_standard_output(project: Path) -> None:
    """JSON goes to stdout with nothing else mixed in."""
    result = subs(project, "export", "--format", "json")
    people = json.loads(result.stdout)
    assert len(people) == 5 and people[2]["last_name"] == "Okoro, Jr."


def test_export_will_not_overwrite_the_list(project: Path) -> None:
    """-o pointing at subscribers.csv itself is refused."""
    before = listing(project).read_bytes()
    result = subs(project, "export", "-o", listing(project))
    assert result.exit_code == 1 and "would overwrite the subscriber list" in result.stderr
    assert listing(project).read_bytes() == before


def test_export_leaves_an_existing_file_alone_unless_force(project: Path) -> None:
    """-o digest.toml is refused, the config untouched, with a hint; --force overwrites."""
    config = project.read_bytes()
    refused = subs(project, "export", "-o", project)
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1
    assert "the file exists: nothing written" in refused.stderr and "--force" in refused.stderr
    assert project.read_bytes() == config
    forced = subs(project, "export", "-o", project, "--force")
    assert forced.exit_code == 0, forced.output
    assert project.read_text(encoding="utf-8").startswith("email,")


@pytest.mark.parametrize(
    "change",
    [["add", "new.reader@example.org"], ["unsubscribe", "ana.perez@example.org"]],
    ids=["add", "unsubscribe"],
)
def test_a_read_only_list_is_refused_and_left_as_it_is(project: Path, change: list[str]) -> None:
    """Mode 444 is the owner's word, even for root, whom permissions would not stop: one line
    naming the file and the mode, and the file unchanged (not replaced through the rename)."""
    before = listing(project).read_bytes()
    inode = listing(project).stat().st_ino
    listing(project).chmod(0o444)
    result = subs(project, *change)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "subscribers.csv: the subscriber list is read-only (mode 444)" in result.stderr
    assert "chmod u+w" in result.stderr
    assert listing(project).read_bytes() == before and listing(project).stat().st_ino == inode
    listing(project).chmod(0o644)
    assert subs(project, *change).exit_code == 0
