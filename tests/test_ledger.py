"""The send ledger: freezing, row states, resume after a crash, and claims across processes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest.errors import LedgerError
from digest.ledger import MIGRATIONS, Claim, Counts, Ledger, Outcome, Recipient, RowState

AT = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
LATER = AT + timedelta(hours=1)
ISSUE = "2024-W19"
VARIANTS = {"all.en": b"<html>all</html>", "news.es": b"<html>noticias</html>"}
PEOPLE = [
    Recipient("ana@example.org", "Ana", "all.en"),
    Recipient("bo@example.org", "Bo", "news.es"),
    Recipient("cy@example.org", "", "all.en"),
]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger.open(tmp_path / ".digest" / "ledger.sqlite3")
    yield book
    book.close()


def send(book: Ledger, address: str) -> None:
    assert book.mark_sending(ISSUE, address, message_id=f"<{address}>", at=AT)
    assert book.mark_sent(ISSUE, address, code=250, text="2.0.0 queued", at=AT)


def test_freeze_stores_content_and_one_pending_row_per_address(ledger: Ledger) -> None:
    """Freezing records the variants and every recipient as pending, once per address."""
    frozen = ledger.freeze(ISSUE, variants=VARIANTS, recipients=[*PEOPLE, PEOPLE[0]], at=AT)
    assert (frozen.resumed, frozen.added, dict(frozen.variants)) == (False, 3, VARIANTS)
    assert ledger.counts(ISSUE) == Counts(pending=3)
    assert [r.address for r in ledger.rows(ISSUE, RowState.PENDING)] == [p.address for p in PEOPLE]
    assert ledger.issues()[0].issue_id == ISSUE


def test_variants_can_be_rendered_once_the_recipients_are_read(ledger: Ledger) -> None:
    """A function for the variants is called after the recipients, so one pass over the list
    tells which to render; a resume never calls it (the frozen ones stand)."""
    seen: list[str] = []

    def recipients() -> Iterator[Recipient]:
        for person in PEOPLE:
            seen.append(person.variant)
            yield person

    def variants() -> dict[str, bytes]:
        assert len(seen) == len(PEOPLE)
        return {key: VARIANTS[key] for key in set(seen)}

    frozen = ledger.freeze(ISSUE, variants=variants, recipients=recipients(), at=AT)
    assert dict(frozen.variants) == VARIANTS
    again = ledger.freeze(
        ISSUE, variants=lambda: pytest.fail("rendered again"), recipients=[], at=AT
    )
    assert dict(again.variants) == VARIANTS


def test_write_applies_claims_and_outcomes_in_order_in_one_transaction(ledger: Ledger) -> None:
    """The sender's batch: each step moves its row only from the state it expects, in order, so
    one batch can finish a copy and claim it again never."""
    ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=AT)
    moved = ledger.write(
        ISSUE,
        [
            Claim("ana@example.org", "<a@x>"),
            Outcome("ana@example.org", RowState.SENT, 250, "ok"),
            Claim("ana@example.org", "<a2@x>"),  # sent already: not claimed again
            Claim("BO@example.org", None),
            Outcome("cy@example.org", RowState.FAILED, 550, "never claimed"),
        ],
        at=LATER,
    )
    assert moved == [True, True, False, True, False]
    ana = ledger.row(ISSUE, "ana@example.org")
    assert ana is not None
    assert (ana.state, ana.message_id, ana.reply_code, ana.finished_at) == (
        RowState.SENT, "<a@x>", 250, LATER
    )  # fmt: skip
    assert ledger.counts(ISSUE) == Counts(pending=1, sending=1, sent=1)


def test_write_if_free_gives_way_at_once_to_another_writer(tmp_path: Path) -> None:
    """While another process holds the write lock, the sender's batch returns None at once,
    writing nothing, instead of stalling its event loop in SQLite's wait; then it goes in."""
    path = tmp_path / "ledger.sqlite3"
    with Ledger.open(path) as book:
        book.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=AT)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        assert book.write_if_free(ISSUE, [Claim("ana@example.org", None)], at=AT) is None
        assert time.monotonic() - started < 1  # the busy timeout is 10 s
        other.execute("ROLLBACK")
        other.close()
        assert book.counts(ISSUE) == Counts(pending=3)
        assert book.write_if_free(ISSUE, [Claim("ana@example.org", None)], at=AT) == [True]
        assert book.counts(ISSUE) == Counts(pending=2, sending=1)


def test_copy_of_gives_the_state_and_frozen_address_case_insensitively(ledger: Ledger) -> None:
    """The sender asks reader by reader whether their copy still waits, and where it goes."""
    assert ledger.frozen_at(ISSUE) is None
    ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=AT)
    assert ledger.frozen_at(ISSUE) == AT
    send(ledger, "ana@example.org")
    assert ledger.copy_of(ISSUE, "ana@example.org") == (RowState.SENT, "ana@example.org")
    assert ledger.copy_of(ISSUE, " BO@example.org") == (RowState.PENDING, "bo@example.org")
    assert ledger.copy_of(ISSUE, "nobody@example.org") is None
    assert ledger.copy_of("2024-W20", "bo@example.org") is None


def test_copies_of_looks_many_readers_up_at_once(ledger: Ledger) -> None:
    """The send's lookahead: states and frozen addresses by key; unknown readers are absent."""
    ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=AT)
    send(ledger, "ana@example.org")
    found = ledger.copies_of(ISSUE, ["ANA@example.org", "bo@example.org ", "zed@example.org"])
    assert found == {
        "ana@example.org": (RowState.SENT, "ana@example.org"),
        "bo@example.org": (RowState.PENDING, "bo@example.org"),
    }
    assert ledger.copies_of(ISSUE, []) == {}


def test_a_row_moves_from_pending_through_sending_to_sent(ledger: Ledger) -> None:
    """A claimed row is sending, then sent with its Message-ID, reply and attempt count."""
    ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=AT)
    assert ledger.mark_sending(ISSUE, "Ana@Example.org ", message_id="<m1@x>", at=AT)
    assert ledger.counts(ISSUE) == Counts(pending=2, sending=1)
    assert ledger.mark_sent(ISSUE, "ana@example.org", code=250, text="ok", at=LATER)
    row = ledger.row(ISSUE, "ana@example.org")
    assert row is not None
    assert (row.state, row.message_id, row.reply_code, row.attempts) == (
        RowState.SENT,
        "<m1@x>",
        250,
        1,
    )
    assert row.finished_at == LATER


def test_only_a_pending_row_can_be_claimed_and_only_a_sending_one_finished(
    ledger: Ledger,
) -> None:
    """A sent row is not claimed again, and a pending row cannot be marked sent."""
    ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=AT)
    send(ledger, "ana@example.org")
    assert not ledger.mark_sending(ISSUE, "ana@example.org", message_id=None, at=AT)
    assert not ledger.mark_sent(ISSUE, "bo@example.org", code=250, text="", at=AT)
    assert not ledger.mark_sending(ISSUE, "stranger@example.org", message_id=None, at=AT)


def test_failed_unknown_and_released_rows_are_recorded(ledger: Ledger) -> None:
    """Failed and unknown are final for the run; a released row is pending again."""
    ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=AT)
    for address in ("ana@example.org", "bo@example.org", "cy@example.org"):
        ledger.mark_sending(ISSUE, address, message_id=None, at=AT)
    ledger.mark_failed(ISSUE, "ana@example.org", code=550, text="no such user", at=AT)
    ledger.mark_unknown(ISSUE, "bo@example.org", code=None, text="dropped", at=AT)
    assert ledger.release(ISSUE, "cy@example.org")
    assert ledger.counts(ISSUE) == Counts(pending=1, failed=1, unknown=1)


def test_resume_keeps_the_frozen_content_and_skips_the_sent(ledger: Ledger) -> None:
    """Freezing again returns the first content and leaves sent rows alone."""
    ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=AT)
    send(ledger, "ana@example.org")
    again = ledger.freeze(ISSUE, variants={"all.en": b"changed"}, recipients=PEOPLE, at=LATER)
    assert (again.resumed, again.frozen_at, dict(again.variants)) == (True, AT, VARIANTS)
    assert [r.address for r in ledger.rows(ISSUE, RowState.PENDING)] == [
        "bo@example.org",
        "cy@example.org",
    ]


def test_rows_left_sending_by_a_crash_become_unknown(ledger: Ledger) -> None:
    """A row sending when the process died may have been delivered, so it is not resent."""
    ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=AT)
    ledger.mark_sending(ISSUE, "bo@example.org", message_id=None, at=AT)
    again = ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=LATER)
    assert again.made_unknown == 1
    assert ledger.counts(ISSUE) == Counts(pending=2, unknown=1)


def test_retry_unknown_puts_unknown_rows_back_to_pending(ledger: Ledger) -> None:
    """--retry-unknown resends rows whose fate is unknown."""
    ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=AT)
    ledger.mark_sending(ISSUE, "bo@example.org", message_id=None, at=AT)
    again = ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=LATER, retry_unknown=True)
    assert (again.made_unknown, again.requeued) == (1, 1)
    assert ledger.counts(ISSUE) == Counts(pending=3)


def test_new_subscribers_join_a_frozen_issue_only_with_include_new(ledger: Ledger) -> None:
    """Someone who subscribed after the freeze gets that issue only when asked."""
    ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=AT)
    newcomer = Recipient("dee@example.org", "Dee", "all.en")
    assert ledger.freeze(ISSUE, variants=VARIANTS, recipients=[newcomer], at=LATER).added == 0
    assert ledger.counts(ISSUE).total == 3
    added = ledger.freeze(
        ISSUE, variants=VARIANTS, recipients=[*PEOPLE, newcomer], at=LATER, include_new=True
    )
    assert added.added == 1
    assert ledger.counts(ISSUE) == Counts(pending=4)


CLAIMER = """
import json, sys
from datetime import UTC, datetime
from collections.abc import Iterator
from pathlib import Path
from digest.ledger import Ledger
book = Ledger.open(Path(sys.argv[1]))
won = [n for n in range(int(sys.argv[2]))
       if book.mark_sending("2024-W19", f"r{n:04}@example.org", message_id=None,
                            at=datetime.now(UTC))]
print(json.dumps(won))
"""


def test_two_processes_never_claim_the_same_row(tmp_path: Path) -> None:
    """Two senders racing over one issue split its rows; none is claimed twice."""
    path = tmp_path / "ledger.sqlite3"
    with Ledger.open(path) as book:
        people = [Recipient(f"r{n:04}@example.org") for n in range(400)]
        book.freeze(ISSUE, variants=VARIANTS, recipients=people, at=AT)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(path), "400"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    won = [set(json.loads(racer.communicate(timeout=60)[0])) for racer in racers]
    assert not won[0] & won[1]
    assert won[0] | won[1] == set(range(400))


def test_a_file_that_is_not_a_ledger_is_a_clear_error(tmp_path: Path) -> None:
    """Pointing the ledger at some other file says so instead of a traceback."""
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LedgerError, match="not an SQLite database"):
        Ledger.open(path)


def test_a_version_1_ledger_gains_tallies_that_follow_every_change(tmp_path: Path) -> None:
    """The counts by state moved from an index to a table kept by triggers: an old ledger's
    rows are counted once at the upgrade, and every later insert and change is tallied."""
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(MIGRATIONS[0])
        old.execute("PRAGMA user_version = 1")
        old.execute("INSERT INTO issues VALUES (?, ?)", (ISSUE, AT.isoformat()))
        old.executemany(
            "INSERT INTO deliveries (issue_id, key, address, name, variant, state, queued_at) "
            "VALUES (?, ?, ?, '', '', ?, ?)",
            [(ISSUE, a, a, state, AT.isoformat()) for a, state in
             [("ana@example.org", "sent"), ("bo@example.org", "pending"),
              ("cy@example.org", "pending")]],
        )  # fmt: skip
    old.close()
    with Ledger.open(path) as book:
        assert book.counts(ISSUE) == Counts(pending=2, sent=1)
        assert book.mark_sending(ISSUE, "bo@example.org", message_id=None, at=AT)
        assert book.mark_unknown(ISSUE, "bo@example.org", code=None, text="lost", at=AT)
        book.freeze(ISSUE, variants={}, recipients=PEOPLE, at=AT, include_new=True)
        assert book.counts(ISSUE) == Counts(pending=1, sent=1, unknown=1)
        book.freeze("2024-W20", variants={}, recipients=PEOPLE, at=AT)
        assert book.counts("2024-W20") == Counts(pending=3)


def test_counts_agree_with_the_rows_after_every_kind_of_change(tmp_path: Path) -> None:
    """The tallies are kept by hand in each write: after claims, outcomes, a release, a
    resume that finds a row left sending, a requeue and new readers, they are the rows'."""
    path = tmp_path / "ledger.sqlite3"
    people = [Recipient(f"r{n}@example.org") for n in range(8)]
    with Ledger.open(path) as book:
        book.freeze(ISSUE, variants={}, recipients=people[:6], at=AT)
        book.write(ISSUE, [Claim(p.address, None) for p in people[:5]], at=AT)
        book.write(
            ISSUE,
            [
                Outcome("r0@example.org", RowState.SENT, 250, "ok"),
                Outcome("r1@example.org", RowState.FAILED, 550, "no"),
                Outcome("r2@example.org", RowState.UNKNOWN, None, "lost"),
                Outcome("r5@example.org", RowState.SENT, 250, "never claimed"),
            ],
            at=AT,
        )
        book.release(ISSUE, "r3@example.org")
        book.freeze(ISSUE, variants={}, recipients=people, at=AT, include_new=True)
        book.freeze(ISSUE, variants={}, recipients=people, at=AT, retry_unknown=True)
        counted = book.counts(ISSUE)
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT state, count(*) FROM deliveries GROUP BY state"))
    db.close()
    assert counted == Counts(**rows) == Counts(pending=6, sent=1, failed=1)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A ledger written by a newer digest is not touched."""
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(LedgerError, match="newer"):
        Ledger.open(path)


def test_a_frozen_variant_reads_back_by_key_and_a_missing_one_is_none(ledger: Ledger) -> None:
    """The variants frozen with an issue can be read one at a time, without freezing anything."""
    ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=AT)
    assert ledger.variant(ISSUE, "news.es") == VARIANTS["news.es"]
    assert ledger.variant(ISSUE, "sports.en") is None
    assert ledger.variant("2024-W20", "all.en") is None


def test_rows_in_given_states_come_back_in_address_order(ledger: Ledger) -> None:
    """Asking for failed and unknown rows gives those, with their replies, and no others."""
    ledger.freeze(ISSUE, variants=VARIANTS, recipients=PEOPLE, at=AT)
    send(ledger, "ana@example.org")
    for address in ("cy@example.org", "bo@example.org"):
        assert ledger.mark_sending(ISSUE, address, message_id=None, at=AT)
    ledger.mark_failed(ISSUE, "cy@example.org", code=550, text="5.1.1 no such user", at=AT)
    ledger.mark_unknown(ISSUE, "bo@example.org", code=None, text="connection lost", at=AT)
    problems = ledger.rows(ISSUE, RowState.FAILED, RowState.UNKNOWN)
    assert [(r.address, r.state, r.reply_code) for r in problems] == [
        ("bo@example.org", RowState.UNKNOWN, None),
        ("cy@example.org", RowState.FAILED, 550),
    ]
    assert [r.address for r in ledger.rows(ISSUE, RowState.SENT)] == ["ana@example.org"]
