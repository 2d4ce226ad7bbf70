"""The pool-wide operations: its settings, its numbers, and the sweep (reclaim)."""

from __future__ import annotations

from typing import Any

from ..defaults import DEFAULT_LEASE_TTL_MS, DEFAULT_STRATEGY, SWEEP_BATCH
from ..errors import OK
from ..keys import PoolKeys
from ..status import PoolSettings, PoolStatus
from ..wire import text
from .op import Op, code_of, unexpected
from .replies import Reclaimed

__all__ = ["configure", "reclaim", "status"]


def configure(
    keys: PoolKeys, *, ttl_ms: int | None, strategy: str, default_ttl_ms: int = 0
) -> Op[PoolSettings]:
    """Create or change the pool's settings (None / '' keep them);
    ``default_ttl_ms`` (0: the default) seeds a new pool. Result: the settings now."""

    def parse(reply: Any) -> PoolSettings:
        code = code_of(reply)
        if code != OK:
            unexpected(code, pool=keys.pool, operation="configure")
        return PoolSettings(lease_ttl=int(reply[1]) / 1000, strategy=text(reply[2]))

    args = (
        "" if ttl_ms is None else str(ttl_ms), strategy,
        default_ttl_ms or DEFAULT_LEASE_TTL_MS, DEFAULT_STRATEGY,
    )  # fmt: skip
    return Op("configure", keys.common, args, parse, keys.pool)


def status(keys: PoolKeys) -> Op[PoolStatus]:
    """The pool's numbers, read atomically. Result: :class:`~redispool.PoolStatus`."""

    def parse(reply: Any) -> PoolStatus:
        code = code_of(reply)
        if code != OK:
            unexpected(code, pool=keys.pool, operation="status")
        r = [int(x) for x in reply[1:7]]
        return PoolStatus(
            size=r[0], idle=r[1], busy=r[2], waiting=r[3], draining=r[4], expired=r[5],
            dead=int(reply[8]), overflow=int(reply[9]),
        )  # fmt: skip

    return Op("status", (*keys.common, keys.heartbeats, keys.overflow), (), parse, keys.pool)


def reclaim(keys: PoolKeys, limit: int = SWEEP_BATCH) -> Op[Reclaimed]:
    """The sweep: return the workers of at most ``limit`` expired leases, trim
    dead waiters, put back lost workers. Result: :class:`Reclaimed`; the caller
    repeats while its ``more`` is set."""

    def parse(reply: Any) -> Reclaimed:
        code = code_of(reply)
        if code != OK:
            unexpected(code, pool=keys.pool, operation="reclaim")
        returned, next_deadline, now, trimmed, repaired = (int(x) for x in reply[1:6])
        more = returned >= limit or trimmed >= limit
        return Reclaimed(returned, next_deadline, now, trimmed, repaired, more)

    return Op("reclaim", keys.common, (limit,), parse, keys.pool)
