"""Blocking checkout: waiters are served first come, first served, and never leak a worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis
from helpers import StartServer, in_thread, wait_for

from redispool import CheckoutTimeout, Lease, Pool, PoolUnavailable
from redispool.keys import PoolKeys

MakePool = Callable[..., Pool]


def test_checkin_hands_the_worker_straight_to_a_waiter(make_pool: MakePool) -> None:
    pool = make_pool(workers=1)
    held = pool.checkout()
    got: list[object] = []
    thread = in_thread(lambda: pool.checkout(timeout=5), got)
    wait_for(lambda: pool.status().waiting == 1, message="the waiter to queue")
    held.checkin()
    thread.join(5)
    (lease,) = got
    assert isinstance(lease, Lease) and lease.worker_id == held.worker_id
    assert lease.token > held.token
    assert pool.status().idle == 0 and pool.status().waiting == 0
    lease.checkin()


def test_waiters_are_served_in_arrival_order(make_pool: MakePool) -> None:
    pool = make_pool(workers=1)
    held = pool.checkout()
    order: list[int] = []
    threads = []
    for n in range(5):

        def wait(n: int = n) -> Lease:
            lease = pool.checkout(timeout=10)
            order.append(n)
            lease.checkin()
            return lease

        threads.append(in_thread(wait, []))
        wait_for(lambda n=n: pool.status().waiting == n + 1, message=f"waiter {n} queued")
    held.checkin()
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4]


def test_a_waiter_that_times_out_leaves_nothing_behind(make_pool: MakePool, r: redis.Redis) -> None:
    pool = make_pool(workers=1)
    held = pool.checkout()
    started = time.monotonic()
    with pytest.raises(CheckoutTimeout):
        pool.checkout(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.0
    keys = PoolKeys("p")
    assert r.llen(keys.waitq) == 0 and r.zcard(keys.waiters) == 0
    assert not r.keys(keys.prefix + "wake:*")
    held.checkin()
    assert pool.status().idle == 1


def test_many_short_timeouts_never_leak_a_worker(make_pool: MakePool) -> None:
    """poolboy#64: a worker handed to a caller that had just given up stayed out forever."""
    pool = make_pool(workers=2)
    stop = time.monotonic() + 3
    holders: dict[str, int] = {}
    overlaps: list[str] = []
    lock = threading.Lock()
    cycles = [0]

    def churn() -> None:
        while time.monotonic() < stop:
            try:
                lease = pool.checkout(timeout=0.005)
            except CheckoutTimeout:
                continue
            with lock:
                if lease.worker_id in holders:
                    overlaps.append(lease.worker_id)
                holders[lease.worker_id] = lease.token
                cycles[0] += 1
            with lock:
                del holders[lease.worker_id]
            lease.checkin()

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert overlaps == []
    assert cycles[0] > 50
    status = pool.status()
    assert (status.idle, status.busy, status.waiting) == (2, 0, 0)


def test_a_blocked_client_gets_a_dead_holders_worker_without_any_reaper(
    make_pool: MakePool,
) -> None:
    pool = make_pool(workers=1)
    dead = make_pool(lease_ttl=0.5)  # a holder that never renews nor checks in
    abandoned = dead.checkout(auto_renew=False)
    started = time.monotonic()
    lease = pool.checkout(timeout=5)
    waited = time.monotonic() - started
    assert lease.worker_id == abandoned.worker_id
    assert 0.3 < waited < 2.0  # about the TTL; the benchmark measures how close
    lease.checkin()


def test_interrupted_waiter_leaves_the_queue(make_pool: MakePool, r: redis.Redis) -> None:
    pool = make_pool(workers=1)
    held = pool.checkout()
    keys = PoolKeys("p")
    failing = make_pool()
    real_peek = failing.sender.wire.peek_wait

    def interrupted(key: str, timeout: float) -> object:
        real_peek(key, min(timeout, 0.05))
        raise KeyboardInterrupt

    failing.sender.wire.peek_wait = interrupted  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        failing.checkout(timeout=5)
    assert r.llen(keys.waitq) == 0 and r.zcard(keys.waiters) == 0
    held.checkin()
    assert pool.status().idle == 1


def test_a_worker_handed_to_a_dead_waiter_comes_back_within_one_ttl(
    make_pool: MakePool, r: redis.Redis
) -> None:
    pool = make_pool(workers=1, lease_ttl=0.4)
    held = pool.checkout()
    keys = PoolKeys("p")
    # A waiter that queued and then died: its ticket is in the queue, alive for a while.
    r.rpush(keys.waitq, "deadbeef|400|ab12|ghost:1")
    server_ms = int(r.time()[0]) * 1000
    r.zadd(keys.waiters, {"deadbeef": server_ms + 60_000})
    held.checkin()  # handed to the dead waiter
    assert pool.status().busy == 1
    lease = pool.checkout(timeout=3)
    assert lease.worker_id == held.worker_id
    lease.checkin()


def test_new_worker_goes_to_the_oldest_waiter(make_pool: MakePool) -> None:
    pool = make_pool()
    got: list[object] = []
    thread = in_thread(lambda: pool.checkout(timeout=5), got)
    wait_for(lambda: pool.status().waiting == 1, message="the waiter to queue")
    pool.add_worker("late")
    thread.join(5)
    (lease,) = got
    assert isinstance(lease, Lease) and lease.worker_id == "late"


def test_a_waiter_gets_a_clear_error_when_redis_dies(fresh_server: StartServer) -> None:
    srv = fresh_server()
    pool = Pool("p", url=srv.url)
    pool.add_worker("w1")
    held = pool.checkout(auto_renew=False)
    got: list[object] = []
    thread = in_thread(lambda: pool.checkout(timeout=30), got)
    wait_for(lambda: pool.status().waiting == 1, message="the waiter to queue")
    srv.kill()
    killed = time.monotonic()
    thread.join(10)
    assert not thread.is_alive(), "the waiter hung after Redis died"
    assert time.monotonic() - killed < 10
    (error,) = got
    assert isinstance(error, PoolUnavailable)
    del held
    pool.close()


def test_scripts_are_loaded_again_after_a_restart(fresh_server: StartServer) -> None:
    srv = fresh_server()
    pool = Pool("p", url=srv.url)
    pool.add_worker("w1")
    pool.checkout(block=False).checkin()
    srv.restart()  # no persistence: the scripts and the pool are gone
    pool.add_worker("w1")
    assert pool.checkout(block=False).worker_id == "w1"
    pool.close()


def test_a_checkin_that_could_not_reach_redis_can_be_tried_again(
    fresh_server: StartServer,
) -> None:
    # The lease must survive the crash: with appendfsync everysec (the default) Redis
    # postpones its AOF write while the last fsync runs, replies anyway, and a SIGKILL
    # then loses the checkout (CI: the retry answered False, the lease never written).
    srv = fresh_server(appendonly=True, extra_args=("--appendfsync", "always"))
    pool = Pool("p", url=srv.url)
    pool.add_worker("w1")
    lease = pool.checkout(auto_renew=False)
    srv.kill()
    with pytest.raises(PoolUnavailable):
        lease.checkin()
    srv.restart()
    assert lease.checkin() is True  # the retry reached Redis and returned the worker
    assert pool.status().idle == 1
    pool.close()


def test_peek_wait_with_tiny_timeouts_never_hangs(make_pool: MakePool) -> None:
    """A wait its own clock ends at once must not hang, however often."""
    pool = make_pool()
    slowest = 0.0
    for _ in range(2000):
        started = time.monotonic()
        assert pool.sender.wire.peek_wait("redispool:{p}:nothing", 0.0) is None
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < 0.5, f"a peek_wait took {slowest:.2f} s"


def test_a_waiter_counts_as_alive_for_the_pools_ttl_between_its_ticks(
    make_pool: MakePool, r: redis.Redis
) -> None:
    admin = make_pool(workers=1)
    admin.configure(lease_ttl=60)
    held = admin.checkout()
    client = make_pool()  # no TTL of its own: the pool's 60 s
    got: list[object] = []
    thread = in_thread(lambda: client.checkout(), got)  # waits without limit
    wait_for(lambda: r.zcard(PoolKeys("p").waiters) == 1, message="the waiter to queue")
    alive_until = int(r.zrange(PoolKeys("p").waiters, 0, 0, withscores=True)[0][1])
    server_ms = int(r.time()[0]) * 1000
    assert alive_until - server_ms > 50_000  # the pool's 60 s (it ticks every 20 s)
    held.checkin()
    thread.join(5)
    assert isinstance(got[0], Lease)


def test_a_lease_checked_in_is_never_reported_lost_by_the_renewer(make_pool: MakePool) -> None:
    pool = make_pool(workers=1, lease_ttl=0.015)  # renewals every 5 ms, racing each checkin
    leases = []
    for _ in range(300):
        lease = pool.checkout()
        assert lease.checkin() is True
        leases.append(lease)
    time.sleep(0.05)  # let any renewal in flight come back
    assert not [lease for lease in leases if lease.lost.is_set()]


def test_a_wait_takes_nothing_from_the_wake_list_whenever_its_clock_ends(
    make_pool: MakePool, r: redis.Redis
) -> None:
    """The wait is a peek: a value pushed at the instant the client's timer ends the
    wait is still in the list afterwards, for the script that takes it."""
    pool = make_pool()
    key = PoolKeys("p").wake("t")
    r.rpush(key, "handoff")
    assert pool.sender.wire.peek_wait(key, 1.0) == b"handoff"
    for delay in (0.0, 0.001, 0.005, 0.01):
        r.delete(key)
        pusher = threading.Timer(delay, lambda: r.rpush(key, "handoff"))
        pusher.start()
        pool.sender.wire.peek_wait(key, delay)
        pusher.join()
        assert r.lrange(key, 0, -1) == [b"handoff"]
    assert len(pool.sender.wire) <= 1


def test_a_waiter_takes_its_handoff_without_a_claim_and_its_checkin_clears_it(
    make_pool: MakePool, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a handed worker cost the waiter a fourth call (cancel_wait, its claim) that
    # only deleted the handoff: the handoff now stays in the wake key, under the
    # lease's own TTL, until the lease's checkin deletes it
    pool = make_pool(workers=1, lease_ttl=30)
    held = pool.checkout(auto_renew=False)
    waiter = make_pool()
    sent: list[str] = []
    send = waiter.sender.send_acked

    def record(op: object) -> object:
        sent.append(op.script)  # type: ignore[attr-defined]
        return send(op)  # type: ignore[arg-type]

    monkeypatch.setattr(waiter.sender, "send_acked", record)
    results: list[object] = []
    thread = in_thread(lambda: waiter.checkout(timeout=5, auto_renew=False), results)
    wait_for(lambda: pool.status().waiting == 1, message="the waiter queued")
    assert held.checkin() is True  # handed over
    thread.join(5)
    (lease,) = results
    assert isinstance(lease, Lease), lease
    assert lease.worker_id == held.worker_id and "cancel_wait" not in sent
    wake = waiter.keys.wake(lease.wake_ticket)
    assert r.exists(wake) and 0 < r.pttl(wake) <= 30_000  # gone by itself with the lease
    assert pool.status().waiting == 0
    assert lease.checkin() is True
    assert not r.keys(waiter.keys.prefix + "wake:*")
    assert pool.status().idle == 1
