"""The `digest` command line: parse arguments, call the pipeline, print, map errors to exit codes.

Exit codes: 0 done; 1 a problem the message explains (config, sources, archive, selection);
2 a usage error (a bad option or argument); 70 a bug in digest; 130 interrupted.
"""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from digest import pipeline, project, selector
from digest.config import Config, load_config
from digest.errors import DigestError

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
    """Shows a DigestError as one line (with the traceback under -v) and exits with its code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DigestError as err:
            if ctx.params.get("verbose"):
                traceback.print_exception(err)
            click.echo(f"error: {err}", err=True)
            ctx.exit(err.exit_code)


class DateParam(click.ParamType[date, str]):
    name = "DATE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date like 2026-11-22", param, ctx)


def period_options(command: F) -> F:
    """--since/--until/--days, passed to the command as one PeriodRequest."""

    @click.option("--since", type=DateParam(), help="First day of the period (inclusive).")
    @click.option("--until", type=DateParam(), help="Last day of the period (inclusive).")
    @click.option("--days", type=click.IntRange(min=1), help="The N days up to --until, or to now.")
    @functools.wraps(command)
    def wrapper(
        *args: Any, since: date | None, until: date | None, days: int | None, **kw: Any
    ) -> Any:
        return command(*args, request=pipeline.PeriodRequest(since, until, days), **kw)

    return wrapper  # type: ignore[return-value]


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
    Start a project and see its first selection:
      digest init my-digest && cd my-digest
      digest build --format json --since 2026-11-16 --until 2026-11-22
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
    app.info(f"next: cd {directory} && digest build --format json")


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
@click.option("--feature", "feature_url", metavar="URL", help="Put this article on top.")
@click.option("--offline", is_flag=True, help="Use the archive as it is; fetch nothing.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json"]),
    default="json",
    show_default=True,
    help="What to print.",
)
@click.pass_obj
def build(
    app: App,
    request: pipeline.PeriodRequest,
    feature_url: str | None,
    offline: bool,
    output_format: str,
) -> None:
    """Select this period's articles, section by section, and print the issue.

    Collects first unless --offline. The same archive and period always print the same bytes.

    \b
      digest build --format json --since 2026-11-16 --until 2026-11-22
    """
    config, now = app.config, app.now
    if not offline:
        report = pipeline.collect(config, now=now)
        show_collect_report(app, report, summary=False)
    issue = pipeline.select(config, request, now=now, feature_url=feature_url)
    if not issue.articles:
        app.warn(
            f"no articles between {issue.period.start:%Y-%m-%d %H:%M} and "
            f"{issue.period.end:%Y-%m-%d %H:%M}; try another period or `digest collect`"
        )
    click.echo(selector.issue_to_json(issue, timezone=config.newsletter.timezone), nl=False)


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
