"""Liveness of worker processes: registration, heartbeats, burial of the dead.

A worker run by a process (see :mod:`redispool.worker`) holds its id as one
*incarnation* (one per process start) and keeps a heartbeat key with a TTL.
When the heartbeat lapses, any host's Reaper (or a client waiting on a job)
buries the worker: it leaves the pool, and a lease on it ends with the reason
"worker dead", remembered per token for a day so that the holder gets
:class:`~redispool.WorkerLost` rather than :class:`~redispool.LeaseLost`.
Workers added by hand with ``Pool.add_worker`` have no heartbeat and are
never buried. Each function here sends one operation of
:mod:`redispool.protocol` through the pool's sender (one atomic script).
"""

from __future__ import annotations

from . import protocol
from .errors import OutOfService
from .lease import LeaseOwner
from .protocol import Beat, Incarnation

__all__ = [
    "Incarnation", "OutOfService", "beat", "bury", "lease_left", "leave", "reap", "register",
]  # fmt: skip


def register(pool: LeaseOwner, me: Incarnation, replaces: str = "") -> bool:
    """Take ``me.worker_id`` for this incarnation (or beat if it holds it).

    ``replaces`` names an incarnation the caller knows is dead (a supervisor
    that reaped the process): it is buried at once. Raises
    :class:`~redispool.errors.WorkerIdTaken` if a live worker, or one added
    by hand, holds the id, and :class:`OutOfService` if the id was taken out
    of service (also when the dead incarnation it replaces was: a drained
    worker that died before it left). True if it registered anew, False if
    it held it.
    """
    return pool.sender.send(protocol.register(pool.keys, me, replaces, pool.lease_ttl_ms))


def beat(pool: LeaseOwner, me: Incarnation, *, reregister: bool = True) -> Beat:
    """Refresh the heartbeat; register again if the registration vanished
    (FLUSHDB, a failover that lost writes) and ``reregister``.

    Returns ``"beat"``, ``"registered"`` (it had vanished and is back) or
    ``"gone"`` (not registered, and not registered again: it has left).
    Raises WorkerIdTaken if another live incarnation took the id meanwhile.
    """
    op = protocol.beat(pool.keys, me, reregister=reregister, default_ttl_ms=pool.lease_ttl_ms)
    return pool.sender.send(op)


def leave(pool: LeaseOwner, me: Incarnation, mode: str) -> int:
    """Leave the pool: ``drain``, ``idle`` or ``exit`` (see leave_worker.lua).

    Returns 1 if the worker has left, 2 if it leaves when its lease ends,
    0 if it stays (leased, mode ``idle``) or this incarnation no longer
    holds the id.
    """
    return pool.sender.send(protocol.leave(pool.keys, me, mode))


def bury(
    pool: LeaseOwner, worker_id: str = "", token: int | None = None, nonce: str = ""
) -> tuple[int, int]:
    """Bury workers whose heartbeat lapsed; ``(buried, state)``.

    With ``worker_id``, ``token`` and ``nonce``, ``state`` says how that lease stands:
    ``errors.OK``, ``errors.WORKER_DEAD`` or ``errors.NOT_HELD`` (else -1).
    """
    op = protocol.bury(pool.keys, worker_id, token, nonce)
    total = 0
    while True:
        outcome = pool.sender.send(op)
        total += outcome.buried
        if not outcome.more:
            return total, outcome.state


#: The old name of :func:`bury` (a Reaper reaps: it reclaims and buries).
reap = bury


def lease_left(pool: LeaseOwner, worker_id: str, token: str, nonce: str) -> float:
    """Seconds the lease of ``token`` and ``nonce`` on ``worker_id`` surely
    still holds (its key's TTL), 0.0 once it has ended; one round trip.

    A worker asks this again and again while a job runs: Redis expires the
    lease key on access, so 0.0 comes the moment the lease's TTL is over,
    whether or not anything has reclaimed the worker yet. Raises
    :class:`~redispool.PoolUnavailable` when Redis cannot say within the
    timeouts of ``pool``'s client (a worker watches through a client of its
    own with short ones).
    """
    return pool.sender.read(protocol.lease_left(pool.keys, worker_id, token, nonce))
