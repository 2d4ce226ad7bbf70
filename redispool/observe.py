"""Where the running processes tell the history and the event log what happened.

One call per place, made where the outcome is already known in Python: the
Reaper after a sweep (:func:`swept`, which also samples the pool's numbers
every :data:`SAMPLE_INTERVAL` seconds, by one process at a time), a worker
that refused or stopped a job (:func:`refused`, :func:`stopped`) or buried the
incarnation it replaces (:func:`replacing`), a supervisor whose worker died
(:func:`died`), a process that found Redis again (:func:`reconnected`), an
operator's drain (:func:`drained`) and a client's counted checkout
(:func:`checkout`, buffered in memory and written every
:data:`FLUSH_INTERVAL` seconds by a thread, never on the checkout path).

None of these raises: what they write is for people, and a failure to write
it must not cost a sweep or a job (it is logged at most once a minute).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time as mod_time
from collections import Counter
from typing import TYPE_CHECKING

import redis

from . import events
from .errors import PoolError
from .history import History, wait_field
from .wire import text

if TYPE_CHECKING:
    from .pool import Pool

__all__ = [
    "checkout", "died", "drained", "flush", "history_of", "reconnected", "refused", "replacing",
    "stopped", "swept",
]  # fmt: skip

log = logging.getLogger("redispool.observe")

#: Seconds between two samples of a pool's numbers (by the one sampling process).
SAMPLE_INTERVAL = 5.0
#: Seconds between two writes of the checkouts a client process counted.
FLUSH_INTERVAL = 5.0

_lock = threading.Lock()
_histories: dict[tuple[int, str], History] = {}
_next_sample: dict[tuple[int, str], float] = {}
_tallies: dict[int, tuple[History, Counter[str]]] = {}  # by id of the History
_flusher: threading.Thread | None = None
_last_warning = 0.0
_ME = f"{socket.gethostname()}:{os.getpid()}"


def _warn(what: str, exc: BaseException) -> None:
    global _last_warning
    now = mod_time.monotonic()
    if now - _last_warning >= 60:
        _last_warning = now
        log.warning("could not record %s: %s", what, exc)


def history_of(client: redis.Redis, pool: str) -> History:
    """This process's History of ``pool`` on ``client``."""
    with _lock:
        key = (id(client), pool)
        found = _histories.get(key)
        if found is None or found.client is not client:
            found = _histories[key] = History(client, pool)
        return found


def _add(pool: Pool, counts: dict[str, int]) -> None:
    if any(counts.values()):
        try:
            history_of(pool.client, pool.name).add(counts)
        except (redis.RedisError, PoolError) as exc:
            _warn(f"history of pool {pool.name}", exc)


def _sample(pool: Pool) -> None:
    """Sample the pool's numbers if this process is the pool's sampler now."""
    key = (id(pool.client), pool.name)
    now = mod_time.monotonic()
    if now < _next_sample.get(key, 0.0):
        return
    _next_sample[key] = now + SAMPLE_INTERVAL
    lock, hold_ms = pool.keys.history_sampler, int(SAMPLE_INTERVAL * 2500)
    try:
        if not pool.client.set(lock, _ME, nx=True, px=hold_ms):
            if text(pool.client.get(lock)) != _ME:
                return  # another process samples this pool
            pool.client.pexpire(lock, hold_ms)
        status = pool.status()
        history_of(pool.client, pool.name).sample(status.busy, status.idle, status.waiting)
    except (redis.RedisError, PoolError) as exc:
        _warn(f"a sample of pool {pool.name}", exc)


def swept(pool: Pool, reclaimed: int, buried: int, worker: str = "") -> None:
    """A Reaper returned ``reclaimed`` expired leases and buried ``buried`` workers
    (``worker``: the one whose expiry event it handled, if known)."""
    _add(pool, {"reclaims": reclaimed, "burials": buried})
    if reclaimed:
        detail = f"{reclaimed} expired lease(s) returned"
        events.record(pool.client, pool.name, "reclaimed", worker=worker, detail=detail,
                      count=reclaimed)  # fmt: skip
    if buried:
        detail = f"{buried} worker(s) buried: heartbeat lapsed"
        events.record(pool.client, pool.name, "buried", worker=worker, detail=detail, count=buried)
    _sample(pool)


def refused(pool: Pool, worker: str, token: str, code: int) -> None:
    """A worker refused a job whose lease (``token``) was not current (result ``code``)."""
    _add(pool, {"refused": 1})
    events.record(pool.client, pool.name, "refused", worker=worker,
                  detail=f"stale job refused: token {token} (code {code})")  # fmt: skip


def stopped(pool: Pool, worker: str, token: str, verdict: int, killed: bool) -> None:
    """A worker stopped a job because its lease ended while it ran."""
    _add(pool, {"stopped": 1})
    how = "killed" if killed else "returned after its lease ended"
    events.record(pool.client, pool.name, "stopped", worker=worker,
                  detail=f"job of token {token} {how} (verdict {verdict})")  # fmt: skip


def replacing(pool: Pool, worker: str, dead_incarnation: str) -> None:
    """A worker process is about to register in place of ``dead_incarnation``; if
    that still holds the id, registering buries it: log the burial."""
    if not dead_incarnation:
        return
    try:
        held = pool.client.hget(pool.keys.incarnations, worker)
    except redis.RedisError as exc:
        _warn(f"a burial in pool {pool.name}", exc)
        return
    if held is not None and text(held) == dead_incarnation:
        _add(pool, {"burials": 1})
        events.record(pool.client, pool.name, "buried", worker=worker,
                      detail="dead process buried by its replacement")  # fmt: skip


def died(pool: Pool, worker: str, pid: int, code: int) -> None:
    """A supervisor saw worker process ``pid`` die with exit ``code``."""
    _add(pool, {"deaths": 1})
    events.record(pool.client, pool.name, "died", worker=worker,
                  detail=f"process {pid} died (exit {code}); replacing it")  # fmt: skip


def left(pool: Pool, worker: str, why: str) -> None:
    """A worker process left the pool."""
    events.record(pool.client, pool.name, "left", worker=worker, detail=why)


def drained(client: redis.Redis, pool: str, worker: str, by: str) -> None:
    """An operator (``by``) drained ``worker``."""
    events.record(client, pool, "drained", worker=worker, detail=f"drained by {by}")


def reconnected(pool: Pool, why: str) -> None:
    """This process lost Redis (``why``) and has it again: a restart or a failover."""
    events.record(pool.client, pool.name, "reconnected", detail=f"Redis back after: {why}")


def checkout(pool: Pool, outcome: str, wait: float | None) -> None:
    """Count one checkout (``ok``, ``full`` or ``timeout``) and its wait; written
    within :data:`FLUSH_INTERVAL` seconds by a background thread."""
    global _flusher
    fields: Counter[str] = Counter()
    if outcome == "ok":
        fields["checkouts"] += 1
        if wait is not None:
            fields[wait_field(wait)] += 1
    elif outcome == "timeout":
        fields["timeouts"] += 1
    history = history_of(pool.client, pool.name)
    with _lock:
        _tallies.setdefault(id(history), (history, Counter()))[1].update(fields)
        if _flusher is None:
            _flusher = threading.Thread(target=_flush_loop, name="redispool-history", daemon=True)
            _flusher.start()
            atexit.register(flush)


def flush() -> None:
    """Write the checkouts counted so far now."""
    with _lock:
        pending = [(history, dict(c)) for history, c in _tallies.values() if c]
        _tallies.clear()
    for history, counts in pending:
        try:
            history.add(counts)
        except redis.RedisError as exc:
            _warn(f"checkouts of pool {history.pool}", exc)


def _flush_loop() -> None:
    while True:
        mod_time.sleep(FLUSH_INTERVAL)
        flush()
