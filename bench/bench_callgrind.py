"""Redis's instructions per checkout+checkin, counted by callgrind: a repeatable figure.

    python bench/bench_callgrind.py [--cycles 1000] [--server PATH] [--library FILE ...]

Starts ``redis-server`` (the one on PATH, or ``--server``) under ``valgrind
--tool=callgrind``, loads this checkout's library (and each ``--library`` file: a
library source saved from main before the hot scripts took the prefix alone as KEYS,
for a before/after in one run), and counts
the server's instructions (everything it does: reading, parsing, running the scripts,
replying) per cycle of:

- the minimal lease of bench_cost.py (two EVALSHA),
- each library's checkout+checkin of one client (a worker idle, no waiter),
- each library's contended cycle as a server sees it with two clients and one worker:
  a checkout that queues, the holder's checkin that hands the worker over, the
  waiter's BLMOVE peek, and (for a library whose waiter claims its handoff) its
  cancel_wait that takes the handoff; a library whose waiter does not claim has
  each checkin delete the handoff its own lease came in instead.

Unlike Redis time, the count does not move with the machine's load: the same binary,
inputs and commands give the same figure. Stops the server it started, by pid.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from bench_cost import MIN_CHECKIN, MIN_CHECKOUT  # noqa: E402

from redispool import protocol, scripts  # noqa: E402
from redispool.keys import PoolKeys  # noqa: E402
from redispool.server import free_port  # noqa: E402

LONG_TTL = 3_600_000  # ms: nothing expires while valgrind runs the server slowly
NONCE = "ab" * 16


def common(k: PoolKeys) -> tuple[str, ...]:
    return (k.prefix, k.config, k.workers, k.idle, k.deadlines, k.token, k.draining,
            k.waitq, k.waiters)  # fmt: skip


def minimal(r: redis.Redis) -> Callable[[], None]:
    out, back = r.register_script(MIN_CHECKOUT), r.register_script(MIN_CHECKIN)
    r.lpush("min:idle", "w1")

    def cycle() -> None:
        worker, token = out(keys=["min:idle", "min:token", "min:lease:"], args=[10_000])
        back(keys=["min:idle", f"min:lease:{worker.decode()}"], args=[worker, token])

    return cycle


class Shapes:
    """The KEYS and ARGV each hot operation is sent with, for a library's source: the
    protocol layer's for one whose hot scripts take the pool's prefix alone (else the
    nine common keys, and the lease, dead_leases or wake key after them); and whether
    its waiter claims its handoff (cancel_wait) or its checkin deletes it (ARGV[4])."""

    def __init__(self, k: PoolKeys, source: str) -> None:
        self.k = k
        self.prefix_only = "local pools, pools_kept" in source
        self.claims = "local wake = ARGV[4]" not in source

    def checkout(self) -> tuple[str, ...]:
        return (self.k.prefix,) if self.prefix_only else common(self.k)

    def checkin(self, wid: str) -> tuple[str, ...]:
        if self.prefix_only:
            return (self.k.prefix,)
        return (*common(self.k), self.k.lease(wid), self.k.dead_leases)

    def wake_arg(self, ticket: str) -> tuple[str, ...]:
        """checkin's ARGV[4] (the handoff to delete), for a library whose waiter does
        not claim."""
        return () if self.claims else (ticket,)

    def cancel_wait(self, ticket: str) -> tuple[str, ...]:
        return protocol.cancel_wait(self.k, ticket).keys if self.prefix_only else (
            *common(self.k), self.k.wake(ticket))  # fmt: skip


def alone(r: redis.Redis, lib: str, pool: str, source: str) -> Callable[[], None]:
    k = PoolKeys(pool)
    keys, shape = common(k), Shapes(k, source)
    r.fcall(f"{lib}_add_worker", 9, *keys, "w1", "|", LONG_TTL, "lifo")
    out, back_keys = shape.checkout(), shape.checkin("w1")

    def cycle() -> None:
        got = r.fcall(f"{lib}_checkout", len(out), *out, 0, "h:1", "", 1000, NONCE)
        assert got[0] == 0, got
        back = r.fcall(f"{lib}_checkin", len(back_keys), *back_keys, "w1", got[2], NONCE,
                       *shape.wake_arg(""))  # fmt: skip
        assert back[0] == 0, back

    return cycle


def contended(r: redis.Redis, lib: str, pool: str, source: str) -> Callable[[], None]:
    k = PoolKeys(pool)
    keys, shape = common(k), Shapes(k, source)
    r.fcall(f"{lib}_add_worker", 9, *keys, "w1", "|", LONG_TTL, "lifo")
    out, back_keys = shape.checkout(), shape.checkin("w1")
    first = r.fcall(f"{lib}_checkout", len(out), *out, LONG_TTL, "h:1", "", 1000, NONCE)
    held = {"token": first[2], "nonce": NONCE, "n": 0, "ticket": ""}

    def cycle() -> None:
        held["n"] += 1
        ticket, nonce = f"t{held['n']}", f"{held['n']:032x}"
        queued = r.fcall(f"{lib}_checkout", len(out), *out, LONG_TTL, "h:2", ticket, LONG_TTL,
                         nonce)  # fmt: skip
        assert queued[0] == 2, queued
        back = r.fcall(f"{lib}_checkin", len(back_keys), *back_keys, "w1", held["token"],
                       held["nonce"], *shape.wake_arg(str(held["ticket"])))  # fmt: skip
        assert back[0] == 0, back
        wake = k.wake(ticket)
        peeked: bytes = r.blmove(wake, wake, 1, "LEFT", "LEFT")  # type: ignore[assignment]
        if shape.claims:  # the waiter takes its handoff
            wait_keys = shape.cancel_wait(ticket)
            taken = r.fcall(f"{lib}_cancel_wait", len(wait_keys), *wait_keys, ticket)
            assert taken[0] == 0 and taken[1] == peeked, (taken, peeked)
        held["token"], held["nonce"] = int(peeked.split(b"|")[0]), nonce
        held["ticket"] = ticket

    return cycle


def count(pid: int, out: Path, label: str, cycle: Callable[[], None], cycles: int) -> float:
    for _ in range(50):  # warm up
        cycle()
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    for _ in range(cycles):
        cycle()
    subprocess.run(["callgrind_control", "-d", label, str(pid)], check=True, capture_output=True)
    for dump in sorted(out.parent.glob(out.name + ".*"), key=lambda p: p.stat().st_mtime):
        text = dump.read_text(errors="replace")
        if f"Trigger: dump {label}\n" in text:
            found = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
            assert found is not None
            return int(found.group(1)) / cycles
    raise RuntimeError(f"no callgrind dump for {label}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--server", default="redis-server")
    parser.add_argument("--library", action="append", default=[], help="another library's source")
    args = parser.parse_args()
    sources = {"this checkout": scripts.library().source}
    for path in args.library:
        sources[Path(path).name] = Path(path).read_text()
    with tempfile.TemporaryDirectory(prefix="redispool-cg-") as tmp:
        out, port = Path(tmp) / "cg.out", free_port()
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", args.server,
             "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            r = redis.Redis(port=port, socket_timeout=60)
            deadline = time.monotonic() + 60
            while True:
                try:
                    r.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            anchor = count(server.pid, out, "minimal", minimal(r), args.cycles)
            print(f"instructions per cycle (callgrind, {args.cycles} cycles each)")
            print(f"  {'minimal lease (2 EVALSHA)':<44} {anchor:>10,.0f}")
            for i, (label, source) in enumerate(sources.items()):
                name = re.search(r"#!lua name=(\S+)", source)
                assert name is not None, f"{label}: not a library"
                r.function_load(source, replace=True)
                one = count(server.pid, out, f"alone{i}", alone(r, name[1], f"a{i}", source),
                            args.cycles)  # fmt: skip
                busy = count(server.pid, out, f"busy{i}",
                             contended(r, name[1], f"c{i}", source), args.cycles)  # fmt: skip
                print(f"  {label + ': checkout+checkin':<44} {one:>10,.0f}"
                      f"  {one / anchor:5.2f}x minimal")  # fmt: skip
                print(f"  {label + ': contended cycle':<44} {busy:>10,.0f}"
                      f"  {busy / one:5.2f}x its uncontended")  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
