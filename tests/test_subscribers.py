"""The subscriber list: tolerant streaming reads, locked atomic writes, checks, import, export."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import string
import subprocess
import sys
import textwrap
import time
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import filelock
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest import subscribers
from digest.errors import SubscriberFileError
from digest.models import Subscriber, SubscriberStatus
from digest.subscribers import COLUMNS, AddOutcome, Details, SubscriberFile

FIXTURES = Path(__file__).parent / "fixtures" / "subscribers"
ROOT = Path(__file__).resolve().parent.parent
HEADER = ",".join(COLUMNS)
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
SECTIONS = ["US Politics", "Latin America", "Labor", "Climate", "More from the Dispatch"]


def write(path: Path, text: str, *, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def listing(tmp_path: Path) -> SubscriberFile:
    """The starter project's subscribers.csv: five readers, one unsubscribed, one bounced."""
    path = tmp_path / "subscribers.csv"
    path.write_bytes((ROOT / "subscribers.example.csv").read_bytes())
    return SubscriberFile(path)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- reading ------------------------------------------------------------------------------------


def test_reading_tolerates_bom_crlf_quotes_case_and_spaces(tmp_path: Path) -> None:
    """A BOM, CRLF, quoted commas and newlines and stray spaces all read as the values meant."""
    path = write(
        tmp_path / "s.csv",
        "\ufeff Email ,first_name,last_name,status,sections,language,subscribed_at,"
        "unsubscribed_at,source\r\n"
        '  Ana.Perez@Example.ORG ,"Ana","Pérez, PhD", Subscribed ,"Labor; Climate",es,'
        "2025-03-14T09:12:00Z,,signup-form\r\n"
        'bo@example.net,Bo,"Li\r\nthe second",unsubscribed,,,2025-06-02,'
        "2026-01-01 10:00:00,cli\r\n",
    )
    ana, bo = list(SubscriberFile(path))
    assert ana.email == "Ana.Perez@Example.ORG" and ana.key == "ana.perez@example.org"
    assert (ana.first_name, ana.last_name) == ("Ana", "Pérez, PhD")
    assert ana.status is SubscriberStatus.SUBSCRIBED
    assert ana.sections == ("Labor", "Climate") and ana.language == "es"
    assert ana.subscribed_at == datetime(2025, 3, 14, 9, 12, tzinfo=UTC)
    assert bo.last_name == "Li\r\nthe second"
    assert bo.subscribed_at == datetime(2025, 6, 2, tzinfo=UTC)  # a date alone: midnight UTC
    assert bo.unsubscribed_at == datetime(2026, 1, 1, 10, tzinfo=UTC)  # no offset: UTC
    assert [row.line for row in SubscriberFile(path).rows()] == [2, 3]


def test_addresses_compare_case_insensitively(listing: SubscriberFile) -> None:
    """find() matches whatever the case and surrounding spaces."""
    found = listing.find("  BO.LI@example.NET ")
    assert found is not None and found.first_name == "Bo"
    assert listing.find("nobody@example.org") is None


def test_a_record_spanning_lines_reports_the_line_it_starts_on(tmp_path: Path) -> None:
    """Line numbers count physical lines, so a quoted newline pushes the next row down."""
    path = write(tmp_path / "s.csv", f'{HEADER}\na@x.org,"two\nlines",,nope\nb@x.org\n')
    rows = list(SubscriberFile(path).rows())
    assert [(row.line, row.subscriber is None) for row in rows] == [(2, True), (4, False)]
    assert rows[0].problems == (
        "unknown status 'nope' (use subscribed, unsubscribed, bounced or complained)",
    )


def test_a_header_with_only_email_reads_every_other_column_as_empty(tmp_path: Path) -> None:
    """The smallest list is one column of addresses, all subscribed."""
    path = write(tmp_path / "s.csv", "email\nana@example.org\n")
    (ana,) = SubscriberFile(path)
    assert ana == Subscriber(email="ana@example.org")


def test_rows_that_cannot_be_read_are_reported_and_left_out(tmp_path: Path) -> None:
    """Iteration skips a broken row; rows() says which line and why."""
    path = write(
        tmp_path / "s.csv",
        f"{HEADER}\n"
        "ok@example.org,,,,,,,,\n"
        "late@example.org,,,subscribed,,,next tuesday,,\n"
        ",Nobody,,,,,,,\n"
        "wide@example.org,,,,,,,,,surplus\n"
        "trailing@example.org,,,,,,,,,,\n",
    )
    file = SubscriberFile(path)
    assert [s.email for s in file] == ["ok@example.org", "trailing@example.org"]
    problems = {row.line: row.problems for row in file.rows() if row.problems}
    assert problems == {
        3: ("subscribed_at: 'next tuesday' is not a date like 2026-01-31T09:00:00+00:00",),
        4: ("no email address",),
        5: ("10 cells, but the header names 9 columns",),
    }


def test_a_missing_file_is_an_error_that_says_how_to_get_one(tmp_path: Path) -> None:
    """Reading commands name the path and point at `digest init`."""
    with pytest.raises(SubscriberFileError) as caught:
        list(SubscriberFile(tmp_path / "nope.csv"))
    assert "nope.csv" in str(caught.value) and "digest init" in str(caught.value)


def test_a_header_without_an_email_column_is_refused_at_line_one(tmp_path: Path) -> None:
    """Without an address column nothing can be matched, so nothing is guessed."""
    path = write(tmp_path / "s.csv", "name,mail\nAna,ana@example.org\n")
    with pytest.raises(SubscriberFileError, match=r"s\.csv:1: the header has no email column"):
        list(SubscriberFile(path))


def test_an_unclosed_quote_is_refused_with_its_line(tmp_path: Path) -> None:
    """A quote that never ends would swallow the rest of the file: refuse, naming where."""
    body = "".join(f"r{n}@example.org,,,,,,,,\n" for n in range(3))
    path = write(tmp_path / "s.csv", f'{HEADER}\n{body}bad@example.org,"Ana\n' + "x" * 200_000)
    with pytest.raises(SubscriberFileError, match=r"s\.csv:5: not readable as CSV"):
        list(SubscriberFile(path))


NOT_UTF8 = b"zz@example.org,Ren\xe9,,subscribed\n"  # Latin-1 "René"


def with_a_row_not_utf8(path: Path) -> bytes:
    """`path` with NOT_UTF8 appended as its last row after two rows of UTF-8; its bytes."""
    body = f"{HEADER}\nana@example.org,Ana,Pérez\n".encode() + NOT_UTF8
    path.write_bytes(body + b"bo@example.net,Bo,Li\n")
    return path.read_bytes()


def test_a_row_that_is_not_utf8_is_reported_by_its_own_line_and_the_rest_read(
    tmp_path: Path,
) -> None:
    """A Latin-1 byte makes its row alone unreadable: named by its line, with how to fix it."""
    file = SubscriberFile(tmp_path / "s.csv")
    with_a_row_not_utf8(file.path)
    assert [s.email for s in file] == ["ana@example.org", "bo@example.net"]
    (row,) = [row for row in file.rows() if row.subscriber is None]
    assert row.line == 3 and row.problems == (
        "not UTF-8 text (byte 0xE9); save the file as UTF-8 (in a spreadsheet: CSV UTF-8)",
    )
    problems = list(subscribers.validate(file, SECTIONS))
    assert [(p.line, p.message) for p in problems] == [(3, row.problems[0])]


def test_a_row_that_is_not_utf8_survives_every_rewrite_byte_for_byte(tmp_path: Path) -> None:
    """Unsubscribing, marking bounces and adding around it copy its bytes as they were; its
    own unsubscribe changes only its status cells, its other bytes kept."""
    file = SubscriberFile(tmp_path / "s.csv")
    before = with_a_row_not_utf8(file.path)
    assert file.unsubscribe("ana@example.org", at=NOW)
    file.set_statuses(["bo@example.net"], SubscriberStatus.BOUNCED, at=NOW)
    file.add("cy@example.com", Details(first_name="Cy"), at=NOW)
    after = file.path.read_bytes()
    assert after.splitlines()[2] == before.splitlines()[2] == NOT_UTF8.rstrip(b"\n")
    assert file.unsubscribe("zz@example.org", at=NOW)
    assert file.path.read_bytes().splitlines()[2] == (
        b"zz@example.org,Ren\xe9,,unsubscribed,,,,2026-11-25T12:00:00+00:00,"
    )


def test_reading_streams_instead_of_loading_the_file(tmp_path: Path) -> None:
    """Memory stays flat while a 20,000-row (2 MB) file is read row by row."""
    path = tmp_path / "big.csv"
    SubscriberFile(path).write_all(
        Subscriber(f"reader{n}@example.org", "Ana", "Pérez", subscribed_at=NOW)
        for n in range(20_000)
    )
    assert path.stat().st_size > 1_500_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in SubscriberFile(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    assert peak < 300_000, f"peak {peak} bytes"


def test_shards_cover_every_readable_row_once_in_file_order(tmp_path: Path) -> None:
    """Each sending process reads every Nth record; together they read the whole list, broken
    rows left out as a full read leaves them."""
    rows = [f"reader{n}@example.org,Ana,Pérez" for n in range(10)]
    rows[4] = "not an address,,"
    path = write(tmp_path / "s.csv", "\n".join([HEADER, *rows]) + "\n")
    everyone = [s.email for s in SubscriberFile(path)]
    shares = [[s.email for s in SubscriberFile(path).shard(i, 3)] for i in range(3)]
    assert shares[0] == ["reader0@example.org", "reader3@example.org", "reader6@example.org",
                         "reader9@example.org"]  # fmt: skip
    assert "not an address" not in everyone and len(everyone) == 9
    assert sorted(email for share in shares for email in share) == sorted(everyone)


# -- writing ------------------------------------------------------------------------------------


def test_unchanged_rows_and_unknown_columns_survive_a_write_byte_for_byte(tmp_path: Path) -> None:
    """An edit changes only its own cells; other rows, odd quoting and extra columns stay."""
    original = (
        "\ufeffemail,crm_id,first_name,last_name,status,sections,language,subscribed_at,"
        "unsubscribed_at,source,note\r\n"
        '"ana@example.org",A-1,Ana,Pérez,subscribed,,es,2025-03-14,,form,"likes, commas"\r\n'
        "bo@example.net,B-2,Bo,Li,subscribed,Labor,en,,,form,  spaced  \r\n"
        "broken@example.org,C-3,,,maybe,,,,,form,kept\r\n"
    )
    path = write(tmp_path / "s.csv", original)
    assert SubscriberFile(path).unsubscribe("BO@example.net", at=NOW)
    after = path.read_bytes().decode("utf-8")
    lines = original.split("\r\n")
    assert after.split("\r\n") == [
        *lines[:2],
        "bo@example.net,B-2,Bo,Li,unsubscribed,Labor,en,,2026-11-25T12:00:00+00:00,form,  spaced  ",
        *lines[3:],
    ]
    bo = SubscriberFile(path).find("bo@example.net")
    assert bo is not None and bo.extra == (("crm_id", "B-2"), ("note", "  spaced  "))


def test_a_row_that_cannot_be_read_still_takes_an_unsubscribe(tmp_path: Path) -> None:
    """A reader can always leave: the status cell changes and the rest of the row stays."""
    path = write(tmp_path / "s.csv", f"{HEADER}\nana@example.org,Ana,,subscrbed,,,whenever,,x\n")
    file = SubscriberFile(path)
    assert file.unsubscribe("ana@example.org", at=NOW)
    assert path.read_text(encoding="utf-8").splitlines()[1] == (
        "ana@example.org,Ana,,unsubscribed,,,whenever,2026-11-25T12:00:00+00:00,x"
    )
    assert not file.unsubscribe("ana@example.org", at=NOW)


def test_a_write_adds_missing_columns_at_the_end(tmp_path: Path) -> None:
    """A file with some of our columns gains the others, empty, when it is next changed."""
    path = write(tmp_path / "s.csv", "email,nickname\nana@example.org,Annie\nbo@example.net\n")
    SubscriberFile(path).unsubscribe("ana@example.org", at=NOW)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert rows[0] == ["email", "nickname", *COLUMNS[1:]]
    assert rows[1][:5] == ["ana@example.org", "Annie", "", "", "unsubscribed"]
    assert rows[2] == ["bo@example.net", *[""] * 9]


def test_a_write_that_changes_nothing_touches_nothing(listing: SubscriberFile) -> None:
    """Unsubscribing someone already gone rewrites nothing and makes no backup."""
    before = listing.path.stat().st_mtime_ns
    assert not listing.unsubscribe("dee.morgan@example.org", at=NOW)
    assert not listing.unsubscribe("nobody@example.org", at=NOW)
    assert listing.path.stat().st_mtime_ns == before
    assert not listing.backup_path.exists()
    assert leftovers(listing.path.parent) == []


def test_each_write_keeps_the_previous_version_as_the_backup(listing: SubscriberFile) -> None:
    """subscribers.csv.bak holds exactly what the file held before the last change."""
    first = listing.path.read_bytes()
    listing.unsubscribe("ana.perez@example.org", at=NOW)
    assert listing.backup_path.read_bytes() == first
    second = listing.path.read_bytes()
    listing.set_status("bo.li@example.net", SubscriberStatus.BOUNCED, at=NOW)
    assert listing.backup_path.read_bytes() == second
    assert leftovers(listing.path.parent) == []


def test_a_rewrite_keeps_the_file_mode(listing: SubscriberFile) -> None:
    """A list kept private (0600) stays private after a write."""
    listing.path.chmod(0o600)
    listing.unsubscribe("ana.perez@example.org", at=NOW)
    assert listing.path.stat().st_mode & 0o777 == 0o600


def test_a_file_without_a_final_newline_gets_one_before_a_new_row(tmp_path: Path) -> None:
    """Appending never glues the new row onto the last one."""
    path = write(tmp_path / "s.csv", f"{HEADER}\r\nana@example.org,Ana,,,,,,,")
    SubscriberFile(path).add("bo@example.net", at=NOW)
    assert path.read_bytes().decode("utf-8").split("\r\n") == [
        HEADER,
        "ana@example.org,Ana,,,,,,,",
        "bo@example.net,,,subscribed,,,2026-11-25T12:00:00+00:00,,cli",
        "",
    ]


def test_add_creates_the_file_with_a_header(tmp_path: Path) -> None:
    """The first add of a new list writes the header too."""
    file = SubscriberFile(tmp_path / "new.csv")
    result = file.add("ana@example.org", Details(first_name="Ana"), at=NOW)
    assert result.outcome is AddOutcome.ADDED
    assert file.path.read_text(encoding="utf-8").splitlines() == [
        HEADER,
        "ana@example.org,Ana,,subscribed,,,2026-11-25T12:00:00+00:00,,cli",
    ]


# -- the changes --------------------------------------------------------------------------------


def test_unsubscribe_records_when_and_reports_whether_it_changed(listing: SubscriberFile) -> None:
    """True the first time, False when already unsubscribed or not on the list."""
    assert listing.unsubscribe("Ana.Perez@example.org", at=NOW)
    ana = listing.find("ana.perez@example.org")
    assert ana is not None and ana.status is SubscriberStatus.UNSUBSCRIBED
    assert ana.unsubscribed_at == NOW and not ana.receives_mail
    assert not listing.unsubscribe("ana.perez@example.org", at=NOW)
    assert not listing.unsubscribe("eli.santos@example.com", at=NOW)  # bounced: no mail already
    assert not listing.unsubscribe("nobody@example.org", at=NOW)


def test_set_status_marks_bounces_and_brings_readers_back(listing: SubscriberFile) -> None:
    """The sender marks a bounce; subscribing again clears unsubscribed_at."""
    assert listing.set_status("bo.li@example.net", SubscriberStatus.BOUNCED, at=NOW)
    bo = listing.find("bo.li@example.net")
    assert bo is not None and (bo.status, bo.unsubscribed_at) == (SubscriberStatus.BOUNCED, NOW)
    assert listing.set_status("dee.morgan@example.org", SubscriberStatus.SUBSCRIBED, at=NOW)
    dee = listing.find("dee.morgan@example.org")
    assert dee is not None and dee.receives_mail
    assert (dee.subscribed_at, dee.unsubscribed_at) == (NOW, None)
    assert not listing.set_status("bo.li@example.net", SubscriberStatus.BOUNCED, at=NOW)


def test_many_bounces_are_marked_in_one_rewrite(listing: SubscriberFile) -> None:
    """set_statuses marks every address in one write: the backup is the file from before."""
    before = listing.path.read_text(encoding="utf-8")
    bounced = ["BO.LI@example.net", "cy.okoro@example.com", "nobody@example.org"]
    assert listing.set_statuses(bounced, SubscriberStatus.BOUNCED, at=NOW)
    assert listing.backup_path.read_text(encoding="utf-8") == before
    statuses = {s.email: s.status for s in listing}
    assert statuses["bo.li@example.net"] is SubscriberStatus.BOUNCED
    assert statuses["cy.okoro@example.com"] is SubscriberStatus.BOUNCED
    assert statuses["ana.perez@example.org"] is SubscriberStatus.SUBSCRIBED
    assert not listing.set_statuses([], SubscriberStatus.BOUNCED, at=NOW)


def test_every_duplicate_row_of_an_address_is_unsubscribed(tmp_path: Path) -> None:
    """A reader listed twice stops getting mail from both rows."""
    path = write(
        tmp_path / "s.csv", f"{HEADER}\nana@example.org\nbo@example.net\nANA@example.org\n"
    )
    file = SubscriberFile(path)
    file.unsubscribe("ana@example.org", at=NOW)
    assert [s.status.value for s in file] == ["unsubscribed", "subscribed", "unsubscribed"]


def test_update_preferences_sets_sections_and_language(listing: SubscriberFile) -> None:
    """The preferences page's save: sections (empty: all) and language change, nothing else."""
    updated = listing.update_preferences(
        "cy.okoro@example.com", sections=("Labor", "Climate"), language="es"
    )
    assert (updated.sections, updated.language) == (("Labor", "Climate"), "es")
    assert listing.find("cy.okoro@example.com") == updated
    assert updated.last_name == "Okoro, Jr."
    with pytest.raises(SubscriberFileError, match="not on the list"):
        listing.update_preferences("nobody@example.org", sections=(), language="")
    with pytest.raises(SubscriberFileError, match="cannot be stored as a section name"):
        listing.update_preferences("cy.okoro@example.com", sections=("A;B",), language="")


def test_adding_an_address_already_there_changes_nothing(listing: SubscriberFile) -> None:
    """Without --update an existing subscriber is reported, and the file is not touched."""
    before = listing.path.read_bytes()
    result = listing.add("BO.LI@example.net", Details(first_name="Robert"), at=NOW)
    assert result.outcome is AddOutcome.EXISTS and result.subscriber.first_name == "Bo"
    assert listing.path.read_bytes() == before and not listing.backup_path.exists()


def test_add_with_update_changes_only_the_details_given(listing: SubscriberFile) -> None:
    """--update sets the given fields, and says so when they already were."""
    result = listing.add("bo.li@example.net", Details(language="es"), at=NOW, update=True)
    assert result.outcome is AddOutcome.UPDATED
    assert result.subscriber.language == "es" and result.subscriber.first_name == "Bo"
    assert listing.find("bo.li@example.net") == result.subscriber
    again = listing.add("bo.li@example.net", Details(language="es"), at=NOW, update=True)
    assert again.outcome is AddOutcome.UNCHANGED


def test_re_subscribing_needs_the_resubscribe_flag(listing: SubscriberFile) -> None:
    """An unsubscribed or bounced address is refused, and comes back only when asked."""
    with pytest.raises(SubscriberFileError, match="unsubscribed on 2026-02-11") as caught:
        listing.add("dee.morgan@example.org", at=NOW)
    assert "--resubscribe" in caught.value.hint
    with pytest.raises(SubscriberFileError, match=r"eli\.santos@example\.com bounced;"):
        listing.add("eli.santos@example.com", at=NOW)
    result = listing.add("dee.morgan@example.org", at=NOW, resubscribe=True)
    assert result.outcome is AddOutcome.RESUBSCRIBED
    dee = listing.find("dee.morgan@example.org")
    assert dee is not None and dee.receives_mail and dee.unsubscribed_at is None


def test_update_on_an_unsubscribed_address_keeps_its_status(listing: SubscriberFile) -> None:
    """--update alone changes details, never the status."""
    result = listing.add("dee.morgan@example.org", Details(first_name="Deb"), at=NOW, update=True)
    assert result.outcome is AddOutcome.UPDATED
    assert result.subscriber.status is SubscriberStatus.UNSUBSCRIBED
    assert result.subscriber.first_name == "Deb"


def test_add_refuses_an_invalid_address(listing: SubscriberFile) -> None:
    """Syntax is checked with email-validator before anything is written."""
    with pytest.raises(SubscriberFileError, match="not a valid address"):
        listing.add("ana@@example.org", at=NOW)


def test_remove_deletes_every_row_of_the_address(tmp_path: Path) -> None:
    """Duplicates go too, and a broken row with the address as well."""
    path = write(
        tmp_path / "s.csv", f"{HEADER}\nana@example.org\nbo@example.net\nAna@Example.org,,,??\n"
    )
    file = SubscriberFile(path)
    assert file.remove("ana@example.org") == 2
    assert [row.cells[0] for row in file.rows()] == ["bo@example.net"]
    assert file.remove("ana@example.org") == 0


# -- two writers, and crashes -------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from digest.subscribers import SubscriberFile

    path, prefix, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    file = SubscriberFile(path, lock_timeout=60)
    for n in range(count):
        file.add(f"{prefix}{n}@example.org", at=datetime.now(UTC))
        if n % 3 == 0:
            file.unsubscribe(f"{prefix}{n}@example.org", at=datetime.now(UTC))
    """
)


def test_processes_writing_at_once_lose_no_row(listing: SubscriberFile) -> None:
    """Four processes adding and unsubscribing at the same time: every change is there."""
    workers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(listing.path), f"w{w}.", "15"])
        for w in range(4)
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0, 0]
    found = {s.key: s.status for s in listing}
    for w in range(4):
        for n in range(15):
            expected = SubscriberStatus.UNSUBSCRIBED if n % 3 == 0 else SubscriberStatus.SUBSCRIBED
            assert found[f"w{w}.{n}@example.org"] is expected
    assert len(found) == 5 + 60 and "ana.perez@example.org" in found
    assert leftovers(listing.path.parent) == []


def test_a_write_waits_for_the_lock_and_then_gives_up_clearly(listing: SubscriberFile) -> None:
    """While another process holds the lock, a write fails after its timeout, changing nothing."""
    before = listing.path.read_bytes()
    impatient = SubscriberFile(listing.path, lock_timeout=0.2)
    with filelock.FileLock(listing.lock_path):
        started = time.monotonic()
        with pytest.raises(SubscriberFileError, match="another command") as caught:
            impatient.unsubscribe("ana.perez@example.org", at=NOW)
        assert time.monotonic() - started >= 0.2
    assert "subscribers.csv.lock" in caught.value.hint
    assert listing.path.read_bytes() == before


def test_a_failed_rename_leaves_the_old_file_and_the_backup(
    listing: SubscriberFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the final rename fails, the list is the old one, the backup exists, no temp is left."""
    before = listing.path.read_bytes()
    real_replace = os.replace

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        if Path(target) == listing.path:
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(SubscriberFileError, match="No space left on device"):
        listing.unsubscribe("ana.perez@example.org", at=NOW)
    assert listing.path.read_bytes() == before
    assert listing.backup_path.read_bytes() == before
    assert leftovers(listing.path.parent) == []


def test_an_error_while_streaming_leaves_the_file_alone(
    listing: SubscriberFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure half way through the copy discards the temporary file."""
    before = listing.path.read_bytes()

    def fail(*_: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(SubscriberFileError, match="Input/output error"):
        listing.unsubscribe("ana.perez@example.org", at=NOW)
    assert listing.path.read_bytes() == before and leftovers(listing.path.parent) == []


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from digest.subscribers import SubscriberFile

    SubscriberFile(Path(sys.argv[1])).unsubscribe(sys.argv[2], at=datetime.now(UTC))
    """
)


def test_a_writer_killed_mid_write_leaves_the_old_or_the_new_file(tmp_path: Path) -> None:
    """SIGKILL at moments spread over a big rewrite: the list is always whole, old or new."""
    path = tmp_path / "subscribers.csv"
    SubscriberFile(path).write_all(
        Subscriber(f"reader{n}@example.org", "Ana", "Pérez", subscribed_at=NOW)
        for n in range(100_000)
    )
    old = path.read_bytes()
    last = "reader99999@example.org"
    unchanged = old[: old.rindex(last.encode())]  # every row but the last
    command = [sys.executable, "-c", KILLED_WRITER, str(path), last]
    started = time.monotonic()
    subprocess.run(command, check=True)
    whole_run = time.monotonic() - started
    outcomes: list[str] = []  # old (killed before writing), mid (during), new (after)
    for fraction in (0.4, 0.6, 0.8, 0.95, 1.6):
        path.write_bytes(old)
        writer = subprocess.Popen(command)
        time.sleep(whole_run * fraction)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        current = path.read_bytes()
        outcomes.append("new" if current != old else "mid" if leftovers(tmp_path) else "old")
        if current != old:  # the new version, whole: the same rows, the last one unsubscribed
            assert current.startswith(unchanged) and current.endswith(b",\n")
            assert current[len(unchanged) :].startswith(f"{last},Ana,Pérez,unsubscribed".encode())
        assert sum(1 for _ in SubscriberFile(path)) == 100_000
    assert "mid" in outcomes, f"no kill landed during a write: {outcomes}"
    SubscriberFile(path).unsubscribe("reader0@example.org", at=NOW)  # the next write cleans up
    assert leftovers(tmp_path) == []


# -- validate and stats -------------------------------------------------------------------------


def test_validate_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    """Invalid addresses, duplicates, statuses, sections, dates and languages, in line order."""
    path = write(
        tmp_path / "s.csv",
        f"{HEADER}\n"
        "ana@example.org,Ana,,subscribed,Labor,es,,,\n"
        "ana@@example.org,,,,,,,,\n"
        "ANA@example.org,,,,,,,,\n"
        "bo@example.net,,,gone,,,,,\n"
        "cy@example.com,,,,labor;Sports,,,,\n"
        "dee@example.org,,,,,english,,,\n"
        "eli@example.com,,,,,,2025-13-01,,\n"
        "fay@localhost,,,,,,,,\n",
    )
    problems = [(p.line, p.message) for p in subscribers.validate(SubscriberFile(path), SECTIONS)]
    assert problems == [
        (3, "'ana@@example.org' is not a valid address: The part after the @-sign contains "
            "invalid characters: '@'."),
        (4, "ana@example.org is already on line 2"),
        (5, "unknown status 'gone' (use subscribed, unsubscribed, bounced or complained)"),
        (6, "unknown section 'labor'; did you mean 'Labor'?"),
        (6, "unknown section 'Sports'"),
        (7, "language 'english' is not a code such as en or pt-BR"),
        (8, "subscribed_at: '2025-13-01' is not a date like 2026-01-31T09:00:00+00:00"),
        (9, "'fay@localhost' is not a valid address: The part after the @-sign is not valid. "
            "It should have a period."),
    ]  # fmt: skip


def test_duplicates_are_found_past_the_size_estimate(tmp_path: Path) -> None:
    """Long rows first and short ones after: the table of seen addresses grows, losing none."""
    long_rows = "".join(f"long{n}@example.org,{'x' * 2000},,,,,,,\n" for n in range(40))
    short_rows = "".join(f"r{n}@example.org\n" for n in range(20_000))
    path = write(tmp_path / "s.csv", f"{HEADER}\n{long_rows}{short_rows}long3@example.org\n")
    assert subscribers._estimate_rows(path) < 2_000
    problems = list(subscribers.validate(SubscriberFile(path), SECTIONS))
    last = 1 + 40 + 20_000 + 1
    assert [(p.line, p.message) for p in problems] == [
        (last, "long3@example.org is already on line 5")
    ]


def test_validate_finds_nothing_wrong_with_the_example(listing: SubscriberFile) -> None:
    """The starter project's list is valid against its own sections."""
    assert list(subscribers.validate(listing, SECTIONS)) == []


def test_stats_count_statuses_sections_languages_and_months(listing: SubscriberFile) -> None:
    """Sections and languages count subscribed readers; months are in the newsletter's zone."""
    listing.add("new@example.org", at=datetime(2026, 3, 1, 3, 0, tzinfo=UTC))  # Feb in New York
    counts = subscribers.stats(listing, zone=ZoneInfo("America/New_York"))
    assert (counts.rows, counts.unreadable) == (6, 0)
    assert counts.by_status == {
        SubscriberStatus.SUBSCRIBED: 4,
        SubscriberStatus.UNSUBSCRIBED: 1,
        SubscriberStatus.BOUNCED: 1,
    }
    assert counts.by_section == {"": 2, "Labor": 1, "US Politics": 1, "Latin America": 1}
    assert counts.by_language == {"es": 1, "en": 2, "": 1}
    assert counts.per_month == {
        "2024-11": 1,
        "2025-03": 1,
        "2025-06": 1,
        "2025-09": 1,
        "2026-01": 1,
        "2026-02": 1,
    }
    assert list(counts.per_month) == sorted(counts.per_month)


def test_month_boundaries_follow_the_zone_for_any_offset(tmp_path: Path) -> None:
    """The shortcut for mid-month days agrees with converting every time."""
    zone = ZoneInfo("Pacific/Kiritimati")  # UTC+14
    times = [datetime(2026, 1, d, h, tzinfo=UTC) for d in (1, 2, 3, 26, 27, 31) for h in (0, 12)]
    file = SubscriberFile(tmp_path / "s.csv")
    file.write_all(Subscriber(f"r{n}@example.org", subscribed_at=t) for n, t in enumerate(times))
    expected: dict[str, int] = {}
    for moment in times:
        month = moment.astimezone(zone).strftime("%Y-%m")
        expected[month] = expected.get(month, 0) + 1
    assert subscribers.stats(file, zone=zone).per_month == expected


# -- export -------------------------------------------------------------------------------------


def test_export_neutralises_cells_a_spreadsheet_would_run(tmp_path: Path) -> None:
    """=, +, -, @, tab and carriage return at the start of a cell get a leading quote."""
    evil = Subscriber(
        email="eve@example.org",
        first_name='=HYPERLINK("http://evil.example","x")',
        last_name="+1-555",
        source="@SUM(A1)",
        extra=(("note", "-2+3"), ("team", "\tTab"), ("other", "\rCR"), ("fine", "a=b")),
    )
    out = io.StringIO()
    count = subscribers.export_csv([evil], out, extra_columns=["note", "team", "other", "fine"])
    header, row = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert count == 1 and header == [*COLUMNS, "note", "team", "other", "fine"]
    cells = dict(zip(header, row, strict=True))
    assert cells["first_name"] == '\'=HYPERLINK("http://evil.example","x")'
    assert (cells["last_name"], cells["source"]) == ("'+1-555", "'@SUM(A1)")
    assert (cells["note"], cells["team"], cells["other"]) == ("'-2+3", "'\tTab", "'\rCR")
    assert cells["fine"] == "a=b" and cells["email"] == "eve@example.org"


def test_json_export_keeps_values_exact(listing: SubscriberFile) -> None:
    """JSON is not opened as a spreadsheet, so its values are the file's."""
    out = io.StringIO()
    assert subscribers.export_json(listing, out) == 5
    people = json.loads(out.getvalue())
    assert people[1]["sections"] == ["Labor", "US Politics"]
    assert people[3]["unsubscribed_at"] == "2026-02-11T21:03:00+00:00"
    assert people[0]["subscribed_at"] == "2025-03-14T09:12:00+00:00"


# -- import -------------------------------------------------------------------------------------


def imported(name: str) -> subscribers.ImportFile:
    """A fixture read with auto-detection, Mailchimp's tags among the sections."""
    return subscribers.read_import(
        FIXTURES / name, sections=["Lorem Editors", "Editors", *SECTIONS]
    )


@pytest.mark.parametrize(
    ("name", "platform"),
    [
        ("mailchimp-subscribed.csv", "mailchimp"),
        ("mailchimp-unsubscribed.csv", "mailchimp"),
        ("mailchimp-cleaned.csv", "mailchimp"),
        ("substack-email-list.csv", "substack"),
        ("substack-subscribers-paid.csv", "substack"),
        ("ghost-members-export-2022.csv", "ghost"),
        ("ghost-members-import.csv", "ghost"),
        ("listmonk-import.csv", "listmonk"),
        ("buttondown-subscribers.csv", "buttondown"),
        ("beehiiv-members.csv", "beehiiv"),
    ],
)
def test_each_platform_is_told_from_its_header(name: str, platform: str) -> None:
    """--format auto recognises every real export in the fixtures."""
    assert imported(name).platform == platform


def test_mailchimp_files_map_statuses_names_times_and_tags() -> None:
    """Each Mailchimp file says its status; names are trimmed, TAGS that name a section count."""
    subscribed = {
        i.subscriber.email: i.subscriber for i in imported("mailchimp-subscribed.csv").incoming
    }
    s5 = subscribed["s5@example.com"]
    assert (s5.first_name, s5.last_name, s5.status) == (
        "Dolor",
        "Simet",
        SubscriberStatus.SUBSCRIBED,
    )
    assert s5.subscribed_at == datetime(2018, 2, 5, 19, 28, 22, tzinfo=UTC)
    assert s5.sections == ("Lorem Editors",) and s5.source == "import:mailchimp"
    assert subscribed["s1@example.com"].sections == ()
    (u3,) = [i.subscriber for i in imported("mailchimp-unsubscribed.csv").incoming
             if i.subscriber.email == "u3@example.com"]  # fmt: skip
    assert (u3.status, u3.unsubscribed_at) == (
        SubscriberStatus.UNSUBSCRIBED,
        datetime(2022, 12, 5, 21, 1, 47, tzinfo=UTC),
    )
    cleaned = [i.subscriber for i in imported("mailchimp-cleaned.csv").incoming]
    assert {s.status for s in cleaned} == {SubscriberStatus.BOUNCED}
    assert [s.sections for s in cleaned] == [
        ("Editors",),
        ("Editors",),
        (),
        ("Editors",),
        ("Editors",),
    ]


def test_substack_disabled_email_means_unsubscribed() -> None:
    """email_disabled=true rows are kept as unsubscribed; created_at is the subscription date."""
    people = {
        i.subscriber.email: i.subscriber for i in imported("substack-email-list.csv").incoming
    }
    assert len(people) == 21
    assert people["maguirec086@comm.ca"].status is SubscriberStatus.UNSUBSCRIBED
    bob = people["Bob.Something@advisers.co.uk"]
    assert bob.status is SubscriberStatus.SUBSCRIBED
    assert bob.subscribed_at == datetime(2020, 1, 1, 19, 58, 29, 925000, tzinfo=UTC)
    assert "ömil@gmail.com" in people  # an internationalised local part is valid


def test_ghost_names_labels_and_email_opt_out() -> None:
    """One name cell splits into first and last; subscribed_to_emails=false is unsubscribed."""
    read = subscribers.read_import(
        FIXTURES / "ghost-members-export-2022.csv", sections=["User Import Label"]
    )
    bobby, stirpey = [i.subscriber for i in read.incoming]
    assert (bobby.first_name, bobby.last_name, bobby.sections) == (
        "bobby",
        "tables",
        ("User Import Label",),
    )
    assert bobby.subscribed_at == datetime(2022, 10, 18, 6, 34, 8, tzinfo=UTC)
    assert stirpey.status is SubscriberStatus.UNSUBSCRIBED


def test_listmonk_reads_every_row_and_splits_the_name() -> None:
    """All 100 rows of listmonk's import file, JSON attributes left behind."""
    read = imported("listmonk-import.csv")
    assert len(read.incoming) == 100 and not read.rejected
    first = read.incoming[0]
    assert (first.line, first.subscriber.first_name, first.subscriber.last_name) == (
        2,
        "First0",
        "Last0",
    )


def test_buttondown_types_tags_and_rejected_rows() -> None:
    """Types map onto our statuses; unconfirmed and invalid rows are rejected with their line."""
    read = imported("buttondown-subscribers.csv")
    people = {i.subscriber.key: i.subscriber for i in read.incoming}
    assert people["rosa.delgado@example.org"].sections == ("Labor", "Climate")
    assert people["ines.alvarez@example.net"].sections == ("US Politics",)
    assert people["kwame.mensah@example.com"].status is SubscriberStatus.SUBSCRIBED
    assert people["bounce.me@example.com"].status is SubscriberStatus.BOUNCED
    assert people["angry.reader@example.org"].status is SubscriberStatus.COMPLAINED
    assert [(r.line, r.reason.split(" (")[0]) for r in read.rejected] == [
        (7, "never confirmed their subscription"),
        (8, "'not-an-address' is not a valid address: An email address must have an @-sign."),
    ]


def test_beehiiv_pending_is_not_imported_and_unsubscribed_at_wins() -> None:
    """beehiiv's pending readers never confirmed; a row with unsubscribed_at has left."""
    read = imported("beehiiv-members.csv")
    people = {i.subscriber.email: i.subscriber for i in read.incoming}
    assert [(r.line, r.email) for r in read.rejected] == [(6, "amett@example.com")]
    assert people["unsublit@example.com"].status is SubscriberStatus.UNSUBSCRIBED
    assert people["ipsum@example.com"].last_name == "Name"
    assert people["lorem@example.com"].subscribed_at == datetime(
        2023, 3, 24, 10, 23, 10, tzinfo=UTC
    )


def test_our_own_csv_imports_with_sections_matched_to_the_config(tmp_path: Path) -> None:
    """--format csv reads our columns; bad statuses, dates and languages are rejected."""
    source = write(
        tmp_path / "in.csv",
        "Email,Name,status,sections,language,subscribed_at\n"
        "ana@example.org,Ana Pérez,,labor;Sports,es,2025-01-01\n"
        "bo@example.net,,gone,,,\n"
        "cy@example.com,,,,,yesterday\n"
        "dee@example.org,,,,english,\n",
    )
    read = subscribers.read_import(source, sections=SECTIONS)
    (ana,) = [i.subscriber for i in read.incoming]
    assert (ana.first_name, ana.last_name, ana.sections) == ("Ana", "Pérez", ("Labor",))
    assert [(r.line, r.reason) for r in read.rejected] == [
        (3, "unknown status 'gone'"),
        (4, "subscribed_at: 'yesterday' is not a date"),
        (5, "language 'english' is not a code such as en or pt-BR"),
    ]


def test_an_unknown_export_is_refused_with_the_formats(tmp_path: Path) -> None:
    """Auto-detection that finds no address column says which formats exist."""
    source = write(tmp_path / "in.csv", "who,where\nAna,Lima\n")
    with pytest.raises(SubscriberFileError, match="cannot tell which platform") as caught:
        subscribers.read_import(source)
    assert "mailchimp" in caught.value.hint


def test_a_wrong_explicit_format_is_refused() -> None:
    """--format mailchimp on a Ghost export names the missing column."""
    with pytest.raises(SubscriberFileError, match="no 'email address' column"):
        subscribers.read_import(FIXTURES / "ghost-members-import.csv", platform="mailchimp")


def test_merge_adds_updates_and_never_resubscribes(listing: SubscriberFile) -> None:
    """New addresses come in with their status; those who left here stay gone."""
    incoming = [
        subscribers.Incoming(2, Subscriber("new@example.org", first_name="New")),
        subscribers.Incoming(3, Subscriber("DEE.MORGAN@example.org")),  # unsubscribed here
        subscribers.Incoming(
            4, Subscriber("bo.li@example.net", status=SubscriberStatus.UNSUBSCRIBED)
        ),
        subscribers.Incoming(5, Subscriber("gone@example.org", status=SubscriberStatus.BOUNCED)),
        subscribers.Incoming(6, Subscriber("ana.perez@example.org")),
        subscribers.Incoming(7, Subscriber("new@example.org", first_name="Again")),
    ]
    report = listing.merge(incoming)
    assert [(e.action, e.line, e.detail) for e in report.entries] == [
        ("add", 2, "subscribed"),
        ("skip", 3, "unsubscribed here; an import never re-subscribes"),
        ("update", 4, "status 'subscribed' -> 'unsubscribed'"),
        ("add", 5, "bounced"),
        ("skip", 6, "already on the list; nothing new"),
        ("skip", 7, "also on line 2 of the import"),
    ]
    people = {s.key: s for s in listing}
    assert people["dee.morgan@example.org"].status is SubscriberStatus.UNSUBSCRIBED
    assert people["bo.li@example.net"].status is SubscriberStatus.UNSUBSCRIBED
    assert people["gone@example.org"].status is SubscriberStatus.BOUNCED
    assert people["new@example.org"].first_name == "New"


def test_merge_fills_empty_details_only(tmp_path: Path) -> None:
    """An import fills a missing name and date but never overwrites ours."""
    path = write(tmp_path / "s.csv", f"{HEADER}\nana@example.org,Ana,,subscribed,,,,,\n")
    file = SubscriberFile(path)
    theirs = Subscriber("ana@example.org", "Annie", "Pérez", subscribed_at=NOW)
    (entry,) = file.merge([subscribers.Incoming(2, theirs)]).entries
    assert entry.action == "update"
    ana = file.find("ana@example.org")
    assert ana is not None and (ana.first_name, ana.last_name, ana.subscribed_at) == (
        "Ana",
        "Pérez",
        NOW,
    )


def test_a_dry_run_merge_reports_the_same_and_writes_nothing(listing: SubscriberFile) -> None:
    """--dry-run prints what would happen; the file is byte-identical afterwards."""
    before = listing.path.read_bytes()
    read = imported("mailchimp-subscribed.csv")
    dry = listing.merge(read.incoming, dry_run=True)
    assert listing.path.read_bytes() == before and not listing.backup_path.exists()
    real = listing.merge(read.incoming)
    assert dry.entries == real.entries and real.count("add") == 5


def test_merge_skips_an_address_whose_row_cannot_be_read(tmp_path: Path) -> None:
    """Rather than add a second row, the import names the broken line to fix."""
    path = write(tmp_path / "s.csv", f"{HEADER}\nana@example.org,,,???,,,,,\n")
    report = SubscriberFile(path).merge([subscribers.Incoming(9, Subscriber("ana@example.org"))])
    assert [(e.action, e.detail) for e in report.entries] == [
        ("skip", "line 2 of s.csv has it but cannot be read")
    ]


def test_importing_mailchimp_then_its_unsubscribed_file_keeps_them_out(tmp_path: Path) -> None:
    """The unsubscribed export goes in as unsubscribed rows: a stale list cannot bring them back."""
    file = SubscriberFile(tmp_path / "s.csv")
    file.merge(imported("mailchimp-unsubscribed.csv").incoming)
    stale = [subscribers.Incoming(2, Subscriber("u1@example.com"))]
    (entry,) = file.merge(stale).entries
    assert entry.action == "skip"
    assert {s.status for s in file} == {SubscriberStatus.UNSUBSCRIBED}


# -- sections, addresses, round trips -------------------------------------------------------------


def test_parse_sections_matches_any_case_in_config_order() -> None:
    """ "labor; us politics" becomes the configured names, in the config's order."""
    assert subscribers.parse_sections("labor; us politics", SECTIONS) == ("US Politics", "Labor")
    with pytest.raises(SubscriberFileError, match="no section is named 'Sports'"):
        subscribers.parse_sections("Labor;Sports", SECTIONS)


ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"


@settings(max_examples=3000, deadline=None)
@given(
    local=st.text(alphabet=ATEXT + '."@ \\é', min_size=0, max_size=70),
    domain=st.text(alphabet=string.ascii_letters + string.digits + ".-_é", min_size=0, max_size=30),
)
def test_the_fast_address_check_agrees_with_email_validator(local: str, domain: str) -> None:
    """address_problem's shortcut accepts exactly what email-validator accepts."""
    address = f"{local}@{domain}"
    try:
        validate_email(address, check_deliverability=False)
        valid = True
    except EmailNotValidError:
        valid = False
    assert (subscribers.address_problem(address) is None) is valid


NAMES = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12).map(str.strip)
SECTION_NAMES = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Zs", "Cc"], blacklist_characters=";"),
    min_size=1,
    max_size=10,
)
MOMENTS = st.none() | st.datetimes(
    min_value=datetime(1900, 1, 2), max_value=datetime(2100, 1, 1)
).map(lambda d: d.replace(microsecond=0, tzinfo=timezone(timedelta(hours=d.second % 5 - 2))))
SUBSCRIBERS = st.builds(
    Subscriber,
    email=st.from_regex(r"[a-z0-9._+-]{1,10}@[a-z0-9-]{1,8}\.[a-z]{2,4}", fullmatch=True),
    first_name=NAMES,
    last_name=NAMES,
    status=st.sampled_from(SubscriberStatus),
    sections=st.lists(SECTION_NAMES.map(str.strip).filter(bool), max_size=3).map(tuple),
    language=st.sampled_from(["", "en", "es", "pt-BR"]),
    subscribed_at=MOMENTS,
    unsubscribed_at=MOMENTS,
    source=NAMES,
    extra=st.tuples(
        st.tuples(st.just("crm id"), st.text(alphabet=st.characters(blacklist_categories=["Cs"]))),
        st.tuples(st.just("Notes"), st.text(alphabet=st.characters(blacklist_categories=["Cs"]))),
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(people=st.lists(SUBSCRIBERS, max_size=8))
def test_writing_then_reading_gives_the_same_subscribers(
    tmp_path: Path, people: list[Subscriber]
) -> None:
    """Any subscribers, with unknown columns holding any text, read back exactly as written."""
    file = SubscriberFile(tmp_path / "round.csv")
    file.write_all(people, extra_columns=["crm id", "Notes"])
    assert list(file) == people
    assert file.extra_columns() == ("crm id", "Notes")
    if people:  # and a change to one address leaves every other row exactly so
        key = people[-1].key
        file.unsubscribe(people[-1].email, at=NOW)
        assert [p for p in file if p.key != key] == [p for p in people if p.key != key]
