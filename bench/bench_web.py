"""How long the web view takes to read a pool of 10,000 workers.

Starts its own server, registers N workers (host and pid each), checks out a
third of them (no renewal, long TTL) and gives each a job count. Then, in the
same run, medians of several rounds of:

- snapshot: ``redispool.web.snapshot.read_pool`` (what the page's JSON holds:
  every worker counted, the first 2000 listed), and with every worker listed;
- http: ``GET /api/pools/<P>`` through uvicorn, the whole answer read;
- anchor: ``pool.workers()`` + ``pool.leases()`` (what ``redispool workers`` and
  ``redispool leases`` read), the same data by the existing calls.

    python bench/bench_web.py [--kind valkey|redis] [--workers 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import uvicorn  # noqa: E402

from redispool import Pool  # noqa: E402
from redispool.server import EmbeddedServer, free_port  # noqa: E402
from redispool.web import create_app  # noqa: E402
from redispool.web.snapshot import read_pool  # noqa: E402


def populate(pool: Pool, workers: int) -> None:
    """``workers`` workers w00000..., a third of them leased, each with a job count."""
    for n in range(workers):
        pool.add_worker(f"w{n:05d}", host=f"host-{n % 50}", pid=1000 + n)
    pool.configure(lease_ttl=600)
    for _ in range(workers // 3):
        pool.checkout(block=False, auto_renew=False)
    with pool.client.pipeline(transaction=False) as pipe:
        for n in range(workers):
            pipe.hincrby(pool.keys.jobs, f"w{n:05d}", n % 17)
        pipe.execute()


def median_ms(work: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="valkey", choices=("valkey", "redis"))
    parser.add_argument("--workers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with EmbeddedServer(args.kind) as server:
        client = redis.Redis.from_url(server.url)
        pool = Pool("big", redis=client)
        populate(pool, args.workers)
        port = free_port()
        web = uvicorn.Server(uvicorn.Config(create_app(client), host="127.0.0.1", port=port,
                                            log_level="warning", lifespan="off"))  # fmt: skip
        thread = threading.Thread(target=web.run, daemon=True)
        thread.start()
        while not web.started:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{port}/api/pools/big"

        def http() -> bytes:
            with urllib.request.urlopen(url, timeout=30) as reply:
                return bytes(reply.read())

        size = len(http())
        snapshot = median_ms(lambda: read_pool(pool), args.rounds)
        everyone = median_ms(lambda: read_pool(pool, limit=args.workers), args.rounds)
        over_http = median_ms(http, args.rounds)
        anchor = median_ms(lambda: (pool.workers(), pool.leases()), args.rounds)
        web.should_exit = True
        thread.join(timeout=10)
        pool.close()
        client.close()
    n = args.workers
    print(f"{args.kind}, {n} workers ({n // 3} leased), median of {args.rounds} rounds:")
    print(f"  snapshot read_pool          {snapshot:8.1f} ms  (the page: first 2000 listed)")
    print(f"  snapshot, every worker      {everyone:8.1f} ms")
    print(f"  GET /api/pools/big (http)   {over_http:8.1f} ms  ({size} bytes)")
    print(f"  anchor workers()+leases()   {anchor:8.1f} ms")
    print(f"  every worker / anchor       {everyone / anchor:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
