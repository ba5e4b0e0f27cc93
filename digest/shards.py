"""Run one job in several processes, each on its share of a list, and gather what they report.

A send is CPU-bound in Python: one process composes and delivers two thousand messages a
second or so, a whole core's worth, while a relay on a fast network can take more. `run`
starts `count` processes, each calling `work(task, shard)` for its shard, and passes their
progress on.

The processes are spawned, not forked: each is a fresh interpreter, so the parent's open SQLite
connection, file lock and progress-bar thread are never shared by accident. A process stops
taking new work when the parent asks (another one failed, or Ctrl-C in the parent) or when the
parent is gone (their pipe closes), and finishes what it has in hand. Ctrl-C and SIGTERM
reach only the parent (the processes ignore them), which asks them to stop when its `stop()`
says so, or on KeyboardInterrupt, and waits; a second Ctrl-C kills them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

from digest.errors import DigestError

T = TypeVar("T")  # the task, the same for every shard: pickled once per process
R = TypeVar("R")  # one shard's result

PROGRESS_INTERVAL = 0.2  # seconds between a shard's progress reports


@dataclass(slots=True)
class Shard:
    """One process's share (every `count`th item from the `index`th) and its line to the parent."""

    index: int
    count: int
    _pipe: Connection = field(repr=False)
    _reported: float = 0.0
    _stopped: bool = False

    def stopping(self) -> bool:
        """Whether to stop taking new work: the parent asked, or is gone."""
        if not self._stopped and self._pipe.poll():
            self._stopped = True  # a stop message, or end of file: the parent died
        return self._stopped

    def progress(self, so_far: object, *, final: bool = False) -> None:
        """Tell the parent how far this shard has got, at most every PROGRESS_INTERVAL."""
        now = time.monotonic()
        if final or now - self._reported >= PROGRESS_INTERVAL:
            self._reported = now
            _send(self._pipe, ("progress", so_far))


@dataclass(frozen=True, slots=True)
class Gathered(Generic[R]):
    """What the shards did: the results of those that finished, each shard's last progress
    report, and the first error, if any (a shard that failed has no result; the others were
    asked to stop early)."""

    results: tuple[R, ...]
    progress: tuple[Any, ...]
    error: BaseException | None


def run(
    work: Callable[[T, Shard], R],
    task: T,
    count: int,
    *,
    on_progress: Callable[[Sequence[Any]], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> Gathered[R]:
    """`work(task, shard)` in `count` processes; `on_progress` gets each shard's latest report;
    once `stop()` is true, each is asked to stop (and returns what it did).

    `work` must be a module-level function (the child imports it by name) and `task` and the
    results picklable.
    """
    context = multiprocessing.get_context("spawn")
    pipes: dict[Connection, int] = {}
    processes: list[Any] = []
    try:
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_child,
                args=(work, task, index, count, theirs),
                name=f"digest-shard-{index + 1}",
                daemon=True,  # never outlives the parent
            )
            process.start()
            theirs.close()
            pipes[ours] = index
            processes.append(process)
        gathering = _Gathering[R](pipes, processes, on_progress, stop)
        try:
            gathering.until_done()
        except KeyboardInterrupt:
            gathering.stop_all()
            gathering.until_done()  # let them finish what is in flight; Ctrl-C again kills
            raise
        return Gathered(
            tuple(gathering.results.values()),
            tuple(gathering.latest.values()),
            gathering.error,
        )
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        for pipe in pipes:
            pipe.close()


class _Gathering(Generic[R]):
    def __init__(
        self,
        pipes: dict[Connection, int],
        processes: list[Any],
        on_progress: Callable[[Sequence[Any]], None] | None,
        stop: Callable[[], bool],
    ) -> None:
        self.pipes, self.processes, self.on_progress = pipes, processes, on_progress
        self.stop = stop
        self.stopped = False
        self.open = set(pipes)
        self.results: dict[int, R] = {}
        self.latest: dict[int, Any] = {}
        self.error: BaseException | None = None

    def until_done(self) -> None:
        while self.open:
            if self.stop():
                self.stop_all()
            for pipe in wait(list(self.open), timeout=PROGRESS_INTERVAL):
                assert isinstance(pipe, Connection)
                self._receive(pipe)

    def stop_all(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for pipe in self.open:
            _send(pipe, ("stop", None))

    def _receive(self, pipe: Connection) -> None:
        index = self.pipes[pipe]
        try:
            kind, value = pipe.recv()
        except (EOFError, OSError):
            self.open.discard(pipe)
            if index not in self.results:
                process = self.processes[index]
                process.join(timeout=5)
                self._failed(
                    RuntimeError(
                        f"sending process {index + 1} of {len(self.pipes)} ended without "
                        f"a result (exit code {process.exitcode})"
                    )
                )
            return
        if kind == "progress":
            self.latest[index] = value
            if self.on_progress is not None:
                self.on_progress(list(self.latest.values()))
        elif kind == "done":
            self.results[index] = value
        elif kind == "error":
            self._failed(value)
        else:  # "crash": a bug in the child, with its traceback
            self._failed(RuntimeError(f"sending process {index + 1} failed:\n{value}"))

    def _failed(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
            self.stop_all()


def _child(
    work: Callable[[T, Shard], R], task: T, index: int, count: int, pipe: Connection
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        result = work(task, Shard(index, count, pipe))
    except DigestError as err:
        _send(pipe, ("error", err))  # pickled with its where and hint
    except BaseException:
        _send(pipe, ("crash", traceback.format_exc()))
    else:
        _send(pipe, ("done", result))
    finally:
        pipe.close()


def _send(pipe: Connection, message: tuple[str, object]) -> None:
    # The other end may be gone: a child sees that through stopping(), the parent by EOF.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        pipe.send(message)
