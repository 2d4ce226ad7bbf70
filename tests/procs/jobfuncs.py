"""Job functions the worker tests register (``worker_main --function tests.procs.jobfuncs.X``).

The worker's job process imports them as ``tests.procs.jobfuncs`` (its working
directory is the checkout). Each writes a marker file only when it reaches
its end, so a test can tell that a job killed before its end never got there.
"""

from __future__ import annotations

import time
from pathlib import Path

import redispool


def sleep_then_mark(seconds: float, marker: str) -> str:
    """Blocks in C (``time.sleep``) and ignores ``lost``; then writes ``marker``."""
    time.sleep(seconds)
    Path(marker).write_text("finished")
    return "finished"


def say_begun_sleep_then_mark(begun: str, seconds: float, marker: str) -> str:
    """Writes ``begun`` (the job runs: its worker watches its lease), then as
    :func:`sleep_then_mark`."""
    Path(begun).write_text("begun")
    return sleep_then_mark(seconds, marker)


def spin_then_mark(seconds: float, marker: str) -> str:
    """Busy in Python and ignores ``lost``; then writes ``marker``."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    Path(marker).write_text("finished")
    return "finished"


def watch_lost(seconds: float, marker: str) -> str:
    """Waits for ``lost`` up to ``seconds``: writes when it saw it (wall clock) to
    ``marker + '.lost'`` and stops there (``check()`` raises); else writes ``marker``."""
    lease = redispool.current_lease()
    if lease.lost.wait(seconds):
        Path(marker + ".lost").write_text(repr(time.time()))
        lease.check()
    Path(marker).write_text("finished")
    return "finished"


def lease_seen() -> dict[str, object]:
    """What ``current_lease()`` says inside the job."""
    lease = redispool.current_lease()
    lease.check()
    return {"pool": lease.pool, "worker_id": lease.worker_id, "token": lease.token,
            "lost": lease.lost.is_set()}  # fmt: skip


class LeaseLost(Exception):  # named so on purpose: a job's own exception
    """Not redispool's: a job's own exception that happens to carry the name."""


def raise_named_lease_lost() -> None:
    """Raises an exception named LeaseLost whose message looks like redispool's."""
    raise LeaseLost("redispool.errors.LeaseLost: WorkerLost: the lease has ended")


def return_when_reassigned(url: str, lease_key: str, timeout: float) -> str:
    """Polls the lease key every millisecond and returns the moment it holds
    another lease than this job's (the worker was handed to a new holder)."""
    import redis

    mine = f"{redispool.current_lease().token}|"
    client = redis.Redis.from_url(url)
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            value = client.get(lease_key)
            if value is not None and not value.decode().startswith(mine):
                return "returned after the worker was handed on"
            time.sleep(0.001)
    finally:
        client.close()
    return "never handed on"
