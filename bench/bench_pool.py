"""Benchmark redispool against a throwaway local server (a benchmark, not a test).

    python bench/bench_pool.py [--server valkey|redis|auto] [--quick]

Starts its own server with :class:`redispool.server.EmbeddedServer` and measures, all
against that one server, the project's four performance targets:

1. one client's checkout+checkin cycles/s beside redis-py ``Lock`` acquire+release and
   PING on the same client (target: pool/Lock >= 1.2x, ratio taken within each round);
2. how late after its TTL the worker of a holder that died without checking in reaches
   a client blocked in ``checkout`` (no Reaper running; target: max < 100 ms);
3. 8 threads sharing 2 workers: cycles/s and Redis commands per cycle from
   ``INFO commandstats`` (target: at most 5);
4. a pool of 100,000 workers cycling at >= 0.9x a pool of 10, and Redis memory per idle
   worker (target: at most 200 bytes);
5. what replica acknowledgement costs: checkout+checkin cycles/s with ``min_replicas=1``
   beside ``min_replicas=0``, same run, against a master with one replica (both started
   by the bench, stopped by pid).

Machines are shared and noisy: every figure is the median over several rounds, with the
min-max spread beside it. Every process the bench starts it stops by pid.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis

from redispool import CheckoutTimeout, Pool, protocol, scripts
from redispool.server import EmbeddedServer

BATCH = 20  # cycles between clock reads in a timed loop
SLICES = 10  # slices a round of interleaved loops is cut into
DEAD_HOLDERS = 20
DEAD_TTL = 0.5
CONTENDERS, CONTENDED_WORKERS = 8, 2
BIG_POOL, SMALL_POOL = 100_000, 10
ADD_BATCH = 2_000


@dataclass(frozen=True)
class Settings:
    """How long to measure: ``--quick`` shortens rounds, never drops a measurement."""

    rounds: int
    cycle_seconds: float  # one timed loop of sections 1 and 4
    contention_seconds: float

    @classmethod
    def of(cls, quick: bool) -> Settings:
        return cls(3, 0.3, 2.0) if quick else cls(5, 0.8, 5.0)


# -- reporting -------------------------------------------------------------------------


@dataclass
class Target:
    """``value <op> limit``, e.g. ``Target(">=", 1.2)``."""

    op: str
    limit: float

    def met(self, value: float) -> bool:
        if self.op == ">=":
            return value >= self.limit
        return value < self.limit if self.op == "<" else value <= self.limit

    def __str__(self) -> str:
        return f"{self.op} {self.limit:g}"


@dataclass
class Report:
    """Prints each measured line as it comes and a summary of the targets at the end."""

    verdicts: list[tuple[str, float, str, Target, bool]] = field(default_factory=list)

    def section(self, title: str) -> None:
        print(f"\n{title}", flush=True)

    def line(
        self, label: str, values: Sequence[float], unit: str, target: Target | None = None
    ) -> float:
        """Print the median of ``values`` (one per round) and its spread; return the median."""
        med = statistics.median(values)
        spread = f"[{_num(min(values))} - {_num(max(values))}]" if len(values) > 1 else ""
        verdict = ""
        if target is not None:
            ok = target.met(med)
            verdict = f"target {target} {unit}: {'ok' if ok else 'MISSED'}"
            self.verdicts.append((label, med, unit, target, ok))
        print(f"  {label:<46} {_num(med):>10} {unit:<10} {spread:<22} {verdict}", flush=True)
        return med

    def note(self, text: str) -> None:
        print(f"  {text}", flush=True)

    def summary(self) -> None:
        print("\nTargets (medians)")
        for label, value, unit, target, ok in self.verdicts:
            mark = "ok    " if ok else "MISSED"
            print(f"  {mark} {label:<46} {_num(value):>10} {unit:<10} target {target}")


def _num(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


# -- helpers ---------------------------------------------------------------------------


def fresh_name(what: str) -> str:
    return f"bench-{what}-{uuid.uuid4().hex[:8]}"


def timed(cycle: Callable[[], object], seconds: float) -> tuple[int, float]:
    """Run ``cycle`` for about ``seconds``; (calls, seconds taken)."""
    count, start = 0, time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(BATCH):
            cycle()
        count += BATCH
        now = time.perf_counter()
        if now >= end:
            return count, now - start


def compare(loops: dict[str, Callable[[], object]], cfg: Settings) -> dict[str, list[float]]:
    """Calls/s of each loop, one figure per round.

    A round interleaves the loops in short slices, in a rotating order, so a burst of
    load from elsewhere on the machine slows every loop of the round alike and ratios
    taken within a round stay fair.
    """
    for loop in loops.values():  # warm up: scripts loaded, connections made
        timed(loop, 0.05)
    names = list(loops)
    runs: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(cfg.rounds):
        done = dict.fromkeys(names, (0, 0.0))
        for i in range(SLICES):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                count, took = timed(loops[name], cfg.cycle_seconds / SLICES)
                done[name] = (done[name][0] + count, done[name][1] + took)
        for name, (count, took) in done.items():
            runs[name].append(count / took)
    return runs


def pool_cycle(pool: Pool, auto_renew: bool) -> Callable[[], None]:
    def cycle() -> None:
        pool.checkout(block=False, auto_renew=auto_renew).checkin()

    return cycle


# -- 1. one client ---------------------------------------------------------------------


def bench_one_client(r: redis.Redis, cfg: Settings, report: Report) -> None:
    report.section("1. One client: cycles/s (checkout+checkin vs redis-py Lock acquire+release)")
    pool = Pool(fresh_name("one"), redis=r)
    pool.add_worker("w1")
    lock = r.lock("bench:lock", timeout=10)

    def lock_cycle() -> None:
        if not lock.acquire(blocking=False):
            raise RuntimeError("bench lock is held by someone else")
        lock.release()

    loops: dict[str, Callable[[], object]] = {
        "pool": pool_cycle(pool, auto_renew=False),
        "pool_renew": pool_cycle(pool, auto_renew=True),
        "lock": lock_cycle,
        "ping": r.ping,
    }
    runs = compare(loops, cfg)
    pool.close()
    pool_vs_lock = [p / lk for p, lk in zip(runs["pool"], runs["lock"], strict=True)]
    renew_vs_lock = [p / lk for p, lk in zip(runs["pool_renew"], runs["lock"], strict=True)]
    report.line("checkout+checkin, auto_renew=False", runs["pool"], "cycles/s")
    report.line("checkout+checkin, auto_renew=True", runs["pool_renew"], "cycles/s")
    report.line("redis-py Lock acquire+release", runs["lock"], "cycles/s")
    report.line("redis-py PING", runs["ping"], "calls/s")
    report.line("pool/Lock, auto_renew=False", pool_vs_lock, "x", Target(">=", 1.2))
    report.line("pool/Lock, auto_renew=True", renew_vs_lock, "x", Target(">=", 1.2))


# -- 2. dead holders -------------------------------------------------------------------

HOLDER = """
import sys
from redispool import Pool
url, name, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
pool = Pool(name, url, lease_ttl=ttl)
pool.status()  # connect and load scripts before the bench says go
print("ready", flush=True)
sys.stdin.readline()
lease = pool.checkout(auto_renew=False)
print(lease.worker_id, lease.token, flush=True)
sys.stdin.readline()  # never comes: this process is SIGKILLed holding the lease
"""


@contextmanager
def holder_processes(url: str, name: str, count: int) -> Iterator[list[subprocess.Popen[str]]]:
    """``count`` started holder processes, each waiting for a line to check out; every one
    still alive at the end is SIGKILLed by pid."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(count):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", HOLDER, url, name, str(DEAD_TTL)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"holder pid {proc.pid} did not start")
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def die_in_subprocess(proc: subprocess.Popen[str]) -> int:
    """Have ``proc`` check out, then SIGKILL it holding the lease; its token."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    token = int(proc.stdout.readline().split()[1])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return token


def die_in_process(url: str, name: str) -> int:
    """Check out on a Pool of its own, then drop it without checking in; the token."""
    holder = Pool(name, url, lease_ttl=DEAD_TTL)
    token = holder.checkout(auto_renew=False).token
    holder.close()
    return token


def server_clock_offset(r: redis.Redis) -> float:
    """Server ms minus local ``time.time()`` ms, from the fastest of a few TIME calls."""
    best: tuple[float, float] = (float("inf"), 0.0)
    for _ in range(20):
        before = time.time()
        sec, usec = r.time()
        after = time.time()
        best = min(best, (after - before, sec * 1000 + usec / 1000 - (before + after) * 500))
    return best[1]


def bench_dead_holders(r: redis.Redis, url: str, report: Report) -> None:
    report.section(
        f"2. Dead holders: {DEAD_HOLDERS} holders die holding a {DEAD_TTL * 1000:.0f} ms lease;"
        " lateness of the worker reaching a blocked checkout (no Reaper)"
    )
    name = fresh_name("dead")
    pool = Pool(name, redis=r, lease_ttl=DEAD_TTL)
    pool.add_worker("w1")
    offset = server_clock_offset(r)
    late: dict[str, list[float]] = {"subprocess": [], "in-process": []}
    with holder_processes(url, name, DEAD_HOLDERS // 2) as procs:
        for i in range(DEAD_HOLDERS):
            kind = "subprocess" if i % 2 == 0 else "in-process"
            if kind == "subprocess":
                token = die_in_subprocess(procs[i // 2])
            else:
                token = die_in_process(url, name)
            deadline_ms = r.zscore(pool.keys.deadlines, "w1")
            lease = pool.checkout(timeout=5, auto_renew=False)
            got_ms = time.time() * 1000 + offset
            if deadline_ms is None or lease.token <= token:
                raise RuntimeError(f"holder {i}: lease {lease!r} does not follow token {token}")
            late[kind].append(got_ms - deadline_ms)
            lease.checkin()
    pool.close()
    both = late["subprocess"] + late["in-process"]
    report.note("lateness = checkout(timeout=5) returned at - dead lease's deadline (server ms)")
    report.line("p50 lateness, all holders", both, "ms")
    report.line("max lateness, subprocess holders (SIGKILL)", [max(late["subprocess"])], "ms")
    report.line("max lateness, in-process holders (dropped)", [max(late["in-process"])], "ms")
    report.line("max lateness, all holders", [max(both)], "ms", Target("<", 100))


# -- 3. contention ---------------------------------------------------------------------


def command_calls(r: redis.Redis) -> dict[str, int]:
    """``INFO commandstats`` as command -> calls."""
    stats = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def client_only_commands(r: redis.Redis, names: Sequence[str]) -> set[str]:
    """Those of ``names`` that a script cannot run (flag ``noscript`` or ``blocking``), so
    every call of them came from a client."""
    info = r.execute_command("COMMAND", "INFO", *names)
    return {
        name
        for name, spec in info.items()
        if spec and {"noscript", "blocking"} & {str(f) for f in spec.get("flags", ())}
    }


@dataclass
class ContentionRound:
    cycles: int
    timeouts: int
    seconds: float
    calls: dict[str, int]  # command -> calls during the round (the bench's INFO excluded)


def contend(pool: Pool, seconds: float, r: redis.Redis) -> ContentionRound:
    counts = [0] * CONTENDERS
    timeouts = [0] * CONTENDERS
    start = threading.Barrier(CONTENDERS + 1)
    stop_at = [0.0]

    def client(i: int) -> None:
        start.wait()
        while time.perf_counter() < stop_at[0]:
            try:
                lease = pool.checkout(timeout=5)
            except CheckoutTimeout:
                timeouts[i] += 1
                continue
            lease.checkin()
            counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CONTENDERS)]
    for t in threads:
        t.start()
    before = command_calls(r)
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    after = command_calls(r)
    calls = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    calls["info"] = calls.get("info", 0) - 1  # the INFO that took `before`
    calls = {k: v for k, v in calls.items() if v}
    return ContentionRound(sum(counts), sum(timeouts), elapsed, calls)


def bench_contention(r: redis.Redis, cfg: Settings, report: Report) -> None:
    report.section(
        f"3. Contention: {CONTENDERS} threads share {CONTENDED_WORKERS} workers,"
        f" checkout(timeout=5)+checkin for {cfg.contention_seconds:g} s a round"
    )
    pool = Pool(fresh_name("busy"), redis=r)
    for i in range(CONTENDED_WORKERS):
        pool.add_worker(f"w{i}")
    rounds = [contend(pool, cfg.contention_seconds, r) for _ in range(cfg.rounds)]
    pool.close()
    seen = sorted({k for rnd in rounds for k in rnd.calls})
    client_side = client_only_commands(r, seen)
    per_cycle_all = [sum(rnd.calls.values()) / rnd.cycles for rnd in rounds]
    per_cycle_sent = [
        sum(v for k, v in rnd.calls.items() if k in client_side) / rnd.cycles for rnd in rounds
    ]
    rates = [x.cycles / x.seconds for x in rounds]
    report.line("checkout+checkin cycles/s, all threads", rates, "cycles/s")
    report.line("checkout timeouts", [x.timeouts for x in rounds], "per round")
    report.line("commands sent by clients per cycle", per_cycle_sent, "commands", Target("<=", 5))
    report.line("all commands per cycle, incl. inside scripts", per_cycle_all, "commands")
    mid = sorted(rounds, key=lambda x: x.cycles)[len(rounds) // 2]
    breakdown = ", ".join(
        f"{k}{'' if k in client_side else '*'} {v / mid.cycles:.2f}"
        for k, v in sorted(mid.calls.items(), key=lambda kv: -kv[1])
        if v / mid.cycles >= 0.005
    )
    report.note(f"per cycle in the median round (* = run inside scripts): {breakdown}")


# -- 4. scale --------------------------------------------------------------------------


def add_workers_fast(r: redis.Redis, pool: Pool, count: int) -> None:
    """Register ``count`` idle workers through the pool's own add_worker operation, pipelined."""
    r.function_load(scripts.library().source, replace=True)
    for first in range(0, count, ADD_BATCH):
        pipe = r.pipeline(transaction=False)
        for i in range(first, min(first + ADD_BATCH, count)):
            pipe.execute_command(*protocol.add_worker(pool.keys, f"worker-{i:06d}", "|").command())
        pipe.execute()


def used_memory(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def bench_scale(r: redis.Redis, cfg: Settings, report: Report) -> None:
    report.section(f"4. Scale: a pool of {BIG_POOL:,} workers beside a pool of {SMALL_POOL}")
    small, big = Pool(fresh_name("small"), redis=r), Pool(fresh_name("big"), redis=r)
    for i in range(SMALL_POOL):
        small.add_worker(f"worker-{i:06d}")
    small.status(), big.status()  # scripts loaded, connections made before measuring memory
    before = used_memory(r)
    began = time.perf_counter()
    add_workers_fast(r, big, BIG_POOL)
    took = time.perf_counter() - began
    after = used_memory(r)
    status = big.status()
    if status.size != BIG_POOL or status.idle != BIG_POOL:
        raise RuntimeError(f"big pool has {status}, expected {BIG_POOL} idle workers")
    report.note(f"added {BIG_POOL:,} workers in {took:.1f} s (add_worker script, pipelined)")
    loops = {"small": pool_cycle(small, False), "big": pool_cycle(big, False)}
    runs = compare(loops, cfg)
    small.close(), big.close()
    report.line(f"pool of {SMALL_POOL}: checkout+checkin (no renew)", runs["small"], "cycles/s")
    report.line(f"pool of {BIG_POOL:,}: checkout+checkin (no renew)", runs["big"], "cycles/s")
    ratios = [b / s for b, s in zip(runs["big"], runs["small"], strict=True)]
    report.line(f"pool of {BIG_POOL:,} / pool of {SMALL_POOL}", ratios, "x", Target(">=", 0.9))
    per_worker = [(after - before) / BIG_POOL]
    report.line("Redis memory per idle worker", per_worker, "bytes", Target("<=", 200))
    parts = {key: r.memory_usage(key, samples=0) or 0 for key in (big.keys.workers, big.keys.idle)}
    report.note(
        "of which (MEMORY USAGE / worker): "
        + ", ".join(f"{key.rsplit(':', 1)[1]} {n / BIG_POOL:.1f} B" for key, n in parts.items())
    )


# -- main ------------------------------------------------------------------------------


# -- 5. replica acknowledgement --------------------------------------------------------


def wait_for_replica(master: redis.Redis, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while master.info("replication").get("connected_slaves", 0) < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not connect to the master")
        time.sleep(0.05)
    while master.wait(1, 1000) < 1:  # the replica has caught up
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not catch up")


def bench_replicas(kind: str, cfg: Settings, report: Report) -> None:
    report.section("5. Replica acknowledgement: one client's checkout+checkin, master + 1 replica")
    with EmbeddedServer(kind) as master:
        replica_args = ("--replicaof", "127.0.0.1", str(master.port))
        with EmbeddedServer(kind, extra_args=replica_args) as replica:
            r = redis.Redis.from_url(master.url)
            try:
                wait_for_replica(r)
                report.note(f"master pid {master.pid}, replica pid {replica.pid}")
                name = fresh_name("acked")
                plain = Pool(name, redis=r)
                acked = Pool(name, redis=r, min_replicas=1, replica_timeout=1.0)
                plain.add_worker("w1")
                loops: dict[str, Callable[[], object]] = {
                    "n0": pool_cycle(plain, auto_renew=False),
                    "n1": pool_cycle(acked, auto_renew=False),
                }
                runs = compare(loops, cfg)
                plain.close()
                acked.close()
            finally:
                r.close()
    ratio = [a / b for a, b in zip(runs["n1"], runs["n0"], strict=True)]
    report.line("checkout+checkin, min_replicas=0", runs["n0"], "cycles/s")
    report.line("checkout+checkin, min_replicas=1", runs["n1"], "cycles/s")
    report.line("min_replicas=1 / min_replicas=0", ratio, "x")


def describe(server: EmbeddedServer) -> str:
    try:
        import hiredis

        parser = f"hiredis {hiredis.__version__}"
    except ImportError:
        parser = "no hiredis"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"server {server.version} (pid {server.pid}, port {server.port});"
        f" redis-py {redis.__version__}, {parser}; Python {platform.python_version()};"
        f" {os.cpu_count()} CPUs, load {load}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("auto", "valkey", "redis"), default="auto")
    parser.add_argument("--quick", action="store_true", help="shorter rounds (under a minute)")
    args = parser.parse_args(argv)
    cfg = Settings.of(args.quick)
    report = Report()
    began = time.perf_counter()
    with EmbeddedServer(args.server) as server:
        print(describe(server))
        print(f"medians of {cfg.rounds} rounds, [min - max] beside them", flush=True)
        r = redis.Redis.from_url(server.url)
        try:
            bench_one_client(r, cfg, report)
            r.flushall()
            bench_dead_holders(r, server.url, report)
            r.flushall()
            bench_contention(r, cfg, report)
            r.flushall()
            bench_scale(r, cfg, report)
        finally:
            r.close()
        kind = server.kind
    bench_replicas(kind, cfg, report)
    report.summary()
    print(f"\n({time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
