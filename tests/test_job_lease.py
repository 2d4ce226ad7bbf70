"""The fence lasts the whole job: a job whose lease ends is told, then stopped.

worker_main.py runs as a real process (1 s heartbeats, the default 1 s stop
grace); the jobs are in tests/procs/jobfuncs.py and write a marker file only
when they reach their end, so a job killed before its end leaves none.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import FAST, StartServer, StartWorkerMain, WorkerMain, pid_alive, wait_for
from rq.serializers import JSONSerializer

from redispool import JobFailed, JobTimeout, Lease, LeaseLost, Pool, errors, rqkeys
from redispool.doubler import compute
from redispool.jobs import VERDICT_META

JOBS = "tests.procs.jobfuncs"
FUNCTIONS = tuple(
    f"--function={JOBS}.{name}"
    for name in ("sleep_then_mark", "say_begun_sleep_then_mark", "spin_then_mark",
                 "watch_lost", "lease_seen", "raise_named_lease_lost", "return_when_reassigned")
)  # fmt: skip
GRACE = 1.0  # worker_main's default --stop-grace


@pytest.fixture
def pool(redis_url: str) -> Iterator[Pool]:
    with Pool("doublers", redis_url) as p:
        yield p


def run_in_thread(lease: Lease, func: str, *args: Any, timeout: float = 10) -> dict[str, Any]:
    """Start ``lease.run(func, *args)`` in a thread; the dict gets 'result' or 'error'."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = lease.run(func, *args, timeout=timeout)
        except BaseException as exc:  # the test looks at it
            outcome["error"] = exc

    outcome["thread"] = threading.Thread(target=run, daemon=True)
    outcome["thread"].start()
    return outcome


def jobs_on(pool: Pool, worker_id: str) -> int:
    return next(w.jobs for w in pool.workers() if w.id == worker_id)


def absent_until(marker: Path, moment: float) -> None:
    """Assert ``marker`` never appears up to the monotonic ``moment``."""
    while time.monotonic() < moment:
        assert not marker.exists(), f"{marker.name} appeared: the job ran to its end"
        time.sleep(0.05)
    assert not marker.exists()


def stale_job(
    redis_url: str, func: str, seconds: float, marker: Path, ttl: float = 1.0
) -> tuple[Lease, dict[str, Any], float]:
    """A holder with a ``ttl`` lease that stops renewing runs a long job: its lease,
    the run's outcome, and the wall-clock time by which its lease surely began."""
    with Pool("doublers", redis_url, lease_ttl=ttl) as holder:
        began = time.time()
        lease = holder.checkout(timeout=5, auto_renew=False)
        outcome = run_in_thread(lease, func, seconds, str(marker))
        wait_for(lambda: jobs_on(holder, lease.worker_id) == 1, message="the job started")
        outcome["thread"].join(timeout=ttl + 5)
    return lease, outcome, began


def test_a_stale_long_job_is_ended_and_the_next_holder_is_served_within_the_grace(
    start_worker_main: StartWorkerMain, redis_url: str, pool: Pool, tmp_path: Path
) -> None:
    main = start_worker_main(*FUNCTIONS, workers=1)
    marker = tmp_path / "stale-job-finished"
    with Pool("doublers", redis_url, lease_ttl=1.0) as holder:
        stale = holder.checkout(timeout=5, auto_renew=False)  # a holder that stops renewing
        started = time.monotonic()
        outcome = run_in_thread(stale, f"{JOBS}.sleep_then_mark", 4, str(marker))
        fresh = pool.checkout(timeout=5)  # blocks until the stale lease has ended
        checked_out = time.monotonic()
        assert fresh.worker_id == stale.worker_id
        assert compute(fresh, 21) == 42
        assert time.monotonic() - checked_out < GRACE + 1
        outcome["thread"].join(timeout=10)
        assert isinstance(outcome.get("error"), LeaseLost), outcome  # not a result
        assert "result" not in outcome
    absent_until(marker, started + 4 + 1.5)  # it would have written at 4 s
    assert "its lease ended; job killed" in main.log()
    # RQ's records, the RQ way: the killed job failed with the worker's verdict
    pool_rq = rqkeys.classes(pool.name)
    queue = pool_rq.queue_for(fresh.worker_id, pool.client)
    failed = [pool_rq.job.fetch(i, connection=pool.client, serializer=JSONSerializer)
              for i in queue.failed_job_registry.get_job_ids()]  # fmt: skip
    assert [j.meta.get(VERDICT_META) for j in failed] == [errors.NOT_HELD]
    (done,) = (pool_rq.job.fetch(i, connection=pool.client, serializer=JSONSerializer)
               for i in queue.finished_job_registry.get_job_ids())  # fmt: skip
    result = done.latest_result()
    assert result is not None and result.return_value == 42
    fresh.checkin()


@pytest.mark.parametrize("func", ["spin_then_mark", "sleep_then_mark"])
def test_a_job_that_ignores_lost_is_ended_whether_in_python_or_blocked_in_c(
    start_worker_main: StartWorkerMain, redis_url: str, pool: Pool, tmp_path: Path, func: str
) -> None:
    main = start_worker_main(*FUNCTIONS, workers=1)
    marker = tmp_path / f"{func}-finished"
    started = time.monotonic()
    _, outcome, _ = stale_job(redis_url, f"{JOBS}.{func}", 3, marker, ttl=0.5)
    assert isinstance(outcome.get("error"), LeaseLost), outcome
    wait_for(lambda: "its lease ended; job killed" in main.log(), timeout=GRACE + 2,
             message="the job killed")  # fmt: skip
    with pool.lease(timeout=5) as fresh:
        assert compute(fresh, 4) == 8
    absent_until(marker, started + 3 + 1)


def test_a_job_watching_lost_sees_it_at_once_and_stops_itself(
    start_worker_main: StartWorkerMain, redis_url: str, pool: Pool, tmp_path: Path
) -> None:
    main = start_worker_main(*FUNCTIONS, workers=1)
    marker = tmp_path / "watcher"
    lease, outcome, began = stale_job(redis_url, f"{JOBS}.watch_lost", 5, marker, ttl=0.5)
    assert isinstance(outcome.get("error"), LeaseLost), outcome
    lost_file = marker.parent / "watcher.lost"
    # write_text creates the file before it writes: wait for its content, not its name
    seen = wait_for(lambda: lost_file.exists() and lost_file.read_text(), timeout=3,
                    message="the job saw lost")  # fmt: skip
    saw_lost = float(str(seen))
    assert saw_lost - (began + lease.ttl) < 0.5  # from the lease's end: the watch interval
    wait_for(lambda: "its lease ended; job returned" in main.log(), timeout=3,
             message="the job to return by itself")  # fmt: skip
    assert not marker.exists()


def test_current_lease_inside_a_job_is_the_clients_lease(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    start_worker_main(*FUNCTIONS, workers=1)
    with pool.lease(timeout=5) as lease:
        seen = lease.run(f"{JOBS}.lease_seen")
        assert seen == {"pool": "doublers", "worker_id": lease.worker_id,
                        "token": lease.token, "lost": False}  # fmt: skip


def test_a_job_raising_its_own_lease_lost_is_a_job_failed_and_the_lease_holds(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    start_worker_main(*FUNCTIONS, workers=1)
    with pool.lease(timeout=5) as lease:
        with pytest.raises(JobFailed) as failed:
            lease.run(f"{JOBS}.raise_named_lease_lost")
        assert not isinstance(failed.value, LeaseLost)
        assert failed.value.remote_type == f"{JOBS}.LeaseLost"
        assert lease.active and not lease.lost.is_set()
        lease.renew()
        assert compute(lease, 3) == 6


def test_a_job_past_its_own_timeout_is_killed_and_the_worker_serves_on(
    start_worker_main: StartWorkerMain, pool: Pool, tmp_path: Path
) -> None:
    main = start_worker_main(*FUNCTIONS, workers=1)
    marker = tmp_path / "too-long"
    started = time.monotonic()
    with pool.lease(timeout=5) as lease:
        with pytest.raises(JobTimeout):
            lease.run(f"{JOBS}.sleep_then_mark", 3, str(marker), timeout=1)
        assert time.monotonic() - started < 2.5
        assert lease.active  # a job's timeout is not the end of the lease
        assert compute(lease, 5) == 10
    assert "ran past its timeout" in main.log()
    absent_until(marker, started + 3 + 1)


def test_a_job_whose_holder_checks_in_while_it_runs_is_ended(
    start_worker_main: StartWorkerMain, pool: Pool, tmp_path: Path
) -> None:
    main = start_worker_main(*FUNCTIONS, workers=1)
    marker = tmp_path / "checked-in-midway"
    started = time.monotonic()
    lease = pool.checkout(timeout=5)
    outcome = run_in_thread(lease, f"{JOBS}.sleep_then_mark", 3, str(marker))
    wait_for(lambda: jobs_on(pool, lease.worker_id) == 1, message="the job started")
    assert lease.checkin() is True  # the lease ends under the running job
    outcome["thread"].join(timeout=5)
    assert isinstance(outcome.get("error"), LeaseLost), outcome
    wait_for(lambda: "its lease ended; job killed" in main.log(), timeout=GRACE + 2,
             message="the job killed")  # fmt: skip
    with pool.lease(timeout=5) as fresh:
        assert compute(fresh, 9) == 18
    absent_until(marker, started + 3 + 1)


def test_a_job_does_not_outlive_its_worker_killed_with_sigkill(
    start_worker_main: StartWorkerMain, pool: Pool, tmp_path: Path
) -> None:
    main = start_worker_main(*FUNCTIONS, workers=1)
    marker = tmp_path / "orphan"
    lease = pool.checkout(timeout=5)
    worker_pid = next(w.pid for w in pool.workers() if w.id == lease.worker_id)
    assert worker_pid is not None
    job_pid = int(re.findall(rf"\[{worker_pid}\] INFO job process (\d+) started", main.log())[-1])
    outcome = run_in_thread(lease, f"{JOBS}.sleep_then_mark", 2, str(marker))
    wait_for(lambda: jobs_on(pool, lease.worker_id) == 1, message="the job started")
    started = time.monotonic()
    os.kill(worker_pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(job_pid), timeout=2, message="the job process to die too")
    outcome["thread"].join(timeout=10)
    assert isinstance(outcome.get("error"), LeaseLost), outcome
    absent_until(marker, started + 2 + 1)


def test_a_job_whose_worker_cannot_see_redis_is_ended_when_its_last_seen_ttl_runs_out(
    fresh_server: StartServer, tmp_path: Path
) -> None:
    """Redis SIGSTOPped mid-job: the worker cannot look at the lease, and trusts it
    only for the TTL it had at the last look; then the job is stopped as if the
    lease had ended (it has, by the time Redis answers again: nobody renewed it)."""
    server = fresh_server()
    log = tmp_path / "worker_main.log"
    main = WorkerMain(server.url, "doublers", log, ("--workers", "1", *FAST, "--heartbeat-ttl",
                                                   "30", *FUNCTIONS))  # fmt: skip
    marker = tmp_path / "cut-off-job-finished"
    try:
        with Pool("doublers", server.url) as p:
            wait_for(lambda: p.status().idle == 1, timeout=20, message="the worker idle")
        with Pool("doublers", server.url, lease_ttl=1.5) as holder:
            lease = holder.checkout(timeout=5)  # renewed, until Redis stops answering
            begun = tmp_path / "cut-off-job-begun"
            outcome = run_in_thread(
                lease, f"{JOBS}.say_begun_sleep_then_mark", str(begun), 6, str(marker)
            )
            # Stop Redis once the job runs (its worker then watches the lease), not
            # while the worker's RQ bookkeeping before it waits on Redis's 5 s timeouts.
            wait_for(lambda: begun.exists() and begun.read_text() == "begun",
                     message="the job running")  # fmt: skip
            os.kill(server.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                wait_for(lambda: re.search(r"job process \d+ ended", main.log()), timeout=8,
                         interval=0.05, message="the cut-off job killed")  # fmt: skip
                killed_after = time.monotonic() - stopped
            finally:
                os.kill(server.pid, signal.SIGCONT)
            print(f"job killed {killed_after:.2f} s after Redis stopped answering")
            assert killed_after < 1.5 + GRACE + 1.0  # the TTL it had, the grace, slack
            outcome["thread"].join(timeout=20)
            assert isinstance(outcome.get("error"), LeaseLost), outcome
        absent_until(marker, stopped + 6 + 1.5)
        assert "its lease ended; job killed" in main.log()
    finally:
        if server.running:
            os.kill(server.pid, signal.SIGCONT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            main.stop(timeout=10)
        main.kill_everything()


def test_a_job_that_returns_after_its_worker_was_handed_on_is_no_success(
    start_worker_main: StartWorkerMain, redis_url: str, pool: Pool
) -> None:
    # The job returns a few ms after its lease expired and a waiter was handed
    # the worker: the worker's last look (<= 50 ms before) saw the lease held.
    start_worker_main(*FUNCTIONS, workers=1)
    for _ in range(3):  # the last look falls anywhere in 50 ms: three rounds, not luck
        with Pool("doublers", redis_url, lease_ttl=0.5) as holder:
            stale = holder.checkout(timeout=5, auto_renew=False)
            key = holder.keys.lease(stale.worker_id)
            outcome = run_in_thread(stale, f"{JOBS}.return_when_reassigned", redis_url, key, 5)
            fresh = pool.checkout(timeout=5)  # served when the stale lease ends
            assert fresh.worker_id == stale.worker_id
            outcome["thread"].join(timeout=5)
            assert isinstance(outcome.get("error"), LeaseLost), outcome  # never a result
            fresh.checkin()
