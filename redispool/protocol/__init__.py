"""The protocol layer: every operation of the pool, described without I/O.

Both client APIs (the sync :class:`redispool.Pool` and the asyncio one) and
the worker, reaper, CLI and jobs build their Redis calls here and nowhere
else. An operation is an :class:`Op`: the library function it calls, its
KEYS in the order of the script's header, its ARGV, and ``read(reply)``,
which returns a typed result (frozen dataclasses in :mod:`.replies`) or
raises the exception that :data:`redispool.errors.CODES` names for the
reply's code (:class:`~redispool.PoolCorrupted` for a reply of the wrong
shape). Sending is the caller's: ``op.command()`` is the whole ``FCALL``;
a server that answers "function not found" lacks this version's library
(:func:`redispool.scripts.library`: ``FUNCTION LOAD REPLACE`` its source,
then send again, as :class:`redispool.scripts.Script` does). Whatever
redis-py raises while sending goes through :func:`translate` (the same for
``redis.asyncio``).

API (every builder takes the pool's :class:`~redispool.keys.PoolKeys` first)::

    # a lease's life (.leasing)
    checkout(keys, *, ttl_ms, holder, ticket, alive_ms, nonce) -> Op[Granted | Queued]
    wait_tick(keys, *, ticket, ttl_ms, holder, alive_ms, nonce) -> Op[Handoff | Granted | Waiting]
    cancel_wait(keys, ticket)                                  -> Op[Handoff | None]
    read_handoff(keys, ticket, raw)      -> Handoff  # one peeked in the wake key (no op)
    checkin(keys, *, worker_id, token, nonce)                  -> Op[Checkin]
    renew(keys, [(worker_id, token, nonce, ttl_ms), ...])      -> Op[Renewal]
    # the pool (.pool_ops)
    configure(keys, *, ttl_ms, strategy, default_ttl_ms=0)     -> Op[PoolSettings]
    status(keys)                                               -> Op[PoolStatus]
    reclaim(keys, limit=SWEEP_BATCH)                           -> Op[Reclaimed]
    # workers (.workers)
    add_worker(keys, worker_id, meta, default_ttl_ms=0)        -> Op[bool]   # True: new
    remove_worker(keys, worker_id)                             -> Op[bool]   # False: unknown
    register(keys, me, replaces="", default_ttl_ms=0)          -> Op[bool]   # True: anew
    beat(keys, me, *, reregister=True, default_ttl_ms=0)       -> Op[Beat]
    leave(keys, me, mode)                                      -> Op[int]    # 1, 2 or 0
    bury(keys, worker_id="", token=None, nonce="", limit=BURY_BATCH) -> Op[Buried]
    lease_left(keys, worker_id, token, nonce)                  -> Reads[float]  # GET + PTTL

Vocabulary: *reclaim* returns the workers of expired leases; *bury* removes
a worker whose process stopped beating (the ``reap_workers`` script; the
:class:`~redispool.Reaper` does both); the *fence* is the check a worker
makes before each job that its token and nonce are the current lease's
(``begin_job``, in :mod:`.jobs`); a lease's *token* is its fencing token.

A Lease's life is :class:`LeaseLife` (:mod:`.lease_life`); the time
arithmetic both clients share (waiter wake times, alive_until, renewal due
times, lease remaining) is in :mod:`.clock`. Nothing here does I/O.
"""

from __future__ import annotations

from . import clock
from .failures import translate
from .lease_life import Event, LeaseLife, renewal_batch, renewal_done, renewal_failed
from .leasing import cancel_wait, checkin, checkout, read_handoff, renew, wait_tick
from .op import Op, Reads
from .pool_ops import configure, reclaim, status
from .replies import (
    Buried,
    Checkin,
    Granted,
    Handoff,
    Queued,
    Reclaimed,
    Renewal,
    Waiting,
)
from .workers import (
    LEAVE_MODES,
    Beat,
    Incarnation,
    add_worker,
    beat,
    bury,
    lease_left,
    leave,
    register,
    remove_worker,
)

__all__ = [
    "LEAVE_MODES",
    "Beat",
    "Buried",
    "Checkin",
    "Event",
    "Granted",
    "Handoff",
    "Incarnation",
    "LeaseLife",
    "Op",
    "Queued",
    "Reads",
    "Reclaimed",
    "Renewal",
    "Waiting",
    "add_worker",
    "beat",
    "bury",
    "cancel_wait",
    "checkin",
    "checkout",
    "clock",
    "configure",
    "lease_left",
    "leave",
    "read_handoff",
    "reclaim",
    "register",
    "remove_worker",
    "renew",
    "renewal_batch",
    "renewal_done",
    "renewal_failed",
    "status",
    "translate",
    "wait_tick",
]
