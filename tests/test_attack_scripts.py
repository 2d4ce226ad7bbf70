"""Attacks on the hot scripts' shapes (issue 13, target 1), on real servers.

The hot scripts are sent the pool's prefix alone and name its other keys from
it, kept per prefix in the library. A call whose KEYS[1] is not a prefix must
never fall back on the key names of the pool the library served last: it
would run on another tenant's keys without naming them (on a server without
ACLs, or on keys a user's patterns happen to cover). A checkin that hands its
worker to a queued waiter and meets a junk key changes nothing, lifo or fifo.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from redispool import Pool, PoolCorrupted, protocol, scripts
from redispool.lease import Lease

MakePool = Callable[..., Pool]
NONCE = "ab" * 16


@pytest.mark.parametrize("operation, args", [
    ("checkout", ("60000", "h:1", "", "1000", NONCE)),
    ("checkin", ("wb", "1", NONCE)),
    ("cancel_wait", ("t1",)),
])  # fmt: skip
def test_a_call_whose_first_key_is_not_a_prefix_never_runs_on_the_last_pool_served(
    operation: str, args: tuple[str, ...], make_pool: MakePool, r: redis.Redis
) -> None:
    other = make_pool("tenant-b", workers=0)
    other.add_worker("wb")
    mine = make_pool("tenant-a", workers=1)
    other.checkout(block=False, auto_renew=False).checkin()  # the library served tenant-b last
    before = {key: r.dump(key) for key in sorted(r.scan_iter(match=other.keys.prefix + "*"))}

    with pytest.raises(redis.ResponseError, match="not a pool prefix"):
        r.fcall(scripts.library().function(operation), 1, mine.keys.prefix + "junk", *args)
    after = {key: r.dump(key) for key in sorted(r.scan_iter(match=other.keys.prefix + "*"))}
    assert after == before, "the call ran on tenant-b's keys"
    assert r.lrange(other.keys.idle, 0, -1) == [b"wb"]


def snapshot(r: redis.Redis, pool: Pool) -> dict[bytes, object]:
    """Every key of the pool: a hash as its fields, anything else its DUMP."""
    return {
        key: r.hgetall(key) if r.type(key) == b"hash" else r.dump(key)
        for key in r.scan_iter(match=pool.keys.prefix + "*")
    }


#: Junk met by a checkin that hands its worker to a queued waiter: part -> junk.
WITH_A_WAITER = {
    "token": lambda r, k: r.set(k, "not-a-token"),
    "waiters": lambda r, k: r.set(k, "junk"),
    "idle": lambda r, k: r.set(k, "junk"),
    "deadlines": lambda r, k: r.set(k, "junk"),
}


@pytest.mark.parametrize("strategy", ["lifo", "fifo"])
@pytest.mark.parametrize("part", sorted(WITH_A_WAITER))
def test_a_checkin_to_a_queued_waiter_that_meets_junk_changes_nothing(
    part: str, strategy: str, make_pool: MakePool, r: redis.Redis
) -> None:
    pool = make_pool(workers=2)
    pool.configure(strategy=strategy)
    held = [pool.checkout(block=False, auto_renew=False) for _ in range(2)]
    waiter = protocol.checkout(pool.keys, ttl_ms=0, holder="h:2", ticket="tk", alive_ms=60_000,
                               nonce=NONCE)  # fmt: skip
    lib = scripts.library()
    queued = r.fcall(lib.function("checkout"), len(waiter.keys), *waiter.keys, *waiter.args)
    assert isinstance(waiter.read(queued), protocol.Queued)
    key = getattr(pool.keys, part)
    saved = r.dump(key)
    r.delete(key)
    WITH_A_WAITER[part](r, key)
    before = snapshot(r, pool)

    with pytest.raises(PoolCorrupted):
        Lease(pool, held[0].worker_id, held[0].token, held[0].ttl, auto_renew=False,
              deadline=held[0].deadline, nonce=held[0].nonce).checkin()  # fmt: skip
    assert snapshot(r, pool) == before, "a checkin that stopped wrote part of a handoff"

    r.delete(key)
    if saved is not None:
        r.restore(key, 0, saved)
    assert held[0].checkin() is True  # repaired: the waiter gets it
    assert r.llen(pool.keys.wake("tk")) == 1
    assert held[1].checkin() is True
