"""Worker processes: worker_main.py run as a real process against real servers.

Each test starts worker_main.py (a supervisor, a Reaper and worker processes)
with short heartbeats, tells a story through the pool's client API and the
processes' log lines, and stops every process it started, by pid.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import StartWorkerMain, wait_for

import redispool
from redispool import JobFailed, LeaseLost, Pool, WorkerLost, rqkeys
from redispool.doubler import compute


@pytest.fixture
def pool(redis_url: str) -> Iterator[Pool]:
    with Pool("doublers", redis_url) as p:
        yield p


def _worker(pool: Pool, worker_id: str) -> redispool.WorkerInfo:
    return next(w for w in pool.workers() if w.id == worker_id)


def test_a_leased_worker_doubles_and_logs_one_line_per_job(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    main = start_worker_main()
    with pool.lease(timeout=5) as lease:
        assert compute(lease, 21) == 42
        assert lease.run("redispool.doubler.double", 2.5) == 5.0
        info = _worker(pool, lease.worker_id)
        assert (info.state, info.token, info.jobs) == ("busy", lease.token, 2)
        assert info.pid in main.worker_pids()
    wait_for(lambda: "Doubling 21" in main.log(), message="the job's log line")
    assert main.log().count("Doubling 21") == 1


def test_a_job_raising_comes_back_as_job_failed(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    start_worker_main()
    with pool.lease(timeout=5) as lease:
        with pytest.raises(JobFailed) as failed:
            lease.run("redispool.doubler.double", "not a number")
        assert failed.value.remote_type == "ValueError"
        assert "double needs a number" in failed.value.remote_message
        assert compute(lease, 1) == 2  # the worker goes on


def test_a_job_with_a_stale_token_is_refused_and_never_runs(
    start_worker_main: StartWorkerMain, redis_url: str, pool: Pool
) -> None:
    main = start_worker_main(workers=1)
    with Pool("doublers", redis_url, lease_ttl=0.3) as paused:
        stale = paused.checkout(timeout=5, auto_renew=False)  # a client that stops renewing
        time.sleep(0.5)
        with pool.lease(timeout=5) as fresh:  # the worker went to someone else
            assert fresh.worker_id == stale.worker_id
            with pytest.raises(LeaseLost) as refused:
                compute(stale, 7)
            assert not isinstance(refused.value, WorkerLost)
            assert compute(fresh, 8) == 16
    log = main.log()
    assert "Doubling 8" in log and "Doubling 7" not in log
    # The stale job was refused before it was written (enqueue_job checks the lease):
    # RQ's records hold the fresh job only.
    pool_rq = rqkeys.classes(pool.name)
    queue = pool_rq.queue_for(fresh.worker_id, pool.client)
    assert queue.finished_job_registry.count == 1
    assert queue.failed_job_registry.count == 0 and queue.count == 0


def test_an_unregistered_function_is_refused_before_import(
    start_worker_main: StartWorkerMain, pool: Pool, tmp_path: Path
) -> None:
    start_worker_main(workers=1)
    marker = tmp_path / "pwned"
    with pool.lease(timeout=5) as lease:
        with pytest.raises(JobFailed) as refused:
            lease.run("os.system", f"touch {marker}")
        assert refused.value.remote_type == "redispool.jobs.FunctionNotRegistered"
        with pytest.raises(JobFailed):
            lease.run("antigravity.fly")  # importing it would open a browser
        with pytest.raises(ValueError, match="JSON"):
            lease.run("redispool.doubler.double", object())
        for bad in (0, -1, float("nan"), float("inf"), True, "5"):
            with pytest.raises(ValueError, match="timeout must be"):
                lease.run("redispool.doubler.double", 1, timeout=bad)  # type: ignore[arg-type]
        queue = rqkeys.classes(pool.name).queue_for(lease.worker_id, pool.client)
        assert queue.count == 0  # none of them was queued
        assert compute(lease, 3) == 6
    assert not marker.exists()


def test_an_idle_worker_killed_with_sigkill_is_replaced(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    start_worker_main(workers=2)
    victim = pool.workers()[0]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    def replaced() -> bool:  # the id is briefly absent between burial and re-registration
        pids = [w.pid for w in pool.workers() if w.id == victim.id]
        return bool(pids) and pids[0] not in (None, victim.pid)

    wait_for(replaced, timeout=10, message="a new incarnation of the killed worker")
    wait_for(lambda: pool.status().idle == 2, timeout=5, message="two idle workers")
    with pool.lease(timeout=5) as lease, pool.lease(timeout=5) as other:
        assert {lease.worker_id, other.worker_id} == {w.id for w in pool.workers()}
        assert compute(lease, 1) + compute(other, 2) == 6


def test_a_busy_worker_killed_with_sigkill_gives_its_client_worker_lost(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    start_worker_main("--function", "time.sleep", workers=1)
    with pool.lease(timeout=5) as lease:
        pid = _worker(pool, lease.worker_id).pid
        assert pid is not None
        threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
        began = time.monotonic()
        with pytest.raises(WorkerLost):
            lease.run("time.sleep", 20, timeout=30)
        assert time.monotonic() - began < 5
        with pytest.raises(WorkerLost):
            lease.run("redispool.doubler.double", 1)
    assert lease.worker_died
    wait_for(lambda: pool.status().idle == 1, timeout=10, message="the replacement")
    with pool.lease(timeout=5) as again:
        assert compute(again, 4) == 8


def test_a_paused_worker_is_buried_when_its_heartbeat_lapses(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    start_worker_main("--function", "time.sleep", workers=1)
    with pool.lease(timeout=5) as lease:
        pid = _worker(pool, lease.worker_id).pid
        assert pid is not None
        threading.Timer(0.3, os.kill, (pid, signal.SIGSTOP)).start()
        try:
            with pytest.raises(WorkerLost):
                lease.run("time.sleep", 1, timeout=30)
            assert pool.workers() == []  # out of the pool: never handed out
        finally:
            os.kill(pid, signal.SIGCONT)
        with pytest.raises(WorkerLost):
            lease.renew()
    # The process comes back, finds its registration gone and registers again.
    wait_for(lambda: pool.status().idle == 1, timeout=10, message="the worker back")
    with pool.lease(timeout=5) as again:
        assert compute(again, 5) == 10


def test_sigterm_drains_idle_workers_at_once_and_busy_ones_at_checkin(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    main = start_worker_main("--function", "time.sleep", workers=2)
    lease = pool.checkout(timeout=5)
    result: dict[str, Any] = {}
    job = threading.Thread(target=lambda: result.update(slept=lease.run("time.sleep", 1)))
    job.start()
    wait_for(lambda: _worker(pool, lease.worker_id).jobs == 1, message="the job started")
    main.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: pool.status().size == 1, timeout=5, message="the idle worker gone")
    job.join(timeout=10)
    assert result == {"slept": None}  # the job finished and its result came back
    assert compute(lease, 21) == 42  # still serving its lease
    assert main.proc.poll() is None
    assert lease.checkin() is True
    assert main.proc.wait(timeout=10) == 0
    assert pool.status().size == 0
    assert "Doubling 21" in main.log()


def test_registration_heals_after_flushdb(
    start_worker_main: StartWorkerMain, pool: Pool, r: redis.Redis
) -> None:
    start_worker_main(workers=2)
    r.flushdb()
    wait_for(lambda: pool.status().idle == 2, timeout=5, message="workers registered again")
    with pool.lease(timeout=5) as lease:
        assert compute(lease, 11) == 22


def test_overflow_workers_come_when_clients_wait_and_leave_when_idle(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    start_worker_main("--max-overflow", "1", "--overflow-idle", "0.5", workers=1)
    with pool.lease(timeout=5) as busy:
        with pool.lease(timeout=10) as extra:  # waits until an overflow worker joins
            assert extra.worker_id != busy.worker_id
            assert _worker(pool, extra.worker_id).overflow
            assert pool.status().overflow == 1
            assert compute(extra, 6) == 12
        time.sleep(0.2)
        assert pool.status().overflow == 1  # not dismissed at checkin
    wait_for(lambda: pool.status().overflow == 0, timeout=10, message="overflow worker leaves")
    assert pool.status().size == 1


def test_two_worker_mains_with_one_prefix_never_share_an_id(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    pool.add_worker("box-2")  # added by hand: no process, never taken, never buried
    first = start_worker_main("--worker-id-prefix", "box", workers=2, wait=False)
    wait_for(lambda: pool.status().size == 3, timeout=20, message="first host's workers")
    second = start_worker_main("--worker-id-prefix", "box", workers=2, wait=False)
    wait_for(lambda: pool.status().size == 5, timeout=20, message="second host's workers")
    workers = pool.workers()
    assert len({w.id for w in workers}) == 5
    assert len({w.pid for w in workers if w.pid}) == 4
    hand = _worker(pool, "box-2")
    assert hand.pid is None
    assert first.worker_pids().isdisjoint(second.worker_pids())
    time.sleep(1.5)  # more than a heartbeat TTL: the hand-added worker stays
    assert _worker(pool, "box-2").pid is None
