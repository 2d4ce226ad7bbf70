"""The asyncio Pool's plain reads: its workers and its leases (the commands
and their reading are :mod:`redispool.status`'s, shared with the sync Pool)."""

from __future__ import annotations

from typing import Any

import redis

from ..keys import PoolKeys
from ..protocol import translate
from ..status import (
    LeaseInfo,
    PoolSettings,
    WorkerInfo,
    leases_commands,
    leases_of,
    read_settings,
    workers_commands,
    workers_of,
)
from ..wire import text
from .calls import Caller

__all__ = ["leases", "settings", "workers"]


async def _transaction(caller: Caller, commands: Any, operation: str) -> list[Any]:
    """``commands`` in one ``MULTI``/``EXEC``: their replies."""
    replies = await caller.wire.call_many([("MULTI",), *commands, ("EXEC",)])
    for reply in replies:
        if isinstance(reply, redis.RedisError):
            raise translate(reply, caller.pool, operation)
    result: list[Any] = replies[-1]
    return result


async def workers(caller: Caller, k: PoolKeys) -> list[WorkerInfo]:
    """Every registered worker, sorted by id (two round trips)."""
    try:
        first = await _transaction(caller, workers_commands(k), "workers")
        busy = sorted({text(w) for w in first[1]})
        values = await caller.command("MGET", *(k.lease(w) for w in busy),
                                      operation="workers") if busy else []  # fmt: skip
    except redis.RedisError as exc:
        raise translate(exc, caller.pool, "workers") from exc
    return workers_of(first, busy, values)


async def leases(caller: Caller, k: PoolKeys) -> list[LeaseInfo]:
    """Every live lease (two round trips)."""
    try:
        found = await caller.command("ZRANGE", k.deadlines, 0, -1, operation="leases")
        leased = [text(w) for w in found]
        if not leased:
            return []
        replies = await _transaction(caller, leases_commands(k, leased), "leases")
    except redis.RedisError as exc:
        raise translate(exc, caller.pool, "leases") from exc
    return leases_of(leased, replies)


async def settings(caller: Caller, k: PoolKeys) -> PoolSettings:
    """The pool's settings as stored (defaults where none are)."""
    raw = await caller.command("HGETALL", k.config, operation="settings")
    if not isinstance(raw, dict):  # RESP2: a flat list of fields and values
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    return read_settings(raw)
