"""Drain means drain: a worker taken out of service stays out, and its process exits 0.

worker_main.py runs as a real process with 1 s heartbeats (a beat every
1/3 s); an idle, a busy and an overflow worker are drained while the others
keep serving.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from helpers import ROOT, StartWorkerMain, pid_alive, wait_for

from redispool import Pool
from redispool.doubler import compute

HEARTBEAT_INTERVAL = 1 / 3  # FAST's --heartbeat-ttl 1, a beat every third of it


@pytest.fixture
def pool(redis_url: str) -> Iterator[Pool]:
    with Pool("doublers", redis_url) as p:
        yield p


def left_cleanly(log: str, worker_id: str) -> bool:
    return re.search(rf"worker {re.escape(worker_id)} \(pid \d+\) left the pool \(exit 0\)",
                     log) is not None  # fmt: skip


def test_drained_idle_busy_and_overflow_workers_stay_out_and_the_rest_serve(
    start_worker_main: StartWorkerMain, pool: Pool, redis_url: str
) -> None:
    main = start_worker_main("--max-overflow", "1", "--overflow-idle", "600", workers=3)
    leases = [pool.checkout(timeout=5) for _ in range(3)]
    extra = pool.checkout(timeout=15)  # waits until an overflow worker joins
    overflow = next(w for w in pool.workers() if w.id == extra.worker_id)
    assert overflow.overflow
    extra.checkin()
    idle, busy, keep = leases
    idle.checkin()
    pids = {w.id: w.pid for w in pool.workers()}

    drained = subprocess.run(
        [sys.executable, "-m", "redispool.cli", "--url", redis_url, "drain", "doublers",
         idle.worker_id],
        capture_output=True, text=True, timeout=30, cwd=ROOT, check=False,
    )  # fmt: skip
    assert drained.returncode == 0, drained.stderr
    assert pool.remove_worker(busy.worker_id) is True
    assert pool.remove_worker(extra.worker_id) is True
    assert compute(busy, 2) == 4  # a busy one serves its lease to its end
    assert busy.checkin() is True

    gone = {idle.worker_id, busy.worker_id, extra.worker_id}
    wait_for(lambda: all(left_cleanly(main.log(), w) for w in gone), timeout=10,
             message="each drained worker's process to exit 0")  # fmt: skip
    out_until = time.monotonic() + 10 * HEARTBEAT_INTERVAL + 0.5
    while time.monotonic() < out_until:
        assert not gone & {w.id for w in pool.workers()}, "a drained worker came back"
        time.sleep(0.05)
    assert {w.id for w in pool.workers()} == {keep.worker_id}
    assert compute(keep, 5) == 10  # the others keep serving
    assert keep.checkin() is True
    assert not any(pid_alive(pids[w]) for w in gone if pids[w] is not None)
    assert main.proc.poll() is None
    assert "; replacing it in" not in main.log()
    with pool.lease(timeout=5) as again:
        assert again.worker_id == keep.worker_id


def test_a_drained_busy_worker_that_dies_before_its_lease_ends_stays_out(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    main = start_worker_main(workers=1)
    lease = pool.checkout(timeout=5)
    (worker,) = pool.workers()
    assert worker.pid is not None
    assert pool.remove_worker(lease.worker_id) is True  # leaves when its lease ends
    os.kill(worker.pid, signal.SIGKILL)  # it dies before that
    wait_for(lambda: "; replacing it in" in main.log(), timeout=10, message="a replacement")
    wait_for(lambda: left_cleanly(main.log(), lease.worker_id), timeout=10,
             message="the replacement to exit 0")  # fmt: skip
    assert lease.checkin() is False  # its lease ended with its process ("worker dead")
    out_until = time.monotonic() + 10 * HEARTBEAT_INTERVAL + 0.5
    while time.monotonic() < out_until:
        assert lease.worker_id not in {w.id for w in pool.workers()}, "the drained worker came back"
        time.sleep(0.05)
    assert main.log().count("; replacing it in") == 1  # the replacement was not replaced


def test_a_drained_worker_paused_until_buried_stays_out(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    main = start_worker_main(workers=1)
    (worker,) = pool.workers()
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGSTOP)  # paused (GC, swap, a stopped VM) before its next beat
    try:
        assert pool.remove_worker(worker.id) is True  # idle: out at once
        wait_for(lambda: pool.client.zscore(pool.keys.heartbeats, worker.id) is None,
                 timeout=10, message="its burial by the Reaper")  # fmt: skip
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    back = "registration had vanished; registered again"
    wait_for(lambda: left_cleanly(main.log(), worker.id) or back in main.log(), timeout=10,
             message="the drained worker to exit 0 or come back")  # fmt: skip
    assert back not in main.log(), "the drained worker came back"
    assert worker.id not in {w.id for w in pool.workers()}
    wait_for(lambda: pool.client.hget(pool.keys.removed, worker.id) is None, timeout=5,
             message="its retired mark cleared as it exited")  # fmt: skip
