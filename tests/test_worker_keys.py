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
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import wait_for

from redispool import JobFailed, Pool, liveness
from redispool.doubler import compute, double
from redispool.keys import PoolKeys
from redispool.rqkeys import classes, environment
from redispool.worker import SETTINGS_ENV, WorkerSettings

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
        env = dict(os.environ, **{SETTINGS_ENV: settings.to_json()}, **environment(POOL))
        with open(self.log_dir / f"{worker_id}.{incarnation[:6]}.log", "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "redispool.worker"], env=env,
                                    stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
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
    wait_for(lambda: _registered(pool, r, ids), timeout=10, message=f"round {n} to register")
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
    wait_for(lambda: liveness.reap(pool)[0] == 0 and not r.hlen(pool.keys.workers),
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


@pytest.mark.parametrize("leaves", ["exit", "reaped", "replaced"])
def test_an_id_leaving_takes_every_rq_key_rq_names_after_its_queue(
    redis_url: str, r: redis.Redis, leaves: str
) -> None:
    with Pool(POOL, url=redis_url) as pool:
        me = liveness.Incarnation("w1", "inc-1", "h", 1, heartbeat_ms=50)
        liveness.register(pool, me)
        rq = classes(POOL)
        record = f"{rq.keys.rq_prefix}:worker:w1.inc"
        for key in _rq_keys_of_queue("w1"):
            r.sadd(key, record) if ":workers:" in key else r.rpush(key, "x")
        r.hset(record, "name", "w1.inc")
        r.zadd(record + ":executions", {"x": 1})
        r.sadd(rq.worker.redis_workers_keys, record, "other")
        r.sadd(rq.queue.redis_queues_keys, rq.queue_for("w1", r).key, "other")
        r.hset(pool.keys.jobs_failed, mapping={"w1": 3, "w2": 1})
        if leaves == "exit":
            assert liveness.leave(pool, me, "exit") == 1
        elif leaves == "reaped":
            wait_for(lambda: liveness.reap(pool)[0] == 1, timeout=5, message="the burial")
        else:
            liveness.register(pool, liveness.Incarnation("w1", "inc-2", "h", 2, 5000), "inc-1")
    left = [k for k in (*_rq_keys_of_queue("w1"), record, record + ":executions") if r.exists(k)]
    assert left == []
    assert r.smembers(rq.worker.redis_workers_keys) == {b"other"}
    assert r.smembers(rq.queue.redis_queues_keys) == {b"other"}
    assert r.hgetall(pool.keys.jobs_failed) == {b"w2": b"1"}
