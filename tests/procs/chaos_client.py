"""A pool client for the chaos run: doubler jobs in a loop until SIGTERM.

    python chaos_client.py URL POOL TTL LOG NUMBER

Each round checks a worker out (waiting at most 2 s), doubles one to three
numbers on it and checks it in. The numbers are unique to this client
(``NUMBER * 10**7 + i``), so each job can be found in the workers' logs.
Every job it saw succeed is one line in LOG, written and flushed at once:

    OK <token> <worker id> <n> <monotonic start> <monotonic end>

After each such job it writes ``n`` through the worker's fenced store (one
redispool.Fence per worker, on the same Redis: what one lease at a time may
write) with the lease's token, and logs the write's fate:

    FENCED <token> <worker id> <monotonic start> <monotonic end>   it landed
    STALE <token>                                        the store refused it

and every error ``ERR <exception class> <message>`` (one line). Any error is
survived (a killed worker, a lost lease, Redis restarting). SIGTERM stops it after
the job in hand; the lease is checked in.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
from types import FrameType
from typing import TextIO

from redispool import Fence, Pool, StaleToken
from redispool.doubler import compute

stop = threading.Event()


def on_term(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    stop.set()


def main() -> None:
    url, name, ttl, log_path, number = sys.argv[1:6]
    signal.signal(signal.SIGTERM, on_term)
    pool = Pool(name, url=url, lease_ttl=float(ttl))
    stores: dict[str, Fence] = {}
    base = int(number) * 10**7
    count = 0
    with open(log_path, "a", buffering=1) as log:
        while not stop.is_set():
            try:
                with pool.lease(timeout=2) as lease:
                    for _ in range(random.randint(1, 3)):
                        if stop.is_set():
                            break
                        count += 1
                        n = base + count
                        began = time.monotonic()
                        result = compute(lease, n, timeout=5)
                        if result != 2 * n:
                            log.write(f"WRONG {lease.token} {lease.worker_id} {n} {result}\n")
                            continue
                        log.write(
                            f"OK {lease.token} {lease.worker_id} {n} {began} {time.monotonic()}\n"
                        )
                        wid = lease.worker_id
                        store = stores.setdefault(wid, Fence(pool.client, f"{name}-{wid}"))
                        fenced_write(store, lease.token, wid, n, log)
            except Exception as exc:  # counted by type in the test's figures
                log.write(f"ERR {type(exc).__name__} {exc}\n".replace("\n", " ") + "\n")
                stop.wait(0.05)
    pool.close()


def fenced_write(store: Fence, token: int, worker_id: str, n: int, log: TextIO) -> None:
    began = time.monotonic()
    try:
        store.write(token, "last", str(n))
    except StaleToken:
        log.write(f"STALE {token}\n")
    else:
        log.write(f"FENCED {token} {worker_id} {began} {time.monotonic()}\n")


if __name__ == "__main__":
    main()
