"""Real `digest` processes for the tests that signal or kill them mid-command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def start_digest(
    config: Path, *args: str, env: Mapping[str, str | None], capture: bool = True
) -> subprocess.Popen[str]:
    """`python -m digest --config CONFIG ARGS` with `env` over ours (None: unset)."""
    merged = {**os.environ, **env}
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "digest", "--config", str(config), *args],
        env={name: value for name, value in merged.items() if value is not None},
        stdout=output,
        stderr=output,
        text=True,
    )


@dataclass(frozen=True, slots=True)
class Ended:
    """How a signalled process ended: its exit code, output, and seconds from signal to exit."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


def signal_when(
    process: subprocess.Popen[Any],
    reached: Callable[[], bool],
    signum: int,
    *,
    what: str = "the point to signal at",
) -> Ended:
    """Send `signum` once `reached()` (or the process ended), and wait for it to exit."""
    try:
        deadline = time.monotonic() + 60
        while not reached() and process.poll() is None:
            assert time.monotonic() < deadline, f"the process never reached {what}"
            time.sleep(0.02)
    finally:
        signalled = time.monotonic()
        process.send_signal(signum)
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.communicate()
            raise
    return Ended(process.returncode, stdout or "", stderr or "", time.monotonic() - signalled)
