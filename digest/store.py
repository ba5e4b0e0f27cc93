"""A SQLite file with a versioned schema: the plumbing the archive and the send ledger share."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from digest.errors import DigestError


class SqliteFile:
    """An open SQLite file in WAL mode; `open` creates it and brings its schema up to date.

    Subclasses say what they are, which error they raise, their migrations (schema version N is
    migrations[N - 1]; new scripts go at the end, old ones never change) and their pragmas.
    Use it as a context manager so the connection is closed.
    """

    what: ClassVar[str]  # "archive", "ledger": named in messages
    error: ClassVar[type[DigestError]]
    migrations: ClassVar[tuple[str, ...]]
    busy_timeout: ClassVar[int] = 5000  # milliseconds a write waits for another's to end
    pragmas: ClassVar[tuple[str, ...]] = ()
    not_a_database_hint: ClassVar[str] = "move this file away"

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    def open(cls, path: Path) -> Self:
        """Open (creating if need be) the file at `path`, bringing its schema up to date."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: transactions are begun explicitly, so each write is one transaction.
            connection = sqlite3.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise cls.error(f"cannot open the {cls.what}: {err}", where=str(path)) from err
        opened = cls(connection, path)
        try:
            opened._prepare()
        except BaseException:
            connection.close()
            raise
        return opened

    def _prepare(self) -> None:
        try:
            for pragma in (f"PRAGMA busy_timeout = {self.busy_timeout}", *self.pragmas):
                self._db.execute(pragma)
            self._db.execute("PRAGMA journal_mode = WAL")  # the first read of the file
        except sqlite3.Error as err:
            if err.sqlite_errorname == "SQLITE_NOTADB":
                raise self.error(
                    f"not an SQLite database, so not a digest {self.what}",
                    where=str(self.path),
                    hint=self.not_a_database_hint,
                ) from err
            raise self.error(f"cannot open the {self.what}: {err}", where=str(self.path)) from err
        with self._reading(f"reading the {self.what} schema") as db:
            version: int = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(self.migrations):
            raise self.error(
                f"{self.what} schema v{version} is newer than this digest understands",
                where=str(self.path),
                hint="upgrade digest",
            )
        if version < len(self.migrations):
            with self._transaction(f"updating the {self.what} schema") as db:
                # Again, under the write lock: another process may have just migrated it.
                version = db.execute("PRAGMA user_version").fetchone()[0]
                for number, script in enumerate(self.migrations[version:], start=version + 1):
                    for statement in _statements(script):
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version = {number}")

    def close(self) -> None:
        """Close the connection; every write was already committed."""
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back on any error, SQLite's own shown as our error."""
        with self._reading(doing):
            # IMMEDIATE takes the write lock up front, so busy_timeout applies instead of a
            # deadlock between two readers that both want to write.
            self._db.execute("BEGIN IMMEDIATE")
            with self._committed():
                yield self._db

    @contextmanager
    def _transaction_if_free(self, doing: str) -> Iterator[sqlite3.Connection | None]:
        """`_transaction`, or None at once (nothing written) while another connection holds
        the write lock: for an event loop, which can try again later instead of stalling."""
        with self._reading(doing):
            self._db.execute("PRAGMA busy_timeout = 0")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                free = True
            except sqlite3.OperationalError as err:
                if err.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                    raise
                free = False
            finally:
                self._db.execute(f"PRAGMA busy_timeout = {self.busy_timeout}")
            if not free:
                yield None
                return
            with self._committed():
                yield self._db

    @contextmanager
    def _committed(self) -> Iterator[None]:
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    @contextmanager
    def _reading(self, doing: str) -> Iterator[sqlite3.Connection]:
        try:
            yield self._db
        except sqlite3.Error as err:
            raise self.error(f"{doing} failed: {err}", where=str(self.path)) from err


def _statements(script: str) -> Iterator[str]:
    """Split a migration script into statements, which run inside our own transaction.

    executescript would commit first; a trigger body's own semicolons stay in its statement.
    """
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending) and pending.strip(" \n;"):
            yield pending
            pending = ""
