"""The hot paths check only what they write, and still lose nothing on junk.

To cost Redis fewer calls, checkout, checkin and a waiter's claim (cancel_wait)
read only the keys their path writes, and let the one write that could still
fail on a wrong type come first (a write that fails has changed nothing).
Each test here puts junk where such a first write or probe lands and checks
that the call is refused naming the key, that no key of the pool changed, and
that nothing handed over is lost; and that the shortcuts taken on the sound
path (no DEL of a lease key a handoff rewrites, a deadline left by a refused
checkout healed) leave the pool whole.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import pytest
import redis
from helpers import wait_for

from redispool import Pool, PoolCorrupted, protocol
from redispool.lease import Lease

MakePool = Callable[..., Pool]


def snapshot(r: redis.Redis, pool: Pool) -> dict[bytes, bytes | None]:
    """Every key of the pool and its serialized value (DUMP)."""
    return {key: r.dump(key) for key in sorted(r.scan_iter(match=pool.keys.prefix + "*"))}


def queue_waiter(pool: Pool, ticket: str) -> str:
    """Queue ``ticket`` as a waiter the way a blocking checkout does; its nonce."""
    nonce = os.urandom(16).hex()
    op = protocol.checkout(
        pool.keys, ttl_ms=0, holder="h:1", ticket=ticket, alive_ms=30_000, nonce=nonce
    )
    assert isinstance(pool.sender.send(op), protocol.Queued)
    return nonce


def claim(pool: Pool, ticket: str) -> protocol.Handoff | None:
    """A waiter's claim of its handoff, as a blocking checkout makes it (cancel_wait)."""
    return pool.sender.send(protocol.cancel_wait(pool.keys, ticket))


@pytest.mark.parametrize("junk_in", ["waiters", "wake"])
def test_a_claim_on_a_junk_key_is_refused_and_its_handoff_stays(
    junk_in: str, make_pool: MakePool, r: redis.Redis
) -> None:
    pool = make_pool(workers=1, lease_ttl=30.0)
    held = pool.checkout(block=False, auto_renew=False)
    queue_waiter(pool, "t1")
    assert held.checkin() is True  # handed to t1: the handoff sits in its wake key
    wake = pool.keys.wake("t1")
    handoff = r.lindex(wake, 0)
    assert handoff is not None
    key = pool.keys.waiters if junk_in == "waiters" else wake
    saved = r.dump(key) if r.exists(key) else None
    r.delete(key)
    r.hset(key, "junk", "1")
    before = snapshot(r, pool)

    with pytest.raises(PoolCorrupted) as caught:
        claim(pool, "t1")
    assert key in str(caught.value)
    assert snapshot(r, pool) == before, "a refused claim changed a key"

    r.delete(key)
    if saved is not None:
        r.restore(key, 0, saved)
    if junk_in == "wake":
        assert r.lindex(wake, 0) == handoff  # the handoff was never popped
    assert claim(pool, "t1") == protocol.Handoff.parse(handoff)
    assert not r.exists(wake)


def test_a_queueing_checkout_on_junk_waiters_is_refused_and_changes_nothing(
    make_pool: MakePool, r: redis.Redis
) -> None:
    pool = make_pool(workers=1, lease_ttl=30.0)
    held = pool.checkout(block=False, auto_renew=False)
    r.set(pool.keys.waiters, "junk")
    before = snapshot(r, pool)
    with pytest.raises(PoolCorrupted) as caught:
        pool.checkout(timeout=0.2, auto_renew=False)
    assert pool.keys.waiters in str(caught.value)
    assert snapshot(r, pool) == before, "the refused checkout queued itself"
    r.delete(pool.keys.waiters)
    assert held.checkin() is True
    assert pool.checkout(block=False, auto_renew=False).worker_id == "w1"


def test_a_worker_handed_to_a_waiter_is_held_under_the_waiters_lease(
    make_pool: MakePool, r: redis.Redis
) -> None:
    """The checkin that hands its worker over leaves the lease key to the new
    lease's SET (no DEL): the key holds the waiter's token and nonce, which
    renews and checks in; the old holder's proof no longer works."""
    pool = make_pool(workers=1, lease_ttl=30.0)
    first = pool.checkout(block=False, auto_renew=False)
    got: list[Lease] = []

    def wait_for_the_worker() -> None:
        got.append(pool.checkout(timeout=20, auto_renew=False))

    waiter = threading.Thread(target=wait_for_the_worker)
    waiter.start()
    wait_for(lambda: r.zcard(pool.keys.waiters) == 1, timeout=10.0, message="the waiter to queue")
    assert first.checkin() is True
    waiter.join(timeout=20)
    assert got, "the waiter was not handed the worker"
    second = got[0]
    assert second.worker_id == "w1" and second.token > first.token
    value = r.get(pool.keys.lease("w1"))
    assert value is not None
    assert value.decode().startswith(f"{second.token}|{second.nonce}|")
    assert 0 < r.pttl(pool.keys.lease("w1")) <= 30_000
    pool.renew(second)
    assert second.checkin() is True
    assert not r.exists(pool.keys.lease("w1"))
    assert pool.status().idle == 1


def test_re_adding_a_worker_returns_it_from_a_deadline_ahead_without_a_lease(
    make_pool: MakePool, r: redis.Redis
) -> None:
    """What a checkout refused after its first write (the deadline's ZADD NX)
    leaves: a deadline ahead and no lease key. add_worker returns the worker at
    once; a deadline behind (an ended lease) is the sweep's to return."""
    pool = make_pool(workers=1, lease_ttl=30.0)
    lease = pool.checkout(block=False, auto_renew=False)
    r.delete(pool.keys.lease(lease.worker_id))  # deadline ahead, no lease key
    assert pool.status().idle == 0
    assert pool.add_worker("w1") is False
    assert pool.status().idle == 1 and r.zcard(pool.keys.deadlines) == 0

    lease = pool.checkout(block=False, auto_renew=False)
    r.delete(pool.keys.lease(lease.worker_id))
    r.zadd(pool.keys.deadlines, {"w1": 1})  # a deadline long behind
    assert pool.add_worker("w1") is False
    assert pool.status().idle == 0, "an ended lease waits for the sweep"
    assert pool.reclaim_expired() == 1
    assert pool.status().idle == 1
