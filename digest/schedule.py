"""When `digest run` is due, and the crontab line that starts it.

The schedule is wall-clock time in the newsletter's zone ("Saturday 08:00 in New York"). The
functions on times are pure: `now` is a parameter. Only `install` and `uninstall` do I/O, by
running the crontab program (`crontab`, or the command in $DIGEST_CRONTAB).

DST rule: a scheduled wall time is read with zoneinfo's fold=0, then normalised through UTC.
So a time the clocks skip comes as long after the jump as it was after the last valid minute
(02:30 on a spring-forward night at 02:00 is 03:30), and a time that happens twice on a
fall-back night is its first occurrence (01:30 daylight time, not standard).

Moments come back in the newsletter's zone, fold set. Compare or subtract them in UTC: Python
compares two datetimes with the same tzinfo by wall clock, ignoring fold, so 01:30 daylight and
01:30 standard time would be "equal", and a week across a DST change "168 hours".
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from digest.config import ScheduleSettings
from digest.errors import ScheduleError
from digest.models import Period

CRONTAB_ENV_VAR = "DIGEST_CRONTAB"


def latest_due(settings: ScheduleSettings, *, timezone: ZoneInfo, now: datetime) -> datetime:
    """The latest scheduled moment at or before `now` (aware), in `timezone`."""
    anchor, limit = _anchor(settings, _local(now, timezone).date()), now.astimezone(UTC)
    # From one step ahead, in case a zone's date jump maps tomorrow's date onto today.
    for moment in _moments(settings, timezone, anchor, start=1, step=-1):
        if moment.astimezone(UTC) <= limit:
            return moment
    raise AssertionError("unreachable: the moments go back without end")


def previous_due(settings: ScheduleSettings, *, timezone: ZoneInfo, due: datetime) -> datetime:
    """The latest scheduled moment strictly before `due`: for a due moment, one interval earlier.

    It starts the period of a newsletter's first scheduled issue.
    """
    return latest_due(settings, timezone=timezone, now=_just_before(due))


def next_due(settings: ScheduleSettings, *, timezone: ZoneInfo, after: datetime) -> datetime:
    """The first scheduled moment strictly after `after` (aware), in `timezone`."""
    anchor, limit = _anchor(settings, _local(after, timezone).date()), after.astimezone(UTC)
    for moment in _moments(settings, timezone, anchor, start=-1, step=1):
        if moment.astimezone(UTC) > limit:
            return moment
    raise AssertionError("unreachable: the moments go on without end")


def scheduled_period(
    settings: ScheduleSettings,
    *,
    timezone: ZoneInfo,
    now: datetime,
    last_sent_end: datetime | None,
) -> Period | None:
    """The period `digest run` sends at `now`, or None when nothing is due.

    The period ends at `latest_due(now)` and starts at `last_sent_end` (the end of the last
    issue sent in full), else one interval before its end. None means the last sent issue
    already reaches that end: the run has nothing to send until `next_due(now)`. A send that
    was interrupted is not "sent", so its period comes back unchanged and the run can resume
    it by its issue id; periods missed (the machine was off) are caught up in one issue.
    """
    end = latest_due(settings, timezone=timezone, now=now)
    if last_sent_end is None:
        return Period(start=previous_due(settings, timezone=timezone, due=end), end=end)
    if last_sent_end.astimezone(UTC) >= end.astimezone(UTC):
        return None
    return Period(start=last_sent_end.astimezone(timezone), end=end)


def _local(moment: datetime, timezone: ZoneInfo) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"expected an aware datetime, got {moment!r}")
    return moment.astimezone(timezone)


def _just_before(moment: datetime) -> datetime:
    return moment.astimezone(UTC) - timedelta(microseconds=1)


def _anchor(settings: ScheduleSettings, day: date) -> date:
    """The scheduled date on or before `day` (its time may still be ahead)."""
    if settings.every == "week":
        return day - timedelta(days=(day.weekday() - settings.day) % 7)
    if settings.every == "month":
        this_month = day.replace(day=settings.day)
        return this_month if day >= this_month else _months(this_month, -1)
    return day


def _moments(
    settings: ScheduleSettings, timezone: ZoneInfo, anchor: date, *, start: int, step: int
) -> Iterator[datetime]:
    """Scheduled moments from `start` intervals after `anchor` on, `step` intervals apart."""
    n = start
    while True:
        yield _at(_shift(settings, anchor, n), settings, timezone)
        n += step


def _shift(settings: ScheduleSettings, anchor: date, n: int) -> date:
    if settings.every == "week":
        return anchor + timedelta(weeks=n)
    if settings.every == "month":
        return _months(anchor, n)
    return anchor + timedelta(days=n)


def _months(day: date, n: int) -> date:
    # Scheduled days of the month are 1-28, so every month has one.
    index = day.year * 12 + day.month - 1 + n
    return date(index // 12, index % 12 + 1, day.day)


def _at(day: date, settings: ScheduleSettings, timezone: ZoneInfo) -> datetime:
    # fold=0, then through UTC: see the DST rule in the module docstring.
    wall = datetime.combine(day, settings.time, tzinfo=timezone)
    return wall.astimezone(UTC).astimezone(timezone)


# -- the crontab ----------------------------------------------------------------------------------


def marker(config_path: Path) -> str:
    """The comment that ends this config's crontab line, so install and uninstall find it."""
    return _cron_escape(f"# digest: {_one_line(config_path)}")


def cron_line(
    settings: ScheduleSettings, *, digest_path: Path, config_path: Path, log_path: Path | None
) -> str:
    """The crontab line that runs `digest --config CONFIG run [--log-file LOG]`, marked.

    Paths must be absolute (cron starts in $HOME); each is quoted for sh. The line ends with
    `marker(CONFIG)`. Output is left to cron, which mails what `digest run` prints.
    """
    # cron reads times in the machine's zone (or CRON_TZ, which Debian's cron ignores), not the
    # newsletter's. So the line runs every quarter hour and `digest run` decides whether a period
    # is due; a period already sent is a silent exit 0. Every zone's offset today is a multiple
    # of 15 minutes, so the quarter hours at the scheduled minute hit the scheduled moment
    # exactly, in any machine zone and across DST changes; and a run missed while the machine
    # was off comes a quarter hour later, not an interval later.
    first = settings.time.minute % 15
    minutes = ",".join(str(first + quarter) for quarter in (0, 15, 30, 45))
    words = [str(_one_line(digest_path)), "--config", str(_one_line(config_path)), "run"]
    if log_path is not None:
        words += ["--log-file", str(_one_line(log_path))]
    command = shlex.join(words)
    return f"{minutes} * * * * {_cron_escape(command)} {marker(config_path)}"


def digest_executable(argv0: str, python: str) -> Path:
    """The absolute path of the installed `digest` command this process runs as.

    `argv0` (sys.argv[0]) when it is the `digest` script, as from a shell or cron; else the
    `digest` beside `python` (sys.executable), which is where a venv or pipx puts it, for
    `python -m digest`. Symlinks are kept: pipx upgrades keep ~/.local/bin/digest valid.
    """
    for candidate in (Path(argv0), Path(python).parent / "digest"):
        if candidate.name == "digest" and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.absolute()
    raise ScheduleError(
        "cannot find the installed `digest` command for the crontab line",
        hint="install digest (pip install .) and run `digest schedule` as the installed command",
    )


def crontab_command(env: Mapping[str, str]) -> tuple[str, ...]:
    """The crontab program to run: $DIGEST_CRONTAB split as sh words, else `crontab`."""
    return tuple(shlex.split(env.get(CRONTAB_ENV_VAR, ""))) or ("crontab",)


def install(line: str, *, marker: str, crontab: Sequence[str] = ("crontab",)) -> bool:
    """Put `line` in the user's crontab once; False if it is already there, as is.

    A line with the same marker but other content (the schedule, paths or log changed) is
    replaced. Every other line is kept byte for byte.
    """
    rows = _rows(_read(crontab))
    wanted = os.fsencode(line) + b"\n"
    if [row for row in rows if _is_ours(row, marker)] == [wanted]:
        return False
    kept = b"".join(row for row in rows if not _is_ours(row, marker))
    if kept and not kept.endswith(b"\n"):
        kept += b"\n"  # cron ignores a last line without its newline
    _write(crontab, kept + wanted)
    return True


def uninstall(marker: str, *, crontab: Sequence[str] = ("crontab",)) -> bool:
    """Remove the line with `marker` from the user's crontab; False if there was none."""
    rows = _rows(_read(crontab))
    kept = [row for row in rows if not _is_ours(row, marker)]
    if len(kept) == len(rows):
        return False
    _write(crontab, b"".join(kept))
    return True


def _rows(table: bytes) -> list[bytes]:
    """The table's lines, each with its newline; joined, they give back the table exactly."""
    parts = table.split(b"\n")
    rows = [part + b"\n" for part in parts[:-1]]
    return [*rows, parts[-1]] if parts[-1] else rows


def _is_ours(row: bytes, marker: str) -> bool:
    return row.rstrip(b"\r\n").endswith(b" " + os.fsencode(marker))


def _read(crontab: Sequence[str]) -> bytes:
    done = _run([*crontab, "-l"], b"")
    if done.returncode == 0:
        return done.stdout
    if done.returncode == 1 and b"no crontab for" in done.stderr:
        return b""  # the user has no crontab yet
    raise ScheduleError(f"`{shlex.join([*crontab, '-l'])}` failed: {_said(done)}", hint=_HINT)


def _write(crontab: Sequence[str], table: bytes) -> None:
    done = _run([*crontab, "-"], table)
    if done.returncode != 0:
        raise ScheduleError(
            f"`{shlex.join([*crontab, '-'])}` refused the new crontab: {_said(done)}", hint=_HINT
        )


def _run(command: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(command, input=stdin, capture_output=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ScheduleError(f"cannot run `{shlex.join(command)}`: {err}", hint=_HINT) from err


def _said(done: subprocess.CompletedProcess[bytes]) -> str:
    lines = os.fsdecode(done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit status {done.returncode}"


_HINT = (
    f"install cron (apt install cron), check you may use crontab, or set ${CRONTAB_ENV_VAR}; "
    "`digest schedule` prints the line to add by hand"
)


def _one_line(path: Path) -> Path:
    if "\n" in str(path) or "\r" in str(path):
        raise ScheduleError(f"a crontab line cannot hold the path {str(path)!r}", hint="rename it")
    return path


def _cron_escape(text: str) -> str:
    # cron turns an unescaped "%" into a newline (the rest becomes the command's stdin).
    return text.replace("%", "\\%")
