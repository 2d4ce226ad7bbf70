"""The operations on workers: add and remove by hand; a worker process's
registration, heartbeat and leaving, and its look at a running job's lease;
burial of dead workers. (The fence at a job's start is :mod:`.jobs`'s.)"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ..defaults import BURY_BATCH, DEFAULT_LEASE_TTL_MS, DEFAULT_STRATEGY, worker_meta
from ..errors import FULL, OK, UNKNOWN_WORKER, OutOfService, raise_for
from ..keys import PoolKeys
from ..wire import text
from .op import Op, Reads, code_of, unexpected
from .replies import Buried

__all__ = [
    "LEAVE_MODES",
    "Beat",
    "Incarnation",
    "add_worker",
    "beat",
    "bury",
    "lease_left",
    "leave",
    "register",
    "remove_worker",
]

T = TypeVar("T")

LEAVE_MODES = ("drain", "idle", "exit")
#: What a heartbeat found: refreshed, registered again (it had vanished), or gone.
Beat = Literal["beat", "registered", "gone"]


@dataclass(frozen=True)
class Incarnation:
    """One process holding one worker id."""

    worker_id: str
    incarnation: str
    host: str
    pid: int
    heartbeat_ms: int
    overflow: bool = False


def add_worker(
    keys: PoolKeys, worker_id: str, meta: str, default_ttl_ms: int = 0
) -> Op[bool]:
    """Register ``worker_id`` by hand (``meta`` from :func:`~redispool.defaults.worker_meta`);
    ``default_ttl_ms`` (0: the default) seeds a new pool. Result: True for a new worker."""

    def parse(reply: Any) -> bool:
        code = code_of(reply)
        if code != OK:
            unexpected(code, pool=keys.pool, operation="add_worker", worker_id=worker_id)
        return bool(int(reply[1]))

    args = (worker_id, meta, default_ttl_ms or DEFAULT_LEASE_TTL_MS, DEFAULT_STRATEGY)
    return Op("add_worker", keys.common, args, parse, keys.pool, worker_id)


def remove_worker(keys: PoolKeys, worker_id: str) -> Op[bool]:
    """Deregister ``worker_id``. Result: False if the pool does not know it."""

    def parse(reply: Any) -> bool:
        code = code_of(reply)
        if code not in (OK, UNKNOWN_WORKER):
            unexpected(code, pool=keys.pool, operation="remove_worker", worker_id=worker_id)
        return code == OK

    op_keys = (*keys.common, *keys.liveness)
    return Op("remove_worker", op_keys, (worker_id,), parse, keys.pool, worker_id)


def _register_op(
    keys: PoolKeys, me: Incarnation, *, register: bool, replaces: str, default_ttl_ms: int,
    operation: str, parse: Callable[[Any], T],
) -> Op[T]:  # fmt: skip
    args = (
        me.worker_id, worker_meta(me.host, me.pid), me.incarnation, me.heartbeat_ms, replaces,
        "1" if register else "0", "1" if me.overflow else "0",
        default_ttl_ms or DEFAULT_LEASE_TTL_MS, DEFAULT_STRATEGY,
    )  # fmt: skip
    return Op(
        "register_worker", (*keys.common, *keys.liveness), args, parse, keys.pool,
        me.worker_id, operation,
    )  # fmt: skip


def register(
    keys: PoolKeys, me: Incarnation, replaces: str = "", default_ttl_ms: int = 0
) -> Op[bool]:
    """Take ``me.worker_id`` for this incarnation (or beat if it holds it);
    ``replaces`` names an incarnation known dead. Result: True if registered
    anew. Raises :class:`~redispool.errors.WorkerIdTaken`, or
    :class:`~redispool.errors.OutOfService` for an id taken out of service."""

    def parse(reply: Any) -> bool:
        code = code_of(reply)
        if code == UNKNOWN_WORKER:
            raise OutOfService(
                f"pool {keys.pool!r}: worker {me.worker_id!r} was taken out of service",
                pool=keys.pool, worker_id=me.worker_id, operation="register",
            )  # fmt: skip
        raise_for(code, pool=keys.pool, operation="register", worker_id=me.worker_id)
        return bool(int(reply[1]))

    return _register_op(
        keys, me, register=True, replaces=replaces, default_ttl_ms=default_ttl_ms,
        operation="register", parse=parse,
    )  # fmt: skip


def beat(
    keys: PoolKeys, me: Incarnation, *, reregister: bool = True, default_ttl_ms: int = 0
) -> Op[Beat]:
    """Refresh the heartbeat; register again if the registration vanished and
    ``reregister``. Result: :data:`Beat`. Raises WorkerIdTaken."""

    def parse(reply: Any) -> Beat:
        code = code_of(reply)
        if code == UNKNOWN_WORKER:
            return "gone"
        raise_for(code, pool=keys.pool, operation="heartbeat", worker_id=me.worker_id)
        return "registered" if int(reply[1]) else "beat"

    return _register_op(
        keys, me, register=reregister, replaces="", default_ttl_ms=default_ttl_ms,
        operation="heartbeat", parse=parse,
    )  # fmt: skip


def leave(keys: PoolKeys, me: Incarnation, mode: str) -> Op[int]:
    """Leave the pool (``mode`` one of :data:`LEAVE_MODES`). Result: 1 left,
    2 leaves when its lease ends, 0 stays (leased, ``idle``) or not this incarnation's."""
    if mode not in LEAVE_MODES:
        raise ValueError(f"mode must be 'drain', 'idle' or 'exit', got {mode!r}")

    def parse(reply: Any) -> int:
        code = code_of(reply)
        if code == OK:
            return int(reply[1])
        if code in (FULL, UNKNOWN_WORKER):
            return 0
        unexpected(code, pool=keys.pool, operation="leave", worker_id=me.worker_id)

    args = (me.worker_id, me.incarnation, mode)
    return Op(
        "leave_worker", (*keys.common, *keys.liveness), args, parse, keys.pool, me.worker_id
    )


def bury(
    keys: PoolKeys, worker_id: str = "", token: int | None = None, nonce: str = "",
    limit: int = BURY_BATCH,
) -> Op[Buried]:  # fmt: skip
    """Bury at most ``limit`` workers whose heartbeat lapsed (``reap_workers``);
    with ``worker_id``, ``token`` and ``nonce`` also say how that lease stands.
    Result: :class:`Buried`; the caller repeats while its ``more`` is set."""

    def parse(reply: Any) -> Buried:
        code = code_of(reply)
        if code != OK:
            unexpected(code, pool=keys.pool, operation="reap_workers", worker_id=worker_id or None)
        buried = int(reply[1])
        return Buried(buried, int(reply[2]), more=buried >= limit)

    args = (limit, worker_id, "" if token is None else token, nonce)
    return Op(
        "reap_workers", (*keys.common, *keys.liveness), args, parse, keys.pool, worker_id or None
    )


def lease_left(keys: PoolKeys, worker_id: str, token: str, nonce: str) -> Reads[float]:
    """Seconds the lease of ``token`` and ``nonce`` on ``worker_id`` surely
    still holds (its key's PTTL), 0.0 once it has ended: ``GET`` and ``PTTL``."""
    key = keys.lease(worker_id)

    def parse(replies: list[Any]) -> float:
        value, ttl_ms = replies
        if value is None or not nonce or not text(value).startswith(f"{token}|{nonce}|"):
            return 0.0
        return max(0, int(ttl_ms)) / 1000  # a key without a TTL (-1) proves only this instant

    return Reads((("GET", key), ("PTTL", key)), parse, keys.pool, worker_id, "watch")
