"""Junk written into a pool's keys by hand: a clear error, nothing changed, nothing lost.

For each key of a pool, junk of another type or a value redispool never writes
is written by hand. Each pool operation then either raises PoolCorrupted naming
the pool and the key and changes no key of the pool (a Lua script that failed
halfway would keep its earlier writes, so the scripts check before writing), or,
for the hot paths (checkout, checkin), which check only the keys their path
writes, completes without touching the junk and leaves the pool sound apart from
it. check_pool() names the key. After the junk is repaired, every worker and the
live lease are as before. Junk that cannot hurt (unknown ids in lists, dead
waiter entries) is skipped cleanly and reported by check_pool().
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from redispool import Pool, PoolCorrupted
from redispool.check import Problem, check_pool
from redispool.lease import Lease

MakePool = Callable[..., Pool]
Junk = Callable[[redis.Redis, str], object]


def snapshot(r: redis.Redis, pool: Pool) -> dict[bytes, bytes | None]:
    """Every key of the pool and its serialized value (DUMP)."""
    keys = sorted(r.scan_iter(match=pool.keys.prefix + "*"))
    return {key: r.dump(key) for key in keys}


def put_back(
    r: redis.Redis, pool: Pool, snap: dict[bytes, bytes | None], ttls: dict[bytes, int]
) -> None:
    """Make the pool's keys exactly ``snap`` again (with their TTLs)."""
    for key in r.scan_iter(match=pool.keys.prefix + "*"):
        r.delete(key)
    for key, value in snap.items():
        assert value is not None
        r.restore(key, max(ttls[key], 0), value)


#: Operations that check only the keys their own path writes (the hot paths),
#: and the keys that path reads or writes here (an idle worker is at hand, no waiter).
HOT = {
    "checkout": {"config", "workers", "idle", "deadlines", "token"},
    "blocking checkout": {"config", "workers", "idle", "deadlines", "token"},
    "checkin": {"workers", "idle", "deadlines", "draining", "waitq"},
}


def a_copy(lease: Lease) -> Lease:
    """A second handle on the same lease (same worker and token).

    Lease.checkin() marks its object closed before calling Redis, so the
    original handle is kept for the checkin after the repair."""
    return Lease(
        lease.pool,
        lease.worker_id,
        lease.token,
        lease.ttl,
        auto_renew=False,
        deadline=lease.deadline,
        nonce=lease.nonce,
    )


def named(problems: list[Problem], key: str) -> bool:
    return any(problem.key == key for problem in problems)


@pytest.fixture
def pool(make_pool: MakePool) -> Pool:
    """Three workers, w3 leased (not auto-renewed), settings stored."""
    pool = make_pool(workers=3, lease_ttl=30.0)
    pool.configure(lease_ttl=30.0)
    return pool


def replace_with(value: Callable[[redis.Redis, str], object]) -> Junk:
    def write(r: redis.Redis, key: str) -> None:
        r.delete(key)
        value(r, key)

    return write


WRONG_TYPES: dict[str, Junk] = {
    "config": replace_with(lambda r, k: r.set(k, "junk")),
    "workers": replace_with(lambda r, k: r.rpush(k, "w1")),
    "idle": replace_with(lambda r, k: r.sadd(k, "w1")),
    "deadlines": replace_with(lambda r, k: r.hset(k, "w3", "1")),
    "token": replace_with(lambda r, k: r.hset(k, "n", "1")),
    "draining": replace_with(lambda r, k: r.set(k, "w3")),
    "waitq": replace_with(lambda r, k: r.hset(k, "t", "1")),
    "waiters": replace_with(lambda r, k: r.rpush(k, "t")),
}

BAD_VALUES: dict[str, tuple[str, Junk]] = {
    "token-not-a-number": ("token", lambda r, k: r.set(k, "abc")),
    "token-negative": ("token", lambda r, k: r.set(k, "-5")),
    "token-too-large": ("token", lambda r, k: r.set(k, "9" * 19)),
    "token-past-2^53": ("token", lambda r, k: r.set(k, str(2**53 + 1))),
    "ttl-negative": ("config", lambda r, k: r.hset(k, "lease_ttl_ms", "-5")),
    "ttl-zero": ("config", lambda r, k: r.hset(k, "lease_ttl_ms", "0")),
    "ttl-not-a-number": ("config", lambda r, k: r.hset(k, "lease_ttl_ms", "ten")),
    "ttl-fraction": ("config", lambda r, k: r.hset(k, "lease_ttl_ms", "1.5")),
    "strategy-unknown": ("config", lambda r, k: r.hset(k, "strategy", "random")),
}

CASES = [(part, part, junk) for part, junk in WRONG_TYPES.items()] + [
    (name, part, junk) for name, (part, junk) in BAD_VALUES.items()
]


def operations(pool: Pool, held: Lease) -> dict[str, Callable[[], object]]:
    """Every pool operation that runs a script over the pool's common keys."""
    return {
        "checkout": lambda: pool.checkout(block=False, auto_renew=False),
        "blocking checkout": lambda: pool.checkout(timeout=0.05, auto_renew=False),
        "checkin": lambda: a_copy(held).checkin(),
        "add_worker": lambda: pool.add_worker("w9"),
        "re-add": lambda: pool.add_worker("w1"),
        "remove_worker": lambda: pool.remove_worker("w1"),
        "reclaim_expired": pool.reclaim_expired,
        "status": pool.status,
        "configure": pool.configure,
    }


@pytest.mark.parametrize(("case", "part", "junk"), CASES, ids=[c[0] for c in CASES])
def test_junk_in_a_key_is_named_changes_nothing_and_loses_nothing(
    case: str, part: str, junk: Junk, pool: Pool, r: redis.Redis
) -> None:
    held = pool.checkout(block=False, auto_renew=False)
    key = getattr(pool.keys, part)
    saved = r.dump(key)
    before_status = pool.status()
    junk(r, key)
    corrupted = snapshot(r, pool)
    ttls = {k: r.pttl(k) for k in corrupted}
    raised = set()

    for name, operation in operations(pool, held).items():
        put_back(r, pool, corrupted, ttls)
        try:
            operation()
        except PoolCorrupted as caught:
            raised.add(name)
            assert key in str(caught), f"{name}: {caught}"
            assert caught.pool == pool.name
            assert snapshot(r, pool) == corrupted, f"{name} changed a key of the corrupted pool"
            continue
        assert name in HOT, f"{name} went ahead on a corrupted pool"
        assert {p.key for p in check_pool(pool)} <= {key}, f"{name} left the pool unsound"
    must_raise = {name for name in operations(pool, held) if part in HOT.get(name, {part})}
    assert raised >= must_raise, f"went ahead despite junk in {part}: {must_raise - raised}"
    put_back(r, pool, corrupted, ttls)
    assert named(check_pool(pool), key)

    r.delete(key)
    if saved is not None:
        r.restore(key, 0, saved)
    assert check_pool(pool) == []
    assert pool.status() == before_status
    assert held.checkin() is True
    got = {pool.checkout(block=False, auto_renew=False).worker_id for _ in range(3)}
    assert got == {"w1", "w2", "w3"}


def test_renewal_names_a_lease_key_of_the_wrong_type_and_changes_nothing(
    pool: Pool, r: redis.Redis
) -> None:
    held = pool.checkout(block=False, auto_renew=False)
    key = pool.keys.lease(held.worker_id)
    saved, ttl = r.dump(key), r.pttl(key)
    r.delete(key)
    r.hset(key, "token", str(held.token))
    corrupted = snapshot(r, pool)
    with pytest.raises(PoolCorrupted, match=key.replace("{", r"\{").replace("}", r"\}")):
        a_copy(held).renew()
    with pytest.raises(PoolCorrupted, match="lease:w3"):
        a_copy(held).checkin()
    assert snapshot(r, pool) == corrupted
    assert any(p.key == key and "not a string" in p.problem for p in check_pool(pool))

    r.delete(key)
    assert saved is not None
    r.restore(key, ttl, saved)
    held.renew()
    assert held.checkin() is True
    assert pool.status().idle == 3


def test_a_lease_key_written_without_ttl_does_not_keep_its_worker_forever(
    pool: Pool, r: redis.Redis
) -> None:
    held = pool.checkout(block=False, auto_renew=False)
    key = pool.keys.lease(held.worker_id)
    r.set(key, "junk")  # no TTL, not 'token|holder'
    problems = check_pool(pool)
    assert any(p.key == key and "no TTL" in p.problem for p in problems)
    assert any(p.key == key and "'junk'" in p.problem for p in problems)
    assert held.checkin() is False  # the junk replaced its token
    r.zadd(pool.keys.deadlines, {held.worker_id: 1})  # the lease's deadline passes
    assert pool.reclaim_expired() == 1
    assert pool.status().idle == 3
    assert pool.checkout(block=False, auto_renew=False).worker_id == held.worker_id


def test_junk_waiter_entries_are_skipped_and_checkin_returns_the_worker(
    pool: Pool, r: redis.Redis
) -> None:
    held = pool.checkout(block=False, auto_renew=False)
    k = pool.keys
    far = str(int(time.time() * 1000) + 3_600_000)  # alive for an hour
    # no-entry: a dead waiter's entry (no ticket in waiters), which is no problem
    r.rpush(k.waitq, "zero-ttl|0|ab|host:1", "no-entry|1000|ab|host:1", "bad-format",
            "junk-wake|1000|ab|host:1")
    r.zadd(k.waiters, {"zero-ttl": float(far), "junk-wake": float(far), "bad-format": float(far)})
    r.set(k.wake("junk-wake"), "not a list")
    problems = check_pool(pool)
    assert any(p.key == k.waitq and "'zero-ttl|0" in p.problem for p in problems)
    assert any(p.key == k.waitq and "'bad-format'" in p.problem for p in problems)
    assert any(p.key == k.waiters and "'bad-format'" in p.problem for p in problems)
    assert not any("no-entry" in p.problem for p in problems)

    assert held.checkin() is True
    assert pool.status().idle == 3, "the worker went to a junk waiter"
    assert r.llen(k.waitq) == 0 and r.zcard(k.waiters) == 0
    assert r.get(k.wake("junk-wake")) == b"not a list"  # left as it was
    assert check_pool(pool) == []


def test_unknown_ids_in_idle_deadlines_and_draining_are_reported_and_never_leased(
    pool: Pool, r: redis.Redis
) -> None:
    held = pool.checkout(block=False, auto_renew=False)
    k = pool.keys
    r.lpush(k.idle, "ghost", held.worker_id, "w1")  # unknown, leased, duplicate
    r.zadd(k.deadlines, {"phantom": 1})
    r.sadd(k.draining, "w2")  # idle, yet draining
    problems = {(p.key, p.problem) for p in check_pool(pool)}
    assert (k.idle, "holds 'ghost', not a registered worker") in problems
    assert (k.idle, f"holds {held.worker_id!r}, which is leased") in problems
    assert (k.idle, "holds 'w1' 2 times") in problems
    assert (k.deadlines, "holds 'phantom', not a registered worker") in problems
    assert (k.draining, "holds 'w2', which is not leased") in problems

    leased = [pool.checkout(block=False, auto_renew=False) for _ in range(2)]
    assert sorted(lease.worker_id for lease in leased) == ["w1", "w2"]
    assert held.worker_id not in [lease.worker_id for lease in leased]
    assert pool.reclaim_expired() == 1  # the phantom is dropped, not returned
    assert r.zscore(k.deadlines, "phantom") is None
    assert held.checkin() is True


def test_configure_replaces_junk_settings(pool: Pool, r: redis.Redis) -> None:
    r.hset(pool.keys.config, mapping={"lease_ttl_ms": "-5", "strategy": "random"})
    with pytest.raises(PoolCorrupted, match="lease_ttl_ms"):
        pool.configure(strategy="fifo")  # the junk ttl stays: refused, nothing changed
    assert r.hget(pool.keys.config, "strategy") == b"random"
    settings = pool.configure(lease_ttl=2.5, strategy="fifo")
    assert (settings.lease_ttl, settings.strategy) == (2.5, "fifo")
    assert check_pool(pool) == []


def test_a_token_counter_behind_a_live_lease_is_reported(pool: Pool, r: redis.Redis) -> None:
    held = pool.checkout(block=False, auto_renew=False)
    r.set(pool.keys.token, str(held.token - 10))
    assert any(
        p.key == pool.keys.token and "tokens would repeat" in p.problem for p in check_pool(pool)
    )


def test_a_sound_pool_has_no_problems(pool: Pool) -> None:
    held = pool.checkout(block=False, auto_renew=False)
    pool.remove_worker(held.worker_id)
    assert check_pool(pool) == []
    assert str(Problem("k", "is bad")) == "k: is bad"
