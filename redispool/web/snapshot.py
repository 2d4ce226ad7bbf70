"""What the web page shows of a pool, read in a few round trips whatever its size.

:func:`read_pool` reads the pool's numbers (the status script, atomic) and
then, in one ``MULTI``, every worker's registration, lease deadline,
heartbeat deadline, drain and overflow marks and job counts, with the
server's clock; then one ``MGET`` of the leased workers' lease keys for their
tokens and holders. Ten thousand workers take a few round trips, not ten
thousand (bench/bench_web.py measures it). Values are returned as plain
text and numbers; the page shows them as text.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..pool import Pool
from ..status import parse_lease
from ..wire import number, text

__all__ = ["MAX_WORKERS", "pool_summary", "read_pool"]

#: The most workers one snapshot lists (the numbers always count all of them).
MAX_WORKERS = 2000


def pool_summary(pool: Pool) -> dict[str, Any]:
    """The pool's numbers: ``{"pool", "size", "idle", "busy", "waiting", ...}``."""
    return {"pool": pool.name, **dataclasses.asdict(pool.status())}


def _int(value: Any) -> int:
    return number(value, signed=True) or 0


def _scores(pairs: Any) -> dict[str, float]:
    return {text(member): float(score) for member, score in pairs}


def read_pool(pool: Pool, limit: int = MAX_WORKERS) -> dict[str, Any]:
    """A snapshot of ``pool`` for the page: numbers, settings, workers (the first
    ``limit`` by id, busy ones first), leases; times in seconds from now by the
    server's clock."""
    summary = pool_summary(pool)
    settings = pool.settings()
    k = pool.keys
    with pool.redis_errors("web"), pool.client.pipeline(transaction=True) as pipe:
        pipe.time()
        pipe.hgetall(k.workers)
        pipe.zrange(k.deadlines, 0, -1, withscores=True)
        pipe.zrange(k.heartbeats, 0, -1, withscores=True)
        pipe.smembers(k.draining)
        pipe.smembers(k.overflow)
        pipe.hgetall(k.jobs)
        pipe.hgetall(k.jobs_failed)
        now_pair, metas, deadlines, beats, draining, overflow, jobs, failed = pipe.execute()
    now_ms = int(now_pair[0]) * 1000 + int(now_pair[1]) // 1000
    leased = _scores(deadlines)
    heartbeats = _scores(beats)
    gone = {text(w) for w in draining}
    extra = {text(w) for w in overflow}
    done = {text(w): _int(n) for w, n in jobs.items()}
    bad = {text(w): _int(n) for w, n in failed.items()}
    ids = sorted((text(w) for w in metas), key=lambda w: (w not in leased, w))
    shown = ids[:limit]
    busy = [w for w in shown if w in leased]
    values = pool.client.mget([k.lease(w) for w in busy]) if busy else []
    lease_of = {w: parse_lease(text(v)) for w, v in zip(busy, values, strict=True) if v}
    meta = {text(w): text(m) for w, m in metas.items()}
    workers, leases = [], []
    for wid in shown:
        host, _, pid = meta.get(wid, "").partition("|")
        token, _nonce, holder = lease_of.get(wid, (None, "", ""))
        beat = heartbeats.get(wid)
        workers.append({
            "id": wid, "state": "busy" if wid in leased else "idle", "host": host or None,
            "pid": number(pid), "token": token,
            "draining": wid in gone, "overflow": wid in extra,
            "jobs": done.get(wid, 0), "failed": bad.get(wid, 0),
            "heartbeat_left": None if beat is None else round((beat - now_ms) / 1000, 2),
        })  # fmt: skip
        if wid in leased:
            leases.append({
                "worker": wid, "token": token, "holder": holder or None,
                "ttl_left": round((leased[wid] - now_ms) / 1000, 2),
            })  # fmt: skip
    return {
        **summary, "lease_ttl": settings.lease_ttl, "strategy": settings.strategy,
        "workers": workers, "workers_total": len(ids), "leases": leases, "server_ms": now_ms,
    }  # fmt: skip
