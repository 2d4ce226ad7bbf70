"""A job a worker took off its queue but never started is taken up again, never lost.

A worker's wait moves the job id from its RQ queue to RQ's intermediate queue
(``BLMOVE``, as RQ's own workers do) and the job's start (``begin_job``) takes
it out. An id left there by a move whose reply was lost with the connection
is taken up by the worker's next wait: the job runs if its lease still holds
(and is refused with the verdict that says why if not). With ``BLPOP`` such an
id was gone, and its client waited out the whole timeout for a job that never
ran. (A worker that dies holding one is buried with its queues: its clients
are told ``WorkerLost``, test_worker.py.)
"""

from __future__ import annotations

import time

import redis
from helpers import StartWorkerMain, wait_for

from redispool import Pool, job_records
from redispool.jobs import NONCE_META, TOKEN_META
from redispool.protocol.jobs import intermediate_key, rq_key


def taken_job(pool: Pool, r: redis.Redis, worker_id: str, token: int, nonce: str) -> str:
    """A job of the lease ``token``/``nonce`` on ``worker_id``, its id put in the
    worker's intermediate queue as its wait would have moved it there; its id."""
    queue = pool.keys.rq_queue(worker_id)
    meta = {TOKEN_META: str(token), NONCE_META: nonce}
    job_id, fields = job_records.job_fields(
        "redispool.doubler.double", [21], queue, meta, timeout=10, result_ttl=60,
        failure_ttl=60, ttl=60, now=time.time(),
    )  # fmt: skip
    record = dict(zip(fields[::2], fields[1::2], strict=True))
    r.hset(rq_key(pool.keys, "job", job_id), mapping=record)
    r.rpush(intermediate_key(pool.keys, queue), job_id)
    return job_id


def test_a_job_whose_move_reply_was_lost_runs_when_the_worker_is_back(
    start_worker_main: StartWorkerMain, r: redis.Redis
) -> None:
    main = start_worker_main(workers=1)
    with Pool("doublers", redis=r) as pool, pool.lease(timeout=5) as lease:
        job_id = taken_job(pool, r, lease.worker_id, lease.token, lease.nonce)
        # the worker's waiting connection breaks, as a move whose reply was lost would
        wait_for(lambda: [c for c in r.client_list() if c.get("cmd") in ("blmove", "blpop")], timeout=5,
                 interval=0.01, message="the worker's wait")  # fmt: skip
        for client in r.client_list():
            if client.get("cmd") in ("blmove", "blpop"):
                r.client_kill_filter(_id=client["id"])
        key = pool.keys.rq_result(job_id)
        wait_for(lambda: r.xlen(key) >= 1, timeout=10, message="the taken job's result")
        assert job_records.read_result(r.xrange(key)[-1][1]).value == 42
        assert r.llen(intermediate_key(pool.keys, pool.keys.rq_queue(lease.worker_id))) == 0
        assert "Doubling 21" in main.log()
        assert f"job {job_id} was taken and never started" in main.log()
