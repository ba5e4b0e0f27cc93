"""The `digest` command line: parse arguments, call the pipeline, print, map errors to exit codes.

Exit codes: 0 done; 1 a problem the message explains (config, sources, archive, selection);
2 a usage error (a bad option or argument); 3 a send left copies failed or unknown; 70 a bug
in digest; 130 interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import click
import rich.console
import rich.progress

from digest import (
    history,
    pipeline,
    preview,
    project,
    schedule,
    selector,
    subscribers,
    tokens,
    web,
)
from digest.config import Config, is_loopback, language_warning, load_config
from digest.errors import (
    ConfigError,
    DigestError,
    PartialDelivery,
    SendInterrupted,
    SubscriberFileError,
    TokenError,
    echoed,
)
from digest.models import SubscriberStatus, email_key

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App:
    """What every command shares: the global options and, loaded on first use, the config."""

    config_path: Path | None
    env_file: Path | None
    verbose: bool
    quiet: bool
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path, env_file=self.env_file)
            untranslated = language_warning(self._config)
            if untranslated is not None:
                self.warn(untranslated)
        return self._config

    @property
    def now(self) -> datetime:
        return datetime.now(self.config.newsletter.timezone)

    def info(self, line: str) -> None:
        if not self.quiet:
            click.echo(line)

    def warn(self, line: str) -> None:
        if not self.quiet:
            click.echo(f"warning: {line}", err=True)


class DigestGroup(click.Group):
    """Shows a DigestError as one line (with the traceback under -v) and exits with its code;
    Ctrl-C and SIGTERM exit 130 with one line, before click turns them into "Aborted!"."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _terminate_as_interrupt():
                return super().invoke(ctx)
        except KeyboardInterrupt as interrupt:
            if ctx.params.get("verbose"):
                traceback.print_exception(interrupt)
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except DigestError as err:
            if ctx.params.get("verbose"):
                traceback.print_exception(err)
            label = "interrupted" if isinstance(err, SendInterrupted) else "error"
            click.echo(f"{label}: {err}", err=True)
            ctx.exit(err.exit_code)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a service manager's or `kill`'s stop) does what Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():  # signals reach only main
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


class DateParam(click.ParamType[date, str]):
    """A day within FIRST_DAY..LAST_DAY: a period's ends, a day and a time zone away from
    them, and MAX_DAYS before them stay within what datetime holds (years 1 to 9999)."""

    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            day = date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date like 2026-11-22", param, ctx)
        if not FIRST_DAY <= day <= LAST_DAY:
            self.fail(f"{value!r} is not between {FIRST_DAY} and {LAST_DAY}", param, ctx)
        return day


FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(9998, 12, 31)
MAX_DAYS = 36525  # a century


class HostParam(click.ParamType[str, str]):
    """An address or a name this machine resolves: waitress would fail on anything else with
    a ValueError, after the command started."""

    name = "HOST"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        host = str(value)
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except (OSError, UnicodeError) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            self.fail(
                f"{host!r} is not an address or a name this machine resolves ({reason})", param, ctx
            )
        return host


class RateParam(click.FloatRange):
    """Messages per second: a positive number; nan and inf pass a range check but are no rate."""

    def __init__(self) -> None:
        super().__init__(min=0, min_open=True)

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        rate = float(super().convert(value, param, ctx))
        if not math.isfinite(rate):
            self.fail(f"{value!r} is not a number of messages per second, such as 10", param, ctx)
        return rate


def period_options(command: F) -> F:
    """--since/--until/--days, passed to the command as one PeriodRequest."""

    @click.option("--since", type=DateParam(), help="First day of the period (inclusive).")
    @click.option("--until", type=DateParam(), help="Last day of the period (inclusive).")
    @click.option(
        "--days",
        type=click.IntRange(min=1, max=MAX_DAYS),
        help="The N days up to --until, or to now.",
    )
    @functools.wraps(command)
    def wrapper(
        *args: Any, since: date | None, until: date | None, days: int | None, **kw: Any
    ) -> Any:
        return command(*args, request=pipeline.PeriodRequest(since, until, days), **kw)

    return wrapper  # type: ignore[return-value]


def issue_options(command: F) -> F:
    """--feature and --note: what an editor adds to an issue, for build and preview alike."""
    command = click.option(
        "--note",
        "note_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The editor's note, a plain-text file (default: [email] note).",
    )(command)
    return click.option("--feature", "feature_url", metavar="URL", help="Put this article on top.")(
        command
    )


@click.group(cls=DigestGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The digest.toml to use (default: $DIGEST_CONFIG, else ./digest.toml).",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read secrets from this file instead of the .env beside the config.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks with errors.")
@click.option("-q", "--quiet", is_flag=True, help="Print only results and errors.")
@click.version_option(package_name="digest")
@click.pass_context
def cli(
    ctx: click.Context, config_path: Path | None, env_file: Path | None, verbose: bool, quiet: bool
) -> None:
    """Build a publication's weekly email digest from its feeds.

    \b
    Start a project and build its first issue (HTML, text and .eml in out/):
      digest init my-digest && cd my-digest
      digest build --since 2026-11-16 --until 2026-11-22
    """
    ctx.obj = App(config_path, env_file, verbose, quiet)


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.pass_obj
def init(app: App, directory: Path) -> None:
    """Write a working starter project (config, example feeds, subscribers) into DIRECTORY.

    Nothing is overwritten: if any file is already there, nothing is written.

    \b
      digest init my-digest
    """
    for path in project.init_project(directory):
        app.info(f"wrote {path}")
    app.info(f"next: cd {directory} && digest build")


@cli.command()
@click.pass_obj
def collect(app: App) -> None:
    """Fetch every source and store new and updated articles in the archive.

    Prints one line per source. A source that fails is a warning and the others still count;
    the command fails only when every source failed.

    \b
      digest collect
    """
    report = pipeline.collect(app.config, now=app.now)
    show_collect_report(app, report)
    report.raise_if_all_failed()


@cli.command()
@period_options
@issue_options
@click.option("--offline", is_flag=True, help="Use the archive as it is; fetch nothing.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json", "html", "text", "eml"]),
    help="Print this one to stdout instead of writing files (json: the selection).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the files into this folder (default: out/ beside the config).",
)
@click.option(
    "--for",
    "recipient",
    metavar="EMAIL",
    help="Render the copy this subscriber gets (default: a made-up reader).",
)
@click.pass_obj
def build(
    app: App,
    request: pipeline.PeriodRequest,
    feature_url: str | None,
    offline: bool,
    output_format: str | None,
    out_dir: Path | None,
    recipient: str | None,
    note_path: Path | None,
) -> None:
    """Select this period's articles and write the issue as HTML, text and .eml.

    Collects first unless --offline, then writes out/ISSUE.html, out/ISSUE.txt and out/ISSUE.eml
    (the complete message, as one reader receives it) and prints their paths. The same archive
    and period always give the same selection.

    \b
      digest build --since 2026-11-16 --until 2026-11-22
      digest build --format json --offline
      digest build --for ana@example.org --note note.txt
    """
    config, now = app.config, app.now
    if not offline:
        report = pipeline.collect(config, now=now)
        show_collect_report(app, report, summary=False)
        report.raise_if_all_failed()
    issue = pipeline.select(config, request, now=now, feature_url=feature_url)
    if not issue.articles:
        zone = config.newsletter.timezone  # a recorded issue comes back from the archive in UTC
        app.warn(
            f"no articles between {issue.period.start.astimezone(zone):%Y-%m-%d %H:%M} and "
            f"{issue.period.end.astimezone(zone):%Y-%m-%d %H:%M}; try another period or "
            "`digest collect`"
        )
    if output_format == "json":
        click.echo(selector.issue_to_json(issue, timezone=config.newsletter.timezone), nl=False)
        return
    copy = pipeline.sample(config, issue, now=now, recipient=recipient, note_path=note_path)
    for warning in copy.reader.warnings:
        app.warn(warning)
    if output_format == "html":
        click.echo(copy.email.html, nl=False)
    elif output_format == "text":
        click.echo(copy.email.text, nl=False)
    elif output_format == "eml":
        click.echo(copy.eml, nl=False)
    else:
        paths = pipeline.write_sample(copy, out_dir or pipeline.default_out_dir(config))
        click.echo("\n".join(str(path) for path in paths))


@cli.command()
@click.option(
    "--host",
    type=HostParam(),
    default=web.DEFAULT_HOST,
    show_default=True,
    help="Address to listen on.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=web.DEFAULT_PORT,
    show_default=True,
    help="TCP port; 0 picks a free one.",
)
@click.pass_obj
def serve(app: App, host: str, port: int) -> None:
    """Serve the readers' unsubscribe and preferences pages, the links in every issue.

    Put it behind an HTTPS reverse proxy at [newsletter] public_url; links are signed with
    DIGEST_SECRET. Runs until Ctrl-C.

    \b
      digest serve --port 8026
    """
    if not is_loopback(host):
        app.warn(
            f"listening on {host}, beyond this machine: readers' links carry their token, "
            "so serve them only over HTTPS, through a reverse proxy"
        )
    web.serve(app.config, host=host, port=port, announce=app.info)


@cli.command(name="preview")
@period_options
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=preview.DEFAULT_PORT,
    show_default=True,
    help="TCP port on 127.0.0.1; 0 picks a free one.",
)
@click.option("--no-open", is_flag=True, help="Only print the address; open no browser.")
@issue_options
@click.pass_obj
def preview_issue(
    app: App,
    request: pipeline.PeriodRequest,
    port: int,
    no_open: bool,
    feature_url: str | None,
    note_path: Path | None,
) -> None:
    """Show the issue in a browser as readers will get it, reloading as you edit.

    Serves http://127.0.0.1:8025/ on this machine only: the inbox line (from, subject,
    preheader), the email at desktop and phone width, its plain text, and any subscriber's copy.
    Uses the archive as it is (run `digest collect` first); the page reloads by itself when a
    template, the config, the note, the subscribers or the archive change, and shows a broken
    template's error until it is fixed. Runs until Ctrl-C.

    \b
      digest preview
      digest preview --since 2026-11-16 --until 2026-11-22 --no-open
    """
    options = preview.IssueOptions(request=request, feature_url=feature_url, note_path=note_path)
    preview.serve(
        app.config,
        options,
        port=port,
        open_browser=not no_open,
        env_file=app.env_file,
        announce=click.echo,
    )


@cli.command()
@period_options
@click.option("--issue", "issue_id", metavar="ID", help="Resume a recorded issue by its id.")
@click.option("--dry-run", is_flag=True, help="Compose every copy and print one; send nothing.")
@click.option(
    "--to",
    "test_addresses",
    multiple=True,
    metavar="ADDR",
    help="Send only a test copy to ADDR (repeatable); not recorded as the issue's send.",
)
@click.option(
    "--limit", type=click.IntRange(1, sys.maxsize), help="Send at most N messages this run."
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="SMTP connections at once (default: [send] concurrency, 4).",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    help="Processes sharing them (default: [send] processes, one per two CPUs).",
)
@click.option(
    "--rate",
    type=RateParam(),
    help="At most R messages/s (default: [send] rate, none).",
)
@click.option("--retry-unknown", is_flag=True, help="Resend copies an earlier run left unknown.")
@click.option("--include-new", is_flag=True, help="Also send to readers added since it began.")
@click.option("--allow-empty", is_flag=True, help="Send an issue with no articles too.")
@click.pass_obj
def send(
    app: App,
    request: pipeline.PeriodRequest,
    issue_id: str | None,
    dry_run: bool,
    test_addresses: tuple[str, ...],
    limit: int | None,
    concurrency: int | None,
    processes: int | None,
    rate: float | None,
    retry_unknown: bool,
    include_new: bool,
    allow_empty: bool,
) -> None:
    """Send the period's issue to every subscribed reader, exactly once.

    Uses the archive as it is (run `digest collect` first). Delivers over SMTP with the SMTP_*
    settings, or into the outbox/ Maildir beside the config when SMTP_HOST is unset. Running it
    again resumes an interrupted send: the same content, only to those not yet sent. An issue
    with no articles is refused unless --allow-empty. Exits 3 when some copies failed or their
    fate is unknown.

    \b
      digest send --since 2026-11-16 --until 2026-11-22 --to editor@example.org
      digest send --since 2026-11-16 --until 2026-11-22 --dry-run
      digest send --since 2026-11-16 --until 2026-11-22
    """
    if test_addresses:
        outcome = pipeline.send_test_copies(
            app.config,
            request,
            test_addresses,
            now=app.now,
            issue_id=issue_id,
            allow_empty=allow_empty,
        )
        show_send_outcome(app, outcome, what="test copies")
        return
    options = pipeline.SendOptions(
        concurrency=concurrency,
        processes=processes,
        rate=rate,
        retry_unknown=retry_unknown,
        include_new=include_new,
        limit=limit,
        dry_run=dry_run,
        allow_empty=allow_empty,
        issue_id=issue_id,
    )
    with send_progress(app) as progress:
        outcome = pipeline.send_issue(app.config, request, options, now=app.now, progress=progress)
    report = outcome.report
    if dry_run:
        if outcome.sample is not None:
            click.echo(outcome.sample, nl=False)  # as sent, like `build --format eml`
        click.echo(
            f"{outcome.issue_id}: dry run: {outcome.composed} composed, {report.skipped} skipped, "
            "nothing sent"
        )
        return
    if outcome.left_out:
        app.warn(
            f"left out: {outcome.left_out:,} reader{'s' * (outcome.left_out != 1)} added since "
            f"{outcome.issue_id} began; run it again with --include-new to send them theirs"
        )
    if rate is not None and outcome.outbox is not None:
        app.warn("--rate applies to SMTP only: the outbox was written as fast as the disk took it")
    show_send_outcome(app, outcome)


def show_send_outcome(app: App, outcome: pipeline.SendOutcome, *, what: str = "") -> None:
    """The final summary line; exit 3 when some copies failed or may not have arrived."""
    report = outcome.report
    _warn_unreadable(app, outcome.unreadable)
    if outcome.outbox is not None:
        app.info(f"SMTP_HOST is unset: messages went to the Maildir {outcome.outbox}")
    click.echo(
        f"{outcome.issue_id}{': ' + what if what else ''}: {report.sent:,} sent, "
        f"{report.failed:,} failed, {report.unknown:,} unknown, {report.skipped:,} skipped "
        f"in {report.elapsed:.1f}s ({report.per_second:.1f} messages/s"
        + (f", {outcome.processes} processes)" if outcome.processes > 1 else ")")
    )
    for _, line in not_sent_lines(outcome, every=app.verbose):
        click.echo(line, err=True)
    if report.failed or report.unknown:
        raise PartialDelivery(
            f"{report.failed:,} failed, {report.unknown:,} unknown",
            hint="`digest issues show "
            f"{outcome.issue_id}` lists them; --retry-unknown resends unknown copies",
        )


LOG_EVERY = 1000  # messages between progress lines when stderr is not a terminal
NAMED = 20  # readers a summary names, unless -v


def not_sent_lines(outcome: pipeline.SendOutcome, *, every: bool = False) -> list[tuple[str, str]]:
    """("skipped", a line naming the readers skipped) and ("failed", one naming those failed),
    each with the reason: the first NAMED of each, or `every` one."""
    lines = []
    for verb, readers in (("skipped", outcome.skipped_readers), ("failed", outcome.failed_readers)):
        if not readers:
            continue
        shown = readers if every else readers[:NAMED]
        named = ", ".join(f"{_shown_address(address)} ({why})" for address, why in shown)
        more = len(readers) - len(shown)
        rest = f", and {more:,} more (-v names every one)" if more else ""
        noun = "reader" if len(readers) == 1 else "readers"
        lines.append((verb, f"{verb} {len(readers):,} {noun}: {named}{rest}"))
    return lines


def _shown_address(address: str) -> str:
    return echoed(address, quoted=not address.isprintable())


@contextlib.contextmanager
def send_progress(app: App) -> Iterator[Callable[[pipeline.SendProgress], None] | None]:
    """A progress bar on a terminal; otherwise (cron, a pipe) a line per 1,000 messages, the
    final summary being the last word."""
    if app.quiet:
        yield None
        return
    if not sys.stderr.isatty():
        logged = 0

        def log(progress: pipeline.SendProgress) -> None:
            nonlocal logged
            report = progress.report
            done = report.sent + report.failed + report.unknown
            if done // LOG_EVERY > logged // LOG_EVERY:
                click.echo(
                    f"{progress.issue_id}: {done:,}/{progress.total:,} done, {report.sent:,} "
                    f"sent, {report.failed:,} failed, {report.unknown:,} unknown, "
                    f"{report.per_second:.0f} messages/s",
                    err=True,
                )
            logged = done

        yield log
        return
    bar = rich.progress.Progress(
        rich.progress.TextColumn("{task.description}"),
        rich.progress.BarColumn(),
        rich.progress.MofNCompleteColumn(),
        rich.progress.TextColumn("{task.fields[tally]}"),
        rich.progress.TimeRemainingColumn(),
        console=rich.console.Console(stderr=True),
    )
    task: rich.progress.TaskID | None = None

    def show(progress: pipeline.SendProgress) -> None:
        nonlocal task
        report = progress.report
        if task is None:
            task = bar.add_task(progress.issue_id, total=progress.total, tally="")
        bar.update(
            task,
            completed=report.sent + report.failed + report.unknown,
            tally=f"{report.sent:,} sent · {report.failed:,} failed · {report.per_second:.0f}/s",
        )

    with bar:
        yield show


@cli.command(name="doctor")
@click.pass_obj
def check_setup(app: App) -> None:
    """Check the setup before a send: one line per item, OK, WARN or FAIL, with what to do.

    Checks the config, that every source is reachable and readable, that the templates render,
    the subscriber list, the SMTP relay (EHLO, STARTTLS, login, then QUIT: nothing is sent),
    the DKIM key, its domain and its DNS record, DIGEST_SECRET, and that unsubscribe links are
    https. Writes nothing. Exits 1 if any check failed.

    \b
      digest doctor
    """
    # Imported here: its DNS and crypto libraries are half of every other command's start-up.
    from digest import doctor

    try:
        checks = doctor.examine(app.config, now=app.now)
    except DigestError as err:  # the config: every other check needs it
        checks = iter([doctor.failed("config", err)])
    failures = total = 0
    for check in checks:
        click.echo(f"{check.status.upper():<5} {check.name}: {check.message}")
        if check.hint:
            click.echo(f"      → {check.hint}")
        failures, total = failures + (check.status == "fail"), total + 1
    if failures:
        raise DigestError(f"{failures} of {total} check(s) failed")


@cli.command(name="schedule")
@click.option("--install", is_flag=True, help="Add the line to your crontab, once.")
@click.option("--uninstall", is_flag=True, help="Remove this config's line from your crontab.")
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Have each run log to this file (`digest run --log-file`).",
)
@click.pass_obj
def schedule_runs(app: App, install: bool, uninstall: bool, log_file: Path | None) -> None:
    """Print the crontab line that runs `digest run` on [schedule], or install it.

    The line runs `digest run` every quarter hour, which sends only when an issue is due in
    the newsletter's time zone, so the machine's zone and DST do not matter. It is marked with
    the config's path: --install adds it once (replacing an older one for the same config) and
    --uninstall removes it; every other crontab line is kept. $DIGEST_CRONTAB names another
    crontab program.

    \b
      digest schedule
      digest schedule --install --log-file /var/log/digest.log
    """
    if install and uninstall:
        raise click.UsageError("--install and --uninstall exclude each other")
    config = app.config
    crontab = schedule.crontab_command(config.env)
    mark = schedule.marker(config.path)
    if uninstall:
        if schedule.uninstall(mark, crontab=crontab):
            click.echo(f"removed the digest line for {config.path} from the crontab")
        else:
            click.echo(f"no digest line for {config.path} in the crontab; nothing changed")
        return
    line = schedule.cron_line(
        config.schedule,
        # The installed script, never the python running it: cron has no venv on its PATH.
        digest_path=schedule.digest_executable(sys.argv[0], sys.executable),
        config_path=config.path,
        log_path=None if log_file is None else log_file.resolve(),
    )
    if not install:
        click.echo(line)
        return
    added = schedule.install(line, marker=mark, crontab=crontab)
    click.echo(f"{'added to' if added else 'already in'} the crontab: {line}")
    zone = config.newsletter.timezone
    due = schedule.next_due(config.schedule, timezone=zone, after=app.now)
    app.info(
        f"next scheduled time: {due:%a %Y-%m-%d %H:%M %Z} "
        "(a period already due and not yet sent goes out within a quarter hour)"
    )


# -- digest issues, digest archive ----------------------------------------------------------------


@cli.group(name="issues", invoke_without_command=True)
@click.pass_context
def issues_group(ctx: click.Context) -> None:
    """List the recorded issues: their period, articles, and copies sent, failed and unknown.

    An issue is recorded when its send begins; "sent at" is when no copy was left pending
    (until then it says how many are, and whether a send is under way or was interrupted).
    `digest issues show ID` prints one issue in full.

    \b
      digest issues
      digest issues show 2026-W47
    """
    if ctx.invoked_subcommand is not None:
        return
    app: App = ctx.obj
    records = history.list_issues(app.config)
    if not records:
        click.echo("no issues yet")
        return
    zone = app.config.newsletter.timezone
    # Only an unsent issue needs it: asking takes the send lock for a moment.
    unsent = (
        ""
        if all(r.sent_at for r in records)
        else ("sending" if pipeline.send_in_progress(app.config) else "interrupted")
    )
    rows = [("id", "period", "articles", "sent", "failed", "unknown", "sent at")]
    rows += [
        (
            r.id,
            history.days(r.period, zone),
            str(r.articles),
            str(r.counts.sent),
            str(r.counts.failed),
            str(r.counts.unknown),
            history.minute(r.sent_at, zone)
            if r.sent_at
            else f"{unsent}, {r.counts.pending + r.counts.sending:,} pending",
        )
        for r in records
    ]
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(width) if 2 <= n <= 5 else cell.ljust(width)
            for n, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        click.echo("  ".join(cells).rstrip())


@issues_group.command(name="show")
@click.argument("issue_id", metavar="ID")
@click.pass_obj
def show_issue(app: App, issue_id: str) -> None:
    """Print one issue's articles by section, and its failed copies.

    Also when it was recorded and sent, its copies by state, and for each copy that failed or
    whose fate is unknown, the address and the server's reply.

    \b
      digest issues show 2026-W47
    """
    detail = history.issue_detail(app.config, issue_id)
    record, issue, zone = detail.record, detail.issue, app.config.newsletter.timezone
    counts = record.counts
    lines = [
        f"{record.id}: {history.days(record.period, zone)}, {record.articles} articles",
        f"recorded  {history.minute(record.created_at, zone)}",
        f"sent at   {history.minute(record.sent_at, zone) if record.sent_at else 'not yet'}",
        f"copies    {counts.sent} sent, {counts.failed} failed, {counts.unknown} unknown, "
        f"{counts.pending} pending",
    ]
    placed = [("Top story", (issue.featured,))] if issue.featured else []
    for name, articles in placed + [(s.name, s.articles) for s in issue.sections]:
        lines += ["", name]
        lines += [f"  - {a.title}\n    {a.url}" for a in articles]
    if detail.problems:
        lines += ["", "failed or unknown copies:"]
    for row in detail.problems:
        reply = " ".join(f"{row.reply_code or ''} {row.reply_text or ''}".split()) or "no reply"
        lines.append(f"  {row.state.value:<8} {row.address}  {reply}")
    click.echo("\n".join(lines))


@cli.command(name="archive")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.pass_obj
def web_archive(app: App, directory: Path | None) -> None:
    """Write the sent issues as web pages, for the "view in browser" links.

    Writes DIRECTORY/ISSUE_ID.html for each sent issue, as it was mailed but with nothing
    personal (no address, name or reader's links), and DIRECTORY/index.html listing them,
    newest first. Default DIRECTORY: archive/ beside the config. Host the folder at
    [newsletter] archive_url; running it again rewrites the same files (each atomically).

    \b
      digest archive
      digest archive /var/www/digest
    """
    config = app.config
    paths = history.write_web_archive(config, directory or history.default_archive_dir(config))
    click.echo("\n".join(str(path) for path in paths))


@cli.command(name="run")
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append one line per event to this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Write log lines as JSON objects.")
@click.pass_obj
def run_scheduled(app: App, log_file: Path | None, as_json: bool) -> None:
    """Collect and send the issue the schedule says is due: for cron, at any frequency.

    Sends each period's issue once ([schedule] in the config): an interrupted send is resumed,
    a period already sent or with fewer than min_articles new articles is left alone, and a
    run that finds another in progress exits at once. Silent unless something needs a look
    (on stderr, which cron mails) or -v. Exits 3 when some copies failed or are unknown.

    \b
      digest run --log-file /var/log/digest.log
      digest schedule --install
    """
    log = RunLog(verbose=app.verbose, path=log_file, as_json=as_json)
    try:
        with send_progress(app) if app.verbose else contextlib.nullcontext() as progress:
            outcome = pipeline.run_scheduled(app.config, now=app.now, progress=progress)
    except DigestError as err:  # the group prints it; the log file keeps it too
        log.write("error", "failed", str(err))
        raise
    if outcome.collected is not None:
        for item in outcome.collected.reports:
            if item.result.error is not None:
                log.event("warning", "source failed", f"{item.result.source}: {item.result.error}")
    for sent in outcome.sends:
        report = sent.report
        if sent.unreadable:  # those readers got nothing: cron mails the warning
            log.event(
                "warning",
                "unreadable",
                unreadable_line(app.config.subscribers_path, sent.unreadable),
            )
        if sent.outbox is not None:  # fine for trying digest out; from cron, a forgotten setting
            log.event("warning", "outbox", f"SMTP_HOST is unset: messages went to {sent.outbox}")
        log.event(
            "warning" if report.failed or report.unknown else "info",
            "sent",
            f"{sent.issue_id}: {report.sent:,} sent, {report.failed:,} failed, "
            f"{report.unknown:,} unknown, {report.skipped:,} skipped in {report.elapsed:.1f}s",
            issue=sent.issue_id,
            sent=report.sent,
            failed=report.failed,
            unknown=report.unknown,
            skipped=report.skipped,
        )
        # A failed copy needs a look; a reader skipped (nothing in their sections, most often)
        # is shown with -v and kept in the log file.
        for verb, line in not_sent_lines(sent, every=app.verbose):
            level = "warning" if verb == "failed" else "info"
            log.event(level, verb, f"{sent.issue_id}: {line}", issue=sent.issue_id)
    if outcome.status != "sent":
        log.event("info", outcome.status, outcome.reason, issue=outcome.issue_id)
    failed = sum(s.report.failed for s in outcome.sends)
    unknown = sum(s.report.unknown for s in outcome.sends)
    if failed or unknown:
        raise PartialDelivery(
            f"{failed} failed, {unknown} unknown",
            hint="`digest issues show ISSUE` lists them; --retry-unknown with digest send",
        )


@dataclass
class RunLog:
    """`digest run`'s events: problems on stderr, the rest only with -v, all in the log file."""

    verbose: bool
    path: Path | None
    as_json: bool

    def event(self, level: str, event: str, message: str, **fields: object) -> None:
        if level != "info":
            click.echo(f"{level}: {message}", err=True)
        elif self.verbose:
            click.echo(message)
        self.write(level, event, message, **fields)

    def write(self, level: str, event: str, message: str, **fields: object) -> None:
        """The log file's line for the event, if there is a log file."""
        if self.path is None:
            return
        moment = datetime.now().astimezone().isoformat(timespec="seconds")
        if self.as_json:
            record = {"time": moment, "level": level, "event": event, "message": message}
            line = json.dumps(record | {k: v for k, v in fields.items() if v is not None})
        else:
            line = f"{moment} {level} {event}: {message}"
        try:
            with self.path.open("a", encoding="utf-8") as file:
                file.write(line + "\n")
        except OSError as err:
            raise ConfigError(f"cannot write the log file: {err}", where=str(self.path)) from err


# -- digest subscribers ... -----------------------------------------------------------------------

STATUS_CHOICE = click.Choice([status.value for status in SubscriberStatus])


@cli.group(name="subscribers")
def subscribers_group() -> None:
    """Keep the subscriber list: list, count, add, unsubscribe, check, import and export.

    The list is the CSV file [subscribers] file (subscribers.csv). Reading streams it, so a
    million rows are fine; each change holds subscribers.csv.lock, is written atomically and
    keeps the previous version as subscribers.csv.bak.

    \b
      digest subscribers add ana@example.org --first-name Ana --sections "Labor;Climate"
      digest subscribers import mailchimp-export.csv --dry-run
    """


def _subscriber_file(app: App) -> subscribers.SubscriberFile:
    return subscribers.SubscriberFile(app.config.subscribers_path)


def _section_names(app: App) -> list[str]:
    return [section.name for section in app.config.sections]


def _warn_unreadable(app: App, lines: Sequence[int]) -> None:
    if lines:
        app.warn(unreadable_line(app.config.subscribers_path, lines))


def unreadable_line(path: Path, lines: Sequence[int]) -> str:
    """The warning for the list's rows that cannot be read (copied through as they are)."""
    shown = ", ".join(str(line) for line in lines[:5]) + (", ..." if len(lines) > 5 else "")
    return (
        f"{path.name}: left out {len(lines)} row(s) that cannot be read (line {shown}); "
        "`digest subscribers validate` says why"
    )


@subscribers_group.command(name="list")
@click.option("--status", type=STATUS_CHOICE, help="Only subscribers with this status.")
@click.option(
    "--section", metavar="NAME", help="Only those who get this section (chosen, or all sections)."
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="How to print them.",
)
@click.pass_obj
def list_subscribers(app: App, status: str | None, section: str | None, output_format: str) -> None:
    """Print the subscribers, in file order, optionally only some.

    \b
      digest subscribers list --status subscribed --section Labor
    """
    file = _subscriber_file(app)
    wanted = subscribers.parse_sections(section, _section_names(app)) if section else ()
    unreadable: list[int] = []
    chosen = subscribers.select(
        subscribers.readable(file.rows(), unreadable),
        status=SubscriberStatus(status) if status else None,
        section=wanted[0] if wanted else None,
    )
    out = sys.stdout
    if output_format == "csv":
        subscribers.export_csv(chosen, out, extra_columns=file.extra_columns())
    elif output_format == "json":
        subscribers.export_json(chosen, out)
    else:
        click.echo(f"{'email':<38} {'name':<24} {'status':<12} {'lang':<5} sections")
        for subscriber in chosen:
            name = f"{subscriber.first_name} {subscriber.last_name}".strip()
            sections = "; ".join(subscriber.sections) or "(all)"
            click.echo(
                f"{subscriber.email:<38} {name:<24} {subscriber.status.value:<12} "
                f"{subscriber.language or '-':<5} {sections}"
            )
    _warn_unreadable(app, unreadable)


@subscribers_group.command()
@click.pass_obj
def stats(app: App) -> None:
    """Count the subscribers by status, section, language, and new ones by month.

    Sections and languages count subscribed readers; "(all)" are those who get every section,
    "(default)" those who get the newsletter's language. Months are in its time zone.

    \b
      digest subscribers stats
    """
    config = app.config
    file = _subscriber_file(app)
    counts = subscribers.stats(file, zone=config.newsletter.timezone)
    lines = [f"{file.path.name}: {counts.rows:,} rows"]
    lines.append("by status:")
    lines += [f"  {s.value:<24} {counts.by_status[s]:>9,}" for s in SubscriberStatus]
    lines.append("by section (subscribed):")
    names = _section_names(app)
    found = sorted(set(counts.by_section) - set(names) - {""})  # not in the config
    for name in ["", *names, *found]:
        lines.append(f"  {name or '(all)':<24} {counts.by_section[name]:>9,}")
    lines.append("by language (subscribed):")
    for language, count in sorted(counts.by_language.items()):
        label = language or f"(default: {config.newsletter.language})"
        lines.append(f"  {label:<24} {count:>9,}")
    lines.append("new subscribers by month:")
    for month, count in counts.per_month.items():
        lines.append(f"  {month or '(no date)':<24} {count:>9,}")
    click.echo("\n".join(lines))
    if counts.unreadable:
        app.warn(
            f"{file.path.name}: {counts.unreadable} row(s) cannot be read and are not counted; "
            "`digest subscribers validate` says why"
        )


@subscribers_group.command()
@click.argument("email")
@click.option("--first-name", help="Their first name, for the greeting.")
@click.option("--last-name", help="Their last name.")
@click.option(
    "--sections", metavar='"A;B"', help="The sections they get, separated by ; (default: all)."
)
@click.option("--language", help="Their language, such as es (default: the newsletter's).")
@click.option("--update", is_flag=True, help="If the address is there, change these details.")
@click.option(
    "--resubscribe",
    is_flag=True,
    help="If the address unsubscribed, bounced or complained, subscribe it again (they asked).",
)
@click.pass_obj
def add(
    app: App,
    email: str,
    first_name: str | None,
    last_name: str | None,
    sections: str | None,
    language: str | None,
    update: bool,
    resubscribe: bool,
) -> None:
    """Add EMAIL to the list, subscribed; an address already there is left as it is.

    --update changes an existing subscriber's details; --resubscribe brings back one who
    unsubscribed, bounced or complained, which needs their consent.

    \b
      digest subscribers add ana@example.org --first-name Ana --sections "Labor;Climate"
    """
    details = subscribers.Details(
        first_name=None
        if first_name is None
        else subscribers.check_name(first_name, where="--first-name"),
        last_name=None
        if last_name is None
        else subscribers.check_name(last_name, where="--last-name"),
        sections=None
        if sections is None
        else subscribers.parse_sections(sections, _section_names(app)),
        language=None if language is None else subscribers.check_language(language),
    )
    file = _subscriber_file(app)
    result = file.add(email, details, at=app.now, update=update, resubscribe=resubscribe)
    address = result.subscriber.email
    messages = {
        subscribers.AddOutcome.ADDED: f"added {address}",
        subscribers.AddOutcome.UPDATED: f"updated {address}",
        subscribers.AddOutcome.RESUBSCRIBED: f"subscribed {address} again",
        subscribers.AddOutcome.UNCHANGED: f"{address} already has these details; nothing changed",
        subscribers.AddOutcome.EXISTS: f"{address} is already on the list "
        f"({result.subscriber.status.value}); nothing changed (--update changes their details)",
    }
    click.echo(messages[result.outcome])


@subscribers_group.command()
@click.argument("email", required=False)
@click.option(
    "--token",
    metavar="TOKEN",
    help="Whoever this link token names: the t= value of their link, or the whole link.",
)
@click.pass_obj
def unsubscribe(app: App, email: str | None, token: str | None) -> None:
    """Stop sending to EMAIL; the row stays, so no import can bring them back.

    With --token, EMAIL may be left out: the token, checked against DIGEST_SECRET, names the
    reader (e.g. when one forwards a link that did not work for them).

    \b
      digest subscribers unsubscribe ana@example.org
      digest subscribers unsubscribe --token 'https://dispatch.example.org/digest/unsubscribe?t=…'
    """
    if token is not None:
        named = reader_of(app.config, token)
        if email is not None and email_key(email) != email_key(named):
            raise click.BadParameter(
                f"the token is for {named}, not {echoed(email, quoted=False)}", param_hint="EMAIL"
            )
        email = named
    elif email is None:
        raise click.UsageError("give EMAIL, or --token TOKEN")
    unsubscribe_address(app, email)


def reader_of(config: Config, token: str) -> str:
    """The address a token (or a whole link carrying one as t=) was made for."""
    if "t=" in token:
        token = next(iter(parse_qs(urlsplit(token.strip()).query).get("t", [])), token)
    try:
        return tokens.verify_token(
            token.strip(), list_id=tokens.list_id(config), secret=tokens.secret_from(config)
        )
    except TokenError as err:
        raise TokenError(err.message, where="--token", hint=err.hint) from err


def unsubscribe_address(app: App, email: str) -> None:
    """Unsubscribe `email` and say what happened; not on the list is an error."""
    file = _subscriber_file(app)
    if file.unsubscribe(email, at=app.now):
        click.echo(f"unsubscribed {email}")
        return
    rows = file.matching(email)
    if not rows:
        raise SubscriberFileError(
            f"{echoed(email, quoted=False)} is not on the list",
            where=file.path.name,
            hint="`digest subscribers list` shows who is",
        )
    status = (
        rows[0].subscriber.status.value
        if rows[0].subscriber
        else subscribers.printable(rows[0].cell("status"))
    )
    click.echo(f"{email} is already {status}; nothing changed")


@subscribers_group.command()
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def remove(app: App, email: str, yes: bool) -> None:
    """Delete EMAIL's row from the list (to stop mail, prefer unsubscribe).

    Unsubscribing keeps the row, which stops an import from adding the address again;
    remove is for addresses that should leave no trace, such as an erasure request.

    \b
      digest subscribers remove ana@example.org --yes
    """
    file = _subscriber_file(app)
    if not file.matching(email):
        raise SubscriberFileError(
            f"{echoed(email, quoted=False)} is not on the list", where=file.path.name
        )
    if not yes:
        try:
            confirmed = click.confirm(f"Delete {email} from {file.path.name}?", err=True)
        except click.Abort as abort:  # click's answer to Ctrl-C, and to no input at all
            click.echo(err=True)  # end the question's line
            if isinstance(abort.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from None
            raise SubscriberFileError(
                f"no answer to the question whether to delete {email}: nothing removed",
                hint="pass --yes to delete without asking (no terminal to ask at)",
            ) from None
        if not confirmed:
            raise click.Abort
    removed = file.remove(email)
    click.echo(f"removed {email}" + (f" ({removed} rows)" if removed > 1 else ""))


@subscribers_group.command()
@click.pass_obj
def validate(app: App) -> None:
    """Check every row and print each problem with its line; exit 1 if there is any.

    Checks: rows that cannot be read, invalid addresses (syntax only, no network), duplicates,
    unknown statuses and sections, bad dates and language codes.

    \b
      digest subscribers validate
    """
    file = _subscriber_file(app)
    found = 0
    for problem in subscribers.validate(file, _section_names(app)):
        click.echo(f"{file.path.name}:{problem.line}: {problem.message}")
        found += 1
    if found:
        raise SubscriberFileError(
            f"{found} problem(s)", where=file.path.name, hint="fix them and validate again"
        )
    app.info(f"{file.path.name}: no problems")


@subscribers_group.command(name="import")
@click.argument("source", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "platform",
    type=click.Choice(["auto", *subscribers.PLATFORMS]),
    default="auto",
    show_default=True,
    help="Which platform wrote FILE (auto: tell from its columns).",
)
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.pass_obj
def import_subscribers(app: App, source: Path, platform: str, dry_run: bool) -> None:
    """Merge another platform's export into the list, by address.

    Statuses, names, dates and the tags or labels that name a section come along. Anyone who
    unsubscribed, bounced or complained here is never subscribed again; rows that cannot be
    imported are listed with their line, and the rest is imported.

    \b
      digest subscribers import members.csv --format ghost --dry-run
    """
    read = subscribers.read_import(
        source,
        platform=platform,  # type: ignore[arg-type]  # a click.Choice of the same names
        sections=_section_names(app),
    )
    file = _subscriber_file(app)
    report = file.merge(read.incoming, dry_run=dry_run)
    would = "would " if dry_run else ""
    verbs = {"add": f"{would}add", "update": f"{would}update", "skip": "skip"}
    lines = [
        f"skip line {r.line} ({echoed(r.email, quoted=False) or 'no address'}): {r.reason}"
        for r in read.rejected
    ]
    for entry in report.entries:
        lines.append(f"{verbs[entry.action]} {entry.email} (line {entry.line}): {entry.detail}")
    skipped = report.count("skip") + len(read.rejected)
    lines.append(
        f"{source.name} ({read.platform}): {would}add {report.count('add')}, "
        f"{would}update {report.count('update')}, skip {skipped}"
    )
    click.echo("\n".join(lines))


@subscribers_group.command()
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["csv", "json"]),
    default="csv",
    show_default=True,
    help="csv neutralises cells a spreadsheet would run as formulas.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (default: standard output).",
)
@click.option("--status", type=STATUS_CHOICE, help="Only subscribers with this status.")
@click.option("--force", is_flag=True, help="Overwrite the -o file if it exists.")
@click.pass_obj
def export(
    app: App, output_format: str, output: Path | None, status: str | None, force: bool
) -> None:
    """Write the list as CSV or JSON, safe to open in a spreadsheet.

    An existing -o file is left alone unless --force.

    \b
      digest subscribers export --status subscribed -o subscribed.csv
    """
    file = _subscriber_file(app)
    if output is not None and output.resolve() == file.path.resolve():
        raise SubscriberFileError(
            "the export would overwrite the subscriber list", where=str(output)
        )
    if output is not None and output.exists() and not force:
        raise SubscriberFileError(
            "the file exists: nothing written",
            where=str(output),
            hint="pass --force to overwrite it, or choose another file",
        )
    unreadable: list[int] = []
    chosen = subscribers.select(
        subscribers.readable(file.rows(), unreadable),
        status=SubscriberStatus(status) if status else None,
    )
    extra = file.extra_columns()
    with contextlib.ExitStack() as stack:
        out = (
            stack.enter_context(output.open("w", encoding="utf-8", newline=""))
            if output is not None
            else sys.stdout
        )
        if output_format == "csv":
            count = subscribers.export_csv(chosen, out, extra_columns=extra)
        else:
            count = subscribers.export_json(chosen, out)
    if output is not None:
        app.info(f"wrote {count:,} subscribers to {output}")
    _warn_unreadable(app, unreadable)


def show_collect_report(app: App, report: pipeline.CollectReport, *, summary: bool = True) -> None:
    """One line per source: counts on stdout, failures as warnings on stderr."""
    for item in report.reports:
        result = item.result
        if result.error is not None:
            app.warn(f"{result.source}: failed: {result.error}")
            continue
        for warning in result.warnings:
            app.warn(f"{result.source}: {warning}")
        if not summary:
            continue
        if result.not_modified:
            app.info(f"{result.source}: not modified")
        elif item.counts is not None:
            app.info(f"{result.source}: {item.counts.new} new, {item.counts.updated} updated")


def main() -> None:
    """Console entry point; an unexpected exception is a bug, reported without a wall of text."""
    try:
        cli(prog_name="digest")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # the last line of defence: a bug, not a user error
        if "-v" in sys.argv or "--verbose" in sys.argv:
            traceback.print_exception(err)
        click.echo(
            f"error: unexpected {type(err).__name__}: {err} "
            "(this is a bug in digest; run again with -v and report the traceback)",
            err=True,
        )
        sys.exit(70)
