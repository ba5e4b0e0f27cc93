"""`digest send` of one issue to a 100,000-reader list through Postfix's smtp-sink, against
Postfix's own load generator, smtp-source, sending as many messages of the same size.

The publication is the example one (its three bundled feeds, collected into a fresh archive
before each send, outside the timing); the list is bench/subscribers.py's seeded synthetic list,
so about 85 % of its rows are subscribed and get a copy, in one of 32 variants (language and
chosen sections). `smtp-sink` accepts every message and delivers none; it runs on 127.0.0.1
at a free port and is stopped when the benchmark ends.

`digest send` runs as its own process, as an editor would run it, timed from start to exit:
the interpreter's start, freezing the list into the ledger and rendering every variant are in
that time. Its own summary line gives the delivery loop alone (first connection to last reply);
both rates are reported, the end-to-end one against the target. Peak memory is the process's
high-water mark (VmHWM), as in bench/subscribers.py.

`smtp-source -d -s C -m M -l SIZE` sends M messages (as many as the list has readers who get a
copy) over C connections (our concurrency), each SIZE bytes of payload: the mean size of our
messages, headers included, measured on a sample of the list's copies; smtp-source adds its own
few headers on top. It is timed the same way, from start to exit, twice: just before and just
after our send, and the faster run counts. The machine's load moves from minute to minute, and
it should not flatter us.

With several sending processes, peak memory is the parent's plus each of theirs (the largest
one's, times their number).

Environment: BENCH_SEND_SUBSCRIBERS (rows in the list, default 100,000; the memory target is set
at 1,000,000), BENCH_SEND_CONCURRENCY (one value, or several separated by commas, each run in
turn; default 16) and BENCH_SEND_PROCESSES (`--processes`; default digest's own, one per two
CPUs). Needs /usr/sbin/smtp-sink and smtp-source (Debian's postfix; `make bench`
installs it).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

from bench.subscribers import run_digest, write_list
from digest import message, pipeline, render, tokens
from digest.config import Config, load_config
from digest.errors import MessageError
from digest.project import data_dir
from digest.subscribers import SubscriberFile

SINK = Path("/usr/sbin/smtp-sink")
SOURCE = Path("/usr/sbin/smtp-source")
SUBSCRIBERS = int(os.environ.get("BENCH_SEND_SUBSCRIBERS", "100000"))
CONCURRENCY = tuple(int(c) for c in os.environ.get("BENCH_SEND_CONCURRENCY", "16").split(","))
PROCESSES = os.environ.get("BENCH_SEND_PROCESSES", "")
SINCE, UNTIL = date(2026, 11, 16), date(2026, 11, 22)
SAMPLE = 2_000  # copies composed in this process to measure the mean message size
TARGET_RATIO = 0.5  # our messages/s against smtp-source's
TARGET_MB = 250  # at 1,000,000 subscribers
# The line `digest send` ends with; if its wording changes, the benchmark stops rather than guess.
SUMMARY = re.compile(
    r"^\S+: (?P<sent>[\d,]+) sent, (?P<failed>[\d,]+) failed, (?P<unknown>[\d,]+) unknown, "
    r"(?P<skipped>[\d,]+) skipped in (?P<seconds>[\d.]+)s \((?P<rate>[\d.]+) messages/s"
    r"(?:, (?P<processes>\d+) processes)?\)",
    re.MULTILINE,
)
SUMMARY_COUNTS = ("sent", "failed", "unknown")


def run() -> Iterator[str]:
    """Set up the project and list once; for each concurrency, send with digest, then with
    smtp-source, both into the same sink."""
    if not (SINK.exists() and SOURCE.exists()):
        yield f"send: skipped, {SINK} and {SOURCE} are missing (`make bench` installs postfix)"
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        examples = data_dir() / "examples"
        shutil.copytree(examples / "feeds", folder / "feeds")
        config_path = folder / "digest.toml"
        shutil.copy(examples / "digest.toml", config_path)
        write_list(folder / "subscribers.csv", SUBSCRIBERS)
        env = {
            tokens.SECRET_VAR: secrets.token_urlsafe(48),
            "SMTP_SECURITY": "none",
            "SMTP_USERNAME": "",
            "SMTP_PASSWORD": "",
            "DKIM_PRIVATE_KEY_FILE": "",  # unsigned, whatever the caller's environment says
        }
        run_digest(config_path, "collect", env=env)
        size, sampled, copies = mean_size(load_config(config_path, environ=env))
        yield (
            f"send: {SUBSCRIBERS:,} rows in the list, messages {size / 1000:.1f} KB on average "
            f"(headers included, over {sampled:,} copies)"
        )
        with smtp_sink() as port:
            env |= {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port)}
            for concurrency in CONCURRENCY:
                yield from compare(config_path, env, concurrency, size, copies, port)


def compare(
    config_path: Path, env: dict[str, str], concurrency: int, size: int, copies: int, port: int
) -> Iterator[str]:
    """One send from a fresh archive and ledger, with smtp-source sending as many messages
    before and after it."""
    shutil.rmtree(config_path.parent / ".digest", ignore_errors=True)
    run_digest(config_path, "collect", env=env)
    before = smtp_source(port, concurrency, copies, size)
    seconds, own_peak, child_peak, output = run_digest(
        config_path,
        "send",
        *("--since", SINCE.isoformat(), "--until", UNTIL.isoformat()),
        *("--concurrency", str(concurrency)),
        *(("--processes", PROCESSES) if PROCESSES else ()),
        env=env,
    )
    summary = SUMMARY.search(output)
    if summary is None:
        raise RuntimeError(f"no summary line in digest send's output: {output[-2000:]}")
    sent, failed, unknown = (int(summary[k].replace(",", "")) for k in SUMMARY_COUNTS)
    if sent == 0 or failed or unknown:
        raise RuntimeError(f"digest send did not deliver every copy: {summary[0]}")
    if sent != copies:
        raise RuntimeError(f"digest send sent {sent:,} copies, {copies:,} were expected")
    processes = int(summary["processes"] or 1)
    peak = own_peak + (child_peak * processes if processes > 1 else 0)
    ours, loop = sent / seconds, float(summary["rate"])
    yield (
        f"digest send, {concurrency} connections, {processes} process"
        f"{'es' if processes > 1 else ''}: {sent:,} messages in {seconds:.1f} s, "
        f"{ours:,.0f} messages/s end to end, {loop:,.0f}/s in the delivery loop "
        f"({float(summary['seconds']):.1f} s); peak memory {peak:.0f} MB (target < {TARGET_MB} "
        f"MB at 1,000,000 rows); load average {os.getloadavg()[0]:.1f}"
    )
    after = smtp_source(port, concurrency, sent, size)
    theirs = min(before, after)
    yield (
        f"smtp-source -d -s {concurrency} -m {sent} -l {size}: {before:.1f} s before, "
        f"{after:.1f} s after, so {sent / theirs:,.0f} messages/s; digest send does "
        f"{ours * theirs / sent:.2f} of that end to end, {loop * theirs / sent:.2f} in its loop "
        f"(target >= {TARGET_RATIO})"
    )


def mean_size(config: Config) -> tuple[int, int, int]:
    """The mean size in bytes of the copies sent to the first SAMPLE readers who get one, how
    many that was, and how many readers get one: as many messages as smtp-source sends."""
    request = pipeline.PeriodRequest(since=SINCE, until=UNTIL)
    now = datetime.now(config.newsletter.timezone)
    issue = pipeline.select(config, request, now=now)

    @functools.cache
    def rendered(variant: render.Variant) -> render.Rendered:
        return pipeline.render_issue(config, issue, variant)

    composer = message.Composer(config, issue, rendered, now=now)
    readers = (s for s in SubscriberFile(config.subscribers_path) if s.receives_mail)
    wanted = (s for s in readers if composer.skip_reason(s) is None and _valid(s.email))
    sizes = [len(composer.compose(s).data) for s in itertools.islice(wanted, SAMPLE)]
    return round(sum(sizes) / len(sizes)), len(sizes), len(sizes) + sum(1 for _ in wanted)


def _valid(address: str) -> bool:
    try:
        message.checked_address(address, where="bench")
    except MessageError:
        return False
    return True


@contextlib.contextmanager
def smtp_sink() -> Iterator[int]:
    """smtp-sink listening on 127.0.0.1 at a free port, stopped on leaving; gives the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    # smtp-sink refuses to run as root unless told whose privileges to drop to.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen([str(SINK), *user, f"127.0.0.1:{port}", "1000"])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"smtp-sink did not start on port {port}") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def smtp_source(port: int, concurrency: int, count: int, size: int) -> float:
    """Seconds smtp-source takes to send `count` messages of `size` bytes over `concurrency`
    connections, each kept open from one message to the next (-d)."""
    argv = [str(SOURCE), "-d", "-s", str(concurrency), "-m", str(count), "-l", str(size)]
    started = time.perf_counter()
    subprocess.run([*argv, f"127.0.0.1:{port}"], check=True, capture_output=True)
    return time.perf_counter() - started
