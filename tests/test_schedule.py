"""When `digest run` is due, in the newsletter's zone across DST, and its crontab line."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from digest import schedule
from digest.cli import cli
from digest.config import ScheduleSettings
from digest.errors import ScheduleError

NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
WEEKLY = ScheduleSettings()  # Saturday 08:00
ZONES = [
    NEW_YORK,
    LONDON,
    ZoneInfo("Australia/Lord_Howe"),
    ZoneInfo("Asia/Kathmandu"),
    ZoneInfo("UTC"),
]


def at(
    zone: tzinfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, fold: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=zone, fold=fold)


# -- due times ------------------------------------------------------------------------------------


def test_weekly_due_is_the_last_saturday_morning_in_the_newsletters_zone() -> None:
    """On a Wednesday, the latest due is last Saturday 08:00 New York time, the next is coming."""
    now = at(UTC, 2026, 11, 25, 16, 30)
    assert schedule.latest_due(WEEKLY, timezone=NEW_YORK, now=now) == at(NEW_YORK, 2026, 11, 21, 8)
    assert schedule.next_due(WEEKLY, timezone=NEW_YORK, after=now) == at(NEW_YORK, 2026, 11, 28, 8)


def test_a_due_moment_is_its_own_latest_due() -> None:
    """At 08:00 sharp the period ending then is due; a microsecond earlier it is not."""
    due = at(NEW_YORK, 2026, 11, 28, 8)
    assert schedule.latest_due(WEEKLY, timezone=NEW_YORK, now=due) == due
    before = due - timedelta(microseconds=1)
    assert schedule.latest_due(WEEKLY, timezone=NEW_YORK, now=before) == at(
        NEW_YORK, 2026, 11, 21, 8
    )


def test_monthly_due_is_that_day_of_the_month() -> None:
    """Before the 28th's send, the latest due is last month's 28th, across a DST change."""
    monthly = ScheduleSettings(every="month", day=28, time=time(8))
    now = at(NEW_YORK, 2026, 11, 25, 12)
    assert schedule.latest_due(monthly, timezone=NEW_YORK, now=now) == at(NEW_YORK, 2026, 10, 28, 8)
    assert schedule.next_due(monthly, timezone=NEW_YORK, after=now) == at(NEW_YORK, 2026, 11, 28, 8)
    january = schedule.latest_due(monthly, timezone=NEW_YORK, now=at(NEW_YORK, 2027, 1, 3))
    assert january == at(NEW_YORK, 2026, 12, 28, 8)


def test_a_skipped_wall_time_comes_as_late_after_the_jump() -> None:
    """02:30 on the night clocks jump from 02:00 to 03:00 is 03:30 daylight time."""
    nightly = ScheduleSettings(every="day", time=time(2, 30))
    due = schedule.latest_due(nightly, timezone=NEW_YORK, now=at(NEW_YORK, 2026, 3, 8, 12))
    assert due == at(NEW_YORK, 2026, 3, 8, 3, 30)
    assert due.utcoffset() == timedelta(hours=-4)


def test_a_repeated_wall_time_is_its_first_occurrence() -> None:
    """01:30 on the night clocks fall back from 02:00 to 01:00 is 01:30 daylight time."""
    nightly = ScheduleSettings(every="day", time=time(1, 30))
    due = schedule.latest_due(nightly, timezone=NEW_YORK, now=at(NEW_YORK, 2026, 11, 1, 12))
    assert due.astimezone(UTC) == at(UTC, 2026, 11, 1, 5, 30)
    assert due.utcoffset() == timedelta(hours=-4)
    # At 01:10 standard time, in the same zone, the wall clock is before 01:30 but the moment
    # is after the first 01:30: today's is due.
    second_pass = at(NEW_YORK, 2026, 11, 1, 1, 10, fold=1)
    again = schedule.latest_due(nightly, timezone=NEW_YORK, now=second_pass)
    assert again.astimezone(UTC) == due.astimezone(UTC)


def test_a_day_a_zone_skips_gives_no_empty_period() -> None:
    """Samoa skipped 30 December 2011; the period before the 31st's send is the 29th's."""
    apia = ZoneInfo("Pacific/Apia")
    daily = ScheduleSettings(every="day", time=time(8))
    now = at(apia, 2011, 12, 31, 9)
    period = schedule.scheduled_period(daily, timezone=apia, now=now, last_sent_end=None)
    assert period is not None
    assert (period.start, period.end) == (at(apia, 2011, 12, 29, 8), at(apia, 2011, 12, 31, 8))


def test_a_naive_now_is_refused() -> None:
    """A time without a zone would be read in the machine's zone, so it is a bug to pass one."""
    with pytest.raises(ValueError, match="aware"):
        schedule.latest_due(WEEKLY, timezone=NEW_YORK, now=datetime(2026, 11, 25))


clocks = st.builds(time, st.integers(0, 23), st.integers(0, 59))  # "HH:MM", as configured
settings_strategy = st.one_of(
    st.builds(
        ScheduleSettings,
        every=st.just("day"),
        day=st.just(1),
        time=clocks,
    ),
    st.builds(
        ScheduleSettings,
        every=st.just("week"),
        day=st.integers(0, 6),
        time=clocks,
    ),
    st.builds(
        ScheduleSettings,
        every=st.just("month"),
        day=st.integers(1, 28),
        time=clocks,
    ),
)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31), timezones=st.just(UTC)
)


@given(settings=settings_strategy, zone=st.sampled_from(ZONES), now=moments)
def test_now_lies_between_the_latest_and_the_next_due(
    settings: ScheduleSettings, zone: ZoneInfo, now: datetime
) -> None:
    """latest_due <= now < next_due, and nothing is scheduled between them (now given in the
    newsletter's zone, where Python would compare by wall clock, fold ignored)."""
    local_now = now.astimezone(zone)
    due = schedule.latest_due(settings, timezone=zone, now=local_now)
    upcoming = schedule.next_due(settings, timezone=zone, after=local_now)
    assert due.astimezone(UTC) <= now < upcoming.astimezone(UTC)
    after_due = schedule.next_due(settings, timezone=zone, after=due)
    assert after_due.astimezone(UTC) == upcoming.astimezone(UTC)
    before_next = schedule.previous_due(settings, timezone=zone, due=upcoming)
    assert before_next.astimezone(UTC) == due.astimezone(UTC)
    assert due.tzinfo is zone


@given(settings=settings_strategy, zone=st.sampled_from(ZONES), now=moments)
def test_a_due_falls_on_the_scheduled_day_at_the_scheduled_time(
    settings: ScheduleSettings, zone: ZoneInfo, now: datetime
) -> None:
    """A due is the configured day's wall time read with fold=0: the first of a repeated time,
    and a skipped one as long after the jump."""
    due = schedule.latest_due(settings, timezone=zone, now=now)
    assert _scheduled_day(settings, due)
    intended = datetime.combine(due.date(), settings.time, tzinfo=zone)
    assert due.astimezone(UTC) == intended.astimezone(UTC)


def _scheduled_day(settings: ScheduleSettings, due: datetime) -> bool:
    if settings.every == "week":
        return due.weekday() == settings.day
    if settings.every == "month":
        return due.day == settings.day
    return True


@given(
    day=st.integers(0, 6),
    clock=clocks,
    zone=st.sampled_from([NEW_YORK, LONDON]),
    start=moments,
)
def test_weekly_periods_are_contiguous_and_seven_local_days_long(
    day: int, clock: time, zone: ZoneInfo, start: datetime
) -> None:
    """Ten sends a week apart: each period starts where the last ended, 167, 168 or 169 hours."""
    settings = ScheduleSettings(every="week", day=day, time=clock)
    last_end = None
    now = start
    for _ in range(10):
        period = schedule.scheduled_period(settings, timezone=zone, now=now, last_sent_end=last_end)
        assert period is not None
        if last_end is not None:
            assert period.start.astimezone(UTC) == last_end.astimezone(UTC)
        hours = (period.end.astimezone(UTC) - period.start.astimezone(UTC)) / timedelta(hours=1)
        assert hours in {167, 168, 169}
        assert (period.end.date() - period.start.date()).days == 7
        last_end = period.end
        now = schedule.next_due(settings, timezone=zone, after=now)


@pytest.mark.parametrize(
    ("zone", "sunday", "hours"),
    [
        (NEW_YORK, (2026, 3, 8), 167),  # clocks forward at 02:00
        (NEW_YORK, (2026, 11, 1), 169),  # clocks back at 02:00
        (LONDON, (2026, 3, 29), 167),  # clocks forward at 01:00
        (LONDON, (2026, 10, 25), 169),  # clocks back at 02:00
    ],
)
def test_the_week_across_a_dst_change_is_seven_local_days(
    zone: ZoneInfo, sunday: tuple[int, int, int], hours: int
) -> None:
    """Sunday 08:00 to Sunday 08:00 local time, whatever the hours in between."""
    settings = ScheduleSettings(every="week", day=6, time=time(8))
    now = at(zone, *sunday, 9)
    period = schedule.scheduled_period(settings, timezone=zone, now=now, last_sent_end=None)
    assert period is not None
    assert (period.end.astimezone(UTC) - period.start.astimezone(UTC)) == timedelta(hours=hours)
    assert period.start.replace(tzinfo=None) == period.end.replace(tzinfo=None) - timedelta(days=7)


# -- the period a run sends ---------------------------------------------------------------------


def test_the_first_scheduled_period_is_one_interval() -> None:
    """With no issue sent yet, the period is the week up to the latest Saturday 08:00."""
    now = at(NEW_YORK, 2026, 11, 25, 12)
    period = schedule.scheduled_period(WEEKLY, timezone=NEW_YORK, now=now, last_sent_end=None)
    assert period is not None
    assert (period.start, period.end) == (
        at(NEW_YORK, 2026, 11, 14, 8),
        at(NEW_YORK, 2026, 11, 21, 8),
    )


def test_a_period_starts_where_the_last_sent_issue_ended() -> None:
    """Missed weeks (the machine was off) are caught up in one issue, from the last one sent."""
    now = at(NEW_YORK, 2026, 11, 25, 12)
    last_end = at(UTC, 2026, 10, 31, 12)
    period = schedule.scheduled_period(WEEKLY, timezone=NEW_YORK, now=now, last_sent_end=last_end)
    assert period is not None
    assert (period.start, period.end) == (last_end, at(NEW_YORK, 2026, 11, 21, 8))
    assert period.start.tzinfo is NEW_YORK


@pytest.mark.parametrize("sent_until", [(2026, 11, 21, 8), (2026, 11, 24, 9)])
def test_nothing_is_due_once_the_last_issue_reaches_the_latest_due(
    sent_until: tuple[int, ...],
) -> None:
    """Sent up to the due time, or beyond it by hand: None, so a run sends nothing twice."""
    now = at(NEW_YORK, 2026, 11, 25, 12)
    last_end = at(NEW_YORK, *sent_until)
    assert (
        schedule.scheduled_period(WEEKLY, timezone=NEW_YORK, now=now, last_sent_end=last_end)
        is None
    )


# -- the crontab line ---------------------------------------------------------------------------


def test_the_cron_line_runs_every_quarter_hour_at_the_scheduled_minute() -> None:
    """08:20 runs at 5, 20, 35 and 50 past each hour: exact in any machine zone."""
    settings = ScheduleSettings(time=time(8, 20))
    line = schedule.cron_line(
        settings,
        digest_path=Path("/opt/digest/bin/digest"),
        config_path=Path("/srv/news/digest.toml"),
        log_path=Path("/var/log/digest.log"),
    )
    assert line == (
        "5,20,35,50 * * * * /opt/digest/bin/digest --config /srv/news/digest.toml run"
        " --log-file /var/log/digest.log # digest: /srv/news/digest.toml"
    )


def test_paths_with_spaces_are_quoted_and_percent_signs_escaped() -> None:
    """sh sees each path as one word; cron turns no "%" into a newline."""
    config = Path("/home/ana/my news/100% weekly.toml")
    line = schedule.cron_line(
        WEEKLY, digest_path=Path("/home/ana/.local/bin/digest"), config_path=config, log_path=None
    )
    command = line.split(" * * * * ", 1)[1].replace("\\%", "%")
    assert shlex.split(command, comments=True) == [
        "/home/ana/.local/bin/digest",
        "--config",
        str(config),
        "run",
    ]
    assert "'/home/ana/my news/100\\% weekly.toml'" in line
    assert line.endswith(schedule.marker(config))


def test_a_path_with_a_newline_is_refused() -> None:
    """A crontab line is one line; such a path cannot be written into it."""
    with pytest.raises(ScheduleError, match="cannot hold the path"):
        schedule.cron_line(
            WEEKLY, digest_path=Path("/bin/digest"), config_path=Path("/a\nb.toml"), log_path=None
        )


def test_the_digest_executable_is_the_script_beside_python(tmp_path: Path) -> None:
    """Run as `python -m digest` or under a test runner, the venv's `digest` is the one."""
    (tmp_path / "digest").write_text("#!/bin/sh\n", encoding="utf-8")
    (tmp_path / "digest").chmod(0o755)
    python = str(tmp_path / "python")
    assert schedule.digest_executable("/usr/bin/pytest", python) == tmp_path / "digest"
    assert schedule.digest_executable(str(tmp_path / "digest"), "/usr/bin/python3") == (
        tmp_path / "digest"
    )
    with pytest.raises(ScheduleError, match="cannot find the installed `digest`"):
        schedule.digest_executable("-c", str(tmp_path / "elsewhere" / "python"))


def test_the_crontab_command_comes_from_the_environment() -> None:
    """$DIGEST_CRONTAB is split as sh words; unset or blank means `crontab`."""
    assert schedule.crontab_command({}) == ("crontab",)
    assert schedule.crontab_command({"DIGEST_CRONTAB": " "}) == ("crontab",)
    assert schedule.crontab_command({"DIGEST_CRONTAB": "sudo -u news crontab"}) == (
        "sudo",
        "-u",
        "news",
        "crontab",
    )


# -- installing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crontab:
    """A stand-in for the system's crontab program, keeping the table in a file."""

    command: tuple[str, ...]
    table: Path

    def lines(self) -> list[str]:
        return self.table.read_text(encoding="utf-8").splitlines()


def write_crontab_program(folder: Path, *, list_: str = "", install: str = "") -> Path:
    """An executable like `crontab`: `-l` prints the table (exit 1, "no crontab for root", when
    there is none) and `-` installs stdin; `list_`/`install` replace either with a failure."""
    folder.mkdir(parents=True, exist_ok=True)
    table = shlex.quote(str(folder / "table"))
    listing = list_ or (
        f'if [ -f {table} ]; then cat {table}; else echo "no crontab for root" >&2; exit 1; fi'
    )
    program = folder / "crontab"
    program.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f"  -l) {listing} ;;\n"
        f"  -) {install or f'cat > {table}'} ;;\n"
        '  *) echo "usage: crontab [-l | -]" >&2; exit 1 ;;\n'
        "esac\n",
        encoding="utf-8",
    )
    program.chmod(0o755)
    return program


@pytest.fixture
def crontab(tmp_path: Path) -> Crontab:
    program = write_crontab_program(tmp_path / "cron")
    return Crontab((str(program),), tmp_path / "cron" / "table")


LINE = schedule.cron_line(
    WEEKLY,
    digest_path=Path("/venv/bin/digest"),
    config_path=Path("/srv/news/digest.toml"),
    log_path=None,
)
MARK = schedule.marker(Path("/srv/news/digest.toml"))
OTHERS = (
    b"MAILTO=ana@example.org\n"
    b"# backups\n"
    b"0 3 * * * /usr/local/bin/backup --all  \r\n"
    b"*/5 * * * * /venv/bin/digest --config /srv/other/digest.toml run"
    b" # digest: /srv/other/digest.toml\n"
)


def test_installing_twice_leaves_one_line(crontab: Crontab) -> None:
    """With no crontab yet, the first install adds the line and the second changes nothing."""
    assert schedule.install(LINE, marker=MARK, crontab=crontab.command) is True
    assert schedule.install(LINE, marker=MARK, crontab=crontab.command) is False
    assert crontab.lines() == [LINE]


def test_installing_keeps_every_other_line_byte_for_byte(crontab: Crontab) -> None:
    """Comments, variables, CRLF and another config's digest line stay as they were."""
    crontab.table.write_bytes(OTHERS)
    schedule.install(LINE, marker=MARK, crontab=crontab.command)
    assert crontab.table.read_bytes() == OTHERS + LINE.encode() + b"\n"


def test_a_changed_schedule_replaces_the_old_line(crontab: Crontab) -> None:
    """Installing again after [schedule] changed updates this config's line, keeping one."""
    crontab.table.write_bytes(OTHERS)
    schedule.install(LINE, marker=MARK, crontab=crontab.command)
    newer = LINE.replace("0,15,30,45", "5,20,35,50")
    assert schedule.install(newer, marker=MARK, crontab=crontab.command) is True
    assert crontab.table.read_bytes() == OTHERS + newer.encode() + b"\n"


def test_a_last_line_without_newline_gets_one_before_ours(crontab: Crontab) -> None:
    """cron ignores an unterminated last line, so the line before ours is ended first."""
    crontab.table.write_bytes(b"0 3 * * * backup")
    schedule.install(LINE, marker=MARK, crontab=crontab.command)
    assert crontab.lines() == ["0 3 * * * backup", LINE]


def test_uninstalling_removes_only_this_configs_line(crontab: Crontab) -> None:
    """The other config's digest line and everything else stay; a second uninstall finds none."""
    crontab.table.write_bytes(OTHERS)
    schedule.install(LINE, marker=MARK, crontab=crontab.command)
    assert schedule.uninstall(MARK, crontab=crontab.command) is True
    assert crontab.table.read_bytes() == OTHERS
    assert schedule.uninstall(MARK, crontab=crontab.command) is False


def test_uninstalling_without_a_crontab_changes_nothing(crontab: Crontab) -> None:
    """ "no crontab for root" is an empty table, not an error."""
    assert schedule.uninstall(MARK, crontab=crontab.command) is False
    assert not crontab.table.exists()


def test_a_refused_write_is_a_schedule_error(tmp_path: Path) -> None:
    """crontab's own complaint is the message, with what to do."""
    program = write_crontab_program(
        tmp_path, install='echo "crontab: your UID isn\'t in the passwd file." >&2; exit 1'
    )
    with pytest.raises(ScheduleError) as caught:
        schedule.install(LINE, marker=MARK, crontab=(str(program),))
    message = str(caught.value)
    assert "refused the new crontab: crontab: your UID isn't in the passwd file." in message
    assert "hint: " in message and "\n" not in message


def test_a_crontab_the_user_may_not_use_is_a_schedule_error(tmp_path: Path) -> None:
    """A failing `crontab -l` is not taken for an empty table: nothing is written."""
    program = write_crontab_program(
        tmp_path,
        list_='echo "You (ana) are not allowed to use this program (crontab)" >&2; exit 1',
    )
    with pytest.raises(ScheduleError, match=r"-l` failed: You \(ana\) are not allowed"):
        schedule.install(LINE, marker=MARK, crontab=(str(program),))
    assert not (tmp_path / "table").exists()


def test_a_missing_crontab_program_is_a_schedule_error(tmp_path: Path) -> None:
    """No cron installed: one line that says so and how to go on."""
    with pytest.raises(ScheduleError, match="cannot run") as caught:
        schedule.uninstall(MARK, crontab=(str(tmp_path / "crontab"),))
    assert "apt install cron" in str(caught.value)


# -- the command ----------------------------------------------------------------------------------


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def project(tmp_path: Path, crontab: Crontab, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A starter project in a folder with a space, and $DIGEST_CRONTAB at the stand-in."""
    monkeypatch.setenv("DIGEST_CRONTAB", shlex.join(crontab.command))
    result = run("init", tmp_path / "my news")
    assert result.exit_code == 0, result.output
    return tmp_path / "my news" / "digest.toml"


def test_schedule_prints_the_line_and_changes_no_crontab(project: Path, crontab: Crontab) -> None:
    """Without flags the command prints the marked line for the installed digest and the config."""
    result = run("--config", project, "schedule")
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith("0,15,30,45 * * * * ")
    words = shlex.split(line.split(" * * * * ", 1)[1], comments=True)
    assert words == [str(Path(sys.executable).parent / "digest"), "--config", str(project), "run"]
    assert line.endswith(f"# digest: {project}")
    assert not crontab.table.exists()


def test_schedule_install_twice_leaves_one_crontab_line(project: Path, crontab: Crontab) -> None:
    """The second install says the line is already there; the crontab holds it once."""
    first = run("--config", project, "schedule", "--install", "--log-file", "digest.log")
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("added to the crontab: ")
    assert "next scheduled time: Sat " in first.stdout
    again = run("--config", project, "schedule", "--install", "--log-file", "digest.log")
    assert again.stdout.startswith("already in the crontab: ")
    [line] = crontab.lines()
    assert f" run --log-file {Path('digest.log').resolve()} # digest: " in line


def test_schedule_uninstall_removes_the_line(project: Path, crontab: Crontab) -> None:
    """--uninstall takes this config's line out, and says so; again, it finds nothing."""
    crontab.table.write_text("MAILTO=ana@example.org\n", encoding="utf-8")
    run("--config", project, "schedule", "--install")
    removed = run("--config", project, "schedule", "--uninstall")
    assert removed.exit_code == 0, removed.output
    assert removed.stdout.startswith("removed the digest line")
    assert crontab.lines() == ["MAILTO=ana@example.org"]
    again = run("--config", project, "schedule", "--uninstall")
    assert "nothing changed" in again.stdout


def test_schedule_reports_a_failing_crontab_as_one_line(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crontab that refuses the table: exit 1 and one `error:` line."""
    program = write_crontab_program(tmp_path / "refusing", install="echo 'no space' >&2; exit 1")
    monkeypatch.setenv("DIGEST_CRONTAB", str(program))
    result = run("--config", project, "schedule", "--install")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "no space" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_install_and_uninstall_together_is_a_usage_error(project: Path) -> None:
    """The two flags contradict each other: exit 2 and nothing changes."""
    result = run("--config", project, "schedule", "--install", "--uninstall")
    assert result.exit_code == 2
    assert "exclude each other" in result.stderr
