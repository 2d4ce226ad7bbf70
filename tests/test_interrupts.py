"""A waiter interrupted by a real SIGINT at the moment of its handoff strands no worker."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from helpers import wait_for

from redispool import Pool

MakePool = Callable[..., Pool]
WAITER = Path(__file__).parent / "procs" / "interrupted_waiter.py"
ROUNDS = 120
#: SIGINT lands this many seconds around the checkin that hands the worker over.
SPREAD = (-0.001, 0.003)


def _settled(pool: Pool) -> bool:
    status = pool.status()
    return (status.idle, status.busy, status.waiting) == (1, 0, 0)


def test_a_sigint_around_a_handoff_leaves_the_worker_to_someone(
    make_pool: MakePool, redis_url: str
) -> None:
    pool = make_pool(workers=1, lease_ttl=60)  # a stranded worker would stay busy a minute
    proc = subprocess.Popen(
        [sys.executable, str(WAITER), redis_url, "p"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    seen: Counter[str] = Counter()
    rng = random.Random(8)
    try:
        assert proc.stdout.readline().strip() == "ready"
        for round_no in range(ROUNDS):
            held = pool.checkout(block=False)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            wait_for(lambda: pool.status().waiting == 1, timeout=5, message="the waiter queued")
            delay = rng.uniform(*SPREAD)
            if delay < 0:
                proc.send_signal(signal.SIGINT)
                time.sleep(-delay)
                held.checkin()
            else:
                held.checkin()
                time.sleep(delay)
                proc.send_signal(signal.SIGINT)
            outcome = proc.stdout.readline().strip()
            seen[outcome] += 1
            wait_for(
                lambda: _settled(pool),
                timeout=2,
                message=f"round {round_no} ({outcome}, SIGINT at {delay * 1000:+.2f} ms): "
                f"the worker idle, nobody queued; else it is stranded: {pool.leases()}",
            )
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    print(f"outcomes over {ROUNDS} rounds: {dict(seen)}")
    assert set(seen) <= {"got", "interrupted"}
    assert seen["got"] > 0 and seen["interrupted"] > 0
