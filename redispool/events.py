"""A bounded log, per pool, of what operators need to see.

Each pool keeps one Redis stream, ``redispool:{P}:events``, capped at
:data:`MAX_EVENTS` entries (exact trimming: the stream never holds more).
The processes that already run write to it where they learn the outcome: the
Reaper (a lease reclaimed, a worker buried), a worker (a stale job refused or
stopped, a burial by its replacement, its drain), a supervisor (a worker
process died), the Reaper after its connection came back (a failover seen),
and the operator's actions (``redispool drain``, the web page).

What a caller may rely on: :func:`record` never raises (a log that cannot be
written must not cost a worker or a sweep; it logs a warning and returns
False), and every entry read back is an :class:`Event` whose fields are plain
text, whatever was written into the stream by hand. Events are best effort:
one written while Redis is unreachable is lost, and the oldest are dropped
past the cap.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import redis

from .keys import PoolKeys, validate_pool_name
from .wire import number, text

__all__ = ["KINDS", "MAX_EVENTS", "Event", "follow", "read", "record"]

log = logging.getLogger("redispool.events")

#: The most entries one pool's stream holds.
MAX_EVENTS = 1000
#: Longest detail kept, in characters (a hostile or runaway message stays small).
MAX_DETAIL = 500

#: Every kind of event, with what it means.
KINDS = {
    "reclaimed": "expired leases whose workers were returned",
    "buried": "workers whose heartbeat lapsed (or whose process died) left the pool",
    "died": "a worker process died; its supervisor replaces it",
    "refused": "a job whose lease was not current was refused before it ran",
    "stopped": "a job was stopped because its lease ended while it ran",
    "drained": "a worker was taken out of service (it leaves after its lease)",
    "removed": "a worker was removed from the pool",
    "left": "a worker process left the pool",
    "reconnected": "a process lost Redis and found it again (a restart or a failover)",
    "action": "an operator's action through the web page",
}


@dataclass(frozen=True)
class Event:
    """One entry of a pool's log; ``at`` is the stream id's server ms."""

    id: str
    at: int
    kind: str
    worker: str
    detail: str
    count: int
    by: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _by() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def record(
    client: redis.Redis, pool: str, kind: str, *, worker: str = "", detail: str = "",
    count: int = 1,
) -> bool:  # fmt: skip
    """Append one event to ``pool``'s log; False (and a warning) if Redis refused it.

    ``kind`` must be one of :data:`KINDS` (``ValueError`` otherwise: a caller's bug).
    """
    validate_pool_name(pool)
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {kind!r}: use one of {', '.join(KINDS)}")
    fields: dict[Any, Any] = {"kind": kind, "worker": worker, "detail": detail[:MAX_DETAIL],
              "count": str(count), "by": _by()}  # fmt: skip
    try:
        client.xadd(PoolKeys(pool).events, fields, maxlen=MAX_EVENTS, approximate=False)
    except redis.RedisError as exc:
        log.warning("could not log event %s of pool %s: %s", kind, pool, exc)
        return False
    return True


def _parse(entry_id: Any, fields: Any) -> Event:
    """An Event from one stream entry; fields written by hand come out as text."""
    eid = text(entry_id)
    got = {text(k): text(v) for k, v in (fields or {}).items()}
    at = eid.partition("-")[0]
    count = got.get("count", "1")
    return Event(
        id=eid,
        at=number(at) or 0,
        kind=got.get("kind", "?")[:40],
        worker=got.get("worker", "")[:200],
        detail=got.get("detail", "")[:MAX_DETAIL],
        count=number(count) or 0,
        by=got.get("by", "")[:200],
    )


def read(client: redis.Redis, pool: str, count: int = 100) -> list[Event]:
    """The newest ``count`` events of ``pool``, oldest first.

    A key that is not a stream (junk written by hand) reads as no events and a
    warning, never an error.
    """
    validate_pool_name(pool)
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count!r}")
    try:
        entries: Any = client.xrevrange(PoolKeys(pool).events, count=count)
    except redis.ResponseError as exc:  # WRONGTYPE: not a stream
        log.warning("event log of pool %s is unreadable: %s", pool, exc)
        return []
    return [_parse(eid, fields) for eid, fields in reversed(entries or [])]


def follow(
    client: redis.Redis, pool: str, *, after: str = "$", block_ms: int = 1000
) -> Iterator[Event]:
    """Yield each event of ``pool`` written after ``after`` (``$``: from now), for
    ever. Each wait blocks at most ``block_ms`` (below the client's socket timeout)."""
    validate_pool_name(pool)
    last = after
    key = PoolKeys(pool).events
    while True:
        reply = client.xread({key: last}, block=block_ms, count=100)
        for _stream, entries in _entries(reply, key):
            for eid, fields in entries:
                last = text(eid)
                yield _parse(eid, fields)


def _entries(reply: Any, key: str) -> list[tuple[str, Any]]:
    """XREAD's reply as ``[(stream, entries)]``, from RESP2 (a list) or RESP3 (a dict)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(text(k), v[0] if v and isinstance(v[0], list) else v) for k, v in reply.items()]
    return [(text(k), v) for k, v in reply]
