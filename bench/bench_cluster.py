"""Benchmark a pool on a Redis Cluster against the same pool on one server (a benchmark,
not a test).

    python bench/bench_cluster.py [--server redis|valkey] [--quick]

Starts, by pid and stopped by pid, one server and a cluster of 3 masters (no replicas
on either side, so both do the same work per call; see tests/clusters.py), all on
loopback, and measures:

1. one client's ``checkout(block=False)`` + ``checkin()`` cycles/s on a pool of the
   cluster beside the same pool on the single server (target: cluster/single >= 0.8x,
   the ratio taken within each round: the two loops run interleaved in short slices),
   with the Redis time per cycle on each side;
2. 12 pools spread over the 3 masters, driven by 4 client processes (3 pools each),
   aggregate cycles/s, beside the same 12 pools on the single server, and the Redis
   time per cycle on each master (``INFO commandstats``: the usec of every command,
   inside scripts too, over the cycles that master served). With more processes than
   cores, a command's usec includes time its server waited for a core.

Every figure is the median of several rounds, with the min-max spread beside it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable

import redis

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from clusters import Cluster, pool_names_on_every_master

from redispool import Pool
from redispool.server import EmbeddedServer

SLICES = 10
POOLS, PROCESSES = 12, 4


def cycle(pool: Pool) -> None:
    pool.checkout(block=False, auto_renew=False).checkin()


def timed(loop: Callable[[], None], seconds: float) -> tuple[int, float]:
    count, start = 0, time.perf_counter()
    while (took := time.perf_counter() - start) < seconds:
        for _ in range(20):
            loop()
        count += 20
    return count, took


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f}  [{min(values):.1f} - {max(values):.1f}]"


def one_pool(single: EmbeddedServer, cluster: Cluster, rounds: int, seconds: float) -> None:
    pools = {"single": Pool("bench", url=single.url), "cluster": Pool("bench", url=cluster.url)}
    ports = {"single": single.port,
             "cluster": cluster.server_of_slot(cluster.slot_of("{bench}")).port}  # fmt: skip
    for pool in pools.values():
        pool.add_worker("w1")
        for _ in range(200):
            cycle(pool)  # warm: connections made, library loaded
    rates: dict[str, list[float]] = {name: [] for name in pools}
    redis_us: dict[str, list[float]] = {name: [] for name in pools}
    ratios = []
    for _ in range(rounds):
        for port in ports.values():
            with redis.Redis(port=port) as node:
                node.config_resetstat()
        done = {name: [0, 0.0] for name in pools}
        for _ in range(SLICES):
            for name, pool in pools.items():
                count, took = timed(lambda pool=pool: cycle(pool), seconds / SLICES)
                done[name][0] += count
                done[name][1] += took
        for name in pools:
            rates[name].append(done[name][0] / done[name][1])
            with redis.Redis(port=ports[name]) as node:
                redis_us[name].append(_usec(node) / done[name][0])
        ratios.append(rates["cluster"][-1] / rates["single"][-1])
    for pool in pools.values():
        pool.close()
    print(f"1. one pool, one client, checkout+checkin cycles/s (median of {rounds} rounds)")
    for name, label in (("single", "single server "), ("cluster", "cluster       ")):
        print(f"   {label} {spread(rates[name])}   Redis us/cycle {spread(redis_us[name])}")
    ratio = statistics.median(ratios)
    met = "met" if ratio >= 0.8 else "NOT met"
    print(f"   cluster/single {ratio:8.2f}x [{min(ratios):.2f} - {max(ratios):.2f}]"
          f"  (target >= 0.8x: {met})")  # fmt: skip


def _drive(url: str, names: list[str], seconds: float, out: multiprocessing.Queue) -> None:
    pools = [Pool(name, url=url) for name in names]
    for pool in pools:
        cycle(pool)
    start = time.perf_counter()
    counts = dict.fromkeys(names, 0)
    while time.perf_counter() - start < seconds:
        for pool in pools:
            cycle(pool)
            counts[pool.name] += 1
    out.put(counts)
    for pool in pools:
        pool.close()


def _aggregate(url: str, names: list[str], seconds: float) -> dict[str, int]:
    out: multiprocessing.Queue = multiprocessing.Queue()
    per = len(names) // PROCESSES
    procs = [
        multiprocessing.Process(target=_drive, args=(url, names[i * per:(i + 1) * per],
                                                     seconds, out))
        for i in range(PROCESSES)
    ]  # fmt: skip
    for proc in procs:
        proc.start()
    counts: dict[str, int] = {}
    for _ in procs:
        counts.update(out.get(timeout=seconds + 60))
    for proc in procs:
        proc.join(30)
    return counts


def _usec(node: redis.Redis) -> float:
    stats = node.info("commandstats")
    return float(sum(v["usec"] for v in stats.values()))


def many_pools(single: EmbeddedServer, cluster: Cluster, rounds: int, seconds: float) -> None:
    names = pool_names_on_every_master(cluster, POOLS, prefix="b")
    owner = {n: cluster.server_of_slot(cluster.slot_of(f"{{{n}}}")).port for n in names}
    for url in (single.url, cluster.url):
        for name in names:
            with Pool(name, url=url) as pool:
                pool.add_worker("w1")
    masters = sorted(set(owner.values()))
    totals: dict[str, list[float]] = {"single": [], "cluster": []}
    per_master: dict[int, list[float]] = {port: [] for port in masters}
    single_us: list[float] = []
    for _ in range(rounds):
        with redis.Redis(port=single.port) as node:
            node.config_resetstat()
            counts = _aggregate(single.url, names, seconds)
            single_us.append(_usec(node) / sum(counts.values()))
        totals["single"].append(sum(counts.values()) / seconds)
        for port in masters:
            with redis.Redis(port=port) as node:
                node.config_resetstat()
        counts = _aggregate(cluster.url, names, seconds)
        totals["cluster"].append(sum(counts.values()) / seconds)
        for port in masters:
            with redis.Redis(port=port) as node:
                served = sum(c for n, c in counts.items() if owner[n] == port)
                per_master[port].append(_usec(node) / served)
    print(f"2. {POOLS} pools, {PROCESSES} client processes, aggregate cycles/s "
          f"(median of {rounds} rounds)")  # fmt: skip
    print(f"   single server  {spread(totals['single'])}   Redis us/cycle {spread(single_us)}")
    print(f"   cluster        {spread(totals['cluster'])}")
    ratios = [c / s for c, s in zip(totals["cluster"], totals["single"], strict=True)]
    print(f"   cluster/single {statistics.median(ratios):8.2f}x "
          f"[{min(ratios):.2f} - {max(ratios):.2f}]")  # fmt: skip
    for i, port in enumerate(masters):
        pools_here = sum(1 for p in owner.values() if p == port)
        print(f"   master {i + 1} ({pools_here} pools)  Redis us/cycle {spread(per_master[port])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["redis", "valkey"], default="redis")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, seconds, agg_seconds = (3, 0.5, 2.0) if args.quick else (5, 1.0, 4.0)
    single = EmbeddedServer(args.server).start()
    cluster = Cluster(args.server, replicas=0)
    try:
        cluster.start()
        print(f"{single.version}; a cluster of 3 masters, no replicas; loopback; "
              f"{os.cpu_count()} cores")  # fmt: skip
        one_pool(single, cluster, rounds, seconds)
        many_pools(single, cluster, rounds, agg_seconds)
    finally:
        cluster.stop()
        single.stop()


if __name__ == "__main__":
    main()
