"""`digest subscribers validate` and `stats` on a 1,000,000-row list: time and peak memory.

Each command runs as its own `digest` process, as an editor would run it, and is timed from start
to exit (the interpreter's start included); its peak memory is the process's own high-water mark
(VmHWM, Linux), read as it exits. One rewrite (`unsubscribe`, which copies every row) is timed too.

The list is synthetic but shaped like a real one: most readers at a few big providers and the rest
spread over 40,000 small domains, names with accents and the odd comma, 85 % subscribed, some with
chosen sections and languages, seven years of sign-ups, and a column of the editor's own. The
generator is seeded, so figures from different runs and machines compare like with like.
"""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from digest.subscribers import COLUMNS

ROWS = 1_000_000
SEED = 20261125
TARGET_SECONDS = 10.0
TARGET_MB = 200
RUNS = 2
SECTIONS = ("US Politics", "Latin America", "Labor", "Climate", "More from the Dispatch")
PROVIDERS = (
    "gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "proton.me",
    "aol.com", "gmx.de", "web.de", "yahoo.com.br", "uol.com.br", "hotmail.es",
)  # fmt: skip
FIRST = ("Ana", "Bo", "Chidi", "Dana", "Émile", "Fatima", "Grace", "Hiroshi", "Inés", "Jonas")
LAST = ("Pérez", "Li", "Okafor", "Whitfield", "Moreau", "O'Neill", "Okoro, Jr.", "Müller")
CONFIG = """\
[newsletter]
name = "Bench Weekly"
timezone = "America/New_York"
language = "en"
from = "Bench Weekly <weekly@bench.example.org>"
public_url = "https://bench.example.org/digest"
address = "PO Box 1, Bench, NY"

[[sources]]
name = "Bench"
url = "feed.rss"

{sections}
"""


def run() -> Iterator[str]:
    """Generate the list once, then time each command in its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        path, someone = write_list(folder / "subscribers.csv", ROWS)
        generated = time.perf_counter() - started
        sections = "\n".join(f'[[sections]]\nname = "{name}"\n' for name in SECTIONS)
        config = folder / "digest.toml"
        config.write_text(CONFIG.format(sections=sections), encoding="utf-8")
        size = path.stat().st_size / 1e6
        yield f"subscriber list: {ROWS:,} rows, {size:.0f} MB, generated in {generated:.1f} s"
        for command in ("validate", "stats"):
            seconds, peak = best_run(config, command)
            yield (
                f"digest subscribers {command} on {ROWS:,} rows: {seconds:.1f} s, "
                f"peak memory {peak:.0f} MB (target < {TARGET_SECONDS:.0f} s, "
                f"< {TARGET_MB} MB)"
            )
        seconds, peak = measure(config, "unsubscribe", someone)
        yield (
            f"digest subscribers unsubscribe (a locked rewrite of {ROWS:,} rows): "
            f"{seconds:.1f} s, peak memory {peak:.0f} MB"
        )


def best_run(config: Path, command: str) -> tuple[float, float]:
    """The fastest of RUNS runs, and the largest peak memory seen."""
    runs = [measure(config, command) for _ in range(RUNS)]
    return min(seconds for seconds, _ in runs), max(peak for _, peak in runs)


# Runs the CLI, then records the process's own high-water mark. ru_maxrss from wait4 would not do:
# Linux carries the parent's peak over fork and exec, so every child would report this benchmark's.
_CHILD = """
import atexit, resource, sys
from digest.cli import main
def record(path=sys.argv.pop(1)):
    largest_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB, as VmHWM
    with open("/proc/self/status") as status, open(path, "w") as out:
        own = next(line for line in status if line.startswith("VmHWM:")).split()[1]
        out.write(f"{own} {largest_child}")
atexit.register(record)
sys.argv[0] = "digest"
main()
"""


def measure(config: Path, *command: str) -> tuple[float, float]:
    """Seconds from start to exit, and peak resident memory in MB, of `digest subscribers`."""
    seconds, peak, _, _ = run_digest(config, "subscribers", *command)
    return seconds, peak


def run_digest(
    config: Path, *command: str, env: Mapping[str, str] | None = None
) -> tuple[float, float, float, str]:
    """Seconds from start to exit, peak resident memory in MB (the process's own, and its
    largest child's: a send may start sending processes), and the output (stdout and stderr)
    of one `digest` process; `env` is added to this process's environment."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file, log = Path(tmp) / "peak", Path(tmp) / "log"
        argv = [sys.executable, "-c", _CHILD, str(peak_file), "--config", str(config)]
        environ = {**os.environ, **(env or {})}
        with log.open("wb") as out:
            started = time.perf_counter()
            done = subprocess.run([*argv, *command], stdout=out, stderr=out, env=environ)
            seconds = time.perf_counter() - started
        output = log.read_text(encoding="utf-8", errors="replace")
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {output[-2000:]}")
        own, child = (int(kb) * 1024 / 1e6 for kb in peak_file.read_text().split())
        return seconds, own, child, output


def write_list(path: Path, rows: int) -> tuple[Path, str]:
    """A realistic subscriber CSV of `rows` rows (always the same), and its middle address."""
    rng = random.Random(SEED)
    small = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(4, 12)))
        + rng.choice((".com", ".org", ".net", ".de", ".co.uk", ".com.br", ".mx", ".es"))
        for _ in range(40_000)
    ]
    start = datetime(2019, 1, 1, tzinfo=UTC)
    span = 7 * 365 * 86_400
    statuses = ("subscribed", "unsubscribed", "bounced", "complained")
    middle = ""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*COLUMNS, "crm_id"])
        for n in range(rows):
            domain = rng.choice(PROVIDERS) if rng.random() < 0.7 else rng.choice(small)
            status = rng.choices(statuses, (85, 10, 4, 1))[0]
            joined = start + timedelta(seconds=rng.randrange(span))
            left = (
                joined + timedelta(days=rng.randrange(1, 400)) if status != "subscribed" else None
            )
            chosen = rng.sample(SECTIONS, rng.randint(1, 2)) if rng.random() < 0.4 else []
            if n == rows // 2:
                middle = f"reader.{n}@{domain}"
                status = "subscribed"
            writer.writerow(
                [
                    f"reader.{n}@{domain}",
                    rng.choice(FIRST),
                    rng.choice(LAST),
                    status,
                    ";".join(chosen),
                    rng.choice(("", "", "en", "es", "pt")),
                    joined.isoformat(),
                    left.isoformat() if left else "",
                    rng.choice(("signup-form", "import:mailchimp", "cli")),
                    f"C{n:07d}",
                ]
            )
    return path, middle
