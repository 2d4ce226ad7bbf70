"""What a pool reports about itself: numbers, workers, leases, settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis

from .defaults import DEFAULT_LEASE_TTL, DEFAULT_STRATEGY
from .keys import PoolKeys
from .wire import text

__all__ = [
    "LeaseInfo",
    "PoolSettings",
    "PoolStatus",
    "WorkerInfo",
    "read_leases",
    "read_settings",
    "read_workers",
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
    return host or None, int(pid) if pid.isdigit() else None


def parse_lease(value: str) -> tuple[int | None, str, str]:
    """``(token, nonce, holder)`` of a lease key's value ``token|nonce|holder``;
    token None when the value is not one redispool writes."""
    token, _, rest = value.partition("|")
    nonce, bar, holder = rest.partition("|")
    if not (token.isdigit() and bar and nonce and all(c in "0123456789abcdef" for c in nonce)):
        return None, "", rest
    return int(token), nonce, holder


def read_workers(client: Redis, k: PoolKeys) -> list[WorkerInfo]:
    """Every registered worker of the pool of ``k``, sorted by id (two round trips)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(k.workers)
        pipe.zrange(k.deadlines, 0, -1)
        pipe.smembers(k.draining)
        pipe.hgetall(k.jobs)
        pipe.smembers(k.overflow)
        meta, leased, draining, jobs, overflow = pipe.execute()
    busy = {text(w) for w in leased}
    gone = {text(w) for w in draining}
    counts = {text(w): int(n) for w, n in jobs.items()}
    surplus = {text(w) for w in overflow}
    metas = {text(w): text(m) for w, m in meta.items()}
    tokens: dict[str, int | None] = {}
    if busy:
        order = sorted(busy)
        values = client.mget([k.lease(w) for w in order])
        for wid, value in zip(order, values, strict=True):
            tokens[wid] = None if value is None else parse_lease(text(value))[0]
    result = []
    for wid in sorted(metas):
        host, pid = _parse_meta(metas[wid])
        state = "busy" if wid in busy else "idle"
        done, extra = counts.get(wid, 0), wid in surplus
        result.append(WorkerInfo(wid, state, host, pid, tokens.get(wid), wid in gone, done, extra))
    return result


def read_leases(client: Redis, k: PoolKeys) -> list[LeaseInfo]:
    """Every live lease of the pool of ``k`` (two round trips)."""
    leased = [text(w) for w in client.zrange(k.deadlines, 0, -1)]
    if not leased:
        return []
    with client.pipeline(transaction=True) as pipe:
        for wid in leased:
            pipe.get(k.lease(wid))
            pipe.pttl(k.lease(wid))
        replies = pipe.execute()
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
        lease_ttl=int(ttl_ms) / 1000 if ttl_ms.isdigit() else DEFAULT_LEASE_TTL,
        strategy=values.get("strategy", DEFAULT_STRATEGY),
    )
