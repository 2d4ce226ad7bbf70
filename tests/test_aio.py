"""What only the asyncio API has: cancellation, shared connections, guard(), aclose().

Each test is a coroutine run with ``asyncio.run`` (no plugin needed), on both
server kinds; workers are registered through a sync admin pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio
import test_security
from helpers import StartServer

from redispool import LeaseLost, Pool, PoolAccessDenied, PoolUnavailable, aio
from redispool.acl import acl_setuser
from redispool.keys import PoolKeys

MakePool = Callable[..., Pool]
T = TypeVar("T")
tls_server = test_security.tls_server  # the fixture: a Redis server with TLS


def run(work: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(work(), timeout)

    return asyncio.run(bounded())


def _clients(r: redis.Redis) -> int:
    return len(r.client_list())


def test_a_thousand_waiting_tasks_share_a_few_connections(
    make_pool: MakePool, redis_url: str, r: redis.Redis
) -> None:
    admin = make_pool(workers=10)

    async def scenario() -> tuple[int, int, list[int]]:
        async with aio.Pool("p", url=redis_url) as pool:
            held = [await pool.checkout() for _ in range(10)]
            before = _clients(r)
            tasks = [asyncio.create_task(pool.checkout(timeout=30)) for _ in range(1000)]
            while (await pool.status()).waiting < 1000:
                await asyncio.sleep(0.05)
            during = _clients(r) - before
            for lease in held:
                await lease.checkin()
            tokens = []
            for task in tasks:  # each hands its worker on: all 1,000 get one in turn
                lease = await task
                tokens.append(lease.token)
                await lease.checkin()
            opened = pool.connections_opened
        return opened, during, tokens

    opened, during, tokens = run(scenario, 120)
    assert opened <= 3, f"{opened} connections for 1,000 waiting tasks"
    assert during <= 1  # the blocked one, made once the first task waited
    assert len(set(tokens)) == 1000
    assert admin.status().idle == 10


def test_a_cancelled_command_never_hands_its_reply_to_the_next(redis_url: str) -> None:
    """redis-py#2624: a command cancelled after it was sent left its reply on the
    connection, and the next command read it. Here each reply is read by the
    connection, so every call gets its own, whichever were cancelled."""

    async def scenario() -> list[str]:
        async with aio.Pool("p", url=redis_url, connections=1) as pool:
            wire = pool._caller.wire  # the raw wire, to send ECHO
            wrong = []
            for n in range(300):
                task = asyncio.create_task(wire.call("ECHO", f"c{n}"))
                await asyncio.sleep(0) if n % 3 else None
                task.cancel()
                reply = await wire.call("ECHO", f"k{n}")
                if reply != f"k{n}".encode():
                    wrong.append(reply)
        return wrong

    assert run(scenario) == []


def test_guard_cancels_its_body_when_the_lease_is_lost(
    make_pool: MakePool, redis_url: str, r: redis.Redis
) -> None:
    make_pool(workers=1)

    async def scenario() -> tuple[float, bool]:
        async with aio.Pool("p", url=redis_url, lease_ttl=0.3) as pool:
            lease = await pool.checkout()
            finished = False
            started = time.monotonic()
            with pytest.raises(LeaseLost):
                async with lease.guard():
                    r.delete(PoolKeys("p").lease(lease.worker_id))  # taken away under it
                    await asyncio.sleep(10)
                    finished = True
            took = time.monotonic() - started
            assert lease.lost.is_set()
        return took, finished

    took, finished = run(scenario)
    assert not finished and took < 2.0  # the renewer finds it within a third of the TTL


def test_guard_lets_a_cancellation_from_outside_through_and_refuses_a_lost_lease(
    make_pool: MakePool, redis_url: str
) -> None:
    make_pool(workers=1)

    async def scenario() -> None:
        async with aio.Pool("p", url=redis_url, lease_ttl=0.3) as pool:
            lease = await pool.checkout()

            async def body() -> None:
                async with lease.guard():
                    await asyncio.sleep(10)

            task = asyncio.create_task(body())
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert lease.active
            assert await lease.checkin() is True
            lease.end()
            with pytest.raises(LeaseLost):
                async with lease.guard():
                    pytest.fail("entered a guard of a lost lease")

    run(scenario)


def test_a_guarded_body_that_finishes_keeps_its_result(
    make_pool: MakePool, redis_url: str
) -> None:
    make_pool(workers=1)

    async def scenario() -> int:
        pool = aio.Pool("p", url=redis_url, lease_ttl=0.6)
        async with pool, pool.lease() as lease, lease.guard():
            await asyncio.sleep(1.5)  # renewed meanwhile, several times
            value = 42
        return value

    assert run(scenario) == 42


def test_aclose_fails_waiting_checkouts_and_leaves_the_queue(
    make_pool: MakePool, redis_url: str, r: redis.Redis
) -> None:
    admin = make_pool(workers=1)

    async def scenario() -> list[Any]:
        pool = aio.Pool("p", url=redis_url)
        other = aio.Pool("p", url=redis_url)
        held = await other.checkout()
        tasks = [asyncio.create_task(pool.checkout()) for _ in range(5)]
        while (await other.status()).waiting < 5:
            await asyncio.sleep(0.02)
        await pool.aclose()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await held.checkin()
        await other.aclose()
        return results

    results = run(scenario)
    assert all(isinstance(x, PoolUnavailable) for x in results), results
    keys = PoolKeys("p")
    assert r.zcard(keys.waiters) == 0
    assert admin.status().idle == 1


def test_a_waiter_gets_a_clear_error_when_redis_dies(fresh_server: StartServer) -> None:
    srv = fresh_server()
    admin = Pool("p", url=srv.url)
    admin.add_worker("w1")

    async def scenario() -> tuple[BaseException | None, float]:
        async with aio.Pool("p", url=srv.url) as pool:
            await pool.checkout(auto_renew=False)
            waiter = asyncio.create_task(pool.checkout(timeout=60))
            while (await pool.status()).waiting < 1:
                await asyncio.sleep(0.02)
            srv.kill()
            killed = time.monotonic()
            error = None
            try:
                await waiter
            except BaseException as exc:  # the test looks at it
                error = exc
            took = time.monotonic() - killed
        return error, took

    error, took = run(scenario)
    assert isinstance(error, PoolUnavailable), error
    assert took < 15
    admin.close()


def test_a_pool_user_limited_by_the_generated_acl_waits_and_is_served(
    make_pool: MakePool, redis_url: str, r: redis.Redis
) -> None:
    """The asyncio wait (BLPOP on many wake keys, its bell) needs no right beyond the rules."""
    admin = make_pool(workers=1)
    admin.checkout(block=False).checkin()  # the library is loaded (an operator's step)
    r.execute_command(*acl_setuser("app", "s3cret", ["p"]).split())
    url = redis_url.replace("redis://", "redis://app:s3cret@")

    async def scenario() -> tuple[int, int]:
        async with aio.Pool("p", url=url) as pool:
            held = await pool.checkout()
            waiter = asyncio.create_task(pool.checkout(timeout=10))
            while (await pool.status()).waiting < 1:
                await asyncio.sleep(0.02)
            await held.checkin()
            lease = await waiter
            await lease.checkin()
            await pool.workers()
            await pool.leases()
        return held.token, lease.token

    first, second = run(scenario)
    assert second > first

    async def outsider() -> None:
        async with aio.Pool("q", url=url) as pool:  # a pool this user has no rights on
            with pytest.raises(PoolAccessDenied):
                await pool.checkout(block=False)

    run(outsider)


def test_a_pool_made_from_a_redis_asyncio_client_leaves_it_open(
    make_pool: MakePool, redis_url: str
) -> None:
    make_pool(workers=1)

    async def scenario() -> bytes:
        client = redis.asyncio.Redis.from_url(redis_url)
        async with aio.Pool("p", redis=client) as pool, pool.lease(timeout=1) as lease:
            assert lease.worker_id == "w1"
        pong: bytes = await client.echo("still open")
        await client.aclose()
        return pong

    assert run(scenario) == b"still open"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"block": False, "timeout": -1}, "negative"),
        ({"timeout": "5"}, "number"),
        ({"timeout": float("nan")}, "negative"),
    ],
)
def test_bad_checkout_arguments_are_refused_before_redis(
    kwargs: dict[str, Any], match: str
) -> None:
    async def scenario() -> None:
        pool = aio.Pool("p", url="redis://127.0.0.1:1/0")  # nothing listens: never asked
        with pytest.raises(ValueError, match=match):
            await pool.checkout(**kwargs)
        await pool.aclose()

    run(scenario)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one"),
        ({"url": "redis://h", "redis": object()}, "exactly one"),
        ({"url": "http://h"}, "scheme"),
        ({"url": "redis://h", "lease_ttl": 0}, "lease_ttl"),
        ({"url": "redis://h", "connections": 0}, "connections"),
    ],
)
def test_bad_pool_arguments_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        aio.Pool("p", **kwargs)


def test_unreachable_redis_raises_promptly() -> None:
    async def scenario() -> float:
        async with aio.Pool("p", url="redis://127.0.0.1:1/0") as pool:
            started = time.monotonic()
            with pytest.raises(PoolUnavailable):
                await pool.checkout(block=False)
        return time.monotonic() - started

    assert run(scenario) < 5


def test_a_lease_is_renewed_by_one_round_trip_for_all(
    make_pool: MakePool, redis_url: str, r: redis.Redis
) -> None:
    make_pool(workers=40)

    def calls() -> tuple[int, int]:
        stats = r.info("commandstats")
        return (stats.get("cmdstat_fcall", {}).get("calls", 0),
                stats.get("cmdstat_pexpire", {}).get("calls", 0))  # fmt: skip

    async def scenario() -> tuple[int, int]:
        async with aio.Pool("p", url=redis_url, lease_ttl=0.3) as pool:
            leases = [await pool.checkout() for _ in range(40)]
            fcalls, pexpires = calls()
            await asyncio.sleep(1.0)
            after = calls()
            assert all(lease.active for lease in leases)
            for lease in leases:
                await lease.checkin()
        return after[0] - fcalls, after[1] - pexpires

    fcalls, pexpires = run(scenario)
    assert pexpires >= 40 * 3  # every lease renewed about every 0.1 s
    assert fcalls * 40 <= pexpires + 40, (fcalls, pexpires)  # 40 renewals per call


def test_the_waiting_room_wakes_a_waiter_at_a_dead_holders_lease_end(
    make_pool: MakePool, redis_url: str
) -> None:
    """No Reaper: the room's sweep at the earliest lease deadline returns the worker."""
    make_pool(workers=1)
    dead = make_pool(lease_ttl=0.5)
    abandoned = dead.checkout(auto_renew=False)

    async def scenario() -> tuple[str, float]:
        async with aio.Pool("p", url=redis_url) as pool:
            started = time.monotonic()
            lease = await pool.checkout(timeout=5)
            waited = time.monotonic() - started
            await lease.checkin()
        return lease.worker_id, waited

    worker, waited = run(scenario)
    assert worker == abandoned.worker_id
    assert 0.3 < waited < 1.0


def test_a_closed_pool_leaves_no_wake_or_bell_key_behind(
    make_pool: MakePool, redis_url: str, r: redis.Redis
) -> None:
    make_pool(workers=1)

    async def scenario() -> list[Any]:
        pool = aio.Pool("p", url=redis_url)
        held = await pool.checkout()
        waiter = asyncio.create_task(pool.checkout(timeout=5))
        while (await pool.status()).waiting < 1:
            await asyncio.sleep(0.02)
        await held.checkin()
        await (await waiter).checkin()
        in_use = [asyncio.create_task(pool.checkout(timeout=5)) for _ in range(3)]
        await asyncio.sleep(0.1)
        await pool.aclose()  # rings the bell to end the room's wait
        return await asyncio.gather(*in_use, return_exceptions=True)

    results = run(scenario)
    assert sum(isinstance(x, PoolUnavailable) for x in results) >= 2
    assert r.keys(PoolKeys("p").prefix + "wake:*") == []


def test_a_handoff_to_a_ticket_the_room_does_not_watch_comes_with_its_tick(
    make_pool: MakePool, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two checkouts reordered on their way to Redis: the room watches the older
    local ticket, Redis serves the other first. Its handoff waits in its wake key
    and reaches it at its next keep-alive tick, a third of the TTL later."""
    from redispool import protocol
    from redispool.aio import waiting

    monkeypatch.setattr(waiting, "WINDOW", 1)
    monkeypatch.setattr(waiting, "SPARES", 0)
    make_pool(workers=1)

    async def scenario() -> tuple[str, float, bool]:
        async with aio.Pool("p", url=redis_url, lease_ttl=0.6) as pool:
            held = await pool.checkout()
            room, caller = pool._room, pool._caller
            older = room.reserve("aa" * 16, "test:1")
            younger = room.reserve("bb" * 16, "test:1")
            futures = {}
            for ticket in (younger, older):  # Redis queues the younger first
                sent = time.monotonic()
                queued = await caller.run(protocol.checkout(
                    pool.keys, ttl_ms=600, holder="test:1", ticket=ticket.id,
                    alive_ms=600, nonce=ticket.nonce,
                ))  # fmt: skip
                futures[ticket.id] = room.wait(ticket, queued, sent, None)
            await asyncio.sleep(0.05)
            assert younger.key not in room._watched and older.key in room._watched
            handed = time.monotonic()
            await held.checkin()  # to the younger ticket, which the room does not watch
            claim = await asyncio.wait_for(futures[younger.id], 3)
            waited = time.monotonic() - handed
            room.abandon(older)
            return claim.result.worker_id, waited, futures[older.id].done()

    worker, waited, older_done = run(scenario)
    assert worker == "w1"
    assert waited < 1.0  # its tick: a third of 0.6 s, plus the load's slack
    assert not older_done


def test_settings_workers_and_sweeps_through_the_aio_pool_are_the_sync_pools(
    make_pool: MakePool, redis_url: str
) -> None:
    admin = make_pool()

    async def scenario() -> tuple[Any, ...]:
        async with aio.Pool("p", url=redis_url) as pool:
            made = await pool.configure(lease_ttl=60, strategy="fifo")
            read = await pool.settings()
            new = await pool.add_worker("a1", host="alpha", pid=7)
            again = await pool.add_worker("a1", host="alpha", pid=7)
            await pool.add_worker("a2")
            short = aio.Pool("p", url=redis_url, lease_ttl=0.05)
            async with short:
                await short.checkout(auto_renew=False)  # left to expire
                await asyncio.sleep(0.1)
            returned = await pool.reclaim_expired()
            gone = await pool.remove_worker("a2")
            workers = [(w.id, w.host, w.pid) for w in await pool.workers()]
            return made, read, new, again, returned, gone, workers

    made, read, new, again, returned, gone, workers = run(scenario)
    assert made == read == admin.settings()
    assert (read.lease_ttl, read.strategy) == (60.0, "fifo")
    assert (new, again, returned, gone) == (True, False, 1, True)
    assert workers == [("a1", "alpha", 7)]


def test_an_aio_pool_works_over_tls(tls_server: tuple[Any, int, Any]) -> None:
    """Its connections take the TLS transport over from redis-py once connected."""
    _, port, cert = tls_server
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    admin = Pool("p", url=url)
    admin.add_worker("w1")

    async def scenario() -> tuple[int, int]:
        async with aio.Pool("p", url=url) as pool:
            held = await pool.checkout()
            waiter = asyncio.create_task(pool.checkout(timeout=5))
            while (await pool.status()).waiting < 1:
                await asyncio.sleep(0.02)
            await held.checkin()
            lease = await waiter
            await lease.checkin()
            return held.token, lease.token

    first, second = run(scenario)
    assert second > first
    admin.close()
