"""The protocol layer: each operation's KEYS and ARGV as its script's header says,
its replies read into typed results, its codes turned into the table's exceptions.

Pure unit tests (no server): the layer does no I/O. The scripts themselves run
against real servers in every other test file, through this layer.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest
from helpers import key_part

from redispool import PoolStatus, errors, job_records, protocol, scripts
from redispool.errors import (
    FULL,
    ID_TAKEN,
    NOT_HELD,
    OK,
    QUEUED,
    UNKNOWN_WORKER,
    WORKER_DEAD,
    LeaseLost,
    OutOfService,
    PoolCorrupted,
    WorkerIdTaken,
    WorkerLost,
)
from redispool.keys import PoolKeys
from redispool.protocol import clock
from redispool.protocol import jobs as protocol_jobs
from redispool.protocol.lease_life import LeaseLife

K = PoolKeys("unit")
ME = protocol.Incarnation("w1", "inc-1", "host", 42, 3000, overflow=True)


def _read(name: str) -> str:
    return resources.files("redispool").joinpath("scripts").joinpath(name).read_text()


def key_names(script: str) -> tuple[list[str], bool]:
    """The names of the script's KEYS in header order, and whether the last repeats."""
    header = _read(f"{script}.lua").split("]]", 1)[0]
    common = re.findall(r"KEYS\[\d\] (\w+)", _read("includes/pool.lua").split("]]", 1)[0])
    workers = re.findall(r"KEYS\[\d+\] (\w+)", _read("includes/workers.lua").split("]]", 1)[0])
    names: list[str] = []
    variadic = False
    for first, last, name in re.findall(r"KEYS\[(\d+)(?:\.\.(\w+))?\]\s+(\S+)", header):
        if last == "9":
            names += common
        elif last == "16":
            names += common + workers
        else:
            assert int(first) == len(names) + 1, f"{script}: KEYS[{first}] out of order"
            names.append(name)
            variadic = variadic or last == "n"
    return names, variadic


def argv_count(script: str) -> tuple[int, bool]:
    header = _read(f"{script}.lua").split("]]", 1)[0]
    found = [int(n) for n in re.findall(r"ARGV\[(\d+)\]", header)]
    per = re.findall(r"ARGV\[(\d+)i", header)
    return (len(per), True) if per else (max(found, default=0), False)


EVERY_OP: list[protocol.Op[Any]] = [
    protocol.checkout(K, ttl_ms=0, holder="h:1", ticket="t1", alive_ms=900, nonce="ab"),
    protocol.wait_tick(K, ticket="t1", ttl_ms=5000, holder="h:1", alive_ms=900, nonce="ab"),
    protocol.cancel_wait(K, "t1"),
    protocol.checkin(K, worker_id="w1", token=7, nonce="ab"),
    protocol.renew(K, [("w1", 7, "ab", 5000), ("w2", 8, "cd", 6000)]),
    protocol.configure(K, ttl_ms=2000, strategy="fifo"),
    protocol.status(K),
    protocol.reclaim(K),
    protocol.add_worker(K, "w1", "host|1"),
    protocol.remove_worker(K, "w1"),
    protocol.register(K, ME),
    protocol.beat(K, ME),
    protocol.leave(K, ME, "drain"),
    protocol.bury(K, "w1", 7, "ab"),
    protocol_jobs.enqueue_job(K, "w1", 7, "ab", "j1", 5, ["status", "queued"]),
    protocol_jobs.begin_job(K, ME, "j1", "j1:e1", "t", 1.0, "w1.inc"),
    protocol_jobs.finish_job(K, "w1", "7", "ab", "j1", job_records.end_of(
        "returned", value=1, execution="j1:e1", now=1.0, result_ttl=5, failure_ttl=5,
        worker_name="w1.inc")),
    protocol_jobs.give_back(K, "w1", "j1", "j1:e1"),
    protocol_jobs.withdraw_job(K, "w1", "j1"),
]


def test_every_script_of_the_library_has_an_operation() -> None:
    assert {op.script for op in EVERY_OP} == set(scripts.SCRIPT_NAMES)


@pytest.mark.parametrize("op", EVERY_OP, ids=lambda op: op.name)
def test_each_operation_sends_its_keys_in_the_headers_order(op: protocol.Op[Any]) -> None:
    names, variadic = key_names(op.script)
    got = [key_part(key, K.pool) for key in op.keys]
    if variadic:
        assert got[: len(names)] == names
        assert set(got[len(names) :]) <= {names[-1]}, got
    else:
        assert got == names, f"{op.script}: header says {names}"


@pytest.mark.parametrize("op", EVERY_OP, ids=lambda op: op.name)
def test_each_operation_sends_as_many_args_as_its_header_lists(op: protocol.Op[Any]) -> None:
    count, per_item = argv_count(op.script)
    header = _read(f"{op.script}.lua").split("]]", 1)[0]
    if tail := re.search(r"ARGV\[(\d+)\.\.n\]", header):  # name, value pairs from here on
        fixed = int(tail.group(1)) - 1
        assert len(op.args) >= fixed and (len(op.args) - fixed) % 2 == 0, op.script
    elif per_item:
        assert len(op.args) % count == 0 and len(op.args) // count == len(op.keys) - 1
    else:
        assert len(op.args) == count, f"{op.script}: header lists {count} ARGV"


def test_the_command_is_an_fcall_of_the_librarys_function() -> None:
    op = protocol.cancel_wait(K, "t9")
    assert op.command() == ("FCALL", scripts.library().function("cancel_wait"), 1, K.prefix, "t9")


def test_checkout_reads_a_grant_a_queue_entry_and_a_full_pool() -> None:
    op = protocol.checkout(K, ttl_ms=0, holder="h", ticket="t", alive_ms=1, nonce="ab")
    granted = op.read([OK, b"w3", 12, 5000, 2500])
    assert granted == protocol.Granted("w3", 12, 5000, 2500) and granted.ttl == 2.5
    assert op.read([QUEUED, -1, 100, 3000]) == protocol.Queued(True, -1, 100, 3000)
    assert op.read([FULL, 900, 100, 3000]) == protocol.Queued(False, 900, 100, 3000)


def test_a_handoff_carries_the_whole_lease() -> None:
    tick = protocol.wait_tick(K, ticket="t", ttl_ms=1, holder="h", alive_ms=1, nonce="ab")
    handed = tick.read([OK, b"9|1500|2000|ab12|worker|with|bars"])
    assert handed == protocol.Handoff("worker|with|bars", 9, 1500, 2000, "ab12")
    assert tick.read([OK, "w2", 3, 10, 20]) == protocol.Granted("w2", 3, 10, 20)
    assert tick.read([QUEUED, 50, 10]) == protocol.Waiting(50, 10)
    cancel = protocol.cancel_wait(K, "t")
    assert cancel.read([FULL]) is None
    assert cancel.read([OK, "1|2|3|n|w"]) == protocol.Handoff("w", 1, 2, 3, "n")


def test_checkin_says_whether_it_returned_the_worker_and_why_not() -> None:
    op = protocol.checkin(K, worker_id="w1", token=1, nonce="ab")
    assert op.read([OK]) == protocol.Checkin(True)
    assert op.read([NOT_HELD]) == protocol.Checkin(False, worker_died=False)
    assert op.read([WORKER_DEAD]) == protocol.Checkin(False, worker_died=True)


def test_renew_reads_one_answer_per_lease_in_order() -> None:
    op = protocol.renew(K, [("a", 1, "n", 10), ("b", 2, "m", 10), ("c", 3, "o", 10)])
    assert op.read([777, 1, 0, 1]) == protocol.Renewal(777, (True, False, True))
    with pytest.raises(PoolCorrupted, match="2 answers for 3 leases"):
        op.read([777, 1, 0])
    with pytest.raises(ValueError, match="at least one"):
        protocol.renew(K, [])


def test_pool_wide_reads_are_typed() -> None:
    reply = [OK, 5, 2, 3, 4, 1, 1, 123, 2, 1]
    assert protocol.status(K).read(reply) == PoolStatus(
        size=5, idle=2, busy=3, waiting=4, draining=1, expired=1, dead=2, overflow=1
    )
    settings = protocol.configure(K, ttl_ms=None, strategy="").read([OK, 2500, b"fifo"])
    assert (settings.lease_ttl, settings.strategy) == (2.5, "fifo")
    reclaimed = protocol.reclaim(K, 10).read([OK, 3, -1, 99, 4, 1])
    assert reclaimed == protocol.Reclaimed(3, -1, 99, 4, 1, more=False)
    assert protocol.reclaim(K, 3).read([OK, 3, -1, 99, 0, 0]).more, "stopped at its limit"
    assert protocol.reclaim(K, 4).read([OK, 0, -1, 99, 4, 0]).more, "trimmed up to its limit"


def test_configure_sends_empty_strings_to_keep_and_the_defaults_for_a_new_pool() -> None:
    assert protocol.configure(K, ttl_ms=None, strategy="").args == ("", "", 10000, "lifo")
    assert protocol.configure(K, ttl_ms=300, strategy="fifo", default_ttl_ms=700).args == (
        "300", "fifo", 700, "lifo",
    )  # fmt: skip


def test_worker_registration_codes_become_the_tables_exceptions() -> None:
    register = protocol.register(K, ME)
    assert register.read([OK, 1]) is True and register.read([OK, 0]) is False
    with pytest.raises(WorkerIdTaken) as taken:
        register.read([ID_TAKEN])
    assert (taken.value.pool, taken.value.worker_id) == ("unit", "w1")
    with pytest.raises(OutOfService):
        register.read([UNKNOWN_WORKER])
    beat = protocol.beat(K, ME)
    assert [beat.read(r) for r in ([OK, 0], [OK, 1], [UNKNOWN_WORKER])] == [
        "beat", "registered", "gone",
    ]  # fmt: skip
    assert beat.args[5] == "1" and protocol.beat(K, ME, reregister=False).args[5] == "0"
    assert register.args[6] == "1", "an overflow worker says so"


def test_leave_remove_and_bury_read_their_outcomes() -> None:
    leave = protocol.leave(K, ME, "idle")
    assert [leave.read(r) for r in ([OK, 1], [OK, 2], [FULL], [UNKNOWN_WORKER])] == [1, 2, 0, 0]
    with pytest.raises(ValueError, match="mode must be"):
        protocol.leave(K, ME, "vanish")
    remove = protocol.remove_worker(K, "w1")
    assert remove.read([OK, 2]) is True and remove.read([UNKNOWN_WORKER]) is False
    assert protocol.bury(K).read([OK, 4, -1]) == protocol.Buried(4, -1, more=False)
    assert protocol.bury(K, limit=4).read([OK, 4, -1]).more
    assert protocol.bury(K).args == (1000, "", "", "")


def test_the_job_fence_reads_its_verdict_and_the_seconds_the_lease_holds() -> None:
    """begin_job's PTTL (ms) becomes the seconds the worker may count on while
    the job runs; a refusal leaves it none."""
    fence = protocol_jobs.begin_job(K, ME, "j1", "j1:e1", "t", 1.0, "w1.inc")
    ran = fence.read([OK, 1500, b"7", b"ab", b"60", b"90", b"[]", b"5", b"", b""])
    assert ran == protocol_jobs.Begun(OK, 1.5, "7", "ab", 60, 90, b"[]", "5", "", "")
    assert fence.read([NOT_HELD, -1, b"7", b"ab", b"", b""]) == protocol_jobs.Begun(
        NOT_HELD, 0.0, "7", "ab"
    )
    assert fence.read([WORKER_DEAD, -1, b"7", b"ab", b"", b""]).left == 0.0
    assert fence.read([UNKNOWN_WORKER]) == protocol_jobs.Begun(UNKNOWN_WORKER)


def test_lease_left_is_the_pttl_of_this_leases_key_only() -> None:
    reads = protocol.lease_left(K, "w1", "7", "ab")
    assert reads.commands == (("GET", K.lease("w1")), ("PTTL", K.lease("w1")))
    assert reads.read([b"7|ab|h:1", 1234]) == 1.234
    assert reads.read([b"7|ab|h:1", -1]) == 0.0
    assert reads.read([b"8|ab|h:1", 1234]) == 0.0, "another token's lease"
    assert reads.read([b"7|cd|h:1", 1234]) == 0.0, "same token, another nonce"
    assert reads.read([None, -2]) == 0.0


@pytest.mark.parametrize("op", EVERY_OP, ids=lambda op: op.name)
def test_an_unknown_code_or_a_junk_reply_is_corruption_naming_the_pool(
    op: protocol.Op[Any],
) -> None:
    for junk in ([99, 1, 2, 3, 4], [b"junk"], []):
        if op.script == "renew" and junk and junk[0] == 99:
            continue  # renew's first element is the server time, not a code
        with pytest.raises(PoolCorrupted) as raised:
            op.read(junk)
        assert raised.value.pool == "unit" and raised.value.operation


def test_a_success_code_an_operation_never_answers_is_corruption() -> None:
    with pytest.raises(PoolCorrupted, match="QUEUED"):
        protocol.checkin(K, worker_id="w1", token=1, nonce="ab").read([QUEUED])
    with pytest.raises(LeaseLost):  # an error code keeps the table's exception
        protocol.add_worker(K, "w1", "|").read([NOT_HELD])
    with pytest.raises(WorkerLost):
        protocol.reclaim(K).read([WORKER_DEAD])


def test_lua_code_constants_are_generated_from_the_table() -> None:
    line = scripts.code_constants()
    names, values = (part.split(", ") for part in line.removeprefix("local ").split(" = "))
    assert dict(zip(names, map(int, values), strict=True)) == {c.name: c.value for c in errors.Code}
    for name in (*scripts.SCRIPT_NAMES, "fence_write"):
        own = _read(f"{name}.lua")
        assert not re.search(r"^local [A-Z_, ]+ = [\d, ]+$", own, re.M), f"{name} copies codes"
    assert line in scripts.library().source


# -- the clock ------------------------------------------------------------------


def test_a_waiter_wakes_at_the_first_of_keepalive_lease_end_and_its_own_deadline() -> None:
    # keep-alive: a third of the TTL
    assert clock.waiter_wake_at(100.0, 3000, -1, (0.0, 0), None) == pytest.approx(101.0)
    # a lease ends (server 5400 ms, read at local 100.0 when the server said 5000)
    wake = clock.waiter_wake_at(100.0, 3000, 5400, (100.0, 5000), None)
    assert wake == pytest.approx(100.4 + clock.DEADLINE_MARGIN)
    # a lease end already past: a millisecond from now, never in the past
    assert clock.waiter_wake_at(100.0, 3000, 10, (100.0, 5000), None) == pytest.approx(100.001)
    assert clock.waiter_wake_at(100.0, 3000, -1, (0.0, 0), 100.2) == pytest.approx(100.2)
    assert clock.waiter_wake_at(100.0, 3000, -1, (0.0, 0), 99.0) == 100.0


def test_a_waiters_alive_time_is_shortened_by_its_timeout_plus_grace() -> None:
    assert clock.alive_ms(5000, None) == 5000
    assert clock.alive_ms(5000, 1.0) == 1000 + clock.HANDOFF_GRACE_MS
    assert clock.alive_ms(500, 1.0) == 500


def test_renewal_is_due_a_third_of_the_ttl_after_the_last_and_retries_sooner() -> None:
    assert clock.renew_due(10.0, 3.0) == pytest.approx(11.0)
    retry = clock.retry_due(10.0, 10.5, 3.0, 0.2)
    assert clock.renew_due(retry, 3.0) == pytest.approx(10.7)
    assert clock.retry_due(5.0, 10.5, 3.0, 0.2) == 5.0, "never later than already due"
    assert clock.remaining(10.0, 12.0) == 0.0 and clock.remaining(12.0, 10.5) == 1.5


# -- a lease's life -------------------------------------------------------------


class _Flag:
    def __init__(self) -> None:
        self.value = False

    def set(self) -> None:
        self.value = True

    def is_set(self) -> bool:
        return self.value


class _Life(LeaseLife[_Flag]):
    def _new_event(self) -> _Flag:
        return _Flag()


def test_a_lease_is_active_until_closed_or_lost_and_closes_once() -> None:
    life = _Life("w1", 3, 2.0, auto_renew=True, deadline=50.0, nonce="ab", renewed_at=48.0)
    assert life.active and life.state == "active" and life.owned_here()
    assert life.renew_due() == pytest.approx(48 + 2 / 3)
    life.renewed(60.0)
    assert (life.deadline, life.renewed_at) == (62.0, 60.0)
    assert life.remaining(61.5) == 0.5
    assert life.close() is True and life.close() is False and not life.active
    life.reopen()
    assert life.active, "a checkin that may not have run can be tried again"
    life.end(worker_died=True)
    assert life.lost.is_set() and life.worker_died and life.state == "lost" and not life.active
    life.end()
    assert life.worker_died, "a later finding does not forget the worker died"


def test_lease_times_come_from_the_grant_or_the_handoff() -> None:
    granted = protocol.Granted("w", 1, 99_000, 3000)
    assert LeaseLife.granted_times(granted, 10.0) == (13.0, 10.0)
    handed = protocol.Handoff("w", 1, 5_000, 2_000, "ab")
    deadline, renewed_at = LeaseLife.handoff_times(handed, (10.0, 4_000))
    assert (deadline, renewed_at) == pytest.approx((11.0, 9.0))


def test_redis_errors_become_the_pools_naming_the_operation() -> None:
    import redis

    cases = [
        (redis.ConnectionError("refused"), errors.PoolUnavailable),
        (redis.TimeoutError("slow"), errors.PoolUnavailable),
        (redis.exceptions.ReadOnlyError("replica"), errors.PoolUnavailable),
        (redis.AuthenticationError("bad password"), errors.PoolAccessDenied),
        (redis.ResponseError("NOPERM this user has no permissions"), errors.PoolAccessDenied),
        (redis.ResponseError("WRONGTYPE Operation against a key"), errors.PoolCorrupted),
    ]
    for exc, kind in cases:
        mapped = protocol.translate(exc, "unit", "checkin", "w1")
        assert isinstance(mapped, kind), (exc, mapped)
        assert isinstance(mapped, errors.PoolError)
        assert (mapped.pool, mapped.operation, mapped.worker_id) == ("unit", "checkin", "w1")
    other = redis.RedisError("something else")
    assert protocol.translate(other, "unit", "checkin") is other


def test_the_lua_default_ttl_and_ttl_bounds_are_the_python_ones() -> None:
    from redispool import defaults

    include = _read("includes/pool.lua")
    assert f"local DEFAULT_TTL_MS = {defaults.DEFAULT_LEASE_TTL_MS}\n" in include
    assert f"n >= {defaults.MIN_TTL_MS} and n <= {defaults.MAX_TTL_MS}" in include
    assert "'lifo'" in include and defaults.DEFAULT_STRATEGY == "lifo"
