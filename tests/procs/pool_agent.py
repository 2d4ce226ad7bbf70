"""A pool client that a test drives from outside, run inside a host's namespace.

    python pool_agent.py URL POOL TTL

It reads one JSON request per line on stdin, ``{"id": .., "op": .., ...}``,
handles each in a thread of its own (so a blocking checkout does not hold up
the next request), and answers with one JSON line on stdout carrying the same
``id``, ``ok``, and ``t0``/``t1``: ``time.monotonic()`` when the request was
taken up and answered (one clock for every process on this machine).

Ops: ``checkout`` (timeout, auto_renew) -> worker, token; ``run`` (token, n,
timeout) -> result of the doubler; ``run_func`` (token, func, args,
timeout) -> what ``lease.run`` returns; ``run_stale`` (worker, token, n): send a
job under a token from a fresh Lease object, as a client that does not know
its lease ended would; ``renew``, ``checkin``, ``lost`` (token); ``status``;
``workers``. A failure answers ``ok: false`` with ``error`` (the exception's
class name) and ``message``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from redispool import Pool
from redispool.doubler import compute
from redispool.lease import Lease

_out = threading.Lock()


def say(reply: dict[str, Any]) -> None:
    line = json.dumps(reply)
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Agent:
    def __init__(self, url: str, name: str, ttl: float) -> None:
        self.pool = Pool(name, url=url, lease_ttl=ttl)
        self.ttl = ttl
        self.leases: dict[int, Lease] = {}

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        pool = self.pool
        if op == "checkout":
            renew = req.get("auto_renew", True)
            lease = pool.checkout(timeout=req.get("timeout"), auto_renew=renew)
            self.leases[lease.token] = lease
            return {"worker": lease.worker_id, "token": lease.token}
        if op == "run":
            lease = self.leases[req["token"]]
            return {"result": compute(lease, req["n"], timeout=req.get("timeout", 10.0))}
        if op == "run_func":
            lease = self.leases[req["token"]]
            return {"result": lease.run(req["func"], *req["args"], timeout=req["timeout"])}
        if op == "run_stale":
            known = self.leases.get(req["token"])  # its nonce, as the stale client has it
            stale = Lease(
                pool, req["worker"], req["token"], self.ttl,
                auto_renew=False, deadline=time.monotonic() + self.ttl,
                nonce=known.nonce if known is not None else "",
            )  # fmt: skip
            return {"result": compute(stale, req["n"], timeout=req.get("timeout", 10.0))}
        if op == "renew":
            self.leases[req["token"]].renew()
            return {}
        if op == "checkin":
            return {"returned": self.leases[req["token"]].checkin()}
        if op == "lost":
            return {"lost": self.leases[req["token"]].lost.is_set()}
        if op == "status":
            s = pool.status()
            return {"size": s.size, "idle": s.idle, "busy": s.busy, "waiting": s.waiting}
        if op == "workers":
            return {"workers": [[w.id, w.state, w.pid, w.token] for w in pool.workers()]}
        raise ValueError(f"unknown op {op!r}")

    def serve(self, req: dict[str, Any]) -> None:
        t0 = time.monotonic()
        try:
            reply: dict[str, Any] = {"ok": True, **self.handle(req)}
        except Exception as exc:
            reply = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        say({"id": req["id"], "t0": t0, "t1": time.monotonic(), **reply})


def main() -> None:
    url, name, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
    agent = Agent(url, name, ttl)
    say({"id": "ready", "ok": True, "t0": time.monotonic(), "t1": time.monotonic()})
    for line in sys.stdin:
        if line.strip():
            req = json.loads(line)
            threading.Thread(target=agent.serve, args=(req,), daemon=True).start()


if __name__ == "__main__":
    main()
