"""The pool's contract, kept by both APIs: each test runs on the sync and the asyncio Pool.

Workers are registered through a sync admin pool (``make_pool``); the API
under test (``api``, see ``apis.py``) does the checkouts. Every test also runs
on both server kinds.
"""

from __future__ import annotations

import asyncio
import ctypes
import random
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from apis import APIS, AioApi, Api, SyncApi
from helpers import wait_for

from redispool import CheckoutTimeout, LeaseLost, Pool, PoolCorrupted, PoolError, PoolFull
from redispool.keys import PoolKeys

MakePool = Callable[..., Pool]


@pytest.fixture(params=sorted(APIS))
def api(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Api]:
    made = APIS[request.param](redis_url)
    try:
        yield made
    finally:
        made.close()


def _settled(admin: Pool, size: int) -> bool:
    status = admin.status()
    return (status.idle, status.busy, status.waiting) == (size, 0, 0)


def test_checkout_until_full_then_checkin_frees_one(api: Api, make_pool: MakePool) -> None:
    make_pool(workers=3)
    pool = api.pool()
    leases = [api.checkout(pool, block=False) for _ in range(3)]
    assert sorted(lease.worker_id for lease in leases) == ["w1", "w2", "w3"]
    with pytest.raises(PoolFull):
        api.checkout(pool, block=False)
    assert api.checkin(leases[0]) is True
    assert api.checkout(pool, block=False).worker_id == leases[0].worker_id
    assert api.status(pool).idle == 0


def test_a_waiter_that_times_out_leaves_nothing_behind(
    api: Api, make_pool: MakePool, r: redis.Redis
) -> None:
    admin = make_pool(workers=1)
    pool = api.pool()
    held = api.checkout(pool)
    started = time.monotonic()
    with pytest.raises(CheckoutTimeout):
        api.checkout(pool, timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.5
    keys = PoolKeys("p")
    wait_for(lambda: r.zcard(keys.waiters) == 0 and r.llen(keys.waitq) == 0, timeout=5,
             message="the waiter to leave the queue")  # fmt: skip
    assert [k for k in r.keys(keys.prefix + "wake:*") if b"bell" not in k] == []
    assert api.checkin(held) is True
    assert admin.status().idle == 1


def test_waiters_are_served_in_arrival_order(api: Api, make_pool: MakePool) -> None:
    admin = make_pool(workers=1)
    pool = api.pool()
    held = api.checkout(pool)
    waiting = []
    for n in range(5):
        waiting.append(api.in_background(lambda: pool.checkout(timeout=20)))
        wait_for(lambda n=n: admin.status().waiting == n + 1, message=f"waiter {n} queued")
    api.checkin(held)
    for n, future in enumerate(waiting):
        lease = future.result(10)
        assert not any(later.done() for later in waiting[n + 1 :]), f"served after waiter {n}"
        api.checkin(lease)
    assert _settled(admin, 1)


def test_a_stale_lease_checks_in_false_and_leaves_the_new_holder_alone(
    api: Api, make_pool: MakePool
) -> None:
    make_pool(workers=1)
    pool = api.pool(lease_ttl=0.2)
    stale = api.checkout(pool, auto_renew=False)
    fresh = api.checkout(pool, timeout=5, auto_renew=False)  # served once the stale one ends
    assert fresh.worker_id == stale.worker_id and fresh.token > stale.token
    assert api.checkin(stale) is False
    assert stale.lost.is_set()
    with pytest.raises(LeaseLost):
        api.renew(stale)
    assert api.status(pool).busy == 1
    api.renew(fresh)
    assert api.checkin(fresh) is True


def test_background_renewal_keeps_a_lease_past_its_ttl(api: Api, make_pool: MakePool) -> None:
    make_pool(workers=1)
    pool = api.pool(lease_ttl=0.6)  # as test_pool's: 0.3 s was lost under load
    lease = api.checkout(pool)
    time.sleep(2.0)  # more than three TTLs: only renewal keeps it
    assert not lease.lost.is_set()
    with pytest.raises(PoolFull):
        api.checkout(pool, block=False)
    assert api.checkin(lease) is True


def test_a_lease_taken_away_is_marked_lost_by_the_renewer(
    api: Api, make_pool: MakePool, r: redis.Redis
) -> None:
    make_pool(workers=1)
    pool = api.pool(lease_ttl=0.3)
    lease = api.checkout(pool)
    r.delete(PoolKeys("p").lease(lease.worker_id))  # as if it had expired during a pause
    wait_for(lease.lost.is_set, timeout=3, message="the renewer to mark the lease lost")
    assert api.checkin(lease) is False


def test_many_short_timeouts_never_leak_a_worker(api: Api, make_pool: MakePool) -> None:
    """poolboy#64: a worker handed to a caller that had just given up stayed out forever."""
    admin = make_pool(workers=2, lease_ttl=60)  # a leaked worker would stay out a minute
    pool = api.pool()
    holders: dict[str, int] = {}
    overlaps: list[str] = []
    cycles = [0]

    def taken(lease: object) -> None:
        wid = lease.worker_id  # type: ignore[attr-defined]
        if wid in holders:
            overlaps.append(wid)
        holders[wid] = 1
        cycles[0] += 1

    if isinstance(api, SyncApi):
        _churn_threads(pool, taken, holders)
    else:
        api.run(_churn_tasks(pool, taken, holders))
    assert overlaps == []
    assert cycles[0] > 50
    wait_for(lambda: _settled(admin, 2), timeout=5, message="every worker idle")


def _churn_threads(pool: Pool, taken: Callable[[object], None], holders: dict[str, int]) -> None:
    stop = time.monotonic() + 3
    lock = threading.Lock()

    def churn() -> None:
        while time.monotonic() < stop:
            try:
                lease = pool.checkout(timeout=0.005)
            except CheckoutTimeout:
                continue
            with lock:
                taken(lease)
                del holders[lease.worker_id]
            lease.checkin()

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)


async def _churn_tasks(pool: object, taken: Callable[[object], None],
                       holders: dict[str, int]) -> None:  # fmt: skip
    stop = time.monotonic() + 3

    async def churn() -> None:
        while time.monotonic() < stop:
            try:
                lease = await pool.checkout(timeout=0.005)  # type: ignore[attr-defined]
            except CheckoutTimeout:
                continue
            taken(lease)
            await asyncio.sleep(0)
            del holders[lease.worker_id]
            await lease.checkin()

    await asyncio.gather(*(churn() for _ in range(32)))


class Cancelled(BaseException):
    """Raised into a sync checkout's thread at a random moment (its 'cancellation')."""


def _raise_in(thread: threading.Thread) -> None:
    ident = ctypes.c_ulong(thread.ident or 0)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ident, ctypes.py_object(Cancelled))


TRIES = 1000


def test_checkouts_cancelled_at_random_moments_leave_every_worker_idle(
    api: Api, make_pool: MakePool
) -> None:
    """1,000 checkouts, each cancelled (asyncio) or interrupted (a thread) at a random
    moment, some while waiting, some while being handed a worker: every worker ends idle.

    The TTL is a minute, so a worker that leaked would stay out: only the sync
    API's documented window (an interrupt inside redis-py's reading of a
    handoff reply) can lose one, and then only until its TTL, so it gets a
    short TTL and the wait for the end allows it."""
    sync = isinstance(api, SyncApi)
    admin = make_pool(workers=2, lease_ttl=2 if sync else 60)
    pool = api.pool()
    rng = random.Random(12)
    outcomes = _cancel_threads(pool, rng) if sync else api.run(_cancel_tasks(pool, rng), 300)
    assert outcomes["cancelled"] > TRIES // 10 and outcomes["leased"] > TRIES // 10, outcomes
    wait_for(lambda: _settled(admin, 2), timeout=10 if sync else 3,
             message=f"every worker idle after {outcomes}")  # fmt: skip


def _attempt_in_thread(
    pool: Pool, outcomes: dict[str, int]
) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def attempt() -> None:
        try:
            lease = pool.checkout(timeout=5)
            outcomes["leased"] += 1
            lease.checkin()
        except Cancelled:
            outcomes["cancelled"] += 1
        except PoolError:
            pass
        finally:
            done.set()

    thread = threading.Thread(target=attempt)
    thread.start()
    return thread, done


def _cancel_threads(pool: Pool, rng: random.Random) -> dict[str, int]:
    outcomes = {"cancelled": 0, "leased": 0}
    held = [pool.checkout(), pool.checkout()]  # both busy: each checkout queues
    for _ in range(TRIES):
        hand_at, cancel_at = rng.uniform(-0.002, 0.004), rng.uniform(0, 0.003)
        if hand_at < 0:  # a worker idle: the checkout's own script grants it
            held.pop().checkin()
        thread, done = _attempt_in_thread(pool, outcomes)
        started = time.monotonic()
        for at, act in sorted([(hand_at, "hand"), (cancel_at, "cancel")]):
            if at < 0:
                continue
            time.sleep(max(0.0, started + at - time.monotonic()))
            if act == "hand":
                held.pop().checkin()  # to the waiter, if it is still there
            elif not done.is_set():
                _raise_in(thread)
        thread.join(10)
        held.append(pool.checkout(timeout=10))
    for lease in held:
        lease.checkin()
    return outcomes


async def _cancel_tasks(pool: object, rng: random.Random) -> dict[str, int]:
    outcomes = {"cancelled": 0, "leased": 0}
    held = [await pool.checkout(), await pool.checkout()]  # type: ignore[attr-defined]

    async def attempt() -> None:
        lease = await pool.checkout(timeout=5)  # type: ignore[attr-defined]
        outcomes["leased"] += 1
        await lease.checkin()

    for _ in range(TRIES):
        hand_at, cancel_at = rng.uniform(-0.002, 0.004), rng.uniform(0, 0.003)
        if hand_at < 0:  # a worker idle: the checkout's own script grants it
            await held.pop().checkin()
        task = asyncio.get_running_loop().create_task(attempt())
        started = time.monotonic()
        for at, act in sorted([(hand_at, "hand"), (cancel_at, "cancel")]):
            if at < 0:
                continue
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            if act == "hand":
                await held.pop().checkin()  # to the waiter, if it is still there
            else:
                task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            outcomes["cancelled"] += 1
        held.append(await pool.checkout(timeout=10))  # type: ignore[attr-defined]
    for lease in held:
        await lease.checkin()
    return outcomes


def test_the_aio_api_is_the_one_running_here(api: Api) -> None:
    """The harness really swaps the API (a test of the test)."""
    pool = api.pool()
    assert type(pool).__module__ == ("redispool.aio.pool" if isinstance(api, AioApi)
                                     else "redispool.pool")  # fmt: skip


def test_a_corrupted_key_is_a_clear_error_and_loses_nothing(
    api: Api, make_pool: MakePool, r: redis.Redis
) -> None:
    admin = make_pool(workers=2)
    pool = api.pool()
    keys = PoolKeys("p")
    saved = r.lrange(keys.idle, 0, -1)
    r.delete(keys.idle)
    r.set(keys.idle, "junk")
    with pytest.raises(PoolCorrupted, match="'p'"):
        api.checkout(pool, block=False)
    r.delete(keys.idle)
    r.rpush(keys.idle, *saved)
    assert admin.status().idle == 2


def test_a_waiter_whose_queue_is_corrupted_gets_a_clear_error(
    api: Api, make_pool: MakePool, r: redis.Redis
) -> None:
    admin = make_pool(workers=1)
    pool = api.pool(lease_ttl=0.3)  # a waiter ticks every 0.1 s
    held = api.checkout(pool)
    waiter = api.in_background(lambda: pool.checkout(timeout=10))
    wait_for(lambda: admin.status().waiting == 1, message="the waiter to queue")
    keys = PoolKeys("p")
    r.delete(keys.waiters)
    r.set(keys.waiters, "junk")
    with pytest.raises(PoolCorrupted, match="'p'"):
        waiter.result(10)
    r.delete(keys.waiters)  # the junk goes (the waiter that gave up is not put back)
    assert api.checkin(held) is True
    wait_for(lambda: _settled(admin, 1), timeout=5, message="the worker idle again")
