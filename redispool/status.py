"""What a pool reports about itself: numbers, workers, leases, settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis

from .defaults import DEFAULT_LEASE_TTL, DEFAULT_STRATEGY
from .keys import PoolKeys
from .wire import number, text

__all__ = [
    "LeaseInfo",
    "PoolSettings",
    "PoolStatus",
    "WorkerInfo",
    "leases_commands",
    "leases_of",
    "read_leases",
    "read_settings",
    "read_workers",
    "workers_commands",
    "workers_of",
]


@dataclass(frozen=True)
class PoolStatus:
    """The pool's numbers at one instant.

    ``size`` counts registered workers (a removed worker that is still leased
    counts until it comes back); ``busy`` counts leased workers, including
    ``expired`` leases that no sweep has returned yet.
    """

    size: int
    idle: int
    busy: int
    waiting: int
    draining: int = 0
    expired: int = 0
    dead: int = 0
    overflow: int = 0


@dataclass(frozen=True)
class WorkerInfo:
    """One registered worker."""

    id: str
    state: str  # "idle" | "busy"
    host: str | None
    pid: int | None
    token: int | None = None
    draining: bool = False
    jobs: int = 0
    overflow: bool = False


@dataclass(frozen=True)
class LeaseInfo:
    """One live lease."""

    worker_id: str
    token: int
    holder: str
    ttl_left: float  # seconds
    nonce: str = ""  # the lease's nonce (its holder's proof beside the token)


@dataclass(frozen=True)
class PoolSettings:
    """A pool's settings as stored in Redis."""

    lease_ttl: float
    strategy: str


def _parse_meta(meta: str) -> tuple[str | None, int | None]:
    host, _, pid = meta.partition("|")
    return host or None, number(pid)


def parse_lease(value: str) -> tuple[int | None, str, str]:
    """``(token, nonce, holder)`` of a lease key's value ``token|nonce|holder``;
    token None when the value is not one redispool writes."""
    token, _, rest = value.partition("|")
    nonce, bar, holder = rest.partition("|")
    fence = number(token)
    if fence is None or not (bar and nonce and all(c in "0123456789abcdef" for c in nonce)):
        return None, "", rest
    return fence, nonce, holder


def read_workers(client: Redis, k: PoolKeys) -> list[WorkerInfo]:
    """Every registered worker of the pool of ``k``, sorted by id (two round trips)."""
    with client.pipeline(transaction=True) as pipe:
        for command in workers_commands(k):
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        first = pipe.execute()
    busy = sorted({text(w) for w in first[1]})
    values = client.mget([k.lease(w) for w in busy]) if busy else []
    return workers_of(first, busy, values)


def workers_commands(k: PoolKeys) -> tuple[tuple[str, ...], ...]:
    """The reads :func:`workers_of` needs first, sent in one transaction."""
    return (
        ("HGETALL", k.workers), ("ZRANGE", k.deadlines, "0", "-1"), ("SMEMBERS", k.draining),
        ("HGETALL", k.jobs), ("SMEMBERS", k.overflow),
    )  # fmt: skip


def _pairs(reply: Any) -> dict[str, str]:
    """A hash reply as a dict, RESP3 (a dict) or RESP2 (a flat list)."""
    if isinstance(reply, dict):
        return {text(key): text(value) for key, value in reply.items()}
    return {text(key): text(value) for key, value in zip(reply[::2], reply[1::2], strict=True)}


def workers_of(first: list[Any], busy: list[str], values: list[Any]) -> list[WorkerInfo]:
    """The workers, from the replies to :func:`workers_commands` and the lease
    values of the ``busy`` (sorted) workers (``MGET``)."""
    meta, _, draining, jobs, overflow = first
    gone = {text(w) for w in draining}
    counts = {w: int(n) for w, n in _pairs(jobs).items()}
    surplus = {text(w) for w in overflow}
    metas = _pairs(meta)
    tokens: dict[str, int | None] = {}
    for wid, value in zip(busy, values, strict=True):
        tokens[wid] = None if value is None else parse_lease(text(value))[0]
    result = []
    for wid in sorted(metas):
        host, pid = _parse_meta(metas[wid])
        state = "busy" if wid in tokens else "idle"
        done, extra = counts.get(wid, 0), wid in surplus
        result.append(WorkerInfo(wid, state, host, pid, tokens.get(wid), wid in gone, done, extra))
    return result


def read_leases(client: Redis, k: PoolKeys) -> list[LeaseInfo]:
    """Every live lease of the pool of ``k`` (two round trips)."""
    leased = [text(w) for w in client.zrange(k.deadlines, 0, -1)]
    if not leased:
        return []
    with client.pipeline(transaction=True) as pipe:
        for command in leases_commands(k, leased):
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        replies = pipe.execute()
    return leases_of(leased, replies)


def leases_commands(k: PoolKeys, leased: list[str]) -> list[tuple[str, ...]]:
    """``GET`` and ``PTTL`` of each leased worker's lease key, for :func:`leases_of`."""
    commands: list[tuple[str, ...]] = []
    for wid in leased:
        commands += (("GET", k.lease(wid)), ("PTTL", k.lease(wid)))
    return commands


def leases_of(leased: list[str], replies: list[Any]) -> list[LeaseInfo]:
    """The live leases, from the replies to :func:`leases_commands`."""
    result = []
    for i, wid in enumerate(leased):
        value, pttl = replies[2 * i], replies[2 * i + 1]
        if value is None or pttl is None or int(pttl) < 0:
            continue
        token, nonce, holder = parse_lease(text(value))
        if token is not None:
            result.append(LeaseInfo(wid, token, holder, int(pttl) / 1000, nonce))
    return result


def read_settings(config: dict[Any, Any]) -> PoolSettings:
    """The settings in a pool's config hash (``HGETALL``), defaults where none are."""
    values = {text(k): text(v) for k, v in config.items()}
    ttl_ms = values.get("lease_ttl_ms", "")
    return PoolSettings(
        lease_ttl=ttl / 1000 if (ttl := number(ttl_ms)) is not None else DEFAULT_LEASE_TTL,
        strategy=values.get("strategy", DEFAULT_STRATEGY),
    )
