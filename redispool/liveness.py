"""Liveness of worker processes: registration, heartbeats, burial of the dead.

A worker run by a process (see :mod:`redispool.worker`) holds its id as one
*incarnation* (one per process start) and keeps a heartbeat key with a TTL.
When the heartbeat lapses, any host's Reaper (or a client waiting on a job)
buries the worker: it leaves the pool, and a lease on it ends with the reason
"worker dead", remembered per token for a day so that the holder gets
:class:`~redispool.WorkerLost` rather than :class:`~redispool.LeaseLost`.
Workers added by hand with ``Pool.add_worker`` have no heartbeat and are
never buried. Each function here is one atomic script.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import errors

if TYPE_CHECKING:
    from .pool import Pool

__all__ = [
    "Incarnation", "OutOfService", "beat", "fence_job", "lease_left", "leave", "reap",
    "register", "start_job",
]  # fmt: skip

REAP_BATCH = 1000


def worker_keys(pool: Pool) -> tuple[str, ...]:
    """The workers keys of includes/workers.lua, after the pool's common keys."""
    k = pool.keys
    return (
        k.heartbeats, k.incarnations, k.dead_leases, k.jobs, k.overflow, k.jobs_failed,
        k.removed,
    )


class OutOfService(errors.PoolError):
    """The worker id was taken out of service (removed, drained): not registered again."""


@dataclass(frozen=True)
class Incarnation:
    """One process holding one worker id."""

    worker_id: str
    incarnation: str
    host: str
    pid: int
    heartbeat_ms: int
    overflow: bool = False


def _register_args(pool: Pool, me: Incarnation, register: bool, replaces: str) -> tuple[Any, ...]:
    from .pool import DEFAULT_LEASE_TTL, STRATEGIES, _worker_meta

    default_ttl = pool._ttl_ms or round(DEFAULT_LEASE_TTL * 1000)
    return (
        me.worker_id,
        _worker_meta(me.host, me.pid),
        me.incarnation,
        me.heartbeat_ms,
        replaces,
        "1" if register else "0",
        "1" if me.overflow else "0",
        default_ttl,
        STRATEGIES[0],
    )


def register(pool: Pool, me: Incarnation, replaces: str = "") -> bool:
    """Take ``me.worker_id`` for this incarnation (or beat if it holds it).

    ``replaces`` names an incarnation the caller knows is dead (a supervisor
    that reaped the process): it is buried at once. Raises
    :class:`~redispool.errors.WorkerIdTaken` if a live worker, or one added
    by hand, holds the id, and :class:`OutOfService` if the id was taken out
    of service (also when the dead incarnation it replaces was: a drained
    worker that died before it left). True if it registered anew, False if
    it held it.
    """
    reply = pool._run(
        "register_worker",
        _register_args(pool, me, True, replaces),
        extra_keys=worker_keys(pool),
        worker_id=me.worker_id,
    )
    if int(reply[0]) == errors.UNKNOWN_WORKER:
        raise OutOfService(
            f"pool {pool.name!r}: worker {me.worker_id!r} was taken out of service",
            pool=pool.name, worker_id=me.worker_id, operation="register",
        )  # fmt: skip
    errors.raise_for(int(reply[0]), pool=pool.name, operation="register", worker_id=me.worker_id)
    return bool(int(reply[1]))


def beat(pool: Pool, me: Incarnation, *, reregister: bool = True) -> str:
    """Refresh the heartbeat; register again if the registration vanished
    (FLUSHDB, a failover that lost writes) and ``reregister``.

    Returns ``"beat"``, ``"registered"`` (it had vanished and is back) or
    ``"gone"`` (not registered, and not registered again: it has left).
    Raises WorkerIdTaken if another live incarnation took the id meanwhile.
    """
    reply = pool._run(
        "register_worker",
        _register_args(pool, me, reregister, ""),
        extra_keys=worker_keys(pool),
        worker_id=me.worker_id,
    )
    code = int(reply[0])
    if code == errors.UNKNOWN_WORKER:
        return "gone"
    errors.raise_for(code, pool=pool.name, operation="heartbeat", worker_id=me.worker_id)
    return "registered" if int(reply[1]) else "beat"


def leave(pool: Pool, me: Incarnation, mode: str) -> int:
    """Leave the pool: ``drain``, ``idle`` or ``exit`` (see leave_worker.lua).

    Returns 1 if the worker has left, 2 if it leaves when its lease ends,
    0 if it stays (leased, mode ``idle``) or this incarnation no longer
    holds the id.
    """
    if mode not in ("drain", "idle", "exit"):
        raise ValueError(f"mode must be 'drain', 'idle' or 'exit', got {mode!r}")
    reply = pool._run(
        "leave_worker",
        (me.worker_id, me.incarnation, mode),
        extra_keys=worker_keys(pool),
        worker_id=me.worker_id,
    )
    return int(reply[1]) if int(reply[0]) == errors.OK else 0


def reap(
    pool: Pool, worker_id: str = "", token: int | None = None, nonce: str = ""
) -> tuple[int, int]:
    """Bury workers whose heartbeat lapsed; ``(buried, state)``.

    With ``worker_id``, ``token`` and ``nonce``, ``state`` says how that lease stands:
    ``errors.OK``, ``errors.WORKER_DEAD`` or ``errors.NOT_HELD`` (else -1).
    """
    total = 0
    while True:
        reply = pool._run(
            "reap_workers",
            (REAP_BATCH, worker_id, "" if token is None else token, nonce),
            extra_keys=worker_keys(pool),
            worker_id=worker_id or None,
        )
        total += int(reply[1])
        if int(reply[1]) < REAP_BATCH:
            return total, int(reply[2])


def start_job(pool: Pool, me: Incarnation, token: str, nonce: str) -> int:
    """The fence, run before each job: a result code (see start_job.lua).

    The job runs only if ``token`` and ``nonce`` are both its worker's current lease's.
    """
    return fence_job(pool, me, token, nonce)[0]


def fence_job(pool: Pool, me: Incarnation, token: str, nonce: str) -> tuple[int, float]:
    """:func:`start_job`, and the seconds the lease surely still holds when the
    code is OK (0.0 otherwise)."""
    k = pool.keys
    keys = (k.lease(me.worker_id), k.incarnations, k.dead_leases, k.jobs)
    reply = pool._run(
        "start_job",
        (me.worker_id, token, me.incarnation, nonce),
        keys=keys,
        worker_id=me.worker_id,
    )
    code = int(reply[0])
    left = max(0, int(reply[1])) / 1000 if code == errors.OK and len(reply) > 1 else 0.0
    return code, left


def lease_left(pool: Pool, worker_id: str, token: str, nonce: str) -> float:
    """Seconds the lease of ``token`` and ``nonce`` on ``worker_id`` surely
    still holds (its key's TTL), 0.0 once it has ended; one round trip.

    A worker asks this again and again while a job runs: Redis expires the
    lease key on access, so 0.0 comes the moment the lease's TTL is over,
    whether or not anything has reclaimed the worker yet. Raises
    :class:`~redispool.PoolUnavailable` when Redis cannot say within the
    timeouts of ``pool``'s client (a worker watches through a client of its
    own with short ones).
    """
    key = pool.keys.lease(worker_id)
    with pool.redis_errors("watch", worker_id):
        value, ttl_ms = pool._wire.call_reads(("GET", key), ("PTTL", key))
    if value is None or not nonce:
        return 0.0
    raw = value.decode() if isinstance(value, bytes) else str(value)
    if not raw.startswith(f"{token}|{nonce}|"):
        return 0.0
    return max(0, int(ttl_ms)) / 1000  # a key without a TTL (-1) proves only this instant
