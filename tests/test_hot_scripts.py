"""The hot scripts' cheaper shapes keep every guarantee (issue 13, targets 1 and 2).

- checkout pops the idle list first and checkin pushes it first: when a later
  check fails (a key of the wrong type, a junk token counter), the pop or push
  is undone exactly before the script stops, so the pool is as it was;
- a fifo pool pops the tail of the idle list and a lifo pool its head, every
  return going to the head;
- checkout, checkin and cancel_wait are sent the pool's prefix alone and name
  the pool's keys from it, kept per prefix in the library: pools never see each
  other's keys, however many there are;
- a pool written by the previous version (idle order, leases, a draining
  worker, a queued waiter, a token counter ahead of the clock) is taken over
  without doubling or losing a worker and without a token going back.

Real servers: the undo must hold against Redis's own WRONGTYPE errors.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redispool import Pool, PoolCorrupted, PoolFull, protocol, scripts
from redispool.keys import PoolKeys
from redispool.lease import Lease

MakePool = Callable[..., Pool]


def snapshot(r: redis.Redis, pool: Pool) -> dict[bytes, bytes | None]:
    """Every key of the pool and its serialized value (DUMP: a list's order too)."""
    return {key: r.dump(key) for key in sorted(r.scan_iter(match=pool.keys.prefix + "*"))}


def idle_order(r: redis.Redis, pool: Pool) -> list[str]:
    return [w.decode() for w in r.lrange(pool.keys.idle, 0, -1)]


def handle(pool: Pool, lease: Lease) -> Lease:
    """A second handle on ``lease`` (a checkin that raised closed the first)."""
    return Lease(pool, lease.worker_id, lease.token, lease.ttl, auto_renew=False,
                 deadline=lease.deadline, nonce=lease.nonce)  # fmt: skip


#: Junk a popped worker meets on its way to a lease: key part -> what is written there.
AFTER_THE_POP: dict[str, Callable[[redis.Redis, str], object]] = {
    "deadlines": lambda r, k: r.set(k, "junk"),
    "workers": lambda r, k: r.rpush(k, "w1"),
    "token": lambda r, k: r.set(k, "not-a-token"),
}


@pytest.mark.parametrize("strategy", ["lifo", "fifo"])
@pytest.mark.parametrize("part", sorted(AFTER_THE_POP))
def test_a_checkout_stopped_after_its_pop_puts_the_worker_back_where_it_was(
    strategy: str, part: str, make_pool: MakePool, r: redis.Redis
) -> None:
    pool = make_pool(workers=3)
    pool.configure(strategy=strategy)
    pool.checkout(block=False, auto_renew=False).checkin()  # the counter exists
    key = getattr(pool.keys, part)
    saved, order = r.dump(key), idle_order(r, pool)
    r.delete(key)
    AFTER_THE_POP[part](r, key)
    corrupted = snapshot(r, pool)

    with pytest.raises(PoolCorrupted, match=key.replace("{", r"\{").replace("}", r"\}")):
        pool.checkout(block=False, auto_renew=False)
    assert snapshot(r, pool) == corrupted, "the popped worker did not go back exactly"
    assert idle_order(r, pool) == order

    r.delete(key)
    if saved is not None:  # deadlines is missing while nothing is leased
        r.restore(key, 0, saved)
    first = pool.checkout(block=False, auto_renew=False)
    # lifo takes the head (the last returned), fifo the tail (idle longest)
    assert first.worker_id == (order[0] if strategy == "lifo" else order[-1])
    assert first.checkin() is True


def test_a_checkin_that_meets_deadlines_of_the_wrong_type_takes_its_push_back(
    make_pool: MakePool, r: redis.Redis
) -> None:
    pool = make_pool(workers=3)
    held = pool.checkout(block=False, auto_renew=False)
    saved = r.dump(pool.keys.deadlines)
    r.delete(pool.keys.deadlines)
    r.hset(pool.keys.deadlines, held.worker_id, "1")
    corrupted = snapshot(r, pool)
    lease_ttl = r.pttl(pool.keys.lease(held.worker_id))

    with pytest.raises(PoolCorrupted, match="deadlines"):
        handle(pool, held).checkin()
    assert snapshot(r, pool) == corrupted, "the pushed worker was not taken back exactly"
    assert held.worker_id not in idle_order(r, pool)
    assert 0 < r.pttl(pool.keys.lease(held.worker_id)) <= lease_ttl

    r.delete(pool.keys.deadlines)
    assert saved is not None
    r.restore(pool.keys.deadlines, 0, saved)
    assert held.checkin() is True
    assert sorted(idle_order(r, pool)) == ["w1", "w2", "w3"]


def test_fifo_keeps_its_order_through_many_returns(make_pool: MakePool) -> None:
    pool = make_pool(workers=4)
    pool.configure(strategy="fifo")
    seen = []
    for _ in range(12):
        lease = pool.checkout(block=False, auto_renew=False)
        seen.append(lease.worker_id)
        assert lease.checkin() is True
    assert seen == ["w1", "w2", "w3", "w4"] * 3  # each waits its turn, oldest idle first


def test_pools_on_one_server_never_see_each_others_keys_however_many(
    make_pool: MakePool, r: redis.Redis
) -> None:
    make_pool("p-first", workers=1).status()  # loads the library
    lib = scripts.library()
    count = 1100  # more pools than the library keeps names for (POOLS_KEPT, 1024)
    pools = [PoolKeys(f"many-{i}") for i in range(count)]
    tokens: dict[str, int] = {}
    for k in pools:
        add = protocol.add_worker(k, f"only-{k.pool}", "host|1")
        r.fcall(lib.function("add_worker"), len(add.keys), *add.keys, *add.args)
    for k in pools:  # first to last, then back: every pool's names made again
        out = protocol.checkout(k, ttl_ms=60_000, holder="h:1", ticket="", alive_ms=1000,
                                nonce="ab" * 16)  # fmt: skip
        granted = out.read(r.fcall(lib.function("checkout"), len(out.keys), *out.keys, *out.args))
        assert granted.worker_id == f"only-{k.pool}"
        tokens[k.pool] = granted.token
    for k in reversed(pools):
        back = protocol.checkin(k, worker_id=f"only-{k.pool}", token=tokens[k.pool],
                                nonce="ab" * 16)  # fmt: skip
        done = back.read(r.fcall(lib.function("checkin"), len(back.keys), *back.keys, *back.args))
        assert done.returned, k.pool
    for k in pools[:50] + pools[-50:]:
        assert r.lrange(k.idle, 0, -1) == [f"only-{k.pool}".encode()]
        assert r.zcard(k.deadlines) == 0 and r.exists(k.lease(f"only-{k.pool}")) == 0


def test_on_a_cluster_a_hot_call_names_every_common_key_so_a_migrating_slot_says_tryagain() -> None:
    k = PoolKeys("moving")
    for op in (
        protocol.checkout(k, ttl_ms=0, holder="h:1", ticket="", alive_ms=1, nonce="ab"),
        protocol.checkin(k, worker_id="w1", token=7, nonce="ab"),
        protocol.cancel_wait(k, "t1"),
    ):
        assert op.keys == (k.prefix,)  # off a cluster: the prefix alone
        assert tuple(scripts.on_cluster(op.keys)) == k.common
    renew = protocol.renew(k, [("w1", 7, "ab", 1000)])
    assert tuple(scripts.on_cluster(renew.keys)) == renew.keys


def test_a_pool_written_by_the_previous_version_is_taken_over(
    make_pool: MakePool, r: redis.Redis
) -> None:
    """The layout as the previous version left it, built by hand: a fifo pool
    whose idle list has its next worker at the head, w3 leased, w4 leased and
    draining, a waiter queued, and a counter ahead of the clock."""
    pool = make_pool("old")
    k = pool.keys
    sec, usec = r.time()
    now_ms, ahead = sec * 1000 + usec // 1000, (sec * 1_000_000 + usec) + 10**9
    r.hset(k.config, mapping={"lease_ttl_ms": "30000", "strategy": "fifo"})
    r.hset(k.workers, mapping={f"w{i}": "host|1" for i in range(1, 5)})
    r.rpush(k.idle, "w1", "w2")
    nonces = {"w3": "33" * 16, "w4": "44" * 16}
    for i, wid in ((3, "w3"), (4, "w4")):
        r.set(k.lease(wid), f"{ahead - 10 + i}|{nonces[wid]}|h:1", px=30_000)
        r.zadd(k.deadlines, {wid: now_ms + 30_000})
    r.sadd(k.draining, "w4")
    r.set(k.token, str(ahead))
    r.rpush(k.waitq, f"tk|30000|{'55' * 16}|h:2")
    r.zadd(k.waiters, {"tk": now_ms + 60_000})

    def old_lease(wid: str, token: int) -> Lease:
        return Lease(pool, wid, token, 30.0, auto_renew=False, deadline=float("inf"),
                     nonce=nonces[wid])  # fmt: skip

    assert old_lease("w3", ahead - 7).checkin() is True  # handed to the queued waiter
    handoff = r.lrange(k.wake("tk"), 0, -1)
    assert len(handoff) == 1
    handed = protocol.Handoff.parse(handoff[0])
    assert handed.worker_id == "w3" and handed.token == ahead + 1
    assert old_lease("w4", ahead - 6).checkin() is True  # draining: it leaves
    assert r.hexists(k.workers, "w4") == 0 and "w4" not in idle_order(r, pool)

    taken = [pool.checkout(block=False, auto_renew=False) for _ in range(2)]
    assert {lease.worker_id for lease in taken} == {"w1", "w2"}
    assert [lease.token for lease in taken] == [ahead + 2, ahead + 3]  # never back
    with pytest.raises(PoolFull):
        pool.checkout(block=False, auto_renew=False)
    status = pool.status()
    assert (status.size, status.idle, status.busy) == (3, 0, 3)
    for lease in taken:
        assert lease.checkin() is True
    assert sorted(idle_order(r, pool)) == ["w1", "w2"]
