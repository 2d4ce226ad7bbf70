"""Jobs written into Redis by hand: a pickle payload or an unregistered function never runs.

Whoever can write to Redis must not be able to run code on the workers. Each test
crafts the job itself, as an attacker with Redis access would, pushes it onto a
real worker's queue, and checks that it was refused, that nothing ran, and that
the worker lives on and still serves its lease.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import redis
from helpers import StartWorkerMain, wait_for
from rq.job import Job
from rq.serializers import JSONSerializer

from redispool import Pool
from redispool.check import check_pool
from redispool.doubler import compute
from redispool.jobs import NONCE_META, TOKEN_META
from redispool.protocol.jobs import intermediate_key, rq_key
from redispool.rqkeys import classes


class Evil:
    """Unpickling this runs a shell command that leaves a file behind."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _push(r: redis.Redis, pool: Pool, worker_id: str, job: Job, data: bytes | None = None) -> None:
    """Save ``job`` (its ``data`` replaced by ``data`` if given), then queue it."""
    job.save()
    if data is not None:
        r.hset(job.key, "data", data)  # the payload an attacker writes
    r.rpush(classes(pool.name).queue_for(worker_id, r).key, job.id)


def _crafted(r: redis.Redis, func: str, token: int) -> Job:
    return classes("doublers").job.create(  # type: ignore[no-any-return]
        func, args=[21], connection=r, serializer=JSONSerializer, meta={TOKEN_META: str(token)}
    )


def test_a_pickle_payload_is_refused_without_being_unpickled(
    redis_url: str, r: redis.Redis, start_worker_main: StartWorkerMain, tmp_path: Path
) -> None:
    main = start_worker_main(workers=1)
    marker = tmp_path / "pwned"
    with Pool("doublers", url=redis_url) as pool, pool.lease(timeout=5) as lease:
        job = _crafted(r, "redispool.doubler.double", lease.token)
        _push(r, pool, lease.worker_id, job, pickle.dumps(Evil(marker)))
        # Refused (it carries no nonce) before its data is even looked at: failed in RQ.
        wait_for(lambda: f"refused job {job.id}" in main.log(), timeout=10,
                 message="the worker to turn the job away")  # fmt: skip
        assert not marker.exists(), "the pickle payload ran on the worker"
        assert compute(lease, 21) == 42  # the same worker still serves its lease
    assert len(main.worker_pids()) == 1, "the worker process died over a hostile job"


def test_an_unregistered_function_written_by_hand_never_runs(
    redis_url: str, r: redis.Redis, start_worker_main: StartWorkerMain, tmp_path: Path
) -> None:
    main = start_worker_main(workers=1)
    marker = tmp_path / "pwned"
    with Pool("doublers", url=redis_url) as pool, pool.lease(timeout=5) as lease:
        job = classes(pool.name).job.create(
            "os.system", args=[f"touch {marker}"], connection=r, serializer=JSONSerializer,
            meta={TOKEN_META: str(lease.token), NONCE_META: lease.nonce},
        )  # fmt: skip
        _push(r, pool, lease.worker_id, job)
        wait_for(lambda: "refused job" in main.log(), timeout=10, message="the refusal")
        assert not marker.exists()
        assert "'os.system' is not registered" in main.log()
        assert compute(lease, 21) == 42


def test_junk_in_a_pool_key_is_reported_not_a_crash_loop_in_the_workers(
    redis_url: str, r: redis.Redis, start_worker_main: StartWorkerMain
) -> None:
    main = start_worker_main(workers=2)
    pids = set(main.worker_pids())
    with Pool("doublers", url=redis_url) as pool:
        saved = r.dump(pool.keys.config)
        r.delete(pool.keys.config)
        r.set(pool.keys.config, "junk")  # every pool script that writes now refuses
        assert [p.key for p in check_pool(pool)] == [pool.keys.config]
        for _ in range(3):  # three rounds of heartbeats from every worker, through the junk
            before = dict(r.zrange(pool.keys.heartbeats, 0, -1, withscores=True))

            def beat_again(before: dict[bytes, float] = before) -> bool:
                now = dict(r.zrange(pool.keys.heartbeats, 0, -1, withscores=True))
                return len(now) == 2 and all(now[w] > before.get(w, 0) for w in now)

            wait_for(beat_again, timeout=10, message="every worker to beat again")
        assert set(main.worker_pids()) == pids, "a worker was restarted over a junk key"
        assert main.proc.poll() is None
        r.delete(pool.keys.config)
        assert saved is not None
        r.restore(pool.keys.config, 0, saved)
        with pool.lease(timeout=5) as lease:
            assert compute(lease, 21) == 42


def test_a_job_record_rq_cannot_read_is_dropped_and_the_worker_lives_on(
    redis_url: str, r: redis.Redis, start_worker_main: StartWorkerMain
) -> None:
    main = start_worker_main(workers=1)
    pids = set(main.worker_pids())
    with Pool("doublers", url=redis_url) as pool, pool.lease(timeout=5) as lease:
        queue = classes(pool.name).queue_for(lease.worker_id, r)
        junk = {"status": "bogus", "created_at": "not a date", "data": "[]", "origin": "x"}
        # RQ's Job.restore raises ValueError on it
        r.hset(queue.job_class.key_for("junk-1"), mapping=junk)
        r.rpush(queue.key, "junk-1")
        wait_for(lambda: "refused job junk-1" in main.log(), timeout=10,
                 message="the worker to turn the junk away")  # fmt: skip
        assert compute(lease, 21) == 42  # the holder's lease is untouched
        assert r.llen(queue.intermediate_queue_key) == 0
    assert set(main.worker_pids()) == pids, "the worker died over a junk job record"


def test_junk_in_a_workers_intermediate_queue_is_reported_not_a_crash_loop(
    redis_url: str, r: redis.Redis, start_worker_main: StartWorkerMain
) -> None:
    main = start_worker_main(workers=1)
    pids = set(main.worker_pids())
    with Pool("doublers", url=redis_url) as pool:
        (worker,) = pool.workers()
        taken = intermediate_key(pool.keys, pool.keys.rq_queue(worker.id))
        r.set(taken, "junk")
        queue = rq_key(pool.keys, "queue", pool.keys.rq_queue(worker.id))
        r.rpush(queue, "no-such-job")  # its wait's move meets the junk (WRONGTYPE)
        wait_for(lambda: "cannot take jobs" in main.log(), timeout=10,
                 message="the worker to report the junk")  # fmt: skip
        assert taken in main.log()
        assert set(main.worker_pids()) == pids, "a worker was restarted over a junk key"
        r.delete(taken)
        with pool.lease(timeout=5) as lease:
            assert compute(lease, 21) == 42
