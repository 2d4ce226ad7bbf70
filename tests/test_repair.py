"""A pool that repairs itself, and waiting state that stays bounded.

Keys lost one at a time (an eviction, a hand DEL) on a live pool with
worker_main running: the heartbeats and the sweep make it whole again.
Thousands of dead waiters: the sweep trims them, status() and checkin do a
bounded amount of work whatever the queue holds (measured as the commands
the server ran, from INFO commandstats, not as wall time).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from helpers import StartServer, StartWorkerMain, wait_for

from redispool import Lease, Pool, protocol
from redispool.check import MAX_TOKEN, check_pool
from redispool.doubler import compute
from redispool.keys import PoolKeys

HEARTBEAT_TTL = 3.0  # worker_main beats every third of it
INTERVAL = HEARTBEAT_TTL / 3


def fixed_keys(k: PoolKeys) -> list[str]:
    return [k.config, k.workers, k.idle, k.deadlines, k.token, k.draining, k.waitq, k.waiters,
            k.heartbeats, k.incarnations, k.dead_leases, k.jobs]  # fmt: skip


def whole(pool: Pool, size: int) -> bool:
    """Every worker registered, idle and beating under the incarnation that runs it."""
    status = pool.status()
    if not (status.size == size and status.idle == size and check_pool(pool) == []):
        return False
    k, r = pool.keys, pool.client
    ids = [w.id for w in pool.workers()]
    incarnations = r.hgetall(k.incarnations)
    return len(ids) == size and all(
        r.zscore(k.heartbeats, wid) is not None
        and incarnations.get(wid.encode()) is not None
        and r.get(k.alive(wid)) == incarnations.get(wid.encode())
        for wid in ids
    )


def test_a_pool_that_lost_any_one_key_is_whole_again_within_two_heartbeats(
    start_worker_main: StartWorkerMain, redis_url: str, r: redis.Redis
) -> None:
    start_worker_main("--heartbeat-ttl", str(HEARTBEAT_TTL), workers=2)
    with Pool("doublers", redis_url) as pool:
        k = pool.keys
        lost = [*fixed_keys(k), *(k.alive(w.id) for w in pool.workers())]
        took = {}
        for key in lost:
            pool.checkout(block=False, auto_renew=False).checkin()
            assert whole(pool, 2)
            r.delete(key)
            began = time.monotonic()
            wait_for(lambda: whole(pool, 2), timeout=2 * INTERVAL, message=f"{key} healed")
            took[key.removeprefix(k.prefix)] = time.monotonic() - began
            with pool.lease(block=False) as lease, pool.lease(block=False) as other:
                assert {lease.worker_id, other.worker_id} == {w.id for w in pool.workers()}
        print("healed after losing:", {key: f"{s:.2f}s" for key, s in took.items()})


def test_a_lost_deadlines_set_gives_live_leases_back_their_deadline_not_a_second_holder(
    start_worker_main: StartWorkerMain, redis_url: str, r: redis.Redis
) -> None:
    start_worker_main("--heartbeat-ttl", str(HEARTBEAT_TTL), workers=2)
    with Pool("doublers", redis_url) as pool:
        held = pool.checkout(block=False, auto_renew=False)
        r.delete(pool.keys.deadlines)
        wait_for(lambda: pool.status().busy == 1, timeout=2 * INTERVAL, message="the lease back")
        assert pool.status().idle == 1 and check_pool(pool) == []
        with pool.lease(block=False) as other:
            assert other.worker_id != held.worker_id
        held.renew()
        assert compute(held, 5) == 10
        assert held.checkin() is True
        assert whole(pool, 2)


def test_the_sweep_puts_back_hand_added_workers_whose_idle_list_was_lost(
    make_pool: Any, r: redis.Redis
) -> None:
    pool = make_pool(workers=3)
    held = pool.checkout(block=False, auto_renew=False)
    r.delete(pool.keys.idle, pool.keys.deadlines)
    assert pool.status().idle == 0
    problems = check_pool(pool)
    assert sum("neither idle nor leased" in p.problem for p in problems) == 3
    pool.reclaim_expired()
    assert pool.status().idle == 2 and pool.status().busy == 1  # the lease key still held
    assert check_pool(pool) == []
    assert held.checkin() is True
    assert pool.status().idle == 3


def test_check_reports_an_evicting_server(fresh_server: StartServer) -> None:
    server = fresh_server(extra_args=("--maxmemory-policy", "allkeys-lru"))
    with Pool("p", server.url) as pool:
        pool.add_worker("w1")
        assert [(p.key, "allkeys-lru" in p.problem) for p in check_pool(pool)] == [
            ("maxmemory-policy", True)
        ]
        pool.client.config_set("maxmemory-policy", "noeviction")
        assert check_pool(pool) == []


def test_check_reports_a_counter_behind_a_lease_or_without_room_to_grow(
    make_pool: Any, r: redis.Redis
) -> None:
    pool = make_pool(workers=1)
    lease = pool.checkout(block=False, auto_renew=False)
    r.set(pool.keys.token, str(lease.token - 1000))
    assert any("tokens would repeat" in p.problem for p in check_pool(pool))
    r.set(pool.keys.token, str(MAX_TOKEN - 5))
    assert any("no room left to grow" in p.problem for p in check_pool(pool))
    r.set(pool.keys.token, str(lease.token))
    assert check_pool(pool) == []
    assert lease.checkin() is True


def commands_run(r: redis.Redis, action: Any) -> tuple[Any, dict[str, int]]:
    """``action()``'s result and the commands the server ran for it, by name."""
    r.config_resetstat()
    result = action()
    stats = r.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    calls.pop("config|resetstat", None)
    calls.pop("info", None)
    return result, calls


DEAD = 20_000


def queue_dead_waiters(pool: Pool, count: int) -> None:
    """``count`` waiters that queued (as checkout does) and then died without a tick."""
    pool.status()  # loads the library
    with pool.client.pipeline(transaction=False) as pipe:
        for i in range(count):
            op = protocol.checkout(
                pool.keys, ttl_ms=0, holder="dead:1", ticket=f"dead{i:05d}", alive_ms=10,
                nonce="ab",
            )  # fmt: skip
            pipe.execute_command(*op.command())
        pipe.execute()


def test_twenty_thousand_dead_waiters_cost_status_and_checkin_a_bounded_walk_and_are_trimmed(
    make_pool: Any, r: redis.Redis
) -> None:
    pool = make_pool(workers=1, lease_ttl=30)
    held = pool.checkout(block=False, auto_renew=False)
    queue_dead_waiters(pool, DEAD)
    k = pool.keys
    wait_for(lambda: r.zcount(k.waiters, "-inf", int(r.time()[0]) * 1000 - 50) == DEAD,
             message="the waiters to die")  # fmt: skip

    got: list[Lease] = []
    live = threading.Thread(target=lambda: got.append(pool.checkout(timeout=20)), daemon=True)
    live.start()  # a live waiter behind all the dead ones
    wait_for(lambda: pool.status().waiting == 1, message="the live waiter to queue")

    status, calls = commands_run(r, pool.status)
    assert status.waiting == 1 and sum(calls.values()) < 30, calls
    print(f"\n[waiters] status() with {DEAD} dead waiters: {sum(calls.values())} commands")

    returned, calls = commands_run(r, held.checkin)
    assert returned is True
    assert calls.get("lpop", 0) <= 64, f"checkin walked {calls.get('lpop')} tickets"
    print(f"[waiters] checkin: {sum(calls.values())} commands, {calls.get('lpop')} LPOPs")
    assert r.llen(k.waitq) > DEAD - 64  # the rest is the sweep's
    assert not got, "the live waiter was reached without a sweep"

    _, calls = commands_run(r, pool.reclaim_expired)
    print(f"[waiters] sweep: {calls.get('fcall')} reclaim calls, {sum(calls.values())} commands")
    live.join(10)
    assert got and got[0].worker_id == held.worker_id
    assert r.llen(k.waitq) == 0 and r.zcard(k.waiters) == 0
    assert got[0].checkin() is True
    assert check_pool(pool) == []


@pytest.mark.parametrize("n", [3])
def test_waiters_behind_dead_ones_are_still_served_in_arrival_order(
    make_pool: Any, r: redis.Redis, n: int
) -> None:
    pool = make_pool(workers=1, lease_ttl=30)
    held = pool.checkout(block=False, auto_renew=False)
    got: list[tuple[int, Lease]] = []
    threads = []
    for i in range(n):
        queue_dead_waiters(pool, 100)
        thread = threading.Thread(target=lambda i=i: got.append((i, pool.checkout(timeout=20))),
                                  daemon=True)  # fmt: skip
        thread.start()
        threads.append(thread)
        wait_for(lambda i=i: pool.status().waiting == i + 1, message="a waiter to queue")
    time.sleep(0.05)  # the dead waiters' 10 ms of life pass
    held.checkin()
    for i in range(n):
        pool.reclaim_expired()
        wait_for(lambda i=i: len(got) == i + 1, timeout=10, message=f"waiter {i} served")
        assert got[-1][0] == i
        got[-1][1].checkin()
    for thread in threads:
        thread.join(5)
