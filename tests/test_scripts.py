"""The Lua scripts: headers that match their callers, and their logic on fakeredis.

fakeredis runs the scripts' logic quickly; expiry, events and blocking are tested
on real servers elsewhere (fakeredis never publishes `expired` and does not block
BLMOVE: ../shared/FACTS.md).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest

from redispool import (
    Lease,
    Pool,
    PoolFull,
    errors,
    job_records,
    jobs,
    liveness,
    protocol,
    scripts,
    wire,
)
from redispool.liveness import Incarnation
from redispool.protocol import jobs as protocol_jobs

HEADER = re.compile(r"--\[\[(.*?)\]\]", re.DOTALL)


def header_of(name: str) -> str:
    text = scripts.source_of(name) if name == "__include__" else _raw(name)
    match = HEADER.search(text)
    assert match, f"{name}.lua has no --[[ header ]]"
    return match.group(1)


def _raw(name: str) -> str:
    from importlib import resources

    return resources.files("redispool").joinpath("scripts").joinpath(f"{name}.lua").read_text()


def declared(header: str, what: str) -> tuple[int, bool]:
    """(count, variadic) of KEYS or ARGV entries the header documents."""
    count, variadic = 0, False
    for first, last in re.findall(rf"{what}\[(\d+)(?:\.\.(\w+))?\]", header):
        if last and not last.isdigit():
            variadic = True
        count = max(count, int(last) if last.isdigit() else int(first))
    if re.search(rf"{what}\[\d+i", header):
        variadic = True
    return count, variadic


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, set[tuple[int, int]]]]:
    """Every FCALL as it goes over the wire: script name -> {(len(KEYS), len(ARGV))}."""
    calls: dict[str, set[tuple[int, int]]] = defaultdict(set)
    names = {scripts.library().function(name): name for name in scripts.SCRIPT_NAMES}
    real = wire.Wire.call_packed  # Wire.call sends through it too

    def record(self: wire.Wire, packed: bytes, command: Callable[[], Any]) -> Any:
        sent = command()
        if sent[0] == "FCALL":
            numkeys = int(sent[2])
            calls[names[sent[1]]].add((numkeys, len(sent) - 3 - numkeys))
        return real(self, packed, command)

    monkeypatch.setattr(wire.Wire, "call_packed", record)
    yield calls


@pytest.fixture
def fake_pool() -> Iterator[Pool]:
    pool = Pool("unit", redis=fakeredis.FakeRedis(), lease_ttl=5)
    yield pool
    pool.close()


def exercise_every_script(pool: Pool) -> None:
    """Call each script the way the library does."""
    pool.configure(strategy="lifo")
    pool.add_worker("w1", host="h", pid=1)
    pool.add_worker("w2")
    lease = pool.checkout(block=False)
    pool.renew(lease)
    pool.status()
    pool.reclaim_expired()
    pool.add_worker("gone")
    pool.remove_worker("gone")
    other = pool.checkout(block=False, auto_renew=False)
    del other
    with pytest.raises(PoolFull):
        pool.checkout(block=False)
    k, send = pool.keys, pool.sender.send
    queued = send(protocol.checkout(k, ttl_ms=0, holder="h:1", ticket="t1", alive_ms=1000,
                                    nonce="ab12"))  # fmt: skip
    assert isinstance(queued, protocol.Queued) and queued.queued
    tick = send(protocol.wait_tick(k, ticket="t1", ttl_ms=5000, holder="h:1", alive_ms=1000,
                                   nonce="ab12"))  # fmt: skip
    assert isinstance(tick, protocol.Waiting)
    assert lease.checkin() is True  # handed to waiter t1
    handed = send(protocol.cancel_wait(k, "t1"))
    assert handed is not None and handed.worker_id == lease.worker_id
    exercise_worker_scripts(pool)


def exercise_worker_scripts(pool: Pool) -> None:
    """The scripts of worker processes: register, heartbeat, a job's (begin_job
    is the fence), bury, leave."""
    me = Incarnation("wp", "inc-a", "host", 123, 1000, False)
    liveness.register(pool, me)
    liveness.beat(pool, me)
    granted = pool.sender.send(
        protocol.checkout(pool.keys, ttl_ms=0, holder="h:1", ticket="", alive_ms=1000, nonce="cd34")
    )
    assert isinstance(granted, protocol.Granted)
    lease = Lease.granted(pool, granted, "cd34", auto_renew=False, sent=0.0)
    exercise_job_scripts(pool, me, lease)
    liveness.bury(pool, me.worker_id, lease.token, lease.nonce)
    liveness.leave(pool, me, "exit")


def exercise_job_scripts(pool: Pool, me: Incarnation, lease: Lease) -> None:
    """A job's three scripts: enqueue (the client), begin and finish (the worker)."""
    meta = {jobs.TOKEN_META: str(lease.token), jobs.NONCE_META: lease.nonce}
    job_id, fields = job_records.job_fields(
        "redispool.doubler.double", [4], me.worker_id, meta, timeout=5, result_ttl=60,
        failure_ttl=60, ttl=5, now=1.0e9,
    )  # fmt: skip
    send, keys = pool.sender.send, pool.keys
    op = protocol_jobs.enqueue_job(keys, me.worker_id, lease.token, lease.nonce, job_id, 5, fields)
    assert send(op) == errors.OK
    queue = keys.rq_queue(me.worker_id)  # the worker's wait, with its own command
    moved = pool.sender.wire.call("BLMOVE", protocol_jobs.rq_key(keys, "queue", queue),
                                  protocol_jobs.intermediate_key(keys, queue), "LEFT", "RIGHT", 1)
    assert moved == job_id.encode()
    assert send(protocol_jobs.give_back(keys, me.worker_id, job_id, f"{job_id}:e0")) is True
    moved = pool.sender.wire.call("BLMOVE", protocol_jobs.rq_key(keys, "queue", queue),
                                  protocol_jobs.intermediate_key(keys, queue), "LEFT", "RIGHT", 1)
    assert moved == job_id.encode()
    begun = send(protocol_jobs.begin_job(keys, me, job_id, f"{job_id}:e1", "t", 1.0e9, "rqw"))
    assert begun.code == errors.OK and begun.token == str(lease.token)
    assert job_records.call_of(begun.data).args == [4]
    end = job_records.end_of("returned", value=8, execution=f"{job_id}:e1", now=1.0e9,
                             result_ttl=60, failure_ttl=60, worker_name="rqw")  # fmt: skip
    assert send(protocol_jobs.finish_job(keys, me.worker_id, begun.token, begun.nonce, job_id,
                                         end)) == errors.OK  # fmt: skip
    assert send(protocol_jobs.withdraw_job(keys, me.worker_id, job_id)) == 0  # it ran


def test_every_script_is_called_as_its_header_says(
    fake_pool: Pool, recorded: dict[str, set[tuple[int, int]]]
) -> None:
    exercise_every_script(fake_pool)
    assert set(recorded) == set(scripts.SCRIPT_NAMES), "a script is never exercised here"
    for name, shapes in recorded.items():
        header = header_of(name)
        nkeys, keys_variadic = declared(header, "KEYS")
        nargs, args_variadic = declared(header, "ARGV")
        for got_keys, got_args in shapes:
            if keys_variadic:
                assert got_keys >= nkeys - 1, (name, got_keys)
            else:
                assert got_keys == nkeys, (
                    f"{name}: header says {nkeys} KEYS, called with {got_keys}"
                )
            if not args_variadic:
                assert got_args == nargs, (
                    f"{name}: header says {nargs} ARGV, called with {got_args}"
                )


def test_lua_result_codes_match_the_python_table() -> None:
    include = scripts.source_of("checkout")
    match = re.search(r"local ([A-Z_, ]+) = ([\d, ]+)\n", include)
    assert match, "the result codes line is missing from includes/pool.lua"
    names = [n.strip() for n in match.group(1).split(",")]
    values = [int(v) for v in match.group(2).split(",")]
    for name, value in zip(names, values, strict=True):
        assert getattr(errors, name) == value, name
        assert value in errors.CODES


def test_every_script_has_a_header_naming_its_returns() -> None:
    for name in scripts.SCRIPT_NAMES:
        header = header_of(name)
        assert header.strip().startswith(f"{name}:"), f"{name}.lua header must open with its name"
        assert "Returns" in header, f"{name}.lua header does not say what it returns"


def test_scripts_touch_only_keys_from_keys_or_the_pool_prefix() -> None:
    for name in scripts.SCRIPT_NAMES:
        body = HEADER.sub("", scripts.source_of(name))
        assert "'KEYS'" not in body and "SCAN" not in body, name
        for literal in re.findall(r"'(redispool[^']*)'", body):
            pytest.fail(f"{name}.lua builds key {literal!r} from a string")


def test_checkout_skips_a_worker_already_leased(fake_pool: Pool) -> None:
    fake_pool.add_worker("w1")
    lease = fake_pool.checkout(block=False)
    fake_pool.client.rpush(fake_pool.keys.idle, "w1")
    with pytest.raises(PoolFull):
        fake_pool.checkout(block=False)
    assert fake_pool.client.llen(fake_pool.keys.idle) == 0
    assert lease.checkin() is True


def test_checkin_with_a_wrong_token_changes_nothing(fake_pool: Pool) -> None:
    fake_pool.add_worker("w1")
    lease = fake_pool.checkout(block=False)
    op = protocol.checkin(fake_pool.keys, worker_id="w1", token=lease.token + 1, nonce=lease.nonce)
    assert fake_pool.sender.send(op) == protocol.Checkin(False)
    assert fake_pool.status().busy == 1
    assert lease.checkin() is True


def test_the_right_token_with_another_nonce_acts_on_nothing(fake_pool: Pool) -> None:
    fake_pool.add_worker("w1")
    lease = fake_pool.checkout(block=False, auto_renew=False)
    k, send = fake_pool.keys, fake_pool.sender.send
    for nonce in ("0" * 32, ""):
        renewed = send(protocol.renew(k, [("w1", lease.token, nonce, 5000)]))
        assert renewed.held == (False,)
        checked_in = send(protocol.checkin(k, worker_id="w1", token=lease.token, nonce=nonce))
        assert checked_in == protocol.Checkin(False)
    assert fake_pool.status().busy == 1
    assert lease.checkin() is True


def test_dead_waiters_are_skipped_at_handoff(fake_pool: Pool) -> None:
    fake_pool.add_worker("w1")
    lease = fake_pool.checkout(block=False)
    r = fake_pool.client
    r.rpush(fake_pool.keys.waitq, "stale|5000|ab|ghost:1", "missing|5000|ab|ghost:1")
    r.zadd(fake_pool.keys.waiters, {"stale": 1})  # alive until 1 ms after epoch
    assert lease.checkin() is True
    assert fake_pool.status().idle == 1
    assert r.llen(fake_pool.keys.waitq) == 0


def test_fifo_hands_out_the_worker_idle_longest_so_a_returned_one_goes_last(
    fake_pool: Pool,
) -> None:
    fake_pool.configure(strategy="fifo")
    for wid in ("a", "b", "c"):
        fake_pool.add_worker(wid)
    first = fake_pool.checkout(block=False, auto_renew=False)
    assert first.worker_id == "a"
    first.checkin()
    order = [fake_pool.checkout(block=False, auto_renew=False).worker_id for _ in range(3)]
    assert order == ["b", "c", "a"]


def test_lifo_hands_out_the_worker_returned_last(fake_pool: Pool) -> None:
    for wid in ("a", "b", "c"):
        fake_pool.add_worker(wid)
    first = fake_pool.checkout(block=False, auto_renew=False)
    assert first.worker_id == "c"
    second = fake_pool.checkout(block=False, auto_renew=False)
    first.checkin()
    second.checkin()
    order = [fake_pool.checkout(block=False, auto_renew=False).worker_id for _ in range(3)]
    assert order == ["b", "c", "a"]
