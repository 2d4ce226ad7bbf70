"""Attacks on the job scripts (issue 13's jobs in three scripts), on real servers.

- a verdict written into a job's meta must leave the rest of the meta as the
  enqueuer wrote it: a large integer, a float RQ's JSONSerializer wrote as
  ``Infinity`` (cjson re-encodes numbers with 14 digits and refuses to encode
  an infinity), and the finish must write its whole record either way;
- a real worker records such a refused RQ job whole and runs the next;
- a client speaking RESP2 runs jobs and reads their results (RESP3 is redis-py's default);
- compressed data (a job's, RQ's enqueue compresses it; a failure's text) is
  inflated only up to a limit, and junk in a failure entry is a ValueError
  (the client's PoolCorrupted), never a raw zlib.error;
- a fence (begin_job) that meets a junk key writes nothing of the start.
"""

from __future__ import annotations

import base64
import json
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import StartWorkerMain
from rq.results import Result
from rq.serializers import JSONSerializer

from redispool import (
    JobFailed,
    Lease,
    Pool,
    PoolCorrupted,
    errors,
    job_loop,
    job_records,
    liveness,
    rqkeys,
)
from redispool import jobs as client_jobs
from redispool.doubler import compute
from redispool.jobs import NONCE_META, TOKEN_META, VERDICT_META
from redispool.liveness import Incarnation
from redispool.protocol import jobs as protocol_jobs
from redispool.protocol.jobs import intermediate_key, rq_key

MakePool = Callable[..., Pool]
ME = Incarnation("w1", "inc-a", "host", 123, 1000, False)
NOW = 1.8e9


def queued_job(pool: Pool, r: redis.Redis, meta_text: str) -> str:
    """A job of a stale lease whose meta is ``meta_text``, queued; its id."""
    job_id, fields = job_records.job_fields(
        "redispool.doubler.double", [3], pool.keys.rq_queue("w1"), {}, timeout=5,
        result_ttl=60, failure_ttl=90, ttl=60, now=NOW,
    )  # fmt: skip
    record = dict(zip(fields[::2], fields[1::2], strict=True))
    record["meta"] = meta_text
    r.hset(rq_key(pool.keys, "job", job_id), mapping=record)
    return job_id


def taken(pool: Pool, job_id: str) -> str:
    """``job_id`` in w1's intermediate queue (once), as its worker's wait moves it there."""
    key = intermediate_key(pool.keys, pool.keys.rq_queue("w1"))
    if pool.client.lpos(key, job_id) is None:
        pool.client.rpush(key, job_id)
    return job_id


def current_job(make_pool: MakePool, r: redis.Redis) -> tuple[Pool, Lease, str]:
    """A pool with w1 registered, a lease held on it, and a queued job of that
    lease (its current token and nonce in the meta): (pool, lease, job id)."""
    pool = make_pool()
    liveness.register(pool, ME)
    held = pool.checkout(block=False, auto_renew=False)
    current = f'{{"{TOKEN_META}": "{held.token}", "{NONCE_META}": "{held.nonce}"}}'
    return pool, held, queued_job(pool, r, current)


def refuse(pool: Pool, job_id: str) -> int:
    """Fence ``job_id`` (it is refused: its lease is stale) and write its end as a refusal."""
    taken(pool, job_id)
    begun = pool.sender.send(
        protocol_jobs.begin_job(
            pool.keys, ME, job_id, f"{job_id}:e1", job_records.timestamp(NOW), NOW, "w1.inc"
        )
    )
    assert begun.code == errors.NOT_HELD
    end = job_records.end_of("failed", exc_string="LeaseLost: refused", verdict=errors.NOT_HELD,
                             execution="", now=NOW, result_ttl=60, failure_ttl=90,
                             worker_name="w1.inc")  # fmt: skip
    return pool.sender.send(
        protocol_jobs.finish_job(pool.keys, "w1", begun.token, begun.nonce, job_id, end)
    )


@pytest.mark.parametrize("extra", [
    '"order": 1234567890123456789',  # more digits than cjson's 14
    '"price": 0.1',
    '"big": 1e999',  # what json.dumps(float("inf")) reads back as: an infinity
    '"inf": Infinity',  # RQ's JSONSerializer writes float("inf") so
    '"nested": {"a": [1, 2.5, "x"]}',
    '"redispool_verdict": 99',  # a verdict already there is replaced
])  # fmt: skip
def test_a_verdict_leaves_the_rest_of_the_meta_as_the_enqueuer_wrote_it(
    extra: str, make_pool: MakePool, r: redis.Redis
) -> None:
    pool = make_pool()
    liveness.register(pool, ME)
    held = pool.checkout(block=False, auto_renew=False)
    stale = f'"{TOKEN_META}": "{held.token - 1}", "{NONCE_META}": "{held.nonce}"'
    meta_text = "{" + stale + ", " + extra + "}"
    job_id = queued_job(pool, r, meta_text)

    assert refuse(pool, job_id) == errors.OK
    key = rq_key(pool.keys, "job", job_id)
    meta = json.loads(r.hget(key, "meta") or b"")
    assert meta == {**json.loads(meta_text), VERDICT_META: errors.NOT_HELD}
    assert r.hget(key, "status") == b"failed"
    failed = rq_key(pool.keys, "failed", pool.keys.rq_queue("w1"))
    assert r.zscore(failed, job_id) is not None, "the refusal was not recorded whole"
    assert r.xlen(pool.keys.rq_result(job_id)) == 1
    job = rqkeys.classes(pool.name).job.fetch(job_id, connection=pool.client,
                                              serializer=JSONSerializer)  # fmt: skip
    assert job.meta == meta  # RQ's own API reads it
    held.checkin()


@pytest.mark.parametrize("meta_text", ["[1, 2]", '"text"', "not json", "", "{}", " { } "])
def test_a_verdict_on_a_junk_or_empty_meta_writes_the_verdict_alone(
    meta_text: str, make_pool: MakePool, r: redis.Redis
) -> None:
    pool = make_pool()
    liveness.register(pool, ME)
    job_id = queued_job(pool, r, meta_text)
    assert refuse(pool, job_id) == errors.OK
    meta: Any = json.loads(r.hget(rq_key(pool.keys, "job", job_id), "meta") or b"")
    assert meta == {VERDICT_META: errors.NOT_HELD}


def test_a_refused_rq_job_whose_meta_holds_an_infinity_is_recorded_whole_by_a_real_worker(
    start_worker_main: StartWorkerMain, redis_url: str
) -> None:
    """RQ's JSONSerializer writes float('inf') as Infinity; before, the worker's
    finish stopped halfway on it (status failed, no result, no registry entry)."""
    main = start_worker_main(workers=1)
    with Pool("doublers", redis_url) as pool, pool.lease(timeout=5) as lease:
        queue = rqkeys.classes(pool.name).queue_for(lease.worker_id, pool.client)
        meta = {TOKEN_META: str(lease.token - 1), NONCE_META: lease.nonce,
                "limit": float("inf"), "order": 1234567890123456789}  # fmt: skip
        stale = queue.enqueue("redispool.doubler.double", 6, meta=meta)
        outcome = stale.latest_result(timeout=10)
        assert outcome is not None and outcome.type == Result.Type.FAILED
        assert "LeaseLost" in outcome.exc_string
        stale.refresh()
        assert stale.meta == {**meta, VERDICT_META: errors.NOT_HELD}
        assert stale.id in queue.failed_job_registry.get_job_ids()
        assert compute(lease, 8) == 16
    assert "Doubling 6" not in main.log()


def test_a_client_speaking_resp2_runs_jobs_and_reads_their_results(
    start_worker_main: StartWorkerMain, redis_url: str
) -> None:
    start_worker_main(workers=1)
    sep = "&" if "?" in redis_url else "?"
    with Pool("doublers", redis_url + sep + "protocol=2") as pool:
        assert pool.client.connection_pool.connection_kwargs.get("protocol") in (2, "2")
        with pool.lease(timeout=5) as lease:
            assert compute(lease, 21) == 42
            with pytest.raises(JobFailed):
                lease.run("redispool.not_registered.func", 1, timeout=5)


def _bomb(size: int) -> bytes:
    """RQ's JSON of a call, then ``size`` bytes of JSON whitespace, compressed (~1000:1)."""
    packer = zlib.compressobj(9)
    parts = [packer.compress(b'["redispool.doubler.double", null, [1], {}]')]
    chunk = b" " * (1 << 20)
    for _ in range(size // len(chunk)):
        parts.append(packer.compress(chunk))
    return b"".join([*parts, packer.flush()])


def test_job_data_that_inflates_past_the_limit_is_refused_without_inflating_it_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A few kilobytes of compressed data written to a job's record must not make
    the worker allocate gigabytes (its process would be killed)."""
    monkeypatch.setattr(job_records, "MAX_DATA_BYTES", 1 << 20, raising=False)
    bomb = _bomb(64 << 20)
    assert len(bomb) < 128 << 10
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="inflates past"):
            job_records.call_of(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    small = zlib.compress(b'["redispool.doubler.double", null, [1], {}]' + b" " * 1000)
    assert job_records.call_of(small).args == [1]  # RQ's own compressed data still reads
    with pytest.raises(ValueError):  # a truncated stream is not RQ's data, as before
        job_records.call_of(small[:-6])


@pytest.mark.parametrize("exc_field", [
    "not base64!",
    base64.b64encode(b"not zlib").decode(),
    base64.b64encode(zlib.compress(b"\xff\xfe")).decode(),  # not UTF-8
    "huge",
])  # fmt: skip
def test_a_failure_entry_the_worker_never_writes_is_a_value_error_for_the_client(
    exc_field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client turns ValueError into PoolCorrupted (jobs._outcome); a zlib.error
    reached the user raw, and a compressed bomb was inflated whole."""
    monkeypatch.setattr(job_records, "MAX_EXC_BYTES", 1 << 20, raising=False)
    if exc_field == "huge":
        exc_field = base64.b64encode(_bomb(16 << 20)).decode()
    fields = {b"type": b"2", b"exc_string": exc_field.encode()}
    with pytest.raises(ValueError):
        job_records.read_result(fields)


DEEP = b"[" * 200_000 + b"]" * 200_000  # json.loads raises RecursionError on it


def test_job_data_nested_past_pythons_recursion_limit_is_refused_as_not_rqs_json() -> None:
    """Before: a RecursionError escaped call_of, the worker dropped the job
    after its fence (no result: the client waited out its timeout)."""
    with pytest.raises(ValueError, match="not RQ's JSON"):
        job_records.call_of(DEEP)
    with pytest.raises(ValueError, match="not RQ's JSON"):
        job_records.call_of(zlib.compress(DEEP))


def test_a_result_nested_past_pythons_recursion_limit_is_a_value_error_for_the_client() -> None:
    fields = {b"type": b"1", b"return_value": base64.b64encode(DEEP)}
    with pytest.raises(ValueError):
        job_records.read_result(fields)


def snapshot(r: redis.Redis, pool: Pool) -> dict[bytes, object]:
    """Every key of the pool and its value: a hash as its fields (a large one's
    DUMP changes order as Redis rehashes it on reads), anything else its DUMP."""
    return {
        key: r.hgetall(key) if r.type(key) == b"hash" else r.dump(key)
        for key in r.scan_iter(match=pool.keys.prefix + "*")
    }


def fence(pool: Pool, job_id: str) -> Any:
    taken(pool, job_id)
    return pool.sender.send(
        protocol_jobs.begin_job(
            pool.keys, ME, job_id, f"{job_id}:e1", job_records.timestamp(NOW), NOW, "w1.inc"
        )
    )


@pytest.mark.parametrize("part", ["jobs", "wip"])
def test_a_fence_that_meets_a_junk_key_leaves_the_job_as_it_was(
    part: str, make_pool: MakePool, r: redis.Redis
) -> None:
    """begin_job marked the record started and made it permanent, then stopped on
    the pool's jobs counter (or RQ's StartedJobRegistry) of the wrong type: a job
    that never ran stayed 'started' for ever."""
    pool, held, job_id = current_job(make_pool, r)
    job_key = rq_key(pool.keys, "job", job_id)
    r.expire(job_key, 60)
    junk = pool.keys.jobs if part == "jobs" else rq_key(pool.keys, "wip", pool.keys.rq_queue("w1"))
    r.set(junk, "junk")
    taken(pool, job_id)
    before = snapshot(r, pool)

    with pytest.raises(PoolCorrupted):
        fence(pool, job_id)
    after = snapshot(r, pool)
    assert after == before, "the fence wrote part of a start"
    assert 0 < r.ttl(job_key) <= 60

    r.delete(junk)
    assert fence(pool, job_id).code == errors.OK  # repaired: the job starts
    assert r.hget(job_key, "status") == b"started"
    held.checkin()


@pytest.mark.parametrize(("part", "kind"), [
    ("wip", "returned"), ("job", "returned"), ("finished", "returned"), ("results", "returned"),
    ("failed", "failed"), ("results", "failed"), ("jobs_failed", "failed"),
])  # fmt: skip
def test_an_end_that_meets_a_junk_key_writes_nothing(
    part: str, kind: str, make_pool: MakePool, r: redis.Redis
) -> None:
    """finish_job took the job out of the StartedJobRegistry and marked it ended,
    then stopped on a registry, results stream or failure counter of the wrong
    type: a job recorded half."""
    pool, held, job_id = current_job(make_pool, r)
    begun = fence(pool, job_id)
    assert begun.code == errors.OK
    queue = pool.keys.rq_queue("w1")
    junk = {
        "wip": rq_key(pool.keys, "wip", queue), "job": rq_key(pool.keys, "job", job_id),
        "finished": rq_key(pool.keys, "finished", queue),
        "failed": rq_key(pool.keys, "failed", queue), "results": pool.keys.rq_result(job_id),
        "jobs_failed": pool.keys.jobs_failed,
    }[part]  # fmt: skip
    r.delete(junk)
    r.set(junk, "junk")
    before = snapshot(r, pool)
    end = job_records.end_of(
        kind, value=6, exc_string="ValueError: no", execution=f"{job_id}:e1", now=NOW,
        result_ttl=60, failure_ttl=90, worker_name="w1.inc",
    )  # fmt: skip
    finish = protocol_jobs.finish_job(pool.keys, "w1", begun.token, begun.nonce, job_id, end)

    with pytest.raises(PoolCorrupted, match=junk):
        pool.sender.send(finish)
    assert snapshot(r, pool) == before, "the end was written in part"
    held.checkin()


def test_a_failure_count_that_is_no_number_does_not_unrecord_a_recorded_end(
    make_pool: MakePool, r: redis.Redis
) -> None:
    """finish_job counted the failure last, with HINCRBY, after every other write: a
    field that is no number failed the script, and the worker called a job
    recorded whole "dropped"."""
    pool, held, job_id = current_job(make_pool, r)
    begun = fence(pool, job_id)
    r.hset(pool.keys.jobs_failed, "w1", "many")
    end = job_records.end_of(
        "failed", exc_string="ValueError: no", execution=f"{job_id}:e1", now=NOW,
        result_ttl=60, failure_ttl=90, worker_name="w1.inc",
    )  # fmt: skip
    finish = protocol_jobs.finish_job(pool.keys, "w1", begun.token, begun.nonce, job_id, end)
    assert pool.sender.send(finish) == errors.OK
    assert r.hget(rq_key(pool.keys, "job", job_id), "status") == b"failed"
    assert r.xlen(pool.keys.rq_result(job_id)) == 1
    held.checkin()


def test_a_give_back_that_meets_a_junk_queue_writes_nothing(
    make_pool: MakePool, r: redis.Redis
) -> None:
    """begin_job took the id out of the intermediate queue, then its give-back
    (another process holds the worker id) stopped on a queue of the wrong type:
    the id was gone from both."""
    pool, held, job_id = current_job(make_pool, r)
    taken(pool, job_id)
    r.set(rq_key(pool.keys, "queue", pool.keys.rq_queue("w1")), "junk")
    before = snapshot(r, pool)
    other = Incarnation("w1", "inc-other", "host", 124, 1000, False)
    op = protocol_jobs.begin_job(
        pool.keys, other, job_id, f"{job_id}:e1", job_records.timestamp(NOW), NOW, "w1.inc"
    )
    with pytest.raises(PoolCorrupted):
        pool.sender.send(op)
    assert snapshot(r, pool) == before, "the give-back wrote part of itself"
    held.checkin()


@pytest.mark.parametrize("verdict", [errors.NOT_HELD, errors.WORKER_DEAD])
def test_a_results_entry_saying_the_lease_ended_does_not_end_a_lease_redis_says_holds(
    verdict: int, make_pool: MakePool
) -> None:
    """A verdict in a results entry is a worker's word from when it looked (or
    whoever wrote the stream's); the client ended its lease on it alone, so an
    entry written under the job's id ended a lease that still held."""
    pool = make_pool()
    liveness.register(pool, ME)
    held = pool.checkout(block=False, auto_renew=False)
    entry = {b"type": b"2", b"exc_string": base64.b64encode(zlib.compress(b"LeaseLost: no")),
             VERDICT_META.encode(): str(verdict).encode()}  # fmt: skip
    with pytest.raises(JobFailed):
        client_jobs._outcome(held, "redispool.doubler.double", entry)
    assert held.active, "a lease Redis says holds was ended"
    held.renew()
    assert held.checkin() is True


def test_a_client_with_a_short_socket_timeout_waits_for_a_slower_job(
    start_worker_main: StartWorkerMain, redis_url: str, tmp_path: Path
) -> None:
    """The wait for a result blocks in XREAD for up to CHECK_INTERVAL (0.25 s):
    a client whose socket timeout is shorter must still get the result. (0.24 s:
    shorter than the block, with half of it left for a loaded machine's replies;
    at 0.1 s a full CI run timed out on an ordinary reply.)"""
    start_worker_main("--function", "tests.procs.jobfuncs.sleep_then_mark", workers=1)
    sep = "&" if "?" in redis_url else "?"
    url = redis_url + sep + "socket_timeout=0.24"
    with Pool("doublers", url) as pool, pool.lease(timeout=5) as lease:
        marker = str(tmp_path / "done")
        assert lease.run("tests.procs.jobfuncs.sleep_then_mark", 0.6, marker) == "finished"


@pytest.mark.parametrize("where", ["enqueue sent, reply unread", "lease look", "result wait"])
def test_ctrl_c_anywhere_in_run_withdraws_the_job_and_leaves_the_lease_usable(
    where: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Pool("idle-hands", redis_url) as pool:
        pool.add_worker("by-hand")  # runs nothing: the job stays queued unless withdrawn
        lease = pool.checkout(timeout=5, auto_renew=False)
        wire = pool.sender.wire
        reads, send = wire.call_reads, pool.sender.send

        def interrupted_reads(*commands: Any) -> Any:
            if where == "enqueue sent, reply unread" and commands[0][0] == "FCALL":
                conn = wire._sent(*commands)  # out on the wire; its replies never read
                conn.disconnect()
                raise KeyboardInterrupt
            if where == "result wait" and len(commands) == 1:
                raise KeyboardInterrupt
            return reads(*commands)

        def interrupted_send(op: Any) -> Any:
            if where == "lease look" and op.script == "reap_workers":
                raise KeyboardInterrupt
            return send(op)

        monkeypatch.setattr(wire, "call_reads", interrupted_reads)
        monkeypatch.setattr(pool.sender, "send", interrupted_send)
        with pytest.raises(KeyboardInterrupt):
            compute(lease, 3, timeout=5)
        monkeypatch.undo()
        queue = rqkeys.classes(pool.name).queue_for(lease.worker_id, pool.client)
        assert queue.count == 0, "the job stayed queued with nobody waiting for it"
        assert lease.active
        assert lease.checkin() is True
        assert pool.status().idle == 1


@pytest.mark.parametrize(("raw", "seconds"), [
    ("5", 5.0), ("0.5", 0.5), ("-1", None), ("", 180.0), ("junk", 180.0), ("nan", 180.0),
    ("inf", 180.0), ("-inf", 180.0), ("0", 180.0), ("-5", 180.0),
])  # fmt: skip
def test_a_job_timeout_written_by_hand_is_a_positive_finite_number_or_none(
    raw: str, seconds: float | None
) -> None:
    """A record's timeout of ``nan`` meant a job that never timed out."""
    assert job_loop._timeout_of(raw) == seconds
