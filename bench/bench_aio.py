"""Benchmark the asyncio Pool against a throwaway local server (a benchmark, not a test).

    python bench/bench_aio.py [--server valkey|redis|auto] [--quick]

1. one task's ``checkout(block=False)`` + ``checkin()`` cycles/s beside the anchors of
   the same run: ``redis.asyncio`` ``Lock`` acquire+release on the same server, and the
   sync ``redispool.Pool`` (target: aio pool / asyncio Lock >= 1.5x). The loops run
   interleaved in short slices and each ratio is taken within its round;
2. 1,000 tasks sharing 10 workers, each checking out (waiting its turn) and checking
   in: cycles/s, connections the Pool opened and connections the server accepted
   meanwhile, and the handoff latency (a checkin to the waiter's checkout returning
   with that worker), p50 and p99.

Every figure is the median over rounds, the min-max spread beside it. The server is
started by the bench and stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import redis
import redis.asyncio

from redispool import Pool as SyncPool
from redispool import aio
from redispool.server import EmbeddedServer

BATCH = 20  # cycles between clock reads
SLICES = 8  # slices a round of interleaved loops is cut into
TASKS, WORKERS = 1000, 10


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def line(label: str, values: list[float], unit: str, target: str = "") -> float:
    med = statistics.median(values)
    spread = f"[{_num(min(values))} - {_num(max(values))}]" if len(values) > 1 else ""
    print(f"  {label:<44} {_num(med):>10} {unit:<9} {spread:<22} {target}", flush=True)
    return med


async def _timed(cycle: Callable[[], Awaitable[object]], seconds: float) -> tuple[int, float]:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(BATCH):
            await cycle()
        done += BATCH
    return done, time.perf_counter() - started


async def one_task(url: str, rounds: int, seconds: float) -> None:
    print("\n1. one task: checkout(block=False) + checkin, cycles/s", flush=True)
    admin = SyncPool("bench1", url)
    admin.add_worker("w1")
    sync_pool = SyncPool("bench1", url)
    pool = aio.Pool("bench1", url=url)
    client = redis.asyncio.Redis.from_url(url)
    lock = client.lock("bench1-lock", timeout=10)

    async def pool_cycle() -> None:
        lease = await pool.checkout(block=False)
        await lease.checkin()

    async def lock_cycle() -> None:
        await lock.acquire()
        await lock.release()

    async def sync_cycle() -> None:
        sync_pool.checkout(block=False).checkin()

    loops = {"aio": pool_cycle, "lock": lock_cycle, "sync": sync_cycle}
    for cycle in loops.values():  # warm up: connections, the library, hiredis
        await _timed(cycle, 0.1)
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(rounds):
        counts = {name: [0, 0.0] for name in loops}
        for _ in range(SLICES):
            for name, cycle in loops.items():
                done, took = await _timed(cycle, seconds / SLICES)
                counts[name][0] += done
                counts[name][1] += took
        for name, (done, took) in counts.items():
            rates[name].append(done / took)
    aio_rate = line("redispool.aio Pool", rates["aio"], "cycles/s")
    line("anchor: redis.asyncio Lock acquire+release", rates["lock"], "cycles/s")
    line("anchor: sync redispool.Pool", rates["sync"], "cycles/s")
    over_lock = [a / b for a, b in zip(rates["aio"], rates["lock"], strict=True)]
    over_sync = [a / b for a, b in zip(rates["aio"], rates["sync"], strict=True)]
    ratio = statistics.median(over_lock)
    line("ratio aio Pool / asyncio Lock", over_lock, "x",
         f"target >= 1.5x: {'ok' if ratio >= 1.5 else 'MISSED'}")  # fmt: skip
    line("ratio aio Pool / sync Pool", over_sync, "x")
    print(f"  ({aio_rate:,.0f} cycles/s is {1e6 / aio_rate:.0f} us per cycle)", flush=True)
    await pool.aclose()
    await client.aclose()
    sync_pool.close()
    admin.close()


async def _crowd_round(
    url: str, r: redis.Redis, seconds: float
) -> tuple[float, int, int, list[float]]:
    pool = aio.Pool("bench2", url=url)
    checked_in: dict[str, float] = {}
    handoffs: list[float] = []
    cycles = 0
    stop = time.monotonic() + seconds
    accepted = int(r.info("stats")["total_connections_received"])

    async def task() -> None:
        nonlocal cycles
        while time.monotonic() < stop:
            lease = await pool.checkout(timeout=30)
            came = time.monotonic()
            left = checked_in.pop(lease.worker_id, None)
            if left is not None:
                handoffs.append(came - left)
            cycles += 1
            checked_in[lease.worker_id] = time.monotonic()
            await lease.checkin()

    started = time.monotonic()
    await asyncio.gather(*(task() for _ in range(TASKS)))
    took = time.monotonic() - started
    accepted = int(r.info("stats")["total_connections_received"]) - accepted
    opened = pool.connections_opened
    await pool.aclose()
    return cycles / took, opened, accepted, handoffs


async def crowd(url: str, rounds: int, seconds: float) -> None:
    print(f"\n2. {TASKS:,} tasks sharing {WORKERS} workers (each waits its turn)", flush=True)
    admin = SyncPool("bench2", url)
    for n in range(WORKERS):
        admin.add_worker(f"w{n}")
    r = redis.Redis.from_url(url)
    rates, opened, accepted, p50, p99 = [], [], [], [], []
    for _ in range(rounds):
        rate, made, seen, handoffs = await _crowd_round(url, r, seconds)
        handoffs.sort()
        rates.append(rate)
        opened.append(float(made))
        accepted.append(float(seen))
        p50.append(1000 * handoffs[len(handoffs) // 2])
        p99.append(1000 * handoffs[int(len(handoffs) * 0.99)])
    line("cycles/s", rates, "cycles/s")
    line("connections the Pool opened", opened, "conns")
    line("connections the server accepted meanwhile", accepted, "conns")
    line("handoff p50 (checkin -> waiter has it)", p50, "ms")
    line("handoff p99", p99, "ms")
    status = admin.status()
    print(f"  after: idle {status.idle}, busy {status.busy}, waiting {status.waiting}", flush=True)
    r.close()
    admin.close()


async def main(kind: str, quick: bool) -> None:
    rounds, seconds, crowd_seconds = (3, 0.6, 2.0) if quick else (5, 1.6, 4.0)
    server = EmbeddedServer(kind).start()
    try:
        print(f"server: {server.kind} at {server.url}; rounds: {rounds}", flush=True)
        await one_task(server.url, rounds, seconds)
        await crowd(server.url, rounds, crowd_seconds)
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="auto", choices=["auto", "valkey", "redis"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.server, args.quick))
