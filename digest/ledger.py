"""The send ledger: which copy of which issue went to whom, so a send can resume exactly once.

A row per (issue, address) moves pending -> sending -> sent | failed | unknown. The sender marks a
row `sending` in its own committed transaction before the message data goes out, so after a crash
a row still `sending` may or may not have been delivered: resuming makes it `unknown` rather than
risk a second copy. The issue's rendered variants are frozen with it, so a resumed send uses the
same bytes. SQLite in WAL mode with synchronous=NORMAL: each state change is one small
transaction, durable against a process crash (SIGKILL) without an fsync per message.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from digest.errors import LedgerError
from digest.models import email_key
from digest.store import SqliteFile

# Schema version N is MIGRATIONS[N - 1]; add new scripts at the end, never edit old ones.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE issues (
        id TEXT PRIMARY KEY,
        frozen_at TEXT NOT NULL
    );
    CREATE TABLE variants (
        issue_id TEXT NOT NULL REFERENCES issues (id),
        key TEXT NOT NULL,
        content BLOB NOT NULL,
        PRIMARY KEY (issue_id, key)
    );
    CREATE TABLE deliveries (
        issue_id TEXT NOT NULL REFERENCES issues (id),
        key TEXT NOT NULL,
        address TEXT NOT NULL,
        name TEXT NOT NULL,
        variant TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        message_id TEXT,
        reply_code INTEGER,
        reply_text TEXT,
        queued_at TEXT NOT NULL,
        sending_at TEXT,
        finished_at TEXT,
        PRIMARY KEY (issue_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_state ON deliveries (issue_id, state, key);
    """,
    # A row changes state twice a message, and the state index made each change cost two more
    # index pages: the counts by state are kept in a small table instead, in the transaction
    # that changes them (`_tally`; triggers would add three statements a row).
    """
    CREATE TABLE tallies (
        issue_id TEXT NOT NULL,
        state TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (issue_id, state)
    ) WITHOUT ROWID;
    INSERT INTO tallies (issue_id, state, count)
        SELECT issue_id, state, count(*) FROM deliveries GROUP BY issue_id, state;
    DROP INDEX deliveries_state;
    """,
)

# A claim and an outcome: conditional updates, so a row moves only from the state it was seen in.
_CLAIM = (
    "UPDATE deliveries SET state = 'sending', attempts = attempts + 1, "
    "message_id = coalesce(?, message_id), sending_at = ? "
    "WHERE issue_id = ? AND key = ? AND state = 'pending'"
)
_FINISH = (
    "UPDATE deliveries SET state = ?, reply_code = ?, reply_text = ?, "
    "finished_at = ? WHERE issue_id = ? AND key = ? AND state = 'sending'"
)

_ROW_COLUMNS = (
    "issue_id, address, name, variant, state, attempts, message_id, reply_code, reply_text, "
    "queued_at, sending_at, finished_at"
)


# The reply recorded for a copy not sent because its address needs SMTPUTF8 (RFC 6531) and the
# relay does not offer it: nothing went out, so resuming the send makes such rows pending again.
NO_SMTPUTF8 = (
    "not sent: the address needs SMTPUTF8, which the relay does not offer; "
    "sending the issue again through a relay that offers it retries it"
)


class RowState(StrEnum):
    """Where one recipient's copy stands."""

    PENDING = "pending"  # not sent yet
    SENDING = "sending"  # claimed; its data may be on the wire
    SENT = "sent"  # the server accepted it (250 after DATA)
    FAILED = "failed"  # refused for good (5xx) or out of attempts
    UNKNOWN = "unknown"  # the connection died after the data went out: maybe delivered


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who gets a copy of a frozen issue, and which variant (e.g. sections x language)."""

    address: str
    name: str = ""
    variant: str = ""


@dataclass(frozen=True, slots=True)
class Row:
    """One (issue, address) row of the ledger."""

    issue_id: str
    address: str
    name: str
    variant: str
    state: RowState
    attempts: int
    message_id: str | None
    reply_code: int | None
    reply_text: str | None
    queued_at: datetime
    sending_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Claim:
    """Take a `pending` row before its message goes out (see `Ledger.mark_sending`)."""

    address: str
    message_id: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a `sending` row: SENT, FAILED or UNKNOWN, with the server's reply."""

    address: str
    state: RowState
    code: int | None
    text: str


@dataclass(frozen=True, slots=True)
class Counts:
    """How many rows of an issue are in each state."""

    pending: int = 0
    sending: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.sending + self.sent + self.failed + self.unknown


@dataclass(frozen=True, slots=True)
class Frozen:
    """An issue as frozen in the ledger, and what this freeze (or resume) changed."""

    issue_id: str
    frozen_at: datetime
    variants: Mapping[str, bytes]
    resumed: bool  # the issue was frozen by an earlier run
    added: int  # recipient rows created by this call
    made_unknown: int  # rows left `sending` by an interrupted run, now `unknown`
    requeued: int  # `unknown` rows put back to `pending` (retry_unknown)


@dataclass(frozen=True, slots=True)
class IssueSummary:
    issue_id: str
    frozen_at: datetime
    counts: Counts


class Ledger(SqliteFile):
    """An open ledger file; use it as a context manager so the connection is closed."""

    what = "ledger"
    error = LedgerError
    migrations = MIGRATIONS
    busy_timeout = 10000
    pragmas = (
        # In WAL mode NORMAL survives a process crash; only a power cut can lose the last
        # commits, and then a resumed send may repeat at most those few copies.
        "PRAGMA synchronous = NORMAL",
    )
    not_a_database_hint = "move this file away; the ledger is recreated empty"

    def freeze(
        self,
        issue_id: str,
        *,
        variants: Mapping[str, bytes] | Callable[[], Mapping[str, bytes]],
        recipients: Iterable[Recipient],
        at: datetime,
        include_new: bool = False,
        retry_unknown: bool = False,
    ) -> Frozen:
        """Freeze an issue's content and recipients, or resume the one frozen before.

        `variants` may be a function, called once the recipients are read: a single pass over
        a large list then tells which variants to render. On a resume the stored variants win
        over `variants`; recipients not frozen the first time are added only with
        `include_new`. Rows an interrupted run left `sending` become
        `unknown` (it may have delivered them); `retry_unknown` puts every `unknown` row back
        to `pending`, and rows failed with NO_SMTPUTF8 (never sent) go back to `pending`
        always. Run it while no other process is sending this issue.
        """
        moment = _iso(at)
        added = made_unknown = requeued = 0
        with self._transaction(f"freezing issue {issue_id}") as db:
            stored = db.execute("SELECT frozen_at FROM issues WHERE id = ?", (issue_id,)).fetchone()
            resumed = stored is not None
            if not resumed:
                db.execute("INSERT INTO issues (id, frozen_at) VALUES (?, ?)", (issue_id, moment))
            if not resumed or include_new:
                added = db.executemany(
                    "INSERT INTO deliveries (issue_id, key, address, name, variant, state, "
                    "queued_at) VALUES (?, ?, ?, ?, ?, 'pending', ?) "
                    "ON CONFLICT (issue_id, key) DO NOTHING",
                    (
                        (
                            issue_id,
                            email_key(r.address),
                            r.address.strip(),
                            r.name,
                            r.variant,
                            moment,
                        )
                        for r in recipients
                    ),
                ).rowcount
                _tally(db, issue_id, {RowState.PENDING: added})
            if not resumed:
                content = variants() if callable(variants) else variants
                db.executemany(
                    "INSERT INTO variants (issue_id, key, content) VALUES (?, ?, ?)",
                    ((issue_id, key, bytes(data)) for key, data in content.items()),
                )
            if resumed:
                made_unknown = db.execute(
                    "UPDATE deliveries SET state = 'unknown', finished_at = ? "
                    "WHERE issue_id = ? AND state = 'sending'",
                    (moment, issue_id),
                ).rowcount
                _tally(
                    db, issue_id, {RowState.SENDING: -made_unknown, RowState.UNKNOWN: made_unknown}
                )
                _retry_smtputf8(db, issue_id)
                if retry_unknown:
                    requeued = db.execute(
                        "UPDATE deliveries SET state = 'pending', finished_at = NULL "
                        "WHERE issue_id = ? AND state = 'unknown'",
                        (issue_id,),
                    ).rowcount
                    _tally(db, issue_id, {RowState.UNKNOWN: -requeued, RowState.PENDING: requeued})
            frozen_at = stored[0] if stored is not None else moment
        content = self.variants(issue_id)
        return Frozen(
            issue_id=issue_id,
            frozen_at=_parse(frozen_at),
            variants=content,
            resumed=resumed,
            added=added,
            made_unknown=made_unknown,
            requeued=requeued,
        )

    def frozen_at(self, issue_id: str) -> datetime | None:
        """When the issue's send began, or None if it never did."""
        with self._reading("reading issues") as db:
            row = db.execute("SELECT frozen_at FROM issues WHERE id = ?", (issue_id,)).fetchone()
        return None if row is None else _parse(row[0])

    def copy_of(self, issue_id: str, address: str) -> tuple[RowState, str] | None:
        """The state of this reader's copy and the address it was frozen for (validated then),
        or None if the issue was not frozen for them: one indexed lookup, so a send of a
        million readers needs no million-address set in memory."""
        return self.copies_of(issue_id, [address]).get(email_key(address))

    def copies_of(self, issue_id: str, addresses: Sequence[str]) -> dict[str, tuple[RowState, str]]:
        """`copy_of` for many readers in one query, by `email_key` of each address found: a
        send looks its readers up a few hundred at a time."""
        keys = [email_key(address) for address in addresses]
        marks = ", ".join("?" * len(keys))
        with self._reading("reading rows") as db:
            found = db.execute(
                "SELECT key, state, address FROM deliveries "
                f"WHERE issue_id = ? AND key IN ({marks})",
                (issue_id, *keys),
            ).fetchall()
        return {key: (RowState(state), address) for key, state, address in found}

    def row(self, issue_id: str, address: str) -> Row | None:
        """The row for this address, or None if the issue was not frozen for it."""
        with self._reading("reading a row") as db:
            raw = db.execute(
                f"SELECT {_ROW_COLUMNS} FROM deliveries WHERE issue_id = ? AND key = ?",
                (issue_id, email_key(address)),
            ).fetchone()
        return None if raw is None else _row(raw)

    def mark_sending(
        self, issue_id: str, address: str, *, message_id: str | None, at: datetime
    ) -> bool:
        """Claim a `pending` row before its data goes out; False if it was not pending.

        A conditional update in its own committed transaction: of two processes, only one
        claims a row, and the claim is on disk before the message leaves.
        """
        return self.write(issue_id, [Claim(address, message_id)], at=at)[0]

    def write(self, issue_id: str, steps: Sequence[Claim | Outcome], *, at: datetime) -> list[bool]:
        """Claims and outcomes applied in order in one transaction; for each, whether its row
        moved (a claim: it was pending; an outcome: it was sending).

        The sender gathers the steps of every connection within one turn of its event loop: a
        commit is most of a step's cost, and each claim is still on disk before its message
        goes out.
        """
        with self._transaction("recording deliveries") as db:
            return _apply(db, issue_id, steps, at)

    def write_if_free(
        self, issue_id: str, steps: Sequence[Claim | Outcome], *, at: datetime
    ) -> list[bool] | None:
        """`write`, or None at once, writing nothing, while another process is writing: an
        event loop tries again shortly rather than stall every connection in SQLite's wait."""
        with self._transaction_if_free("recording deliveries") as db:
            return None if db is None else _apply(db, issue_id, steps, at)

    def mark_sent(
        self, issue_id: str, address: str, *, code: int | None, text: str, at: datetime
    ) -> bool:
        """The server accepted the message."""
        return self.write(issue_id, [Outcome(address, RowState.SENT, code, text)], at=at)[0]

    def mark_failed(
        self, issue_id: str, address: str, *, code: int | None, text: str, at: datetime
    ) -> bool:
        """The message was refused for good, or ran out of attempts."""
        return self.write(issue_id, [Outcome(address, RowState.FAILED, code, text)], at=at)[0]

    def mark_unknown(
        self, issue_id: str, address: str, *, code: int | None, text: str, at: datetime
    ) -> bool:
        """The data went out but no verdict came back: maybe delivered, not retried."""
        return self.write(issue_id, [Outcome(address, RowState.UNKNOWN, code, text)], at=at)[0]

    def release(self, issue_id: str, address: str) -> bool:
        """Put a `sending` row whose data never went out back to `pending`."""
        with self._transaction("releasing a row") as db:
            changed = db.execute(
                "UPDATE deliveries SET state = 'pending' "
                "WHERE issue_id = ? AND key = ? AND state = 'sending'",
                (issue_id, email_key(address)),
            ).rowcount
            _tally(db, issue_id, {RowState.SENDING: -changed, RowState.PENDING: changed})
        return changed == 1

    def note_attempt(self, issue_id: str, address: str) -> None:
        """Count another attempt at a `sending` row (a retry after a 4xx or a drop)."""
        with self._transaction("counting an attempt") as db:
            db.execute(
                "UPDATE deliveries SET attempts = attempts + 1 "
                "WHERE issue_id = ? AND key = ? AND state = 'sending'",
                (issue_id, email_key(address)),
            )

    def counts(self, issue_id: str) -> Counts:
        """How many of the issue's rows are in each state."""
        with self._reading("counting rows") as db:
            found = dict(
                db.execute(
                    "SELECT state, count FROM tallies WHERE issue_id = ?", (issue_id,)
                ).fetchall()
            )
        return Counts(**{state.value: found.get(state.value, 0) for state in RowState})

    def issues(self) -> list[IssueSummary]:
        """Every frozen issue, oldest first, with its counts."""
        with self._reading("listing issues") as db:
            listed = db.execute(
                "SELECT id, frozen_at FROM issues ORDER BY frozen_at, id"
            ).fetchall()
        return [IssueSummary(i, _parse(at), self.counts(i)) for i, at in listed]

    def variants(self, issue_id: str) -> dict[str, bytes]:
        """The issue's frozen variants by key: what a sending process composes from."""
        with self._reading("reading variants") as db:
            found = db.execute(
                "SELECT key, content FROM variants WHERE issue_id = ?", (issue_id,)
            ).fetchall()
        return {str(key): bytes(content) for key, content in found}

    def variant(self, issue_id: str, key: str) -> bytes | None:
        """One variant as frozen with the issue, or None if its send never needed it."""
        with self._reading("reading a variant") as db:
            row = db.execute(
                "SELECT content FROM variants WHERE issue_id = ? AND key = ?", (issue_id, key)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def rows(self, issue_id: str, *states: RowState) -> list[Row]:
        """The issue's rows in these states, in address order: e.g. its failures, to report."""
        marks = ", ".join("?" * len(states))
        with self._reading("reading rows") as db:
            found = db.execute(
                f"SELECT {_ROW_COLUMNS} FROM deliveries "
                f"WHERE issue_id = ? AND state IN ({marks}) ORDER BY key",
                (issue_id, *(state.value for state in states)),
            ).fetchall()
        return [_row(raw) for raw in found]


def _apply(
    db: sqlite3.Connection, issue_id: str, steps: Sequence[Claim | Outcome], at: datetime
) -> list[bool]:
    moment = _iso(at)
    moved: list[bool] = []
    changes: dict[RowState, int] = {}
    for step in steps:
        key = email_key(step.address)
        if isinstance(step, Claim):
            cursor = db.execute(_CLAIM, (step.message_id, moment, issue_id, key))
            before, after = RowState.PENDING, RowState.SENDING
        else:
            values = (step.state.value, step.code, step.text, moment, issue_id, key)
            cursor = db.execute(_FINISH, values)
            before, after = RowState.SENDING, step.state
        if cursor.rowcount == 1:
            changes[before] = changes.get(before, 0) - 1
            changes[after] = changes.get(after, 0) + 1
        moved.append(cursor.rowcount == 1)
    _tally(db, issue_id, changes)
    return moved


def _retry_smtputf8(db: sqlite3.Connection, issue_id: str) -> None:
    """Put the issue's NO_SMTPUTF8 rows back to `pending`. Only an issue with failed rows is
    scanned for them."""
    failed = db.execute(
        "SELECT count FROM tallies WHERE issue_id = ? AND state = 'failed'", (issue_id,)
    ).fetchone()
    if not failed or not failed[0]:
        return
    retried = db.execute(
        "UPDATE deliveries SET state = 'pending', reply_code = NULL, reply_text = NULL, "
        "finished_at = NULL WHERE issue_id = ? AND state = 'failed' AND reply_text = ?",
        (issue_id, NO_SMTPUTF8),
    ).rowcount
    _tally(db, issue_id, {RowState.FAILED: -retried, RowState.PENDING: retried})


def _tally(db: sqlite3.Connection, issue_id: str, changes: Mapping[RowState, int]) -> None:
    """Move the issue's counts by state (the `tallies` table) with the rows just changed, in the
    same transaction: every write to `deliveries` goes through here."""
    db.executemany(
        "INSERT INTO tallies (issue_id, state, count) VALUES (?, ?, ?) "
        "ON CONFLICT (issue_id, state) DO UPDATE SET count = count + excluded.count",
        [(issue_id, state.value, change) for state, change in changes.items() if change],
    )


def _row(raw: tuple[Any, ...]) -> Row:
    (issue_id, address, name, variant, state, attempts, message_id, code, text, queued, sending,
     finished) = raw  # fmt: skip
    return Row(
        issue_id=str(issue_id),
        address=str(address),
        name=str(name),
        variant=str(variant),
        state=RowState(state),
        attempts=int(attempts),
        message_id=None if message_id is None else str(message_id),
        reply_code=None if code is None else int(code),
        reply_text=None if text is None else str(text),
        queued_at=_parse(str(queued)),
        sending_at=None if sending is None else _parse(str(sending)),
        finished_at=None if finished is None else _parse(str(finished)),
    )


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"ledger times must be timezone-aware, got {moment!r}")
    return moment.astimezone(UTC).isoformat()


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)
