"""Inspect every key of a pool for data redispool did not write; change nothing.

``check_pool(pool)`` reads the pool's keys in one transaction (MULTI/EXEC,
so the picture is of one instant), checks each key's type and value format
and the invariants that tie them together (every registered worker idle or
leased, no id of an unknown worker in a list, tokens never behind a lease and
with room to grow, a server that never evicts the pool's keys), and returns
one :class:`Problem` per finding. An empty list means the pool
is sound. It only reads: it is what ``redispool status`` reports when a
script answers :class:`~redispool.PoolCorrupted`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from .defaults import MAX_TTL_MS, MIN_TTL_MS
from .errors import PoolUnavailable
from .keys import PoolKeys
from .pool import Pool
from .wire import text

__all__ = ["Problem", "check_pool"]

#: A lease key may outlive its deadline by this much (ms) before it is a problem.
SLACK_MS = 50
_DIGITS = re.compile(r"[0-9]+")
_LEASE = re.compile(r"([0-9]+)\|[0-9a-f]+\|.*", re.DOTALL)
_ENTRY = re.compile(r"([^|]+)\|([0-9]+)\|[0-9a-fA-F]+\|.*", re.DOTALL)
#: The scripts' largest token (2^53 - 1: Lua numbers are doubles).
MAX_TOKEN = 2**53 - 1
#: A counter closer than this to MAX_TOKEN has no room left to grow (about
#: 11 days of the server clock in microseconds, which tokens follow).
TOKEN_ROOM = 10**12
_META = re.compile(r"[^|]*\|[0-9]*")
#: How many times a snapshot is retried when workers change while it is read.
ATTEMPTS = 5


@dataclass(frozen=True)
class Problem:
    """One finding: the key it is about and what is wrong there."""

    key: str
    problem: str

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}"


def _kinds(k: PoolKeys) -> dict[str, str]:
    """Every fixed key of a pool and the Redis type it has when it exists."""
    return {
        k.config: "hash", k.workers: "hash", k.idle: "list", k.deadlines: "zset",
        k.token: "string", k.draining: "set", k.waitq: "list", k.waiters: "zset",
        k.heartbeats: "zset", k.incarnations: "hash", k.dead_leases: "zset",
        k.jobs: "hash", k.overflow: "set", k.removed: "hash",
    }


_READ: dict[str, Callable[[Any, str], Any]] = {
    "hash": lambda pipe, key: pipe.hgetall(key),
    "list": lambda pipe, key: pipe.lrange(key, 0, -1),
    "zset": lambda pipe, key: pipe.zrange(key, 0, -1, withscores=True),
    "string": lambda pipe, key: pipe.get(key),
    "set": lambda pipe, key: pipe.smembers(key),
}


@dataclass
class _Snapshot:
    now_ms: int
    found: dict[str, str]  # key -> its type ("none" when missing)
    values: dict[str, Any]  # key -> its decoded content, for keys of the right type
    leases: dict[str, tuple[str, Any, int]]  # worker id -> (type, value, pttl) of its lease key


def _decode(kind: str, raw: Any) -> Any:
    if kind == "hash":
        return {text(f): text(v) for f, v in raw.items()}
    if kind == "list":
        return [text(v) for v in raw]
    if kind == "zset":
        return {text(m): float(s) for m, s in raw}
    if kind == "set":
        return {text(v) for v in raw}
    return None if raw is None else text(raw)


def _read(pool: Pool, ids: set[str]) -> _Snapshot:
    """One transaction: the type and content of every key, and the lease key of
    each of ``ids``. A read of a key of the wrong type answers an error, which
    is kept in place of the value (``raise_on_error=False``) and ignored."""
    kinds = _kinds(pool.keys)
    order = sorted(ids)
    with pool.client.pipeline(transaction=True) as pipe:
        pipe.time()
        for key, kind in kinds.items():
            pipe.type(key)
            _READ[kind](pipe, key)
        for wid in order:
            lease = pool.keys.lease(wid)
            pipe.type(lease)
            pipe.pttl(lease)
            pipe.get(lease)
        replies = pipe.execute(raise_on_error=False)
    sec, usec = replies[0]
    found: dict[str, str] = {}
    values: dict[str, Any] = {}
    for i, (key, kind) in enumerate(kinds.items()):
        found[key] = text(replies[1 + 2 * i])
        if found[key] == kind:
            values[key] = _decode(kind, replies[2 + 2 * i])
    rest = replies[1 + 2 * len(kinds) :]
    leases = {
        wid: (text(rest[3 * i]), rest[3 * i + 2] if text(rest[3 * i]) == "string" else None,
              int(rest[3 * i + 1]))
        for i, wid in enumerate(order)
    }
    return _Snapshot(int(sec) * 1000 + int(usec) // 1000, found, values, leases)


def _ids(snap: _Snapshot, k: PoolKeys) -> set[str]:
    """Every worker id the snapshot mentions in the workers hash, idle list or deadlines."""
    ids: set[str] = set(snap.values.get(k.workers, {}))
    ids.update(snap.values.get(k.idle, []))
    ids.update(snap.values.get(k.deadlines, {}))
    return ids


def _snapshot(pool: Pool) -> _Snapshot:
    ids: set[str] = set()
    snap = _read(pool, ids)
    for _ in range(ATTEMPTS):
        wanted = _ids(snap, pool.keys)
        if wanted <= ids:
            break
        ids |= wanted
        snap = _read(pool, ids)
    return snap


def check_pool(pool: Pool) -> list[Problem]:
    """Every problem found in ``pool``'s keys, sorted by key; empty when it is sound.

    Reads only. Raises :class:`~redispool.PoolUnavailable` when Redis is
    unreachable (as every pool call does).
    """
    try:
        snap = _snapshot(pool)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise PoolUnavailable(
            f"pool {pool.name!r}: check: Redis unreachable: {exc}",
            pool=pool.name,
            operation="check",
        ) from exc
    problems: list[Problem] = []
    k = pool.keys
    for key, kind in _kinds(k).items():
        if snap.found[key] not in ("none", kind):
            problems.append(Problem(key, f"is a {snap.found[key]}, not a {kind}"))
    for check in (_config, _token, _workers, _idle, _deadlines, _leases, _draining, _waiting,
                  _worker_keys):
        problems.extend(check(snap, k))
    problems.extend(_eviction(pool))
    return sorted(problems, key=lambda p: p.key)


def _eviction(pool: Pool) -> list[Problem]:
    """The server's ``maxmemory-policy`` if it may evict the pool's keys (an
    evicted idle list or lease is a lost worker or a broken fence). A server
    that refuses CONFIG (managed Redis) is not reported."""
    try:
        reply = pool.client.config_get("maxmemory-policy")
    except redis.RedisError:
        return []
    policy = text(next(iter(reply.values()), "")) if isinstance(reply, dict) else ""
    if policy in ("", "noeviction"):
        return []
    return [Problem("maxmemory-policy", f"is {policy!r}, not 'noeviction': Redis may evict "
                                        "the pool's keys under memory pressure")]


def _config(snap: _Snapshot, k: PoolKeys) -> list[Problem]:
    config: dict[str, str] = snap.values.get(k.config, {})
    problems = []
    ttl = config.get("lease_ttl_ms")
    if ttl is not None and not (_DIGITS.fullmatch(ttl) and MIN_TTL_MS <= int(ttl) <= MAX_TTL_MS):
        wanted = f"{MIN_TTL_MS}..{MAX_TTL_MS} ms"
        problems.append(Problem(k.config, f"lease_ttl_ms is {ttl!r}, not {wanted}"))
    strategy = config.get("strategy")
    if strategy is not None and strategy not in ("lifo", "fifo"):
        problems.append(Problem(k.config, f"strategy is {strategy!r}, not 'lifo' or 'fifo'"))
    return problems


def _token(snap: _Snapshot, k: PoolKeys) -> list[Problem]:
    token = snap.values.get(k.token)
    if token is None:
        return []
    if not (_DIGITS.fullmatch(token) and len(token) <= 16 and int(token) <= MAX_TOKEN):
        return [Problem(k.token, f"holds {token!r}, not a decimal token below 2^53")]
    if int(token) > MAX_TOKEN - TOKEN_ROOM:
        return [Problem(k.token, f"is {token}, within {TOKEN_ROOM} of the largest token "
                                 f"{MAX_TOKEN}: no room left to grow")]
    behind = [
        wid for wid, (kind, value, _) in snap.leases.items()
        if kind == "string" and value is not None and _lease_token(value) is not None
        and (_lease_token(value) or 0) > int(token)
    ]
    if behind:
        return [Problem(k.token, f"is {token}, behind the lease of {', '.join(sorted(behind))}: "
                                 "tokens would repeat")]
    return []


def _lease_token(value: Any) -> int | None:
    match = _LEASE.fullmatch(text(value))
    return int(match.group(1)) if match else None


def _workers(snap: _Snapshot, k: PoolKeys) -> list[Problem]:
    workers: dict[str, str] = snap.values.get(k.workers, {})
    idle = set(snap.values.get(k.idle, []))
    leased = set(snap.values.get(k.deadlines, {}))
    # a missing idle list or deadlines is an empty one (lost to an eviction or a DEL)
    known = snap.found[k.idle] in ("none", "list") and snap.found[k.deadlines] in ("none", "zset")
    problems = []
    for wid, meta in sorted(workers.items()):
        if not _META.fullmatch(meta):
            problems.append(Problem(k.workers, f"worker {wid!r} has {meta!r}, not 'host|pid'"))
        if known and wid not in idle and wid not in leased:
            problems.append(Problem(k.workers, f"worker {wid!r} is neither idle nor leased "
                                               "(its heartbeat or the sweep returns it)"))
    return problems


def _idle(snap: _Snapshot, k: PoolKeys) -> list[Problem]:
    idle: list[str] = snap.values.get(k.idle, [])
    workers = snap.values.get(k.workers, {})
    leased = snap.values.get(k.deadlines, {})
    problems = []
    for wid, times in sorted(Counter(idle).items()):
        if wid not in workers:
            problems.append(Problem(k.idle, f"holds {wid!r}, not a registered worker"))
        elif wid in leased:
            problems.append(Problem(k.idle, f"holds {wid!r}, which is leased"))
        if times > 1:
            problems.append(Problem(k.idle, f"holds {wid!r} {times} times"))
    return problems


def _deadlines(snap: _Snapshot, k: PoolKeys) -> list[Problem]:
    leased: dict[str, float] = snap.values.get(k.deadlines, {})
    workers = snap.values.get(k.workers, {})
    problems = []
    for wid, deadline in sorted(leased.items()):
        if k.workers in snap.values and wid not in workers:
            problems.append(Problem(k.deadlines, f"holds {wid!r}, not a registered worker"))
        if deadline > snap.now_ms + MAX_TTL_MS:
            problems.append(Problem(k.deadlines, f"deadline of {wid!r} is more than "
                                                 "7 days ahead"))
        kind, _, _ = snap.leases.get(wid, ("none", None, -2))
        if kind == "none" and deadline > snap.now_ms + SLACK_MS:
            problems.append(Problem(k.lease(wid), f"is missing while {wid!r} is leased until "
                                                  f"{deadline - snap.now_ms:.0f} ms from now"))
    return problems


def _leases(snap: _Snapshot, k: PoolKeys) -> list[Problem]:
    leased = snap.values.get(k.deadlines, {})
    problems = []
    for wid, (kind, value, pttl) in sorted(snap.leases.items()):
        key = k.lease(wid)
        if kind == "none":
            continue
        if kind != "string":
            problems.append(Problem(key, f"is a {kind}, not a string"))
        elif _lease_token(value) is None:
            problems.append(Problem(key, f"holds {text(value)!r}, not 'token|nonce|holder'"))
        if pttl == -1:
            problems.append(Problem(key, "has no TTL"))
        if k.deadlines in snap.values and wid not in leased:
            problems.append(Problem(key, f"exists while {wid!r} is not leased"))
    return problems


def _draining(snap: _Snapshot, k: PoolKeys) -> list[Problem]:
    draining: set[str] = snap.values.get(k.draining, set())
    leased = snap.values.get(k.deadlines, {})
    return [
        Problem(k.draining, f"holds {wid!r}, which is not leased")
        for wid in sorted(draining) if wid not in leased
    ]


def _waiting(snap: _Snapshot, k: PoolKeys) -> list[Problem]:
    """The queue's entries are 'ticket|ttl_ms|nonce|holder'; waiters holds the
    tickets still queued. An entry without a waiter is a dead one (trimmed by
    the sweep), no problem."""
    waitq: list[str] = snap.values.get(k.waitq, [])
    waiters: dict[str, float] = snap.values.get(k.waiters, {})
    problems = []
    queued = set()
    for entry in waitq:
        match = _ENTRY.fullmatch(entry)
        if not match or not MIN_TTL_MS <= int(match.group(2)) <= MAX_TTL_MS:
            problems.append(Problem(k.waitq, f"holds {entry!r}, not "
                                             "'ticket|ttl_ms|nonce|holder'"))
        else:
            queued.add(match.group(1))
    for ticket in sorted(waiters):
        if k.waitq in snap.values and ticket not in queued:
            problems.append(Problem(k.waiters, f"ticket {ticket!r} is not in the wait queue"))
    return problems


def _worker_keys(snap: _Snapshot, k: PoolKeys) -> list[Problem]:
    jobs: dict[str, str] = snap.values.get(k.jobs, {})
    problems = [
        Problem(k.jobs, f"worker {wid!r} has {count!r} jobs, not a count")
        for wid, count in sorted(jobs.items()) if not _DIGITS.fullmatch(count)
    ]
    dead: dict[str, float] = snap.values.get(k.dead_leases, {})
    problems += [
        Problem(k.dead_leases, f"holds {token!r}, not a token")
        for token in sorted(dead) if not _DIGITS.fullmatch(token)
    ]
    return problems
