"""Several processes on one job: each gets its shard, progress and errors reach the parent, and
one failing stops the others. The work functions are at module level: a child imports them."""

from __future__ import annotations

import os
import pickle
import time

import pytest

from digest import shards
from digest.errors import DigestError, SendError


def whoami(task: str, shard: shards.Shard) -> tuple[str, int, int, int]:
    shard.progress(f"{task} {shard.index} started", final=True)
    return task, shard.index, shard.count, os.getpid()


def test_each_shard_runs_in_a_process_of_its_own_and_reports_progress() -> None:
    """Three processes, one per shard, none of them this one; each one's progress arrives."""
    seen: list[list[str]] = []
    gathered = shards.run(whoami, "job", 3, on_progress=seen.append)
    assert gathered.error is None
    assert sorted(r[:3] for r in gathered.results) == [("job", i, 3) for i in range(3)]
    pids = {r[3] for r in gathered.results}
    assert len(pids) == 3 and os.getpid() not in pids
    assert sorted(gathered.progress) == ["job 0 started", "job 1 started", "job 2 started"]
    assert len(seen) == 3 and sorted(seen[-1]) == sorted(gathered.progress)


def wait_for_stop(task: float, shard: shards.Shard) -> str:
    shard.progress("started", final=True)
    deadline = time.monotonic() + task
    while not shard.stopping():
        if time.monotonic() > deadline:
            return "never asked to stop"
        time.sleep(0.01)
    return "stopped"


def fail_first_wait_for_stop(task: float, shard: shards.Shard) -> str:
    if shard.index == 0:
        raise SendError("login refused", where="relay:587", hint="check SMTP_PASSWORD")
    return wait_for_stop(task, shard)


def test_an_error_in_one_shard_stops_the_others_and_keeps_where_and_hint() -> None:
    """The project's error crosses the process boundary whole, and the others are asked to
    stop rather than go on alone."""
    gathered = shards.run(fail_first_wait_for_stop, 30.0, 2)
    assert isinstance(gathered.error, SendError)
    assert str(gathered.error) == "relay:587: login refused (hint: check SMTP_PASSWORD)"
    assert gathered.results == ("stopped",)


def test_once_the_parent_says_stop_every_shard_is_asked_and_returns() -> None:
    """The parent's stop() (a Ctrl-C it caught) reaches each process, which ends normally."""
    started = time.monotonic()
    gathered = shards.run(wait_for_stop, 30.0, 2, stop=lambda: time.monotonic() - started > 0.5)
    assert gathered.error is None and gathered.results == ("stopped", "stopped")
    assert time.monotonic() - started < 15


def crash(task: None, shard: shards.Shard) -> None:
    raise ValueError("a bug in the work")


def test_a_crash_in_a_shard_comes_back_with_its_traceback() -> None:
    """Anything but the project's own errors is a bug: the parent raises it with the child's
    traceback, so -v shows where it happened."""
    gathered = shards.run(crash, None, 1)
    assert isinstance(gathered.error, RuntimeError)
    assert "sending process 1 failed" in str(gathered.error)
    assert "ValueError: a bug in the work" in str(gathered.error)
    assert "test_shards.py" in str(gathered.error)


def die(task: None, shard: shards.Shard) -> None:
    os._exit(9)


def test_a_shard_that_dies_without_a_word_is_an_error_with_its_exit_code() -> None:
    """A child killed (by the OOM killer, say) is noticed, not waited for forever."""
    gathered = shards.run(die, None, 1)
    assert isinstance(gathered.error, RuntimeError)
    assert "ended without a result (exit code 9)" in str(gathered.error)


@pytest.mark.parametrize("error", [SendError("gone", where="x:25", hint="retry"), DigestError("a")])
def test_the_projects_errors_pickle_with_where_and_hint(error: DigestError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.where, copy.hint) == (
        type(error), str(error), error.where, error.hint
    )  # fmt: skip
