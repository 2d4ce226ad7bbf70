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

import signal
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import StartWorkerMain, wait_for, worker_process

from redispool import Lease, Pool, errors, job_records, liveness
from redispool import jobs as client_jobs
from redispool.doubler import compute, double
from redispool.errors import PoolUnavailable
from redispool.job_loop import JobLoop
from redispool.job_process import Outcome
from redispool.jobs import NONCE_META, TOKEN_META
from redispool.liveness import Incarnation
from redispool.protocol import jobs as protocol_jobs
from redispool.protocol.jobs import intermediate_key, rq_key
from redispool.worker import WorkerSettings


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
        waiting = ("blmove", "blpop")
        wait_for(lambda: [c for c in r.client_list() if c.get("cmd") in waiting], timeout=5,
                 interval=0.01, message="the worker's wait")  # fmt: skip
        for client in r.client_list():
            if client.get("cmd") in waiting:
                r.client_kill_filter(_id=client["id"])
        key = pool.keys.rq_result(job_id)
        wait_for(lambda: r.xlen(key) >= 1, timeout=10, message="the taken job's result")
        assert job_records.read_result(r.xrange(key)[-1][1]).value == 42
        assert r.llen(intermediate_key(pool.keys, pool.keys.rq_queue(lease.worker_id))) == 0
        assert "Doubling 21" in main.log()
        assert f"job {job_id} was taken and never started" in main.log()


ROOT = Path(__file__).resolve().parent.parent
LOSSY = ROOT / "tests" / "procs" / "lossy_worker.py"
ME = Incarnation("w1", "inc-a", "host", 123, 1000, False)


class Calls:
    """A job process that records each call and returns 42 (no process at all)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def run(self, message: dict[str, Any], timeout: Any, held: Any, until: Any) -> Outcome:
        self.calls.append(message)
        return Outcome("returned", value=42)


def job_loop(make_pool: Callable[..., Pool]) -> tuple[Pool, Lease, JobLoop, Calls]:
    pool = make_pool()
    liveness.register(pool, ME)
    lease = pool.checkout(block=False, auto_renew=False)
    calls = Calls()
    loop = JobLoop(pool, pool, ME, calls, frozenset({"redispool.doubler.double"}),  # type: ignore[arg-type]
                   "w1.inc")  # fmt: skip
    return pool, lease, loop, calls


def enqueue(pool: Pool, lease: Lease) -> str:
    meta = {TOKEN_META: str(lease.token), NONCE_META: lease.nonce}
    job_id, fields = job_records.job_fields(
        "redispool.doubler.double", [21], "w1", meta, timeout=10, result_ttl=60,
        failure_ttl=60, ttl=60, now=time.time(),
    )  # fmt: skip
    op = protocol_jobs.enqueue_job(pool.keys, "w1", lease.token, lease.nonce, job_id, 60, fields)
    assert pool.sender.send(op) == errors.OK
    return job_id


def unreachable(op: str) -> PoolUnavailable:
    return PoolUnavailable(f"pool 'p': {op}: Redis unreachable", pool="p")


def test_a_job_whose_ends_reply_was_lost_is_not_given_back_to_run_again(
    redis_url: str, tmp_path: Path
) -> None:
    # the worker gave back any job whose handling met PoolUnavailable, and the
    # next wait ran it again under the same, still current lease
    settings = WorkerSettings(redis_url, "doublers", "w-lossy", uuid.uuid4().hex)
    log = tmp_path / "lossy_worker.log"
    proc = worker_process(settings, log, LOSSY)
    try:
        with Pool("doublers", redis_url) as pool:
            wait_for(lambda: pool.status().idle == 1, timeout=20, message="the worker idle")
            with pool.lease(timeout=5) as lease:
                assert compute(lease, 21) == 42  # its end was written; the reply was lost
                assert compute(lease, 5) == 10  # a job given back would have run before it
        assert log.read_text().count("Doubling 21") == 1, log.read_text()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def test_a_job_whose_start_and_give_back_both_failed_is_taken_up_at_the_next_wait(
    make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    pool, lease, loop, calls = job_loop(make_pool)
    job_id = enqueue(pool, lease)
    send = pool.sender.send

    def start_and_give_back_unreachable(op: Any) -> Any:
        if op.name in ("begin_job", "give_back"):
            raise unreachable(op.name)  # never sent
        return send(op)

    assert loop.next_id(1) == job_id
    monkeypatch.setattr(pool.sender, "send", start_and_give_back_unreachable)
    with pytest.raises(PoolUnavailable):
        loop.handle(job_id)
    monkeypatch.undo()
    assert loop.next_id(1) == job_id  # from the intermediate queue
    assert loop.handle(job_id) == errors.OK
    assert len(calls.calls) == 1


def test_a_job_id_that_is_not_utf8_is_dropped_and_the_queue_goes_on(
    make_pool: Callable[..., Pool],
) -> None:
    pool, lease, loop, calls = job_loop(make_pool)
    pool.client.rpush(loop.taken_key, b"\xff\xfe")  # as a move whose reply was lost
    pool.client.rpush(loop.queue_key, b"\xfe\xff")
    job_id = enqueue(pool, lease)
    seen = [loop.next_id(1) for _ in range(3)]
    assert seen == [None, None, job_id]
    assert pool.client.lrange(loop.taken_key, 0, -1) == [job_id.encode()]
    assert loop.handle(job_id) == errors.OK and len(calls.calls) == 1


def test_a_withdrawn_job_in_the_intermediate_queue_never_starts(
    make_pool: Callable[..., Pool],
) -> None:
    pool, lease, loop, calls = job_loop(make_pool)
    job_id = enqueue(pool, lease)
    assert loop.next_id(1) == job_id  # taken by the wait, not yet started
    client_jobs._withdraw(lease, job_id)  # the client gave up (an interrupt, a timeout)
    assert loop.handle(job_id) == errors.NO_JOB
    assert calls.calls == []
    assert pool.client.hget(rq_key(pool.keys, "job", job_id), "status") == b"queued"


def test_a_wait_of_a_worker_whose_url_sets_a_short_socket_timeout_blocks_under_it(
    redis_url: str,
) -> None:
    # a 1 s BLMOVE on a 0.3 s socket timeout read as Redis unreachable, every time
    with Pool("short", url=f"{redis_url}?socket_timeout=0.3") as pool:
        liveness.register(pool, ME)
        lease = pool.checkout(block=False, auto_renew=False)
        loop = JobLoop(pool, pool, ME, Calls(), frozenset(), "w1.inc")  # type: ignore[arg-type]
        began = time.monotonic()
        assert loop.next_id(1) is None
        assert time.monotonic() - began < 0.3
        job_id = enqueue(pool, lease)
        assert loop.next_id(1) == job_id


@pytest.mark.parametrize("holder", ["this process", "another process"])
def test_a_start_whose_reply_was_lost_is_given_back_once_and_only_if_it_may_run(
    holder: str, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the start ran: it marked the job started (its call never sent: give it back),
    # or, another process holding the worker id, gave it back itself (a second copy
    # would run twice)
    pool, lease, loop, _ = job_loop(make_pool)
    job_id = enqueue(pool, lease)
    assert loop.next_id(1) == job_id
    if holder == "another process":
        pool.client.hset(pool.keys.incarnations, "w1", "inc-b")
    send = pool.sender.send

    def start_reply_lost(op: Any) -> Any:
        reply = send(op)
        if op.name == "begin_job":
            raise unreachable("begin_job")
        return reply

    monkeypatch.setattr(pool.sender, "send", start_reply_lost)
    with pytest.raises(PoolUnavailable):
        loop.handle(job_id)
    assert pool.client.lrange(loop.queue_key, 0, -1) == [job_id.encode()]
    assert pool.client.llen(loop.taken_key) == 0
    if holder == "this process":  # its own execution entry and count are taken back
        wip = rq_key(pool.keys, "wip", pool.keys.rq_queue("w1"))
        assert pool.client.zcard(wip) == 0
        assert pool.workers()[0].jobs == 0


def test_a_lost_give_back_reply_of_an_old_process_never_doubles_a_job_the_new_one_started(
    make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the old process's start gave the job back (another process holds the id) and
    # its reply was lost; the new holder took the job and started it before the old
    # one's give-back looked: the job, marked started, was pushed a second time
    pool, lease, old, _ = job_loop(make_pool)
    job_id = enqueue(pool, lease)
    assert old.next_id(1) == job_id
    successor = Incarnation("w1", "inc-b", "host", 124, 1000, False)
    pool.client.hset(pool.keys.incarnations, "w1", successor.incarnation)
    other = make_pool()  # the new holder's own client
    new = JobLoop(other, other, successor, Calls(), frozenset({"redispool.doubler.double"}),  # type: ignore[arg-type]
                  "w1.inc-b")  # fmt: skip
    send = pool.sender.send

    def reply_lost_while_the_new_holder_starts(op: Any) -> Any:
        reply = send(op)
        if op.name == "begin_job":
            assert new.next_id(1) == job_id  # given back by the script: the new holder's now
            begun = other.sender.send(protocol_jobs.begin_job(
                other.keys, successor, job_id, f"{job_id}:new", "t", time.time(), "w1.inc-b"))
            assert begun.code == errors.OK  # started: its call is under way
            raise unreachable("begin_job")
        return reply

    monkeypatch.setattr(pool.sender, "send", reply_lost_while_the_new_holder_starts)
    with pytest.raises(PoolUnavailable):
        old.handle(job_id)
    assert pool.client.llen(old.queue_key) == 0, "a second copy of a started job was queued"
    assert pool.client.llen(old.taken_key) == 0


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_job_its_client_withdraws_around_a_give_back_never_runs(
    when: str, make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the give-back looked (LREM of the intermediate queue: taken) and pushed in two
    # calls: a client that withdrew the job between them found both lists empty, and
    # the push that followed put back the job it had given up on, which then ran
    pool, lease, loop, calls = job_loop(make_pool)
    job_id = enqueue(pool, lease)
    assert loop.next_id(1) == job_id
    client = make_pool()  # the job's client, on its own connections
    client_lease = Lease(client, lease.worker_id, lease.token, lease.ttl, auto_renew=False,
                         deadline=lease.deadline, nonce=lease.nonce)  # fmt: skip
    send, call_packed, call = pool.sender.send, pool.sender.wire.call_packed, pool.sender.wire.call
    giving_back, withdrawn = [False], []

    def withdraw_once() -> None:
        if giving_back[0] and not withdrawn:
            withdrawn.append(True)
            client_jobs._withdraw(client_lease, job_id)

    def start_reply_lost(op: Any) -> Any:
        if op.name != "begin_job":
            return send(op)
        giving_back[0] = True  # the start never ran; what follows is the give-back
        if when == "before":
            withdraw_once()
        raise unreachable("begin_job")

    def each_command(packed: bytes, command: Any) -> Any:  # after each, the withdrawal
        reply = call_packed(packed, command)
        withdraw_once()
        return reply

    def each_call(*args: Any) -> Any:
        reply = call(*args)
        withdraw_once()
        return reply

    monkeypatch.setattr(pool.sender, "send", start_reply_lost)
    monkeypatch.setattr(pool.sender.wire, "call_packed", each_command)
    monkeypatch.setattr(pool.sender.wire, "call", each_call)
    with pytest.raises(PoolUnavailable):
        loop.handle(job_id)
    monkeypatch.undo()
    assert withdrawn, "the client never withdrew"
    assert pool.client.llen(loop.queue_key) == 0, "a withdrawn job was given back"
    assert pool.client.llen(loop.taken_key) == 0
    assert loop.next_id(0.05) is None
    assert calls.calls == []


def test_a_job_given_up_on_before_it_is_sent_is_never_written(
    make_pool: Callable[..., Pool],
) -> None:
    # an asyncio job cancelled while its thread had not yet enqueued it was written
    # and queued anyway, and only withdrawn at the thread's first look
    pool, lease, loop, _ = job_loop(make_pool)
    given_up = threading.Event()
    given_up.set()
    with pytest.raises(client_jobs.GivenUp):
        client_jobs.run_until(lease, double, (21,), timeout=5, given_up=given_up)
    assert pool.client.llen(loop.queue_key) == 0
    assert pool.client.keys(rq_key(pool.keys, "job", "*")) == []
    assert lease.active


def test_a_start_that_ran_whose_reply_and_give_back_were_lost_is_given_back_at_the_next_wait(
    make_pool: Callable[..., Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the start said OK (the job only in RQ's StartedJobRegistry, marked started)
    # and neither its reply nor the give-back got through: no wait looks there, so
    # the job never ran and its client waited out its whole timeout
    pool, lease, loop, calls = job_loop(make_pool)
    job_id = enqueue(pool, lease)
    send = pool.sender.send

    def start_reply_and_give_back_lost(op: Any) -> Any:
        if op.name == "give_back":
            raise unreachable(op.name)  # never sent
        reply = send(op)
        if op.name == "begin_job":
            raise unreachable(op.name)  # it ran: its reply is lost
        return reply

    assert loop.next_id(1) == job_id
    monkeypatch.setattr(pool.sender, "send", start_reply_and_give_back_lost)
    with pytest.raises(PoolUnavailable):
        loop.handle(job_id)
    monkeypatch.undo()
    wip = rq_key(pool.keys, "wip", pool.keys.rq_queue("w1"))
    assert pool.client.zcard(wip) == 1 and pool.client.llen(loop.queue_key) == 0
    assert loop.next_id(1) == job_id  # given back first, then taken
    assert pool.client.zcard(wip) == 0
    assert loop.handle(job_id) == errors.OK
    assert len(calls.calls) == 1
    assert loop.next_id(0.05) is None  # once only
