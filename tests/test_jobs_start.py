"""A job starts only while its lease holds, even when its worker was held up after the fence.

The fence (``begin_job``) says how long the lease surely holds; a worker that is
held up between the fence and sending the call (Redis stopped answering during
its bookkeeping, the process was paused) looks at the lease again before it
sends, and a lease that has ended, or that Redis cannot vouch for, means the
call is never sent: the job's function never starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import StartServer, wait_for, worker_process
from rq.serializers import JSONSerializer

from redispool import LeaseLost, Pool, errors, rqkeys
from redispool.doubler import compute
from redispool.errors import PoolUnavailable
from redispool.job_process import JobProcess
from redispool.jobs import VERDICT_META
from redispool.worker import WorkerSettings

ROOT = Path(__file__).resolve().parent.parent
STALLED = ROOT / "tests" / "procs" / "stalled_worker.py"
JOBS = "tests.procs.jobfuncs"

StartStalled = Callable[..., tuple[subprocess.Popen[bytes], Path, Path]]


@pytest.fixture
def start_stalled(tmp_path: Path) -> Iterator[StartStalled]:
    """Start one worker process of pool ``doublers`` that stalls ``stall`` seconds
    between each job's fence and its call; (process, its log, the stalled flag)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(url: str, stall: float) -> tuple[subprocess.Popen[bytes], Path, Path]:
        log, flag = tmp_path / "stalled_worker.log", tmp_path / "stalled"
        settings = WorkerSettings(
            url, "doublers", "w-stalled", uuid.uuid4().hex, heartbeat_ttl=30.0,
            functions=("redispool.doubler.double", f"{JOBS}.sleep_then_mark"),
        )  # fmt: skip
        proc = worker_process(settings, log, STALLED, REDISPOOL_TEST_STALL=str(stall),
                              REDISPOOL_TEST_STALLED=str(flag))  # fmt: skip
        procs.append(proc)
        return proc, log, flag

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def failed_verdicts(pool: Pool, worker_id: str) -> list[Any]:
    """The verdicts in ``job.meta`` of the worker's failed jobs, read with RQ's own API."""
    pool_rq = rqkeys.classes(pool.name)
    queue = pool_rq.queue_for(worker_id, pool.client)
    jobs = [pool_rq.job.fetch(i, connection=pool.client, serializer=JSONSerializer)
            for i in queue.failed_job_registry.get_job_ids()]  # fmt: skip
    return [j.meta.get(VERDICT_META) for j in jobs]


def test_a_job_whose_lease_ends_while_its_worker_is_held_up_after_the_fence_never_starts(
    start_stalled: StartStalled, redis_url: str
) -> None:
    proc, log, flag = start_stalled(redis_url, stall=1.5)
    with Pool("doublers", redis_url) as pool:
        wait_for(lambda: pool.status().idle == 1, timeout=20, message="the worker idle")
    with Pool("doublers", redis_url, lease_ttl=1.0) as holder:
        lease = holder.checkout(timeout=5, auto_renew=False)  # ends 1 s from now
        began = time.monotonic()
        with pytest.raises(LeaseLost):
            compute(lease, 7, timeout=10)
        assert flag.exists(), "the worker never reached the moment between fence and call"
        wait_for(lambda: failed_verdicts(holder, lease.worker_id), timeout=10,
                 message="the job's end recorded")  # fmt: skip
        assert time.monotonic() - began < 1.5 + 3  # the stall, and slack: no stop grace
        assert "Doubling 7" not in log.read_text()
        assert failed_verdicts(holder, lease.worker_id) == [errors.NOT_HELD]
        assert "before the job could start; not started" in log.read_text()
    with Pool("doublers", redis_url) as pool, pool.lease(timeout=10) as fresh:
        assert compute(fresh, 8, timeout=10) == 16  # held up 1.5 s inside a 5 s lease: runs
    assert "Doubling 8" in log.read_text() and "Doubling 7" not in log.read_text()
    assert proc.poll() is None


def test_a_held_up_worker_that_cannot_reach_redis_does_not_start_the_job(
    start_stalled: StartStalled, fresh_server: StartServer, tmp_path: Path
) -> None:
    """Redis stops answering at the moment between the fence and the call, until
    the lease has ended: the look before sending cannot be answered, so the job
    must not start (Redis cannot vouch for the lease)."""
    server = fresh_server()
    marker = tmp_path / "job-finished"
    proc, log, flag = start_stalled(server.url, stall=1.2)
    with Pool("doublers", server.url) as pool:
        wait_for(lambda: pool.status().idle == 1, timeout=20, message="the worker idle")
    try:
        with Pool("doublers", server.url, lease_ttl=1.0) as holder:
            lease = holder.checkout(timeout=5, auto_renew=False)
            outcome: dict[str, Any] = {}

            def run() -> None:
                try:
                    outcome["result"] = lease.run(f"{JOBS}.sleep_then_mark", 0.1, str(marker),
                                                  timeout=15)  # fmt: skip
                except BaseException as exc:  # looked at below
                    outcome["error"] = exc

            import threading

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            wait_for(flag.exists, timeout=10, interval=0.005, message="the worker held up")
            os.kill(server.pid, signal.SIGSTOP)  # the fence ran; Redis stops answering
            try:
                wait_for(lambda: "could not look at a running job's lease" in log.read_text(),
                         timeout=10, message="the worker's look unanswered")  # fmt: skip
            finally:
                os.kill(server.pid, signal.SIGCONT)
            thread.join(timeout=20)
            assert isinstance(outcome.get("error"), (LeaseLost, PoolUnavailable)), outcome
        with Pool("doublers", server.url) as reader:
            wait_for(lambda: failed_verdicts(reader, lease.worker_id), timeout=15,
                     message="the job's end recorded")  # fmt: skip
        time.sleep(0.5)  # had it started, the job would have ended 0.1 s in
        assert not marker.exists(), "the job ran"
        assert "not started" in log.read_text()
        assert proc.poll() is None
    finally:
        if server.running:
            os.kill(server.pid, signal.SIGCONT)


def test_job_process_never_sends_a_call_whose_lease_cannot_be_vouched_for(
    tmp_path: Path,
) -> None:
    """JobProcess.run itself, with a real job process: past ``held_until`` it asks
    ``held()`` first; an ended lease or an unanswered look send nothing."""
    marker = tmp_path / "ran"
    jobs = JobProcess([f"{JOBS}.sleep_then_mark"], stop_grace=1.0)
    call = {"func": f"{JOBS}.sleep_then_mark", "args": [0, str(marker)], "kwargs": {},
            "pool": "p", "worker_id": "w", "token": 1}  # fmt: skip
    looks: list[str] = []

    def ended() -> float:
        looks.append("ended")
        return 0.0

    def unanswered() -> float:
        looks.append("unanswered")
        raise PoolUnavailable("Redis did not answer")

    try:
        jobs.ensure_ready()
        past = time.monotonic() - 0.001
        for held in (ended, unanswered):
            outcome = jobs.run(call, 5.0, held, past)
            assert (outcome.kind, outcome.started) == ("lost", False)
        assert looks == ["ended", "unanswered"]
        time.sleep(0.3)
        assert not marker.exists(), "a call was sent"
        # Within held_until nothing is asked before sending, and the call runs.
        outcome = jobs.run(call, 5.0, lambda: 5.0, time.monotonic() + 5)
        assert outcome.kind == "returned" and json.dumps(outcome.value) == '"finished"'
        assert marker.exists()
    finally:
        jobs.close()
