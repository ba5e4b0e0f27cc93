"""The subscriber list: a CSV file read as a stream, and changed only under a lock, atomically.

The file is UTF-8 with a header row naming the columns `COLUMNS` in any order, plus any others the
editor keeps there. Reading tolerates what real files contain: a byte-order mark, CRLF endings,
quoted cells with commas and newlines, stray spaces around values, addresses in mixed case
(`models.email_key` is how they compare). Read-only work streams row by row.

Every change is one pass under `subscribers.csv.lock` (filelock): the old file is streamed into a
temporary file in the same folder, which is fsynced; the old version becomes `subscribers.csv.bak`
(one backup) and the new one takes its name with `os.replace`, then the folder is fsynced. A crash
leaves the old file or the new one, never a mix. A write that changes nothing touches nothing.

Nothing is rewritten silently: a row nobody changed is copied byte for byte, whether digest can
read it or not (an unknown status, a bad date), and a changed row keeps every cell but the ones that
changed, unknown columns included. A row that cannot be read still takes an unsubscribe, so a reader
can always leave. A file whose CSV is broken (a quote that never closes) is refused with its line.
Bytes that are not UTF-8 are read as lone surrogates (`surrogateescape`) and written back the same
way: their row cannot be read (it is reported by line, like any other), and is copied byte for byte.
"""

from __future__ import annotations

import codecs
import csv
import functools
import glob
import io
import itertools
import json
import operator
import os
import re
import secrets
import shutil
import stat
from array import array
from collections import Counter
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final, Literal

import filelock
from babel import Locale, UnknownLocaleError
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from digest.errors import SubscriberFileError, echoed
from digest.models import Subscriber, SubscriberStatus, email_key

COLUMNS: Final = (
    "email",
    "first_name",
    "last_name",
    "status",
    "sections",
    "language",
    "subscribed_at",
    "unsubscribed_at",
    "source",
)
SECTION_SEPARATOR: Final = ";"
LOCK_TIMEOUT: Final = 30.0  # seconds a write waits for another one to finish
LEFT: Final = frozenset(
    {SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED}
)
INIT_HINT: Final = "`digest init` writes a starter project with one, or set [subscribers] file"

_STATUSES: Final = {status.value: status for status in SubscriberStatus}
_LANGUAGE = re.compile(r"[a-z]{2,3}([_-][A-Za-z]{2,4})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # line breaks, tabs, escapes


@dataclass(frozen=True, slots=True)
class Row:
    """One record of the file as read: the line it starts on, its cells, and what they say."""

    line: int  # the header is line 1; a quoted newline makes a record span lines
    cells: tuple[str, ...]
    subscriber: Subscriber | None  # None: the row cannot be read, and `problems` says why
    problems: tuple[str, ...] = ()
    columns: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    def cell(self, name: str) -> str:
        """A known column's cell, stripped, even on a row that cannot be read; "" if absent."""
        position = self.columns.get(name)
        return (
            self.cells[position].strip()
            if position is not None and position < len(self.cells)
            else ""
        )

    @property
    def key(self) -> str:
        """The row's address as compared, from its email cell even if the row cannot be read."""
        return self.subscriber.key if self.subscriber else email_key(self.cell("email"))


@dataclass(frozen=True, slots=True)
class Details:
    """What `add` sets on a subscriber; None leaves a value as it is (or empty, for a new row)."""

    first_name: str | None = None
    last_name: str | None = None
    sections: tuple[str, ...] | None = None
    language: str | None = None


class AddOutcome(StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    RESUBSCRIBED = "resubscribed"
    UNCHANGED = "unchanged"  # --update, but the details were already so
    EXISTS = "exists"  # on the list already; nothing asked to change


@dataclass(frozen=True, slots=True)
class AddResult:
    outcome: AddOutcome
    subscriber: Subscriber


@dataclass(frozen=True, slots=True)
class Problem:
    """Something `validate` found, on the line its row starts."""

    line: int
    message: str


@dataclass(slots=True)
class Stats:
    """Counts over the whole file; sections and languages count subscribed rows only."""

    rows: int = 0
    unreadable: int = 0
    by_status: Counter[SubscriberStatus] = field(default_factory=Counter)
    by_section: Counter[str] = field(default_factory=Counter)  # "": every section
    by_language: Counter[str] = field(default_factory=Counter)  # "": the newsletter's
    per_month: Counter[str] = field(default_factory=Counter)  # "YYYY-MM" subscribed; "" unknown


class _Delete:
    """The edit that removes a row."""


_DELETE: Final = _Delete()
_Edit = Mapping[str, str] | _Delete | None  # cells to set by column name; remove; keep as is


# -- the file -----------------------------------------------------------------------------------


class SubscriberFile:
    """The subscriber CSV at `path`: read as a stream, changed under a lock, atomically."""

    def __init__(self, path: Path, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.path = path
        self.lock_timeout = lock_timeout

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def backup_path(self) -> Path:
        return self.path.with_name(self.path.name + ".bak")

    def exists(self) -> bool:
        return self.path.is_file()

    def __iter__(self) -> Iterator[Subscriber]:
        """Every row that can be read, in file order; broken rows are left out."""
        with _Scan(self.path, keep_raw=False) as scan:
            layout = scan.layout
            for _, cells, _ in scan.records():
                values = _values(cells, layout) if cells else None
                if values is not None:
                    yield _subscriber(values, cells, layout)

    def shard(
        self, index: int, count: int, unreadable: list[int] | None = None
    ) -> Iterator[Subscriber]:
        """The readable rows among every `count`th record from the `index`th (0-based): one
        sending process's share of the list; the lines of its rows that cannot be read go to
        `unreadable`. The others' rows are not even parsed."""
        with _Scan(self.path, keep_raw=False) as scan:
            layout = scan.layout
            records = itertools.islice(scan.records(), index, None, count)
            for line, cells, _ in records:
                values = _values(cells, layout) if cells else None
                if values is not None:
                    yield _subscriber(values, cells, layout)
                elif cells and unreadable is not None:
                    unreadable.append(line)

    def rows(self) -> Iterator[Row]:
        """Every non-blank row with its line number and, if it cannot be read, why."""
        with _Scan(self.path, keep_raw=False) as scan:
            for record in scan.records():
                if record[1]:
                    yield scan.row(record)

    def extra_columns(self) -> tuple[str, ...]:
        """The header's columns that digest does not know, in their order."""
        with _Scan(self.path, keep_raw=False) as scan:
            return tuple(scan.layout.names[i] for i in scan.layout.extra)

    def find(self, email: str) -> Subscriber | None:
        """The first readable row with this address (compared case-insensitively), if any."""
        key = email_key(email)
        return next((row.subscriber for row in self._rows_for({key}) if row.subscriber), None)

    def matching(self, email: str) -> list[Row]:
        """Every row with this address, readable or not (two, if the file has a duplicate)."""
        return list(self._rows_for({email_key(email)}))

    def _rows_for(self, keys: Container[str]) -> Iterator[Row]:
        """The rows whose address is in `keys`, readable or not; the rest are not even parsed."""
        with _Scan(self.path, keep_raw=False) as scan:
            key_of = scan.layout.key_of
            for record in scan.records():
                if record[1] and key_of(record[1]) in keys:
                    yield scan.row(record)

    def unsubscribe(self, email: str, *, at: datetime) -> bool:
        """Stop mail to this address; False if it is not on the list or already gets none.

        Works on a row digest cannot otherwise read, so a reader can always leave.
        """
        return self.set_status(email, SubscriberStatus.UNSUBSCRIBED, at=at, only_subscribed=True)

    def set_status(
        self,
        email: str,
        status: SubscriberStatus,
        *,
        at: datetime,
        only_subscribed: bool = False,
    ) -> bool:
        """Give every row with this address `status` (e.g. bounced); True if any row changed.

        Leaving (unsubscribed, bounced, complained) records `at` as unsubscribed_at; coming back
        records it as subscribed_at and clears unsubscribed_at.
        """
        return self.set_statuses([email], status, at=at, only_subscribed=only_subscribed)

    def set_statuses(
        self,
        emails: Iterable[str],
        status: SubscriberStatus,
        *,
        at: datetime,
        only_subscribed: bool = False,
    ) -> bool:
        """set_status for many addresses in one locked rewrite (a send's bounces, say)."""
        keys = {email_key(email) for email in emails}
        if not keys:
            return False
        moment = format_time(at)

        def edit(row: Row) -> _Edit:
            if row.key not in keys:
                return None
            current = _STATUSES.get(row.cell("status").lower())
            if current is status or (only_subscribed and current in LEFT):
                return None
            if status is SubscriberStatus.SUBSCRIBED:
                return {"status": status.value, "subscribed_at": moment, "unsubscribed_at": ""}
            return {"status": status.value, "unsubscribed_at": moment}

        return self._rewrite(edit, keys=keys)

    def update_preferences(
        self, email: str, *, sections: tuple[str, ...], language: str
    ) -> Subscriber:
        """Set the sections (empty: all) and language ("": the newsletter's) a reader gets."""
        _check_sections(sections)
        key = email_key(email)
        found: list[Subscriber] = []
        changes = {"sections": SECTION_SEPARATOR.join(sections), "language": language.strip()}

        def edit(row: Row) -> _Edit:
            if row.subscriber is None or row.subscriber.key != key:
                return None
            found.append(replace(row.subscriber, sections=sections, language=changes["language"]))
            return changes

        self._rewrite(edit, keys={key})
        if not found:
            raise SubscriberFileError(
                f"{echoed(email, quoted=False)} is not on the list",
                where=str(self.path),
                hint="check the address",
            )
        return found[0]

    def add(
        self,
        email: str,
        details: Details = Details(),
        *,
        at: datetime,
        source: str = "cli",
        update: bool = False,
        resubscribe: bool = False,
    ) -> AddResult:
        """Put an address on the list, or change it as the flags allow; never re-subscribe unasked.

        An existing subscribed address changes only with `update`; one that unsubscribed, bounced
        or complained comes back only with `resubscribe` (their consent), else SubscriberFileError.
        """
        address = email.strip()
        problem = address_problem(address)
        if problem:
            raise SubscriberFileError(f"{echoed(address)} is not a valid address: {problem}")
        if details.sections:
            _check_sections(details.sections)
        key = email_key(address)
        results: list[AddResult] = []

        def edit(row: Row) -> _Edit:
            if row.key != key:
                return None
            current = row.subscriber
            if current is None:
                raise SubscriberFileError(
                    f"this row has {address} but cannot be read: {'; '.join(row.problems)}",
                    where=f"{self.path.name}:{row.line}",
                    hint="fix the row first (`digest subscribers validate` lists every problem)",
                )
            changes = _detail_changes(current, details) if update or resubscribe else {}
            outcome = AddOutcome.UPDATED if changes else AddOutcome.UNCHANGED
            if current.status in LEFT:
                if not resubscribe and not update:
                    since = (
                        f" on {current.unsubscribed_at:%Y-%m-%d}" if current.unsubscribed_at else ""
                    )
                    raise SubscriberFileError(
                        f"{current.email} {current.status.value}{since}; nothing changed",
                        where=f"{self.path.name}:{row.line}",
                        hint="re-subscribing needs their consent: pass --resubscribe if they "
                        "asked to come back",
                    )
                if resubscribe:
                    changes |= {
                        "status": SubscriberStatus.SUBSCRIBED.value,
                        "subscribed_at": format_time(at),
                        "unsubscribed_at": "",
                    }
                    outcome = AddOutcome.RESUBSCRIBED
            elif not update:
                changes, outcome = {}, AddOutcome.EXISTS
            results.append(AddResult(outcome, _apply_to(current, changes)))
            return changes or None

        def new_rows() -> Iterator[Subscriber]:
            if results:
                return
            subscriber = Subscriber(
                email=address,
                first_name=(details.first_name or "").strip(),
                last_name=(details.last_name or "").strip(),
                sections=details.sections or (),
                language=(details.language or "").strip(),
                subscribed_at=at,
                source=source,
            )
            results.append(AddResult(AddOutcome.ADDED, subscriber))
            yield subscriber

        self._rewrite(edit, new_rows, keys={key}, create=True)
        return results[0]

    def remove(self, email: str) -> int:
        """Delete every row with this address, readable or not; how many were deleted."""
        key = email_key(email)
        removed = 0

        def edit(row: Row) -> _Edit:
            nonlocal removed
            if row.key != key:
                return None
            removed += 1
            return _DELETE

        self._rewrite(edit, keys={key})
        return removed

    def merge(self, incoming: Sequence[Incoming], *, dry_run: bool = False) -> MergeReport:
        """Bring imported rows in, matched by address; never re-subscribe anyone who left.

        A new address is added with its status (a platform's unsubscribed are kept, so a later
        import cannot bring them back). An existing one takes the import's leaving (unsubscribed,
        bounced, complained) and fills its empty names, language and subscribed_at; nothing
        else changes. With `dry_run` the report is the same and the file is not touched.
        """
        report = MergeReport()
        pending: dict[str, Incoming] = {}
        for item in incoming:
            first = pending.setdefault(item.subscriber.key, item)
            if first is not item:
                report.note("skip", item, f"also on line {first.line} of the import")

        def edit(row: Row) -> _Edit:
            item = pending.pop(row.key, None) if pending else None
            if item is None:
                return None
            if row.subscriber is None:
                report.note(
                    "skip", item, f"line {row.line} of {self.path.name} has it but cannot be read"
                )
                return None
            changes, detail = _merge_changes(row.subscriber, item.subscriber)
            report.note("update" if changes else "skip", item, detail)
            return None if dry_run else changes or None

        def new_rows() -> Iterator[Subscriber]:
            for item in pending.values():
                report.note("add", item, item.subscriber.status.value)
                if not dry_run:
                    yield item.subscriber

        if dry_run and not self.exists():
            list(new_rows())
        elif dry_run:
            for row in self._rows_for(pending):
                edit(row)
            list(new_rows())
        else:
            self._rewrite(edit, new_rows, keys=pending, create=True)
        report.entries.sort(key=lambda entry: entry.line)
        return report

    def write_all(
        self, subscribers: Iterable[Subscriber], *, extra_columns: Sequence[str] = ()
    ) -> None:
        """Replace the whole list (under the lock, atomically, keeping a backup)."""
        layout = _Layout.parse([*COLUMNS, *extra_columns], where=str(self.path))

        def write(out: IO[str]) -> bool:
            writer = _writer(out, "\n")
            writer.writerow(layout.names)
            for subscriber in subscribers:
                writer.writerow(_cells_of(subscriber, layout))
            return True

        self._commit(write)

    # -- the write path -------------------------------------------------------------------------

    def _rewrite(
        self,
        edit: Callable[[Row], _Edit],
        new_rows: Callable[[], Iterable[Subscriber]] = tuple,
        *,
        keys: Container[str],
        create: bool = False,
    ) -> bool:
        """One locked pass: `edit` each row whose address is in `keys` (to change, drop or keep
        it), copy the others as they are, append `new_rows()`; True if the file changed."""
        if not create and not self.exists():
            raise _missing(self.path)

        def write(out: IO[str]) -> bool:
            if not self.exists():
                layout = _Layout.parse(list(COLUMNS), where=str(self.path))
                writer = _writer(out, "\n")
                writer.writerow(layout.names)
                rows = [_cells_of(s, layout) for s in new_rows()]
                writer.writerows(rows)
                return bool(rows)
            with _Scan(self.path, keep_raw=True) as scan:
                return _copy_edited(scan, out, edit, new_rows, keys)

        return self._commit(write)

    def _commit(self, write: Callable[[IO[str]], bool]) -> bool:
        """Run `write` into a temporary file under the lock; if it says so, make it the file."""
        folder = self.path.parent
        try:
            lock = filelock.FileLock(self.lock_path, timeout=self.lock_timeout)
            with lock:
                self._refuse_if_read_only()
                self._sweep()
                # Private while written; a new list gets the usual mode (umask applies).
                fd, name = _temporary(folder, self.path.name, 0o600 if self.exists() else 0o666)
                temporary = Path(name)
                try:
                    with os.fdopen(
                        fd, "w", encoding="utf-8", errors="surrogateescape", newline=""
                    ) as out:
                        changed = write(out)
                        if changed:
                            out.flush()
                            os.fsync(out.fileno())
                    if not changed:
                        temporary.unlink()
                        return False
                    self._replace(temporary)
                except BaseException:
                    temporary.unlink(missing_ok=True)
                    raise
        except filelock.Timeout as err:
            raise SubscriberFileError(
                f"another command has been changing this file for {self.lock_timeout:g} s",
                where=str(self.path),
                hint=f"try again when it is done (it holds {self.lock_path.name})",
            ) from err
        except OSError as err:
            raise SubscriberFileError(
                f"cannot write the subscriber list: {err}", where=str(self.path)
            ) from err
        return True

    def _refuse_if_read_only(self) -> None:
        """A list its owner made read-only is not replaced through the rename, which needs only
        the folder writable. The mode bits count as well as access(2): root may write anything."""
        if not self.exists():
            return
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o222 and os.access(self.path, os.W_OK):
            return
        raise SubscriberFileError(
            f"the subscriber list is read-only (mode {mode:o}): nothing changed",
            where=str(self.path),
            hint=f"make it writable (chmod u+w {self.path.name}) to change it",
        )

    def _replace(self, temporary: Path) -> None:
        """Keep the current file as the backup, put `temporary` in its place, sync the folder."""
        folder = self.path.parent
        if self.path.exists():
            os.chmod(temporary, stat.S_IMODE(self.path.stat().st_mode))
            fd, staged_name = _temporary(folder, self.backup_path.name)
            os.close(fd)
            staged = Path(staged_name)
            try:
                staged.unlink()
                os.link(self.path, staged)  # the old version itself, at no cost
            except OSError:  # no hard links on this file system: copy it
                shutil.copy2(self.path, staged)
                _fsync_file(staged)
            os.replace(staged, self.backup_path)
        os.replace(temporary, self.path)
        _fsync_folder(folder)

    def _sweep(self) -> None:
        """Remove temporary files a killed writer left (only ever called under the lock)."""
        for prefix in (self.path.name, self.backup_path.name):
            for leftover in self.path.parent.glob(f".{glob.escape(prefix)}.*.tmp"):
                leftover.unlink(missing_ok=True)


def _temporary(folder: Path, name: str, mode: int = 0o600) -> tuple[int, str]:
    """A new file `.NAME.RANDOM.tmp` beside the list (what `_sweep` cleans up), open to write."""
    for _ in range(100):
        path = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), str(path)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable; not every platform can open a folder, which is then fine."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _missing(path: Path) -> SubscriberFileError:
    return SubscriberFileError("no subscriber list here", where=str(path), hint=INIT_HINT)


# -- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """Which position holds each known column, and where the unknown ones are."""

    names: tuple[str, ...]  # the header's cells, as written
    index: Mapping[str, int]  # known column -> position
    extra: tuple[int, ...]  # positions of the columns digest does not know
    # The nine known cells of a row in COLUMNS order, in one call; a missing column reads the
    # blank cell `width` pads rows with.
    pick: Callable[[Sequence[str]], tuple[str, ...]]
    width: int  # cells a row is padded to before `pick`
    # The whole file read as UTF-8, so no row holds a stray byte: rows need no check of their own.
    all_utf8: bool = False

    @classmethod
    def parse(cls, cells: Sequence[str], *, where: str) -> _Layout:
        index: dict[str, int] = {}
        extra = []
        for position, cell in enumerate(cells):
            name = cell.strip().lower()
            if name in COLUMNS:
                if name in index:
                    raise SubscriberFileError(
                        f"the header names the column {name!r} twice", where=where
                    )
                index[name] = position
            else:
                extra.append(position)
        if "email" not in index:
            raise SubscriberFileError(
                f"the header has no email column (it has: {', '.join(cells) or 'nothing'})",
                where=where,
                hint=f"the first line names the columns: {','.join(COLUMNS)}",
            )
        blank = len(cells)  # a missing column reads this padding cell
        positions = [index.get(name, blank) for name in COLUMNS]
        width = blank + 1 if len(index) < len(COLUMNS) else blank
        return cls(tuple(cells), index, tuple(extra), operator.itemgetter(*positions), width)

    def key_of(self, cells: Sequence[str]) -> str:
        """The address of a row, as compared, straight from its cells."""
        position = self.index["email"]
        return email_key(cells[position]) if position < len(cells) else ""

    def missing(self) -> tuple[str, ...]:
        return tuple(name for name in COLUMNS if name not in self.index)

    def extended(self) -> _Layout:
        """This layout with the known columns it lacks added at the end."""
        return _Layout.parse([*self.names, *self.missing()], where="")


# A record: the line it starts on, its cells, and the text it was read from ("" unless kept).
_Record = tuple[int, list[str], str]
# What a readable row says, in COLUMNS order, parsed: the fields of a Subscriber but `extra`.
_Values = tuple[
    str, str, str, SubscriberStatus, tuple[str, ...], str, datetime | None, datetime | None, str
]


class _Tap:
    """Hands lines to the csv reader and remembers them, so a record's own text can be copied."""

    __slots__ = ("lines", "taken")

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self.taken: list[str] = []

    def __iter__(self) -> _Tap:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.taken.append(line)
        return line

    def drain(self) -> str:
        text = "".join(self.taken)
        self.taken.clear()
        return text


class _Scan:
    """An open subscriber file: its header, then its records one at a time."""

    def __init__(self, path: Path, *, keep_raw: bool) -> None:
        self.path, self.keep_raw = path, keep_raw
        self.bom = False
        self.newline = "\n"
        self.header_raw = ""
        self.layout = _Layout.parse(list(COLUMNS), where=str(path))
        self._file: IO[str] | None = None
        self._tap: _Tap | None = None
        self._reader = csv.reader(())

    def __enter__(self) -> _Scan:
        try:
            binary = self.path.open("rb")
        except FileNotFoundError:
            raise _missing(self.path) from None
        except OSError as err:
            raise SubscriberFileError(f"cannot read it: {err}", where=str(self.path)) from err
        try:
            self.bom = binary.read(3) == b"\xef\xbb\xbf"
            binary.seek(0)
            all_utf8 = _all_utf8(binary)  # one pass in C spares each row a check of its own
        except OSError as err:
            binary.close()
            raise SubscriberFileError(f"cannot read it: {err}", where=str(self.path)) from err
        # A byte that is not UTF-8 becomes a lone surrogate: its row alone cannot be read.
        self._file = io.TextIOWrapper(
            binary, encoding="utf-8-sig", errors="surrogateescape", newline=""
        )
        lines: Iterator[str] = self._file
        if self.keep_raw:
            self._tap = _Tap(self._file)
            lines = self._tap
        self._reader = csv.reader(lines)
        try:
            header = next(self._records(), None)
            if header is not None:
                _, cells, raw = header
                self.layout = _Layout.parse(cells, where=f"{self.path.name}:1")
                self.header_raw = raw
                if raw.endswith("\r\n"):
                    self.newline = "\r\n"
            self.layout = replace(self.layout, all_utf8=all_utf8)
        except BaseException:
            self._file.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def records(self) -> Iterator[_Record]:
        """Every record after the header, blank lines included (as no cells)."""
        return self._records()

    def _records(self) -> Iterator[_Record]:
        tap, reader = self._tap, self._reader
        line = reader.line_num + 1
        try:
            if tap is None:
                for cells in reader:
                    yield line, cells, ""
                    line = reader.line_num + 1
            else:
                for cells in reader:
                    yield line, cells, tap.drain()
                    line = reader.line_num + 1
        except (UnicodeDecodeError, csv.Error) as err:
            raise _unreadable(err, self.path, reader.line_num + 1, line) from err

    def row(self, record: _Record) -> Row:
        line, cells, _ = record
        values = _values(cells, self.layout)
        if values is None:
            return Row(line, tuple(cells), None, _problems(cells, self.layout), self.layout.index)
        subscriber = _subscriber(values, cells, self.layout)
        return Row(line, tuple(cells), subscriber, (), self.layout.index)


def _values(cells: list[str], layout: _Layout) -> _Values | None:
    """What a row says, or None if it cannot be read (`_problems` says why).

    The hot loop of every read (a million rows in a few seconds): plain tuples, no objects.
    """
    size = len(cells)
    padded = cells + [""] * (layout.width - size) if size < layout.width else cells
    email, first, last, status_text, sections, language, start, end, source = layout.pick(padded)
    email = email.strip()
    status = _STATUSES.get(status_text) or _STATUSES.get(
        status_text.strip().lower() or "subscribed"
    )
    try:
        start, end = start.strip(), end.strip()
        subscribed_at = _fromisoformat(start) if start else None
        if subscribed_at is not None and subscribed_at.tzinfo is None:
            subscribed_at = subscribed_at.replace(tzinfo=UTC)
        unsubscribed_at = _fromisoformat(end) if end else None
        if unsubscribed_at is not None and unsubscribed_at.tzinfo is None:
            unsubscribed_at = unsubscribed_at.replace(tzinfo=UTC)
    except ValueError:
        return None
    if status is None or "@" not in email:
        return None
    if (subscribed_at and not 1 < subscribed_at.year < 9999) or (
        unsubscribed_at and not 1 < unsubscribed_at.year < 9999
    ):
        return None  # years 1 and 9999 cannot always be moved to another time zone
    if size > len(layout.names) and any(cell.strip() for cell in cells[len(layout.names) :]):
        return None
    if not layout.all_utf8 and _not_utf8(cells):
        return None
    return (
        email,
        first.strip(),
        last.strip(),
        status,
        _split_sections(sections) if sections else (),
        language.strip(),
        subscribed_at,
        unsubscribed_at,
        source.strip(),
    )


_fromisoformat = datetime.fromisoformat


def _problems(cells: list[str], layout: _Layout) -> tuple[str, ...]:
    """Why a row cannot be read (`_values` found that it cannot)."""
    width = len(layout.names)
    email, _, _, status_text, _, _, start, end, _ = layout.pick(_padded(cells, layout.width))
    problems = []
    if bad := _not_utf8(cells):
        problems.append(
            f"not UTF-8 text (byte 0x{ord(bad) - 0xDC00:02X}); save the file as UTF-8 "
            "(in a spreadsheet: CSV UTF-8)"
        )
    if len(cells) > width and any(cell.strip() for cell in cells[width:]):
        problems.append(f"{len(cells)} cells, but the header names {width} columns")
    email = email.strip()
    if not email:
        problems.append("no email address")
    elif "@" not in email:
        problems.append(f"{echoed(email)} is not an email address")
    status_text = status_text.strip().lower()
    if status_text and status_text not in _STATUSES:
        problems.append(
            f"unknown status {status_text!r} (use subscribed, unsubscribed, bounced or complained)"
        )
    for name, text in (("subscribed_at", start.strip()), ("unsubscribed_at", end.strip())):
        try:
            parse_time(text)
        except ValueError:
            problems.append(f"{name}: {text!r} is not a date like 2026-01-31T09:00:00+00:00")
    return tuple(problems)


def _all_utf8(handle: IO[bytes]) -> bool:
    """Whether the whole file is UTF-8; then back to its start."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        while chunk := handle.read(1 << 15):  # small: reading streams, memory stays flat
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    finally:
        handle.seek(0)
    return True


def _not_utf8(cells: list[str]) -> str:
    """The first byte of the row that was not UTF-8 (as its lone surrogate), or ""."""
    text = "".join(cells)
    if text.isascii():  # most rows: one fast pass
        return ""
    try:
        text.encode("utf-8")  # only a lone surrogate cannot be encoded
    except UnicodeEncodeError as err:
        return text[err.start]
    return ""


def printable(text: str) -> str:
    """Text read from the list, fit to print: a byte that was not UTF-8 shows as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _subscriber(values: _Values, cells: list[str], layout: _Layout) -> Subscriber:
    extra = tuple((layout.names[i], cells[i] if i < len(cells) else "") for i in layout.extra)
    return Subscriber(*values, extra=extra)


def _split_sections(text: str) -> tuple[str, ...]:
    return tuple(filter(None, map(str.strip, text.split(SECTION_SEPARATOR))))


def parse_time(text: str) -> datetime | None:
    """ISO 8601 (a date alone, or `Z`, too); a time without an offset is taken as UTC.

    Years 1 and 9999 are refused (ValueError): they cannot always move to another time zone.
    """
    if not text:
        return None
    value = datetime.fromisoformat(text)
    if not 1 < value.year < 9999:
        raise ValueError(f"year {value.year} is out of range")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    """How the file stores a moment: UTC, ISO 8601, to the second."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


# -- writing ------------------------------------------------------------------------------------


def _copy_edited(
    scan: _Scan,
    out: IO[str],
    edit: Callable[[Row], _Edit],
    new_rows: Callable[[], Iterable[Subscriber]],
    keys: Container[str],
) -> bool:
    """Stream the scanned file into `out`, applying `edit` to the rows of `keys`; True if
    anything differs.

    Rows left as they are are copied as read, byte for byte; an edited row is written with its
    other cells unchanged. Only when the header lacks one of our columns (added at its end) is
    every row written anew, cell for cell.
    """
    layout = scan.layout
    target = layout.extended() if layout.missing() else layout
    writer = _writer(out, scan.newline)
    if scan.bom:
        out.write("\ufeff")
    if target is layout and scan.header_raw:
        out.write(scan.header_raw)
        unterminated = not scan.header_raw.endswith(("\n", "\r"))
    else:
        writer.writerow(target.names)
        unterminated = False
    changed = False
    key_of = layout.key_of
    for record in scan.records():
        _, read, raw = record
        action = edit(scan.row(record)) if read and key_of(read) in keys else None
        if isinstance(action, _Delete):
            changed = True
            continue
        cells = _edited(read, target, action) if action else None
        if unterminated:
            out.write(scan.newline)
        if cells is None and target is layout:
            out.write(raw)
            unterminated = not raw.endswith(("\n", "\r"))
            continue
        if cells is not None:
            changed = True
        elif read:
            cells = _padded(read, len(target.names))
        if cells:
            writer.writerow(cells)
        else:
            out.write(scan.newline)  # a blank line stays a blank line
        unterminated = False
    for subscriber in new_rows():
        if unterminated:
            out.write(scan.newline)
            unterminated = False
        writer.writerow(_cells_of(subscriber, target))
        changed = True
    return changed


class _LineEnd:
    """Gives each row the file's line ending in place of the writer's CRLF."""

    def __init__(self, out: IO[str], newline: str) -> None:
        self.out, self.newline = out, newline

    def write(self, row: str) -> int:
        return self.out.write(row[:-2] + self.newline)  # the writer writes one row at a time


def _writer(out: IO[str], newline: str) -> Any:
    """A csv writer ending rows with `newline` that still quotes any cell holding CR or LF.

    The csv module quotes only the characters of its own line terminator: with "\n" a cell
    holding a lone "\r" would go out bare and split the row when read. Writing with "\r\n"
    quotes both, and `_LineEnd` swaps the ending.
    """
    if newline == "\r\n":
        return csv.writer(out, lineterminator="\r\n")
    return csv.writer(_LineEnd(out, newline), lineterminator="\r\n")


def _padded(cells: list[str], width: int) -> list[str]:
    return cells + [""] * (width - len(cells)) if len(cells) < width else cells


def _edited(cells: list[str], layout: _Layout, changes: Mapping[str, str]) -> list[str] | None:
    """The row with these cells set, or None if that changes nothing."""
    before = _padded(cells, len(layout.names))
    after = list(before)
    for name, value in changes.items():
        after[layout.index[name]] = value
    return after if after != before else None


def _cells_of(subscriber: Subscriber, layout: _Layout) -> list[str]:
    """A row for `layout`: known columns from the fields, unknown ones from `extra` by name."""
    cells = [""] * len(layout.names)
    values = {
        "email": subscriber.email,
        "first_name": subscriber.first_name,
        "last_name": subscriber.last_name,
        "status": subscriber.status.value,
        "sections": SECTION_SEPARATOR.join(subscriber.sections),
        "language": subscriber.language,
        "subscribed_at": format_time(subscriber.subscribed_at) if subscriber.subscribed_at else "",
        "unsubscribed_at": format_time(subscriber.unsubscribed_at)
        if subscriber.unsubscribed_at
        else "",
        "source": subscriber.source,
    }
    for name, position in layout.index.items():
        cells[position] = values[name]
    if layout.extra:
        extras: dict[str, list[str]] = {}
        for name, value in subscriber.extra:
            extras.setdefault(name, []).append(value)
        for position in layout.extra:
            waiting = extras.get(layout.names[position])
            cells[position] = waiting.pop(0) if waiting else ""
    return cells


def _check_sections(sections: Iterable[str]) -> None:
    for name in sections:
        if not name.strip() or SECTION_SEPARATOR in name or name != name.strip():
            raise SubscriberFileError(
                f"{name!r} cannot be stored as a section name",
                hint=f"section names are not empty, have no {SECTION_SEPARATOR!r} and no spaces "
                "around them",
            )


def _detail_changes(current: Subscriber, details: Details) -> dict[str, str]:
    """The cells `details` would change on `current`."""
    wanted = {
        "first_name": details.first_name,
        "last_name": details.last_name,
        "sections": None if details.sections is None else SECTION_SEPARATOR.join(details.sections),
        "language": details.language,
    }
    have = {
        "first_name": current.first_name,
        "last_name": current.last_name,
        "sections": SECTION_SEPARATOR.join(current.sections),
        "language": current.language,
    }
    return {
        name: value.strip()
        for name, value in wanted.items()
        if value is not None and value.strip() != have[name]
    }


def _apply_to(subscriber: Subscriber, changes: Mapping[str, str]) -> Subscriber:
    """`subscriber` as it reads after these cell changes."""
    if not changes:
        return subscriber
    fields: dict[str, object] = {}
    for name, value in changes.items():
        if name == "sections":
            fields[name] = _split_sections(value)
        elif name == "status":
            fields[name] = _STATUSES[value]
        elif name in ("subscribed_at", "unsubscribed_at"):
            fields[name] = parse_time(value)
        else:
            fields[name] = value
    return replace(subscriber, **fields)  # type: ignore[arg-type]


# -- addresses, validation, statistics ----------------------------------------------------------

# An ASCII dot-atom local part and a plain ASCII host name with a letters-only top-level domain:
# shapes email-validator always accepts (within the length limits), checked here in a microsecond.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_PLAIN_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


def address_problem(address: str) -> str | None:
    """Why `address` is not a valid address (email-validator, syntax only), or None.

    email-validator takes about 60 µs an address, a minute for a million rows, mostly on the
    domain. A plain ASCII address (the usual kind) is checked here instead, with the same
    answer; anything else, and every failure, goes through email-validator for its message.
    """
    local, at, domain = address.rpartition("@")
    if (
        at
        and len(address) <= 254
        and len(local) <= 64
        and _PLAIN_LOCAL.fullmatch(local)
        and _is_plain_host(domain)
    ):
        return None
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as err:
        return str(err)
    return None


@functools.lru_cache(maxsize=65536)
def _is_plain_host(domain: str) -> bool:
    """An ASCII host name email-validator accepts as is (no Punycode, not special-use)."""
    name = domain.lower()
    if len(name) > 253 or "--" in name or not _PLAIN_HOST.fullmatch(name):
        return False
    return not any(name == d or name.endswith("." + d) for d in SPECIAL_USE_DOMAIN_NAMES)


def validate(file: SubscriberFile, sections: Collection[str]) -> Iterator[Problem]:
    """Every problem in the file, in line order: rows that cannot be read, invalid addresses,
    duplicates, unknown sections, languages that are not language codes."""
    known = set(sections)
    by_fold = {name.casefold(): name for name in sections}
    seen = _Seen(_estimate_rows(file.path))
    hashes, lines, mask = seen.hashes, seen.lines, seen.mask
    with _Scan(file.path, keep_raw=False) as scan:
        layout = scan.layout
        for line, cells, _ in scan.records():
            if not cells:
                continue
            values = _values(cells, layout)
            if values is None:
                for message in _problems(cells, layout):
                    yield Problem(line, message)
            key = (
                values[0].lower()
                if values
                else email_key(layout.pick(cells + [""] * layout.width)[0])
            )
            if key:  # look it up in `seen`, inline (see _Seen)
                wanted = hash(key) or 1
                slot = wanted & mask
                found = hashes[slot]
                while found and found != wanted:
                    slot = (slot + 1) & mask
                    found = hashes[slot]
                if found:
                    yield Problem(line, f"{printable(key)} is already on line {lines[slot]}")
                else:
                    hashes[slot], lines[slot] = wanted, line
                    seen.room -= 1
                    if not seen.room:
                        seen.grow()
                        hashes, lines, mask = seen.hashes, seen.lines, seen.mask
            if values is None:
                continue
            email, language = values[0], values[5]
            problem = address_problem(email)
            if problem:
                yield Problem(line, f"{echoed(email)} is not a valid address: {problem}")
            for name in values[4]:
                if name not in known:
                    close = by_fold.get(name.casefold())
                    hint = f"; did you mean {close!r}?" if close else ""
                    yield Problem(line, f"unknown section {name!r}{hint}")
            if language and not _is_language(language):
                yield Problem(line, f"language {language!r} is not a code such as en or pt-BR")
            if not (values[1].isprintable() and values[2].isprintable()):  # rare: look closer
                for message in _name_problems(values[1], values[2]):
                    yield Problem(line, message)


class _Seen:
    """Where `validate` remembers the line each address was first on: about 24 MB a million.

    A dict of the addresses would take some 200 MB, and even of their hashes over 100 MB (a
    Python int is 32 bytes), so this is open addressing over two arrays: 64-bit hashes (0 marks
    an empty slot) and lines. `validate` probes it inline: a method call per row costs seconds
    on a million. Two addresses sharing a hash (odds about 1 in 10^7 for a million rows) would be
    reported as duplicates; the message names both lines, so a reader can tell.
    """

    def __init__(self, expected: int) -> None:
        self._allocate(1 << max(12, int(expected / 0.6).bit_length()))

    def _allocate(self, size: int) -> None:
        self.hashes = array("q", bytes(8 * size))
        self.lines = array("I", bytes(4 * size))
        self.mask = size - 1
        self.room = int(size * 0.7)  # inserts left before the table grows

    def grow(self) -> None:
        """Twice the slots, every remembered address moved over."""
        old = zip(self.hashes, self.lines, strict=True)
        self._allocate(2 * len(self.hashes))
        hashes, lines, mask = self.hashes, self.lines, self.mask
        for wanted, line in old:
            if wanted:
                slot = wanted & mask
                while hashes[slot]:
                    slot = (slot + 1) & mask
                hashes[slot], lines[slot] = wanted, line
                self.room -= 1


def _estimate_rows(path: Path) -> int:
    """About how many rows the file has, from its size and its first 64 KB."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            sample = handle.read(65_536)
    except OSError:
        return 0
    return size * max(sample.count(b"\n"), 1) // max(len(sample), 1)


def parse_sections(text: str, known: Sequence[str]) -> tuple[str, ...]:
    """`"Labor; us politics"` as the configured names, in config order; unknown ones refused."""
    by_fold = {name.casefold(): name for name in known}
    wanted = _split_sections(text)
    unknown = [name for name in wanted if name.casefold() not in by_fold]
    if unknown:
        raise SubscriberFileError(
            f"no section is named {', '.join(repr(n) for n in unknown)}",
            hint=f"use {SECTION_SEPARATOR!r} between names from: {', '.join(known)}",
        )
    chosen = {by_fold[name.casefold()] for name in wanted}
    return tuple(name for name in known if name in chosen)


def check_language(language: str) -> str:
    """A language code such as `en` or `pt-BR` (or "" for the newsletter's), else an error."""
    language = language.strip()
    if language and not _is_language(language):
        raise SubscriberFileError(
            f"{language!r} is not a language code", hint="use a code such as en, es or pt-BR"
        )
    return language


def _name_problems(first_name: str, last_name: str) -> Iterator[str]:
    """A name with a line break or control character, which could start a header in a mail."""
    for column, name in (("first_name", first_name), ("last_name", last_name)):
        if _CONTROL.search(name):
            yield f"{column} {name!r} holds a line break or control character"


def check_name(name: str, *, where: str) -> str:
    """A first or last name as given, unless it holds a line break or control character."""
    if _CONTROL.search(name):
        raise SubscriberFileError(
            f"{name!r} holds a line break or control character",
            where=where,
            hint="a name is one line of text",
        )
    return name


@functools.lru_cache(maxsize=256)
def _is_language(code: str) -> bool:
    """A code such as en or pt-BR that a locale has: "xx" has the shape but names none."""
    if not _LANGUAGE.fullmatch(code):
        return False
    try:
        Locale.parse(code.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return False
    return True


def stats(file: SubscriberFile, *, zone: tzinfo) -> Stats:
    """Counts by status; subscribed rows by section and language; sign-ups by month in `zone`."""
    rows = unreadable = 0
    by_status: dict[SubscriberStatus, int] = {}
    by_section: dict[str, int] = {}
    by_language: dict[str, int] = {}
    months: dict[int, int] = {}  # year * 100 + month; 0: no date
    subscribed = SubscriberStatus.SUBSCRIBED
    every = ("",)
    with _Scan(file.path, keep_raw=False) as scan:
        layout = scan.layout
        for _, cells, _ in scan.records():
            if not cells:
                continue
            rows += 1
            values = _values(cells, layout)
            if values is None:
                unreadable += 1
                continue
            status, at = values[3], values[6]
            by_status[status] = by_status.get(status, 0) + 1
            if at is None:
                month = 0
            elif 3 <= at.day <= 26:  # two days from a month's end in every time zone
                month = at.year * 100 + at.month
            else:
                local = at.astimezone(zone)
                month = local.year * 100 + local.month
            months[month] = months.get(month, 0) + 1
            if status is subscribed:
                language = values[5]
                by_language[language] = by_language.get(language, 0) + 1
                for name in values[4] or every:
                    by_section[name] = by_section.get(name, 0) + 1
    return Stats(
        rows=rows,
        unreadable=unreadable,
        by_status=Counter(by_status),
        by_section=Counter(by_section),
        by_language=Counter(by_language),
        per_month=Counter(
            {f"{m // 100:04d}-{m % 100:02d}" if m else "": n for m, n in sorted(months.items())}
        ),
    )


def select(
    subscribers: Iterable[Subscriber],
    *,
    status: SubscriberStatus | None = None,
    section: str | None = None,
) -> Iterator[Subscriber]:
    """Those with `status`, and who get `section` (having chosen it, or every section)."""
    for subscriber in subscribers:
        if status is not None and subscriber.status is not status:
            continue
        if section is not None and subscriber.sections and section not in subscriber.sections:
            continue
        yield subscriber


def readable(rows: Iterable[Row], unreadable: list[int]) -> Iterator[Subscriber]:
    """The subscribers among `rows`; the line of each row that cannot be read goes in a list."""
    for row in rows:
        if row.subscriber is None:
            unreadable.append(row.line)
        else:
            yield row.subscriber


# -- export -------------------------------------------------------------------------------------

_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """A cell a spreadsheet will not run as a formula: a leading `'` where it might."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def export_csv(
    subscribers: Iterable[Subscriber], out: IO[str], *, extra_columns: Sequence[str] = ()
) -> int:
    """Write our columns (and the file's others) as CSV, safe to open in a spreadsheet."""
    layout = _Layout.parse([*COLUMNS, *extra_columns], where="export")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(layout.names)
    count = 0
    for subscriber in subscribers:
        writer.writerow([neutralise(cell) for cell in _cells_of(subscriber, layout)])
        count += 1
    return count


def to_json(subscriber: Subscriber) -> dict[str, object]:
    """One subscriber as a JSON object; values exact (JSON is not opened as a spreadsheet)."""
    return {
        "email": subscriber.email,
        "first_name": subscriber.first_name,
        "last_name": subscriber.last_name,
        "status": subscriber.status.value,
        "sections": list(subscriber.sections),
        "language": subscriber.language,
        "subscribed_at": format_time(subscriber.subscribed_at)
        if subscriber.subscribed_at
        else None,
        "unsubscribed_at": format_time(subscriber.unsubscribed_at)
        if subscriber.unsubscribed_at
        else None,
        "source": subscriber.source,
        "extra": dict(subscriber.extra),
    }


def export_json(subscribers: Iterable[Subscriber], out: IO[str]) -> int:
    """Write a JSON array, one subscriber object per line, streaming."""
    count = 0
    out.write("[")
    for subscriber in subscribers:
        out.write(",\n" if count else "\n")
        out.write(json.dumps(to_json(subscriber), ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


# -- import -------------------------------------------------------------------------------------

Platform = Literal["mailchimp", "substack", "ghost", "listmonk", "buttondown", "beehiiv", "csv"]
PLATFORMS: Final[tuple[Platform, ...]] = (
    "mailchimp",
    "substack",
    "ghost",
    "listmonk",
    "buttondown",
    "beehiiv",
    "csv",
)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A subscriber read from an import file, with the line it came from."""

    line: int
    subscriber: Subscriber


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row of an import file that cannot be imported, and why."""

    line: int
    email: str
    reason: str


@dataclass(frozen=True, slots=True)
class ImportFile:
    path: Path
    platform: Platform
    incoming: tuple[Incoming, ...]
    rejected: tuple[Rejected, ...]


@dataclass(frozen=True, slots=True)
class MergeEntry:
    action: Literal["add", "update", "skip"]
    line: int  # in the import file
    email: str
    detail: str


@dataclass(slots=True)
class MergeReport:
    entries: list[MergeEntry] = field(default_factory=list)

    def note(self, action: Literal["add", "update", "skip"], item: Incoming, detail: str) -> None:
        self.entries.append(MergeEntry(action, item.line, item.subscriber.email, detail))

    def count(self, action: str) -> int:
        return sum(entry.action == action for entry in self.entries)


class _Reject(Exception):
    """This import row is skipped, for the reason given."""


# Statuses of each platform, as ours; None: never confirmed, so not imported at all.
_BUTTONDOWN: Final[Mapping[str, SubscriberStatus | None]] = {
    **dict.fromkeys(
        ("regular", "premium", "trialed", "gifted", "churning", "paused", "unpaid", "past_due"),
        SubscriberStatus.SUBSCRIBED,
    ),
    **dict.fromkeys(("unsubscribed", "removed", "churned"), SubscriberStatus.UNSUBSCRIBED),
    **dict.fromkeys(
        ("undeliverable", "malformed", "spammy", "disposable"), SubscriberStatus.BOUNCED
    ),
    "complained": SubscriberStatus.COMPLAINED,
    "unactivated": None,
    "blocked": None,
}
_LISTMONK: Final[Mapping[str, SubscriberStatus]] = {
    "enabled": SubscriberStatus.SUBSCRIBED,
    "disabled": SubscriberStatus.UNSUBSCRIBED,
    "blocklisted": SubscriberStatus.UNSUBSCRIBED,
}
_BEEHIIV: Final[Mapping[str, SubscriberStatus | None]] = {
    "active": SubscriberStatus.SUBSCRIBED,
    "inactive": SubscriberStatus.UNSUBSCRIBED,
    "pending": None,
}


def detect_platform(columns: Collection[str]) -> Platform | None:
    """Which platform wrote a file with these (lower-case) header names."""
    if "email address" in columns:
        return "mailchimp"
    if "subscribed_to_emails" in columns:
        return "ghost"
    if "email_disabled" in columns or "active_subscription" in columns:
        return "substack"
    if "subscriber_type" in columns or "email_address" in columns:
        return "buttondown"
    if "attributes" in columns and "email" in columns:
        return "listmonk"
    if "free tier" in columns or ("tier" in columns and "stripe_customer_id" in columns):
        return "beehiiv"
    if "email" in columns:
        return "csv"
    return None


def read_import(
    path: Path,
    *,
    platform: Platform | Literal["auto"] = "auto",
    sections: Sequence[str] = (),
) -> ImportFile:
    """Read another platform's export as our subscribers; bad rows are rejected with their line.

    Tags and labels that name a configured section (any case) become that subscriber's sections;
    other tags, and columns we have no place for, are left behind.
    """
    reader = csv.reader(())
    line = 1
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            names = [cell.strip().lower() for cell in header]
            _check_header(header, names, path)
            chosen = detect_platform(names) if platform == "auto" else platform
            if chosen is None:
                raise SubscriberFileError(
                    f"cannot tell which platform wrote it (columns: {', '.join(header)})",
                    where=path.name,
                    hint=f"pass --format ({', '.join(PLATFORMS)}); csv needs an email column",
                )
            if not set(_EMAIL_COLUMNS[chosen]) & set(names):
                raise SubscriberFileError(
                    f"no {_EMAIL_COLUMNS[chosen][0]!r} column, so it is not a {chosen} export",
                    where=path.name,
                    hint="pass the right --format, or --format auto",
                )
            convert = _CONVERTERS[chosen]
            tags = _Tags(
                {name.casefold(): name for name in sections},
                {name: n for n, name in enumerate(sections)},
            )
            incoming: list[Incoming] = []
            rejected: list[Rejected] = []
            line = reader.line_num + 1
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    line = reader.line_num + 1
                    continue
                record = dict(zip(names, cells, strict=False))
                email = _email_of(record)
                try:
                    subscriber = _checked(convert(record, tags), chosen)
                except _Reject as reason:
                    rejected.append(Rejected(line, email, str(reason)))
                else:
                    incoming.append(Incoming(line, subscriber))
                line = reader.line_num + 1
    except FileNotFoundError:
        raise SubscriberFileError("no such file", where=str(path)) from None
    except OSError as err:
        raise SubscriberFileError(f"cannot read it: {err}", where=str(path)) from err
    except (UnicodeDecodeError, csv.Error) as err:
        raise _unreadable(err, path, reader.line_num + 1, line) from err
    return ImportFile(path, chosen, tuple(incoming), tuple(rejected))


def _check_header(header: list[str], names: list[str], path: Path) -> None:
    """Refuse what would be read wrongly: a JSON file as columns, a column named twice."""
    if header and header[0].lstrip().startswith(("{", "[")):
        raise SubscriberFileError(
            "this looks like JSON, and import reads CSV files",
            where=path.name,
            hint=f"export a CSV from the platform ({', '.join(PLATFORMS)}: a header row of "
            "columns, one row per reader)",
        )
    for position, name in enumerate(names):
        if name and name in names[:position]:
            raise SubscriberFileError(
                f"the header names the column {header[position].strip()!r} twice "
                f"(columns {names.index(name) + 1} and {position + 1})",
                where=f"{path.name}:1",
                hint="rename or delete one of them, so it is clear which one to read",
            )


_EMAIL_COLUMNS: Final[Mapping[Platform, tuple[str, ...]]] = {
    "mailchimp": ("email address",),
    "substack": ("email",),
    "ghost": ("email",),
    "listmonk": ("email",),
    "buttondown": ("email", "email_address"),
    "beehiiv": ("email",),
    "csv": ("email",),
}


def _email_of(record: Mapping[str, str]) -> str:
    for name in ("email", "email address", "email_address"):
        if record.get(name, "").strip():
            return record[name].strip()
    return ""


@dataclass(frozen=True, slots=True)
class _Tags:
    """Turns a platform's tags into configured section names, in config order."""

    known: Mapping[str, str]  # casefolded -> configured spelling
    order: Mapping[str, int]

    def sections(self, tags: Iterable[str]) -> tuple[str, ...]:
        found = {
            self.known[t.strip().casefold()] for t in tags if t.strip().casefold() in self.known
        }
        return tuple(sorted(found, key=self.order.__getitem__))


def _checked(subscriber: Subscriber, platform: Platform) -> Subscriber:
    if not subscriber.email:
        raise _Reject("no email address")
    problem = address_problem(subscriber.email)
    if problem:
        raise _Reject(f"{echoed(subscriber.email)} is not a valid address: {problem}")
    bad_name = next(_name_problems(subscriber.first_name, subscriber.last_name), None)
    if bad_name is not None:
        raise _Reject(bad_name)
    return replace(subscriber, source=subscriber.source or f"import:{platform}")


def _time(record: Mapping[str, str], *names: str) -> datetime | None:
    """The first of these columns that holds a date; a bad date rejects the row."""
    for name in names:
        text = record.get(name, "").strip()
        if text.endswith((" UTC", " GMT")):
            text = text[:-4]
        if text:
            try:
                return parse_time(text)
            except ValueError:
                raise _Reject(f"{name}: {text!r} is not a date") from None
    return None


def _names(record: Mapping[str, str], first: str, last: str) -> tuple[str, str]:
    return record.get(first, "").strip(), record.get(last, "").strip()


def _split_name(name: str) -> tuple[str, str]:
    """A full name as first and last: the first word, then the rest."""
    first, _, last = " ".join(name.split()).partition(" ")
    return first, last


def _true(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "y")


def _mailchimp(record: Mapping[str, str], tags: _Tags) -> Subscriber:
    # Mailchimp exports each status as its own file; the columns say which one this is.
    if "unsub_time" in record:
        status, left_at = SubscriberStatus.UNSUBSCRIBED, _time(record, "unsub_time")
    elif "clean_time" in record:
        status, left_at = SubscriberStatus.BOUNCED, _time(record, "clean_time")
    else:
        status, left_at = SubscriberStatus.SUBSCRIBED, None
    first, last = _names(record, "first name", "last name")
    raw_tags = record.get("tags", "").strip()
    # TAGS holds each tag in double quotes inside the cell: "Tag A","Tag B".
    tag_list = next(csv.reader([raw_tags]), []) if raw_tags else []
    return Subscriber(
        email=record.get("email address", "").strip(),
        first_name=first,
        last_name=last,
        status=status,
        sections=tags.sections(tag_list),
        subscribed_at=_time(record, "confirm_time", "optin_time"),
        unsubscribed_at=left_at,
    )


def _substack(record: Mapping[str, str], tags: _Tags) -> Subscriber:
    disabled = _true(record.get("email_disabled", ""))
    first, last = _split_name(record.get("name", ""))
    return Subscriber(
        email=record.get("email", "").strip(),
        first_name=first,
        last_name=last,
        status=SubscriberStatus.UNSUBSCRIBED if disabled else SubscriberStatus.SUBSCRIBED,
        subscribed_at=_time(record, "created_at"),
    )


def _ghost(record: Mapping[str, str], tags: _Tags) -> Subscriber:
    deleted_at = _time(record, "deleted_at")
    subscribed = _true(record.get("subscribed_to_emails", "true")) and deleted_at is None
    first, last = _split_name(record.get("name", ""))
    return Subscriber(
        email=record.get("email", "").strip(),
        first_name=first,
        last_name=last,
        status=SubscriberStatus.SUBSCRIBED if subscribed else SubscriberStatus.UNSUBSCRIBED,
        sections=tags.sections(record.get("labels", "").split(",")),
        subscribed_at=_time(record, "created_at"),
        unsubscribed_at=deleted_at,
    )


def _listmonk(record: Mapping[str, str], tags: _Tags) -> Subscriber:
    raw = record.get("status", "").strip().lower() or "enabled"
    status = _LISTMONK.get(raw)
    if status is None:
        raise _Reject(f"unknown listmonk status {raw!r}")
    first, last = _split_name(record.get("name", ""))
    return Subscriber(
        email=record.get("email", "").strip(),
        first_name=first,
        last_name=last,
        status=status,
        subscribed_at=_time(record, "created_at"),
    )


def _buttondown(record: Mapping[str, str], tags: _Tags) -> Subscriber:
    raw = (record.get("subscriber_type") or record.get("type") or "regular").strip().lower()
    if raw not in _BUTTONDOWN:
        raise _Reject(f"unknown Buttondown subscriber type {raw!r}")
    status = _BUTTONDOWN[raw]
    if status is None:
        raise _Reject(f"never confirmed their subscription ({raw})")
    raw_tags = record.get("tags", "").strip()
    tag_list: list[str]
    if raw_tags.startswith("["):
        try:
            parsed = json.loads(raw_tags)
        except ValueError:
            parsed = []
        tag_list = [str(tag) for tag in parsed] if isinstance(parsed, list) else []
    else:
        tag_list = raw_tags.split(",")
    left_at = _time(record, "unsubscription_date", "undeliverability_date")
    return Subscriber(
        email=(record.get("email") or record.get("email_address") or "").strip(),
        status=status,
        sections=tags.sections(tag_list),
        subscribed_at=_time(record, "creation_date", "subscription_date"),
        unsubscribed_at=left_at if status in LEFT else None,
    )


def _beehiiv(record: Mapping[str, str], tags: _Tags) -> Subscriber:
    raw = record.get("status", "").strip().lower()
    if raw not in _BEEHIIV:
        raise _Reject(f"unknown beehiiv status {raw!r}")
    status = _BEEHIIV[raw]
    if status is None:
        raise _Reject(f"never confirmed their subscription ({raw})")
    left_at = _time(record, "unsubscribed_at")
    first, last = _names(record, "first name", "last name")
    return Subscriber(
        email=record.get("email", "").strip(),
        first_name=first,
        last_name=last,
        status=SubscriberStatus.UNSUBSCRIBED if left_at else status,
        subscribed_at=_time(record, "created_at"),
        unsubscribed_at=left_at,
    )


def _own_csv(record: Mapping[str, str], tags: _Tags) -> Subscriber:
    raw = record.get("status", "").strip().lower() or "subscribed"
    status = _STATUSES.get(raw)
    if status is None:
        raise _Reject(f"unknown status {raw!r}")
    first, last = _names(record, "first_name", "last_name")
    if not (first or last) and record.get("name"):
        first, last = _split_name(record["name"])
    language = record.get("language", "").strip()
    if language and not _is_language(language):
        raise _Reject(f"language {language!r} is not a code such as en or pt-BR")
    return Subscriber(
        email=record.get("email", "").strip(),
        first_name=first,
        last_name=last,
        status=status,
        sections=tags.sections(record.get("sections", "").split(SECTION_SEPARATOR)),
        language=language,
        subscribed_at=_time(record, "subscribed_at"),
        unsubscribed_at=_time(record, "unsubscribed_at"),
        source=record.get("source", "").strip(),
    )


_CONVERTERS: Final[Mapping[Platform, Callable[[Mapping[str, str], _Tags], Subscriber]]] = {
    "mailchimp": _mailchimp,
    "substack": _substack,
    "ghost": _ghost,
    "listmonk": _listmonk,
    "buttondown": _buttondown,
    "beehiiv": _beehiiv,
    "csv": _own_csv,
}


def _merge_changes(ours: Subscriber, theirs: Subscriber) -> tuple[dict[str, str], str]:
    """The cells an import changes on an existing row, and a few words on what or why not."""
    changes: dict[str, str] = {}
    if ours.status is SubscriberStatus.SUBSCRIBED and theirs.status in LEFT:
        changes["status"] = theirs.status.value
        if theirs.unsubscribed_at is not None:
            changes["unsubscribed_at"] = format_time(theirs.unsubscribed_at)
    for name in ("first_name", "last_name", "language"):
        if not getattr(ours, name) and getattr(theirs, name):
            changes[name] = getattr(theirs, name)
    if ours.subscribed_at is None and theirs.subscribed_at is not None:
        changes["subscribed_at"] = format_time(theirs.subscribed_at)
    if changes:
        return changes, ", ".join(
            f"{name} {_shown(ours, name)!r} -> {value!r}" for name, value in changes.items()
        )
    if ours.status in LEFT and theirs.status is SubscriberStatus.SUBSCRIBED:
        return changes, f"{ours.status.value} here; an import never re-subscribes"
    return changes, "already on the list; nothing new"


def _shown(subscriber: Subscriber, name: str) -> str:
    value = getattr(subscriber, name)
    if isinstance(value, datetime):
        return format_time(value)
    return "" if value is None else str(value)


def _unreadable(
    err: UnicodeDecodeError | csv.Error, path: Path, byte_line: int, row_line: int
) -> SubscriberFileError:
    """A file that cannot be decoded or parsed as CSV, at the line where reading stopped."""
    if isinstance(err, UnicodeDecodeError):
        return SubscriberFileError(
            f"not UTF-8 text ({err.reason})",
            where=f"{path.name}:{byte_line}",
            hint="save it as UTF-8 (in a spreadsheet: CSV UTF-8)",
        )
    return SubscriberFileError(
        f"not readable as CSV: {err}",
        where=f"{path.name}:{row_line}",
        hint="a quoted cell probably never ends: look for an unmatched double quote",
    )
