"""Benchmarks for `make bench`: each module's `run()` yields figures, printed one per line.

Figures are only printed, never asserted: machines differ, and a slow run should be read, not
fail the build.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(action: Callable[[], object], *, runs: int = 5) -> float:
    """Seconds the fastest of `runs` calls took; the minimum is the least noisy figure."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return min(timings)
