"""Jobs stay RQ jobs: RQ's own API reads the records redispool's job scripts write.

A real worker_main runs the jobs; every read here goes through RQ's classes for
the pool (``rqkeys.classes``): ``Job.fetch``, ``latest_result()``,
``return_value()``, the registries and ``rq info``. A job enqueued with RQ's own
``Queue.enqueue`` (compressed data) and the lease's token in its meta still
runs; with a stale token, or none, it is refused and recorded as failed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import StartWorkerMain
from rq.job import JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from redispool import JobFailed, JobTimeout, LeaseLost, Pool, errors, rqkeys
from redispool.doubler import compute
from redispool.jobs import NONCE_META, TOKEN_META, VERDICT_META


@pytest.fixture
def pool(redis_url: str) -> Pool:
    with Pool("doublers", redis_url) as p:
        yield p  # type: ignore[misc]


def fetch(pool: Pool, job_id: str) -> object:
    return rqkeys.classes(pool.name).job.fetch(
        job_id, connection=pool.client, serializer=JSONSerializer
    )


def test_a_pool_job_reads_back_through_rqs_own_api(
    start_worker_main: StartWorkerMain, pool: Pool, redis_url: str
) -> None:
    start_worker_main(workers=1)
    pool_rq = rqkeys.classes(pool.name)
    with pool.lease(timeout=5) as lease:
        assert compute(lease, 21) == 42
        queue = pool_rq.queue_for(lease.worker_id, pool.client)
        (job_id,) = queue.finished_job_registry.get_job_ids()
        job = fetch(pool, job_id)
        assert job.func_name == "redispool.doubler.double"  # type: ignore[attr-defined]
        assert job.args == [21] and job.kwargs == {}  # type: ignore[attr-defined]
        assert job.get_status() == JobStatus.FINISHED  # type: ignore[attr-defined]
        assert job.meta[TOKEN_META] == str(lease.token)  # type: ignore[attr-defined]
        assert job.meta[NONCE_META] == lease.nonce  # type: ignore[attr-defined]
        assert job.origin == lease.worker_id  # type: ignore[attr-defined]
        assert job.started_at and job.ended_at and job.enqueued_at  # type: ignore[attr-defined]
        assert job.worker_name.startswith(lease.worker_id)  # type: ignore[attr-defined]
        assert job.return_value() == 42  # type: ignore[attr-defined]
        result = job.latest_result()  # type: ignore[attr-defined]
        assert result.type == Result.Type.SUCCESSFUL and result.return_value == 42
        assert queue.started_job_registry.count == 0
        assert pool.client.ttl(job.key) > 0  # type: ignore[attr-defined]  # result_ttl
        # A job that raises: failed, the job's own traceback in RQ's result.
        with pytest.raises(JobFailed):
            lease.run("redispool.doubler.double", "x")
        (failed_id,) = queue.failed_job_registry.get_job_ids()
        failed = fetch(pool, failed_id)
        assert failed.get_status() == JobStatus.FAILED  # type: ignore[attr-defined]
        latest = failed.latest_result()  # type: ignore[attr-defined]
        assert latest.type == Result.Type.FAILED and "ValueError" in latest.exc_string
        assert VERDICT_META not in failed.meta  # type: ignore[attr-defined]  # its own failure
    env = dict(os.environ, **rqkeys.environment(pool.name))
    info = subprocess.run(
        [sys.executable, "-m", "rq.cli", "info", "-u", redis_url, "--only-queues"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert info.returncode == 0, info.stderr
    assert lease.worker_id in info.stdout


def test_a_job_enqueued_with_rqs_own_api_runs_with_a_current_token_and_is_refused_with_a_stale_one(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    main = start_worker_main(workers=1)
    pool_rq = rqkeys.classes(pool.name)
    with pool.lease(timeout=5) as lease:
        queue = pool_rq.queue_for(lease.worker_id, pool.client)
        meta = {TOKEN_META: str(lease.token), NONCE_META: lease.nonce}
        job = queue.enqueue("redispool.doubler.double", 5, meta=meta)  # RQ compresses data
        result = job.latest_result(timeout=10)
        assert result is not None and result.return_value == 10
        stale = queue.enqueue("redispool.doubler.double", 6,
                              meta={TOKEN_META: str(lease.token - 1), NONCE_META: lease.nonce})
        bare = queue.enqueue("redispool.doubler.double", 7)
        for refused in (stale, bare):
            outcome = refused.latest_result(timeout=10)
            assert outcome is not None and outcome.type == Result.Type.FAILED
            assert "LeaseLost" in outcome.exc_string
            refused.refresh()
            assert refused.get_status() == JobStatus.FAILED
            assert refused.meta[VERDICT_META] == errors.NOT_HELD
        assert compute(lease, 8) == 16
    log = main.log()
    assert "Doubling 5" in log and "Doubling 6" not in log and "Doubling 7" not in log
    assert "carries no lease token" in log


def test_a_job_after_its_lease_ended_is_never_written(
    start_worker_main: StartWorkerMain, pool: Pool, redis_url: str
) -> None:
    start_worker_main(workers=1)
    with Pool("doublers", redis_url, lease_ttl=5) as holder:
        lease = holder.checkout(timeout=5, auto_renew=False)
        holder.client.delete(holder.keys.lease(lease.worker_id))  # ended, unknown to the client
        before = set(holder.client.scan_iter(match=f"{holder.keys.rq_prefix}:job:*"))
        with pytest.raises(LeaseLost):
            compute(lease, 9)
        after = set(holder.client.scan_iter(match=f"{holder.keys.rq_prefix}:job:*"))
        assert after == before


def test_a_results_entry_is_read_by_rqs_result_restore(
    start_worker_main: StartWorkerMain, pool: Pool
) -> None:
    """The stream entry finish_job writes, read by RQ's own Result.restore,
    including a refusal's verdict field (RQ ignores it)."""
    start_worker_main(workers=1)
    pool_rq = rqkeys.classes(pool.name)
    with pool.lease(timeout=5) as lease:
        assert compute(lease, 2) == 4
        with pytest.raises(JobFailed):
            lease.run("os.system", "true")  # not registered: refused after the fence
        queue = pool_rq.queue_for(lease.worker_id, pool.client)
        ids = queue.finished_job_registry.get_job_ids() + queue.failed_job_registry.get_job_ids()
    for job_id in ids:
        (entry_id, fields), = pool.client.xrange(pool.keys.rq_result(job_id))  # fmt: skip
        result = Result.restore(job_id, entry_id.decode(), fields, connection=pool.client,
                                serializer=JSONSerializer)  # fmt: skip
        if result.type == Result.Type.SUCCESSFUL:
            assert result.return_value == 4
        else:
            assert "FunctionNotRegistered" in result.exc_string



def test_a_job_no_worker_took_is_withdrawn_when_the_client_gives_up(redis_url: str) -> None:
    """A worker added by hand runs nothing: the client's JobTimeout takes the job
    off the queue, so it never runs later with nobody waiting for it."""
    with Pool("idle-hands", redis_url) as pool:
        pool.add_worker("by-hand")
        with pool.lease(timeout=5) as lease:
            queue = rqkeys.classes(pool.name).queue_for(lease.worker_id, pool.client)
            with pytest.raises(JobTimeout):
                compute(lease, 3, timeout=0.5)
            assert queue.count == 0
