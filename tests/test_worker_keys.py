"""A worker leaves nothing behind: every key of a worker id goes when the id leaves.

Worker processes (``python -m redispool.worker``, as the supervisor starts
them) join, run jobs and leave in each of the three ways an id leaves the
pool: a drain (SIGTERM), a crash buried by the reaper, a crash buried by the
replacement of the same id. After 100 of them the pool holds exactly the keys
it held after the first round; only job records and results stay, with the
TTL RQ gave them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import StartWorkerMain, wait_for, worker_process

import redispool
from redispool import JobFailed, Lease, Pool, WorkerLost, liveness
from redispool.doubler import compute, double
from redispool.jobs import RESULT_TTL
from redispool.keys import PoolKeys
from redispool.rqkeys import classes
from redispool.worker import WorkerSettings

POOL = "leavers"
HEARTBEAT = 0.2
#: Keys that may stay after their worker left: they expire on RQ's TTL.
JOB_RECORD = re.compile(r"redispool:\{leavers\}:rq:(job|results):[0-9a-f-]+$")


class Procs:
    """Worker processes of POOL started by this test; all killed at the end."""

    def __init__(self, url: str, log_dir: Path) -> None:
        self.url, self.log_dir = url, log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, worker_id: str, replaces: str = "") -> tuple[subprocess.Popen[bytes], str]:
        incarnation = uuid.uuid4().hex
        settings = WorkerSettings(url=self.url, pool=POOL, worker_id=worker_id,
                                  incarnation=incarnation, heartbeat_ttl=HEARTBEAT,
                                  replaces=replaces)  # fmt: skip
        proc = worker_process(settings, self.log_dir / f"{worker_id}.{incarnation[:6]}.log")
        self.procs.append(proc)
        return proc, incarnation

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def procs(redis_url: str, tmp_path: Path) -> Iterator[Procs]:
    running = Procs(redis_url, tmp_path)
    try:
        yield running
    finally:
        running.kill_all()


def _registered(pool: Pool, r: redis.Redis, ids: dict[str, str]) -> bool:
    held = r.hgetall(pool.keys.incarnations)
    return all(held.get(w.encode()) == inc.encode() for w, inc in ids.items()) and (
        pool.status().idle >= len(ids)
    )


def _lasting_keys(r: redis.Redis) -> set[str]:
    """Every key of the pool but job records and results (each checked to have a TTL)."""
    found = set()
    for raw in r.scan_iter(match=PoolKeys(POOL).prefix + "*"):
        key = raw.decode()
        if JOB_RECORD.match(key):
            assert r.ttl(key) > 0, f"{key} would stay for ever"
        elif key.startswith(PoolKeys(POOL).prefix + "history"):  # bounded by history.py
            continue
        else:
            found.add(key)
    return found


def _one_round(n: int, pool: Pool, r: redis.Redis, procs: Procs, width: int = 3) -> int:
    """``width`` workers of each way of leaving join, run jobs and leave; how many
    processes that was (a crashed one buried by its replacement counts twice)."""
    kinds = ("drained", "reaped", "replaced")
    started = {f"{kind}-{n}-{j}": procs.start(f"{kind}-{n}-{j}")
               for kind in kinds for j in range(width)}  # fmt: skip
    ids = {wid: inc for wid, (_, inc) in started.items()}
    wait_for(lambda: _registered(pool, r, ids), timeout=30, message=f"round {n} to register")
    leases = [pool.checkout(timeout=5) for _ in ids]
    for lease in leases:
        assert compute(lease, n) == 2 * n
        if lease.worker_id.startswith("reaped"):
            with pytest.raises(JobFailed):
                lease.run(double, "not a number")  # a failed job: registry and counter
        lease.checkin()
    drained = [proc for wid, (proc, _) in started.items() if wid.startswith("drained")]
    for proc in drained:
        proc.send_signal(signal.SIGTERM)
    replacements = {}
    for wid, (proc, inc) in started.items():
        if not wid.startswith("drained"):
            proc.kill()
            proc.wait()
        if wid.startswith("replaced"):
            replacements[wid] = procs.start(wid, replaces=inc)
    wait_for(lambda: _registered(pool, r, {w: inc for w, (_, inc) in replacements.items()}),
             timeout=10, message="the replacements to bury the dead and register")  # fmt: skip
    for proc, _ in replacements.values():
        proc.send_signal(signal.SIGTERM)
    for proc in [*drained, *(p for p, _ in replacements.values())]:
        assert proc.wait(timeout=10) == 0
    wait_for(lambda: liveness.bury(pool)[0] == 0 and not r.hlen(pool.keys.workers),
             timeout=10, message="the reaper to bury the crashed workers")  # fmt: skip
    return len(started) + len(replacements)


def test_key_count_stays_flat_over_100_worker_restarts(
    redis_url: str, r: redis.Redis, procs: Procs
) -> None:
    with Pool(POOL, url=redis_url, lease_ttl=5) as pool:
        restarts = _one_round(0, pool, r, procs)
        after_first = _lasting_keys(r)
        counts = [len(after_first)]
        while restarts < 100:
            restarts += _one_round(len(counts), pool, r, procs)
            counts.append(len(_lasting_keys(r)))
        assert _lasting_keys(r) == after_first, counts
    assert restarts >= 100 and set(counts) == {len(after_first)}, counts
    assert not any(k.startswith(b"rq:") for k in r.scan_iter()), "a key outside the pool"


def _rq_keys_of_queue(name: str) -> list[str]:
    """Every key RQ names after a queue (read from RQ, under the default prefix 'rq')."""
    from rq import Queue, worker_registration

    queue = Queue(name, connection=redis.Redis())  # builds names only: never connects
    registries = [getattr(queue, a).key for a in dir(Queue) if a.endswith("_job_registry")]
    names = [queue.key, queue.intermediate_queue_key, queue.registry_cleaning_key,
             worker_registration.WORKERS_BY_QUEUE_KEY % name, *registries]  # fmt: skip
    assert len(registries) >= 7 and all(n.startswith("rq:") for n in names)
    return [classes(POOL).keys.rq_prefix + n[len("rq") :] for n in names]


def test_junk_in_a_workers_rq_keys_is_deleted_not_a_failed_burial(
    redis_url: str, r: redis.Redis
) -> None:
    with Pool(POOL, url=redis_url) as pool:
        me = liveness.Incarnation("w1", "inc-1", "h", 1, heartbeat_ms=5000)
        liveness.register(pool, me)
        rq = classes(POOL)
        for key in _rq_keys_of_queue("w1"):
            r.hset(key, "junk", 1)  # the wrong type for every one of them
        r.set(rq.worker.redis_workers_keys, "junk")
        assert liveness.leave(pool, me, "exit") == 1
        assert [k for k in _rq_keys_of_queue("w1") if r.exists(k)] == []
        assert not r.hexists(pool.keys.workers, "w1")


@pytest.mark.parametrize("leaves", ["exit", "reaped", "replaced"])
def test_an_id_leaving_takes_every_rq_key_rq_names_after_its_queue(
    redis_url: str, r: redis.Redis, leaves: str
) -> None:
    with Pool(POOL, url=redis_url) as pool:
        me = liveness.Incarnation("w1", "inc-1", "h", 1, heartbeat_ms=50)
        liveness.register(pool, me)
        rq = classes(POOL)
        record = f"{rq.keys.rq_prefix}:worker:w1.inc"
        for key in _rq_keys_of_queue("w1"):  # each of the type RQ gives it
            if ":workers:" in key:
                r.sadd(key, record)
            elif ":queue:" in key:
                r.rpush(key, "job-1")
            elif ":clean_registries:" in key:
                r.set(key, 1)
            else:
                r.zadd(key, {"job-1:exec-1": 1})
        r.hset(record, "name", "w1.inc")
        r.zadd(record + ":executions", {"x": 1})
        r.sadd(rq.worker.redis_workers_keys, record, "other")
        r.sadd(rq.queue.redis_queues_keys, rq.queue_for("w1", r).key, "other")
        r.hset(pool.keys.jobs_failed, mapping={"w1": 3, "w2": 1})
        if leaves == "exit":
            assert liveness.leave(pool, me, "exit") == 1
        elif leaves == "reaped":
            wait_for(lambda: liveness.bury(pool)[0] == 1, timeout=5, message="the burial")
        else:
            liveness.register(pool, liveness.Incarnation("w1", "inc-2", "h", 2, 5000), "inc-1")
    left = [k for k in (*_rq_keys_of_queue("w1"), record, record + ":executions") if r.exists(k)]
    assert left == []
    assert r.smembers(rq.worker.redis_workers_keys) == {b"other"}
    assert r.smembers(rq.queue.redis_queues_keys) == {b"other"}
    assert r.hgetall(pool.keys.jobs_failed) == {b"w2": b"1"}


def test_a_worker_killed_mid_job_leaves_its_job_record_with_a_ttl_not_for_ever(
    redis_url: str, r: redis.Redis, start_worker_main: StartWorkerMain
) -> None:
    main = start_worker_main("--function", "time.sleep", pool=POOL, workers=1)
    with Pool(POOL, url=redis_url) as pool:
        lease = pool.checkout(timeout=5)
        outcome: list[BaseException] = []
        job = threading.Thread(target=lambda: _run_catching(lease, outcome))
        job.start()
        wait_for(lambda: r.hlen(pool.keys.jobs), timeout=10, message="the job to start")
        (pid,) = main.worker_pids()
        os.kill(pid, signal.SIGKILL)
        job.join(timeout=20)
        assert [type(e) for e in outcome] == [WorkerLost]
        wait_for(lambda: len(main.worker_pids()) == 2 and pool.status().idle == 1, timeout=20,
                 message="the replacement, which buries the dead one")  # fmt: skip
    (record,) = [k for k in r.scan_iter(match=f"{PoolKeys(POOL).rq_prefix}:job:*")]
    assert 0 < r.ttl(record) <= RESULT_TTL
    rq = PoolKeys(POOL).rq_prefix
    forever = {k.decode() for k in r.scan_iter(match=rq + ":*") if r.ttl(k) == -1}
    wid = lease.worker_id  # the replacement holds the same id: what a fresh worker has
    assert forever <= {f"{rq}:queues", f"{rq}:workers", f"{rq}:workers:{wid}"}, forever


def _run_catching(lease: Lease, outcome: list[BaseException]) -> None:
    try:
        lease.run("time.sleep", 5, timeout=10)
    except BaseException as exc:  # the test reports it
        outcome.append(exc)


def test_a_dead_job_lasts_as_long_as_a_result() -> None:
    lua = (Path(redispool.__file__).parent / "scripts" / "includes" / "workers.lua").read_text()
    assert f"local DEAD_JOB_TTL_MS = {RESULT_TTL * 1000}\n" in lua


def test_a_client_process_names_a_pools_rq_registries_under_the_pools_prefix() -> None:
    # This process has no RQ_KEY_PREFIX: RQ's own registries would be 'rq:failed:w1', ...
    queue = classes(POOL).queue_for("w1", redis.Redis())  # builds names only: never connects
    registries = [getattr(queue, a).key for a in dir(queue) if a.endswith("_job_registry")]
    names = [queue.key, queue.intermediate_queue_key, queue.registry_cleaning_key, *registries]
    expected = set(_rq_keys_of_queue("w1")) - {classes(POOL).keys.rq_prefix + ":workers:w1"}
    assert set(names) == expected
