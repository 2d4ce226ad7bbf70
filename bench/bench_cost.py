"""Redis's own cost of redispool (issue 13): five figures, each beside its anchor, one run.

    python bench/bench_cost.py [--server redis|valkey|auto] [--quick] [--skip-jobs]

Starts its own throwaway server and measures against it:

1. Redis time per checkout+checkin (one client, auto-renew off) beside a minimal lease
   of two EVALSHA scripts (checkout: LPOP idle, INCR token, SET lease PX; checkin: GET
   lease, compare, DEL, LPUSH idle) and redis-py's Lock, from ``INFO commandstats``
   (the usec of the commands the client sent; a script's usec covers its inner calls).
   Target: redispool <= 1.3x the minimal lease.
2. 8 client threads on 2 workers (blocking checkout): Redis time per cycle beside the
   uncontended cycle of line 1 (target <= 1.5x), and commands sent per cycle (<= 5).
3. One client's cycles/s beside redis-py's Lock (target >= 1.5x) and beside two PINGs of
   the same client library (target >= 1.0x).
4. Jobs: one client's ``lease.run(double, n)`` round trip (p50) beside plain RQ's
   SimpleWorker with JSON (target <= 0.4x), and jobs/s of 8 clients on 4 workers beside
   plain RQ on 4 SimpleWorkers (target >= 2x); both from bench_jobs.py, same server.
5. Aggregate: 64 client threads (4 processes of 16) over 16 pools on one server: cycles/s
   in all and Redis CPU per cycle (``INFO cpu``), beside one client's.

Every figure is the median of several rounds, [min - max] beside it; ratios are taken
within a round. Every process the bench starts it stops by pid.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import redis

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import bench_jobs  # noqa: E402
from bench_pool import (  # noqa: E402
    Report,
    Settings,
    Target,
    client_only_commands,
    compare,
    contend,
    describe,
    fresh_name,
    pool_cycle,
)

from redispool import Pool  # noqa: E402
from redispool.server import EmbeddedServer  # noqa: E402

CYCLES = 2000  # cycles per loop and round when Redis time is measured
SLICES = 10  # slices a round of interleaved loops is cut into
AGG_PROCS, AGG_THREADS, AGG_POOLS, AGG_WORKERS = 4, 16, 16, 4

#: The minimal lease of the issue: the least a TTL'd, fenced lease can cost.
MIN_CHECKOUT = """
local w = redis.call('LPOP', KEYS[1])
if not w then return false end
local t = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[3] .. w, t, 'PX', ARGV[1])
return {w, t}
"""
MIN_CHECKIN = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('LPUSH', KEYS[1], ARGV[1])
return 1
"""


def usec(r: redis.Redis) -> dict[str, tuple[int, int]]:
    """``INFO commandstats`` as command -> (calls, usec)."""
    stats = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in stats.items()}


def server_us(
    r: redis.Redis, loops: Mapping[str, tuple[Callable[[], object], Sequence[str]]]
) -> dict[str, float]:
    """Redis time per call of each loop (usec of the commands it sends), one round.

    The loops run interleaved in SLICES slices of a rotating order, so a burst of
    load elsewhere on the machine hits every loop of the round alike."""
    spent = dict.fromkeys(loops, 0)
    names = list(loops)
    for i in range(SLICES):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            loop, sent = loops[name]
            before = usec(r)
            for _ in range(CYCLES // SLICES):
                loop()
            after = usec(r)
            spent[name] += sum(after.get(c, (0, 0))[1] - before.get(c, (0, 0))[1] for c in sent)
    return {name: total / (CYCLES // SLICES * SLICES) for name, total in spent.items()}


def minimal_lease(r: redis.Redis) -> Callable[[], None]:
    out, back = r.register_script(MIN_CHECKOUT), r.register_script(MIN_CHECKIN)
    prefix = fresh_name("min")
    r.lpush(f"{prefix}:idle", "w1")

    def cycle() -> None:
        worker, token = out(keys=[f"{prefix}:idle", f"{prefix}:token", f"{prefix}:lease:"],
                            args=[10_000])  # fmt: skip
        back(keys=[f"{prefix}:idle", f"{prefix}:lease:{worker.decode()}"], args=[worker, token])

    return cycle


def lock_cycle(r: redis.Redis) -> Callable[[], None]:
    lock = r.lock(fresh_name("lock"), timeout=10)

    def cycle() -> None:
        if not lock.acquire(blocking=False):
            raise RuntimeError("bench lock is held by someone else")
        lock.release()

    return cycle


# -- 1. and 3. one client ---------------------------------------------------------------


def bench_server_time(r: redis.Redis, cfg: Settings, report: Report) -> float:
    """Line 1; returns the median redispool cycle's Redis time (us)."""
    report.section("1. Redis time per checkout+checkin, one client, auto_renew=False")
    pool = Pool(fresh_name("one"), redis=r)
    pool.add_worker("w1")
    loops = {
        "pool": (pool_cycle(pool, auto_renew=False), ("fcall",)),
        "min": (minimal_lease(r), ("evalsha",)),
        "lock": (lock_cycle(r), ("set", "evalsha")),
    }
    runs: dict[str, list[float]] = {name: [] for name in loops}
    for loop, _ in loops.values():
        for _ in range(200):  # warm up: scripts loaded, connections made
            loop()
    for _ in range(cfg.rounds):
        for name, spent in server_us(r, loops).items():
            runs[name].append(spent)
    pool.close()
    report.line("redispool checkout+checkin", runs["pool"], "us")
    report.line("minimal lease (2 EVALSHA, 6 inner commands)", runs["min"], "us")
    report.line("redis-py Lock acquire+release", runs["lock"], "us")
    ratios = [p / m for p, m in zip(runs["pool"], runs["min"], strict=True)]
    report.line("redispool / minimal lease", ratios, "x", Target("<=", 1.3))
    return statistics.median(runs["pool"])


def bench_client_rate(r: redis.Redis, cfg: Settings, report: Report) -> None:
    report.section("3. Client side: one client's cycles/s (checkout+checkin, auto_renew=False)")
    pool = Pool(fresh_name("rate"), redis=r)
    pool.add_worker("w1")
    loops: dict[str, Callable[[], object]] = {
        "pool": pool_cycle(pool, auto_renew=False),
        "lock": lock_cycle(r),
        "ping": r.ping,
    }
    runs = compare(loops, cfg)
    pool.close()
    report.line("redispool checkout+checkin", runs["pool"], "cycles/s")
    report.line("redis-py Lock acquire+release", runs["lock"], "cycles/s")
    report.line("two redis-py PINGs", [p / 2 for p in runs["ping"]], "pairs/s")
    vs_lock = [p / lk for p, lk in zip(runs["pool"], runs["lock"], strict=True)]
    vs_ping = [p / (q / 2) for p, q in zip(runs["pool"], runs["ping"], strict=True)]
    report.line("redispool / Lock", vs_lock, "x", Target(">=", 1.5))
    report.line("redispool / two PINGs", vs_ping, "x", Target(">=", 1.0))


# -- 2. contention ----------------------------------------------------------------------


def bench_contention(r: redis.Redis, cfg: Settings, report: Report, alone_us: float) -> None:
    report.section("2. Contention: 8 threads share 2 workers, checkout(timeout=5)+checkin")
    pool = Pool(fresh_name("busy"), redis=r)
    for i in range(2):
        pool.add_worker(f"w{i}")
    spent, sent_per_cycle = [], []
    for _ in range(cfg.rounds):
        before = usec(r)
        rnd = contend(pool, cfg.contention_seconds / 2, r)
        after = usec(r)
        client_side = client_only_commands(r, sorted(rnd.calls)) | {"fcall"}
        client_side -= {"info"}
        used = sum(after[c][1] - before.get(c, (0, 0))[1] for c in client_side if c in after)
        spent.append(used / rnd.cycles)
        sent_per_cycle.append(sum(v for k, v in rnd.calls.items() if k in client_side) / rnd.cycles)
    pool.close()
    report.line("Redis time per cycle, 8 threads on 2 workers", spent, "us")
    report.line("Redis time per cycle, one client (line 1)", [alone_us], "us")
    report.line("contended / uncontended", [s / alone_us for s in spent], "x", Target("<=", 1.5))
    report.line("commands sent by clients per cycle", sent_per_cycle, "commands", Target("<=", 5))


# -- 4. jobs ----------------------------------------------------------------------------


def rq_round_trip(rq_job: Callable[[int], None], jobs: int) -> float:
    """One client, plain RQ: p50 of ``jobs`` jobs in a row, ms."""
    times = []
    for i in range(jobs):
        began = time.perf_counter()
        rq_job(i)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def bench_jobs_line(url: str, cfg: Settings, report: Report) -> None:
    report.section("4. Jobs: lease.run(double, n) beside plain RQ (SimpleWorker, JSON)")
    jobs = 40 if cfg.rounds < 5 else 100
    rq_p50, pool_p50, rq_rate, pool_rate = [], [], [], []
    with bench_jobs.rq_setup(url, 4) as rq_job, bench_jobs.pool_setup(url, 4) as pool_job:
        bench_jobs.clients(8, 5, rq_job)  # warm up both
        bench_jobs.clients(8, 5, pool_job)
        for _ in range(cfg.rounds):  # alternate, so load drift hits both
            rq_p50.append(rq_round_trip(rq_job, jobs))
            pool_p50.append(bench_jobs.round_trip(url, jobs)[0])
            rq_rate.append(bench_jobs.clients(8, jobs // 4, rq_job))
            pool_rate.append(bench_jobs.clients(8, jobs // 4, pool_job))
    report.line("one client's round trip, pool p50", pool_p50, "ms")
    report.line("one client's round trip, plain RQ p50", rq_p50, "ms")
    ratios = [p / q for p, q in zip(pool_p50, rq_p50, strict=True)]
    report.line("round trip pool / RQ", ratios, "x", Target("<=", 0.4))
    report.line("8 clients, 4 workers: pool", pool_rate, "jobs/s")
    report.line("8 clients, 4 workers: plain RQ", rq_rate, "jobs/s")
    rate_ratios = [p / q for p, q in zip(pool_rate, rq_rate, strict=True)]
    report.line("jobs/s pool / RQ", rate_ratios, "x", Target(">=", 2.0))


# -- 5. aggregate -----------------------------------------------------------------------

AGG_CLIENT = """
import sys, threading, time
from redispool import Pool
url, first, count, threads, seconds = sys.argv[1], *map(int, sys.argv[2:5]), float(sys.argv[5])
pools = [Pool(f"agg-{first + i}", url) for i in range(count)]
done = [0] * threads
print("ready", flush=True)
sys.stdin.readline()
stop = time.monotonic() + seconds
def run(i):
    pool = pools[i % count]
    while time.monotonic() < stop:
        pool.checkout(timeout=5, auto_renew=False).checkin()
        done[i] += 1
ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(sum(done), flush=True)
"""


def redis_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def aggregate_round(url: str, r: redis.Redis, seconds: float) -> tuple[float, float]:
    """(cycles/s in all, Redis CPU us per cycle) of 64 threads over 16 pools."""
    per = AGG_POOLS // AGG_PROCS
    args = [str(per), str(AGG_THREADS), str(seconds)]
    procs = [
        subprocess.Popen([sys.executable, "-c", AGG_CLIENT, url, str(p * per), *args],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for p in range(AGG_PROCS)
    ]  # fmt: skip
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        cpu, began = redis_cpu(r), time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        total = sum(int(proc.communicate(timeout=seconds + 60)[0].strip()) for proc in procs)
        took, cpu = time.perf_counter() - began, redis_cpu(r) - cpu
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return total / took, cpu * 1e6 / total


def one_client_cpu(r: redis.Redis, seconds: float) -> tuple[float, float]:
    """(cycles/s, Redis CPU us per cycle) of one client thread."""
    pool = Pool(fresh_name("solo"), redis=r)
    pool.add_worker("w1")
    cycle = pool_cycle(pool, auto_renew=False)
    count, cpu, began = 0, redis_cpu(r), time.perf_counter()
    while time.perf_counter() - began < seconds:
        for _ in range(50):
            cycle()
        count += 50
    took, cpu = time.perf_counter() - began, redis_cpu(r) - cpu
    pool.close()
    return count / took, cpu * 1e6 / count


def bench_aggregate(url: str, r: redis.Redis, cfg: Settings, report: Report) -> None:
    report.section(
        f"5. Aggregate: {AGG_PROCS * AGG_THREADS} client threads ({AGG_PROCS} processes) over"
        f" {AGG_POOLS} pools of {AGG_WORKERS} workers, checkout(timeout=5)+checkin"
    )
    for i in range(AGG_POOLS):
        pool = Pool(f"agg-{i}", redis=r)
        for w in range(AGG_WORKERS):
            pool.add_worker(f"w{w}")
        pool.close()
    agg, solo = [], []
    for _ in range(cfg.rounds):
        agg.append(aggregate_round(url, r, cfg.contention_seconds / 2))
        solo.append(one_client_cpu(r, cfg.contention_seconds / 4))
    report.line("64 threads, 16 pools: cycles/s in all", [a[0] for a in agg], "cycles/s")
    report.line("one client: cycles/s", [s[0] for s in solo], "cycles/s")
    report.line("64 threads: Redis CPU per cycle", [a[1] for a in agg], "us")
    report.line("one client: Redis CPU per cycle", [s[1] for s in solo], "us")
    report.line("Redis CPU per cycle, 64 threads / one", [a[1] / s[1] for a, s in zip(agg, solo,
                strict=True)], "x")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("auto", "valkey", "redis"), default="redis")
    parser.add_argument("--quick", action="store_true", help="shorter rounds")
    parser.add_argument("--skip-jobs", action="store_true", help="leave out line 4")
    args = parser.parse_args(argv)
    cfg = Settings.of(args.quick)
    report = Report()
    began = time.perf_counter()
    with EmbeddedServer(args.server) as server:
        print(describe(server))
        print(f"medians of {cfg.rounds} rounds, [min - max] beside them", flush=True)
        r = redis.Redis.from_url(server.url)
        try:
            alone = bench_server_time(r, cfg, report)
            bench_contention(r, cfg, report, alone)
            bench_client_rate(r, cfg, report)
            if not args.skip_jobs:
                bench_jobs_line(server.url, cfg, report)
            bench_aggregate(server.url, r, cfg, report)
        finally:
            r.close()
    report.summary()
    print(f"\n({time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
