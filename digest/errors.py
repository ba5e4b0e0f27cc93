"""The project's own exceptions: problems a user can fix, each shown by the CLI as one line."""

from __future__ import annotations

from collections.abc import Callable

ECHOED = 60  # characters of a user's value an error message repeats


def echoed(value: str, *, quoted: bool = True) -> str:
    """`value` for an error message, quoted (repr) unless not `quoted`, its first ECHOED
    characters only when longer, and its length: a 10,000-character address must not fill
    the terminal."""
    if len(value) <= ECHOED:
        return repr(value) if quoted else value
    head = repr(value[:ECHOED]) if quoted else value[:ECHOED]
    return f"{head}… ({len(value):,} characters)"


class DigestError(Exception):
    """A problem the user can fix; the CLI shows it as one line."""

    exit_code = 1

    def __init__(self, message: str, *, where: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.message, self.where, self.hint = message, where, hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text} (hint: {self.hint})" if self.hint else text

    def __reduce__(self) -> tuple[Callable[..., DigestError], tuple[object, ...]]:
        # A sending process hands its error to the parent by pickle: keep where and hint.
        return _rebuild, (type(self), self.message, self.where, self.hint)


def _rebuild(kind: type[DigestError], message: str, where: str, hint: str) -> DigestError:
    return kind(message, where=where, hint=hint)


class ConfigError(DigestError):
    """digest.toml or the environment is missing something or holds a wrong value."""


class SourceError(DigestError):
    """A source could not be fetched or parsed; collect reports it and goes on."""


class ArchiveError(DigestError):
    """The SQLite archive cannot be opened or is newer than this version understands."""


class SelectionError(DigestError):
    """The requested period or featured article does not make sense for this archive."""


class ProjectError(DigestError):
    """`digest init` would overwrite files or cannot write its starter project."""


class SubscriberFileError(DigestError):
    """The subscriber list cannot be read or written, or a change to it is refused."""


class TokenError(DigestError):
    """An unsubscribe or preferences token is malformed, altered, forged or for another list."""


class ServeError(DigestError):
    """`digest serve` cannot listen on the host and port it was given."""


class TemplateError(DigestError):
    """An email template does not compile or render; `where` names its file and line."""


class MessageError(DigestError):
    """A message cannot be composed: an address or header value email does not allow."""


class LedgerError(DigestError):
    """The send ledger cannot be opened, read or written."""


class SendError(DigestError):
    """Delivery cannot go on: the SMTP relay refuses our TLS, login or sender, or is gone."""


class SendInProgress(DigestError):
    """Another process is sending from the same ledger right now."""


class PartialDelivery(DigestError):
    """A send ended with rows failed or `unknown`: some readers may not have their copy."""

    exit_code = 3


class ScheduleError(DigestError):
    """The crontab cannot be read or written, or the schedule cannot be written as a cron line."""


class SendInterrupted(DigestError):
    """Ctrl-C or SIGTERM stopped a send part way; the ledger holds where to resume from."""

    exit_code = 130
