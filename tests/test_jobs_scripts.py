"""The job scripts' logic on fakeredis: enqueue_job, begin_job, finish_job.

Each test reads what the scripts wrote back through RQ's own classes for the
pool where it can (``Job.fetch``, the registries, ``Result.restore``). Real
workers, real expiry and the client's wait are in test_jobs_records.py and
test_jobs_start.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from rq.job import JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from redispool import Lease, LeaseLost, Pool, WorkerLost, errors, job_records, liveness, rqkeys
from redispool.jobs import NONCE_META, TOKEN_META, VERDICT_META
from redispool.liveness import Incarnation
from redispool.protocol import jobs as protocol_jobs
from redispool.protocol.jobs import Begun, intermediate_key, rq_key

ME = Incarnation("w1", "inc-a", "host", 123, 1000, False)
NOW = 1.8e9


@pytest.fixture
def pool() -> Iterator[Pool]:
    p = Pool("unit", redis=fakeredis.FakeRedis(), lease_ttl=5)
    liveness.register(p, ME)
    yield p
    p.close()


@pytest.fixture
def lease(pool: Pool) -> Lease:
    return pool.checkout(block=False, auto_renew=False)


def enqueue(pool: Pool, lease: Lease, n: int = 4, *, token: int | None = None,
            nonce: str | None = None) -> tuple[int, str]:  # fmt: skip
    token = lease.token if token is None else token
    nonce = lease.nonce if nonce is None else nonce
    meta = {TOKEN_META: str(token), NONCE_META: nonce}
    job_id, fields = job_records.job_fields(
        "redispool.doubler.double", [n], lease.worker_id, meta, timeout=5, result_ttl=60,
        failure_ttl=90, ttl=5, now=NOW,
    )  # fmt: skip
    op = protocol_jobs.enqueue_job(pool.keys, lease.worker_id, token, nonce, job_id, 5, fields)
    return pool.sender.send(op), job_id


def begin(pool: Pool, job_id: str, me: Incarnation = ME) -> Begun:
    """begin_job of ``job_id``, once the worker's wait moved it to the intermediate queue."""
    pool.client.rpush(intermediate_key(pool.keys, pool.keys.rq_queue(me.worker_id)), job_id)
    op = protocol_jobs.begin_job(pool.keys, me, job_id, f"{job_id}:e1",
                                  job_records.timestamp(NOW), NOW, "w1.inc")
    return pool.sender.send(op)


def finish(pool: Pool, begun: Begun, job_id: str, kind: str, **how: Any) -> int:
    end = job_records.end_of(kind, execution=f"{job_id}:e1", now=NOW, result_ttl=60,
                             failure_ttl=90, worker_name="w1.inc", **how)  # fmt: skip
    op = protocol_jobs.finish_job(pool.keys, "w1", begun.token, begun.nonce, job_id, end)
    return pool.sender.send(op)


def fetch(pool: Pool, job_id: str) -> Any:
    return rqkeys.classes(pool.name).job.fetch(job_id, connection=pool.client,
                                               serializer=JSONSerializer)  # fmt: skip


def queue_of(pool: Pool) -> Any:
    return rqkeys.classes(pool.name).queue_for("w1", pool.client)


def latest(pool: Pool, job_id: str) -> Result:
    (entry_id, fields), = pool.client.xrange(pool.keys.rq_result(job_id))  # fmt: skip
    return Result.restore(job_id, entry_id.decode(), fields, connection=pool.client,
                          serializer=JSONSerializer)  # fmt: skip


def test_enqueue_writes_rqs_record_and_queues_it_only_for_the_current_lease(
    pool: Pool, lease: Lease
) -> None:
    code, job_id = enqueue(pool, lease)
    assert code == errors.OK
    job = fetch(pool, job_id)
    assert (job.func_name, job.args, job.get_status()) == (
        "redispool.doubler.double", [4], JobStatus.QUEUED)
    assert queue_of(pool).job_ids == [job_id]
    assert 0 < pool.client.ttl(job.key) <= 5
    rq_keys = f"{pool.keys.rq_prefix}:*"
    before = set(pool.client.keys(rq_keys))
    assert enqueue(pool, lease, nonce="0" * 32)[0] == errors.NOT_HELD  # another nonce
    assert enqueue(pool, lease, token=lease.token - 1)[0] == errors.NOT_HELD  # an older token
    assert set(pool.client.keys(rq_keys)) == before  # nothing written for a refused job
    assert lease.checkin() is True
    assert enqueue(pool, lease)[0] == errors.NOT_HELD
    assert set(pool.client.keys(rq_keys)) == before
    assert queue_of(pool).job_ids == [job_id]


def test_enqueue_after_the_worker_died_is_worker_dead(pool: Pool, lease: Lease) -> None:
    pool.client.delete(pool.keys.alive("w1"))
    pool.client.zadd(pool.keys.heartbeats, {"w1": 1})
    liveness.bury(pool)
    assert enqueue(pool, lease)[0] == errors.WORKER_DEAD


def test_begin_fences_then_marks_the_job_started(pool: Pool, lease: Lease) -> None:
    _, job_id = enqueue(pool, lease)
    pool.client.lpop(queue_of(pool).key)  # what the worker's BLPOP does
    begun = begin(pool, job_id)
    assert (begun.code, begun.token, begun.nonce) == (errors.OK, str(lease.token), lease.nonce)
    assert 4 < begun.left <= 5 and (begun.result_ttl, begun.failure_ttl) == (60, 90)
    assert job_records.call_of(begun.data) == job_records.Call(
        "redispool.doubler.double", None, [4], {})
    job = fetch(pool, job_id)
    assert job.get_status() == JobStatus.STARTED and job.worker_name == "w1.inc"
    assert pool.client.ttl(job.key) == -1  # started: no TTL, as RQ's worker does
    assert queue_of(pool).started_job_registry.get_job_ids() == [job_id]
    assert pool.workers()[0].jobs == 1


def test_begin_refuses_a_stale_lease_and_writes_nothing(pool: Pool, lease: Lease) -> None:
    _, job_id = enqueue(pool, lease)
    assert lease.checkin() is True
    begun = begin(pool, job_id)
    assert (begun.code, begun.token) == (errors.NOT_HELD, str(lease.token))
    assert fetch(pool, job_id).get_status() == JobStatus.QUEUED
    assert queue_of(pool).started_job_registry.count == 0
    assert pool.workers()[0].jobs == 0


def test_begin_gives_back_a_job_when_another_incarnation_holds_the_id(
    pool: Pool, lease: Lease
) -> None:
    _, first = enqueue(pool, lease, 1)
    _, second = enqueue(pool, lease, 2)
    pool.client.lpop(queue_of(pool).key)
    old = Incarnation("w1", "inc-old", "host", 99, 1000, False)
    assert begin(pool, first, old).code == errors.UNKNOWN_WORKER
    assert queue_of(pool).job_ids == [first, second]  # back at the head, in order
    assert fetch(pool, first).get_status() == JobStatus.QUEUED  # untouched


def test_begin_runs_a_job_only_on_its_leases_token_and_nonce_in_this_incarnation(
    pool: Pool, lease: Lease
) -> None:
    """However a record got into the queue (RQ's own enqueue writes any meta), it
    starts only if it carries both the current lease's token and its nonce: not
    with an older token, nor with the current token and another nonce (the token
    issued again after a rollback) or an empty one. Nor does a process that no
    longer holds the worker id start it. None of these is counted as a job, and
    none disturbs the lease."""
    token, nonce = str(lease.token), lease.nonce
    for job_id, carried in (
        ("older-token", (str(lease.token - 1), nonce)),
        ("other-nonce", (token, "0" * 32)),
        ("empty-nonce", (token, "")),
    ):
        key = rq_key(pool.keys, "job", job_id)
        meta = json.dumps({TOKEN_META: carried[0], NONCE_META: carried[1]})
        pool.client.hset(key, mapping={"data": "[]", "status": "queued", "meta": meta})
        begun = begin(pool, job_id)
        assert (begun.code, begun.token, begun.nonce) == (errors.NOT_HELD, *carried), job_id
        assert pool.client.hget(key, "status") == b"queued"
    _, job_id = enqueue(pool, lease)
    old = Incarnation("w1", "inc-old", "host", 99, 1000, False)
    assert begin(pool, job_id, old).code == errors.UNKNOWN_WORKER
    assert queue_of(pool).started_job_registry.count == 0
    assert pool.workers()[0].jobs == 0
    assert begin(pool, job_id).code == errors.OK
    assert pool.workers()[0].jobs == 1


def test_begin_refuses_a_job_of_a_dead_workers_lease_to_the_ids_next_process_as_worker_dead(
    pool: Pool, lease: Lease
) -> None:
    """A job sent under the lease of a worker that died never runs on the process
    that registers the id next, and its verdict says the worker died (not merely
    that the lease ended)."""
    _, job_id = enqueue(pool, lease)
    pool.client.delete(pool.keys.alive("w1"))
    pool.client.zadd(pool.keys.heartbeats, {"w1": 1})
    assert liveness.bury(pool)[0] == 1
    after = Incarnation("w1", "inc-b", "host", 124, 1000, False)
    assert liveness.register(pool, after) is True
    begun = begin(pool, job_id, after)
    assert (begun.code, begun.token) == (errors.WORKER_DEAD, str(lease.token))
    assert begun.nonce == lease.nonce
    assert fetch(pool, job_id).get_status() == JobStatus.QUEUED
    assert pool.workers()[0].jobs == 0


def test_a_removed_busy_worker_still_begins_the_jobs_of_the_lease_it_serves(
    pool: Pool, lease: Lease
) -> None:
    """Removing a leased worker retires it when the lease ends
    (test_worker_scripts.py); until then its holder's jobs run."""
    assert pool.remove_worker("w1") is True
    code, job_id = enqueue(pool, lease)
    assert code == errors.OK
    assert begin(pool, job_id).code == errors.OK
    assert lease.checkin() is True


def test_begin_of_a_record_without_a_lease_or_with_junk_meta_is_not_held(
    pool: Pool, lease: Lease
) -> None:
    for job_id, meta in (("bare", None), ("junk", "not json {"), ("nonce-less",
                         json.dumps({TOKEN_META: str(lease.token)}))):  # fmt: skip
        key = rq_key(pool.keys, "job", job_id)
        pool.client.hset(key, mapping={"data": "[]", "status": "queued"})
        if meta is not None:
            pool.client.hset(key, "meta", meta)
        begun = begin(pool, job_id)
        assert begun.code == errors.NOT_HELD and not (begun.token.isdigit() and begun.nonce)
        assert pool.client.hget(key, "status") == b"queued"
    assert begin(pool, "never-written").code == errors.NO_JOB


def test_a_token_rq_wrote_as_a_number_is_read_exactly(pool: Pool, lease: Lease) -> None:
    key = rq_key(pool.keys, "job", "numeric")
    meta = json.dumps({TOKEN_META: lease.token, NONCE_META: lease.nonce})  # an int, 16 digits
    pool.client.hset(key, mapping={"data": "[]", "status": "queued", "meta": meta})
    begun = begin(pool, "numeric")
    assert (begun.code, begun.token) == (errors.OK, str(lease.token))


def test_finish_writes_the_result_the_rq_way(pool: Pool, lease: Lease) -> None:
    _, job_id = enqueue(pool, lease, 21)
    begun = begin(pool, job_id)
    assert finish(pool, begun, job_id, "returned", value=42, lost_message="lost") == errors.OK
    job = fetch(pool, job_id)
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == 42
    result = latest(pool, job_id)
    assert result.type == Result.Type.SUCCESSFUL and result.return_value == 42
    queue = queue_of(pool)
    assert queue.started_job_registry.count == 0
    assert queue.finished_job_registry.get_job_ids() == [job_id]
    assert 0 < pool.client.ttl(job.key) <= 60
    assert 0 < pool.client.ttl(pool.keys.rq_result(job_id)) <= 60


def test_a_return_after_the_lease_ended_is_written_as_failed_never_as_the_result(
    pool: Pool, lease: Lease
) -> None:
    _, job_id = enqueue(pool, lease, 21)
    begun = begin(pool, job_id)
    assert lease.checkin() is True  # the lease ends while the job runs
    code = finish(pool, begun, job_id, "returned", value=42,
                  lost_message="redispool.errors.LeaseLost: ended before its result")  # fmt: skip
    assert code == errors.NOT_HELD
    job = fetch(pool, job_id)
    assert job.get_status() == JobStatus.FAILED and job.meta[VERDICT_META] == errors.NOT_HELD
    assert job.meta[TOKEN_META] == str(lease.token)  # the rest of the meta kept
    result = latest(pool, job_id)
    assert result.type == Result.Type.FAILED and "LeaseLost" in (result.exc_string or "")
    assert job_records.read_result(pool.client.xrange(pool.keys.rq_result(job_id))[0][1]) == (
        job_records.Result(False, exc_string=result.exc_string or "", verdict=errors.NOT_HELD))
    assert queue_of(pool).finished_job_registry.count == 0
    assert queue_of(pool).failed_job_registry.get_job_ids() == [job_id]
    assert pool.client.hget(pool.keys.jobs_failed, "w1") == b"1"


def test_a_failure_keeps_the_jobs_own_traceback_and_a_verdict_only_when_given(
    pool: Pool, lease: Lease
) -> None:
    _, own = enqueue(pool, lease, 1)
    begun = begin(pool, own)
    assert finish(pool, begun, own, "failed", exc_string="Traceback\nValueError: no") == errors.OK
    assert VERDICT_META not in fetch(pool, own).meta
    assert job_records.read_result(pool.client.xrange(pool.keys.rq_result(own))[0][1]) == (
        job_records.Result(False, exc_string="Traceback\nValueError: no"))
    _, slow = enqueue(pool, lease, 2)
    begun = begin(pool, slow)
    assert finish(pool, begun, slow, "failed", exc_string="timed out",
                  verdict=errors.JOB_TIMEOUT) == errors.OK  # fmt: skip
    assert fetch(pool, slow).meta[VERDICT_META] == errors.JOB_TIMEOUT


def test_the_client_reads_a_refusal_as_lease_lost_and_a_dead_worker_as_worker_lost(
    pool: Pool, lease: Lease
) -> None:
    """lease.run on fakeredis up to the enqueue: a refused enqueue ends the lease."""
    pool.client.delete(pool.keys.lease(lease.worker_id))  # ended; the client does not know
    with pytest.raises(LeaseLost) as lost:
        lease.run("redispool.doubler.double", 1, timeout=1)
    assert not isinstance(lost.value, WorkerLost) and not lease.active
