"""Doubler jobs per second: through the pool, and through plain RQ, in one run.

Pool: worker_main.py with 4 worker processes; 8 client threads each lease a
worker, run one doubler job on it (enqueue + wait for the result, the lease's
token checked by the worker) and check it in. Plain RQ: 4 non-forking
``SimpleWorker`` processes on one shared queue; 8 client threads enqueue the
same job and wait for its result, no pool. Both serialize with JSON and log
the same way. Both sets of workers run during the whole benchmark and the
rounds alternate, so a change in the machine's load hits both. Prints both
rates and their ratio (issue 13: pool >= 2x RQ), and one client's job round
trip on one lease (p50/p90), which includes the worker's job process (the
function call crosses a pipe to it and back).

    python bench/bench_jobs.py [--kind valkey|redis] [--jobs 150] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
from rq import Queue
from rq.serializers import JSONSerializer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redispool import Pool  # noqa: E402
from redispool.doubler import compute  # noqa: E402
from redispool.server import EmbeddedServer  # noqa: E402

PLAIN_WORKER = """
import logging, sys, redis
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
logging.basicConfig(stream=sys.stderr, level=logging.INFO)
for name in ("rq", "rq.worker", "rq.job", "rq.queue"):
    logging.getLogger(name).setLevel(logging.WARNING)
client = redis.Redis.from_url(sys.argv[1])
queue = Queue("plain", connection=client, serializer=JSONSerializer)
SimpleWorker([queue], connection=client, serializer=JSONSerializer, name=sys.argv[2]).work(
    logging_level="WARNING")
"""


def clients(n: int, jobs: int, one_job: Callable[[int], None]) -> float:
    """Run ``n`` threads of ``jobs`` jobs each; jobs per second."""
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            for i in range(jobs):
                one_job(i)
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=loop) for _ in range(n)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    if errors:
        raise errors[0]
    return n * jobs / elapsed


def round_trip(url: str, jobs: int) -> tuple[float, float]:
    """One client, one lease, ``jobs`` doubler jobs in a row: (p50, p90) in ms."""
    times: list[float] = []
    with Pool("bench", url) as pool, pool.lease(timeout=30) as lease:
        for i in range(jobs):
            began = time.perf_counter()
            assert compute(lease, i) == 2 * i
            times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return times[len(times) // 2], times[len(times) * 9 // 10]


@contextlib.contextmanager
def pool_setup(url: str, workers: int) -> Iterator[Callable[[int], None]]:
    """worker_main.py with ``workers`` workers; yields one pool job."""
    main = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "worker_main.py"),
            "--url",
            url,
            "--pool",
            "bench",
            "--workers",
            str(workers),
        ],
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    pool = Pool("bench", url)
    try:
        deadline = time.monotonic() + 30
        while pool.status().idle < workers:
            if time.monotonic() > deadline:
                raise SystemExit("pool workers did not start")
            time.sleep(0.05)

        def one_job(i: int) -> None:
            with pool.lease(timeout=30) as lease:
                assert compute(lease, i) == 2 * i

        yield one_job
    finally:
        pool.close()
        main.send_signal(signal.SIGTERM)
        main.wait(timeout=30)


@contextlib.contextmanager
def rq_setup(url: str, workers: int) -> Iterator[Callable[[int], None]]:
    """``workers`` plain SimpleWorker processes on one queue; yields one RQ job."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PLAIN_WORKER, url, f"plain-{i}-{os.getpid()}"],
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        for i in range(workers)
    ]
    client = redis.Redis.from_url(url, socket_timeout=30)
    queue = Queue("plain", connection=client, serializer=JSONSerializer)
    try:

        def one_job(i: int) -> None:
            job = queue.enqueue("redispool.doubler.double", i)
            result = job.latest_result(timeout=30)
            assert result is not None and result.return_value == 2 * i

        yield one_job
    finally:
        client.close()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("valkey", "redis"), default="valkey")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=150, help="jobs per client per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with EmbeddedServer(args.kind) as server:
        print(
            f"server: {server.version}; {args.workers} workers, {args.clients} client threads, "
            f"{args.jobs} jobs per client, {args.rounds} rounds; cpus: {os.cpu_count()}"
        )
        rq_rates: list[float] = []
        pool_rates: list[float] = []
        with (
            rq_setup(server.url, args.workers) as rq_job,
            pool_setup(server.url, args.workers) as pool_job,
        ):
            clients(args.clients, 10, rq_job)  # warm up both
            clients(args.clients, 10, pool_job)
            for _ in range(args.rounds):  # alternate, so load drift hits both
                rq_rates.append(clients(args.clients, args.jobs, rq_job))
                pool_rates.append(clients(args.clients, args.jobs, pool_job))
            p50, p90 = round_trip(server.url, args.jobs * 2)
    rq_best, pool_best = max(rq_rates), max(pool_rates)
    rq_total, pool_total = sum(rq_rates), sum(pool_rates)
    for label, rates in (("plain RQ", rq_rates), ("pool", pool_rates)):
        shown = "  ".join(f"{r:7.1f}" for r in rates)
        print(f"{label:9}: {shown}   best {max(rates):7.1f} jobs/s")
    print(
        f"ratio pool/RQ: best of each {pool_best / rq_best:.2f}, "
        f"mean of rounds {pool_total / rq_total:.2f}  (target >= 2)"
    )
    print(f"pool round trip, one client: p50 {p50:.2f} ms, p90 {p90:.2f} ms")


if __name__ == "__main__":
    main()
