"""History: per-minute buckets that stay within their bound, merge across processes,
survive junk; the Reaper samples and counts what it did."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from helpers import wait_for

from redispool import Pool, Reaper, events
from redispool.history import FIELDS, RETENTION_S, WINDOW, History, wait_field
from redispool.keys import PoolKeys


class Clock:
    """A clock a test moves by hand (unix seconds)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _bytes_of(r: redis.Redis, pool: str) -> tuple[int, int]:
    """(keys, bytes by MEMORY USAGE) of the pool's history buckets."""
    keys = list(r.scan_iter(match=PoolKeys(pool).prefix + "history:*", count=1000))
    return len(keys), sum(int(r.memory_usage(k) or 0) for k in keys)


def test_history_stays_within_its_bound_after_two_simulated_days(r: redis.Redis) -> None:
    clock = Clock()
    history = History(r, "bounded", clock=clock)  # a pool no other test's process writes
    full = {f: 7 for f in FIELDS}  # every field a bucket may hold, each minute
    sizes = []
    for minute in range(2 * WINDOW + 120):
        history.add(full)
        clock.now += 60
        if minute % 360 == 0:
            sizes.append(_bytes_of(r, "bounded"))
    keys, size = _bytes_of(r, "bounded")
    assert keys <= WINDOW, keys
    assert all(k <= WINDOW for k, _ in sizes)
    per_bucket = size / keys
    print(f"history of one pool: {keys} buckets, {size} bytes ({per_bucket:.0f} per minute)")
    assert size < 500_000, size  # the bound the README states
    newest = history.read(1)[0]
    assert newest.minute == history.now() and newest.counts["checkouts"] == 0
    assert history.read(2)[0].counts["checkouts"] == 7  # the last minute written


def test_a_bucket_expires_by_itself_when_nobody_trims_it(r: redis.Redis) -> None:
    history = History(r, "toy")
    history.add({"reclaims": 1})
    ttl = r.ttl(PoolKeys("toy").history_bucket(history.now()))
    assert RETENTION_S - 5 <= ttl <= RETENTION_S


def test_two_writers_merge_into_one_minute(r: redis.Redis) -> None:
    clock = Clock()
    one, two = History(r, "toy", clock=clock), History(r, "toy", clock=clock)
    for wait in (0.0005, 0.002, 0.002, 0.3):
        one.add({"checkouts": 1, wait_field(wait): 1})
    for _ in range(96):
        two.add({"checkouts": 1, wait_field(0.0005): 1})
    two.add({"timeouts": 2})
    (minute,) = one.read(1)
    assert minute.counts["checkouts"] == 100 and minute.counts["timeouts"] == 2
    assert minute.waits == 100
    assert minute.wait_p50 == 0.001  # 97 of 100 waits under 1 ms
    assert minute.wait_p99 == 0.005  # the 99th is one of the two 2 ms waits


def test_samples_read_back_as_averages_and_empty_minutes_as_none(r: redis.Redis) -> None:
    clock = Clock()
    history = History(r, "toy", clock=clock)
    history.sample(busy=2, idle=1, waiting=0)
    history.sample(busy=4, idle=0, waiting=3)
    before, now = history.read(2)
    assert (now.busy, now.idle, now.waiting) == (3.0, 0.5, 1.5)
    assert (before.busy, before.wait_p50) == (None, None)


def test_junk_in_a_bucket_reads_as_zeros_not_an_error(r: redis.Redis) -> None:
    clock = Clock()
    history = History(r, "toy", clock=clock)
    history.add({"burials": 2})
    key = PoolKeys("toy").history_bucket(history.now())
    r.hset(key, mapping={"refused": "<script>", "evil": "9"})
    r.set(PoolKeys("toy").history_bucket(history.now() - 1), "not a hash")
    before, now = history.read(2)
    assert now.counts["burials"] == 2 and now.counts["refused"] == 0
    assert "evil" not in now.to_json()
    assert before.counts["burials"] == 0


def test_bad_writes_and_reads_are_value_errors(r: redis.Redis) -> None:
    import pytest

    history = History(r, "toy")
    with pytest.raises(ValueError, match="unknown history fields"):
        history.add({"bogus": 1})
    with pytest.raises(ValueError, match="negative"):
        history.add({"checkouts": -1})
    with pytest.raises(ValueError, match="minutes"):
        history.read(WINDOW + 1)


def test_the_reaper_samples_the_pool_and_counts_reclaims_with_an_event(
    make_pool: Callable[..., Pool], r: redis.Redis
) -> None:
    pool = make_pool("toy", workers=2, lease_ttl=0.2)
    pool.checkout(auto_renew=False)
    history = History(r, "toy")
    with Reaper(r, ["toy"], sweep_interval=0.05):
        wait_for(lambda: history.read(1)[0].counts["reclaims"] >= 1, timeout=10,
                 message="the reclaim in the history")  # fmt: skip
        (now,) = history.read(1)
        assert now.busy is not None  # sampled
    kinds = [e.kind for e in events.read(r, "toy")]
    assert "reclaimed" in kinds


def test_one_reaper_at_a_time_samples_a_pool(
    make_pool: Callable[..., Pool], r: redis.Redis
) -> None:
    make_pool("toy", workers=1)
    history = History(r, "toy")
    with Reaper(r, ["toy"], sweep_interval=0.05), Reaper(r, ["toy"], sweep_interval=0.05):
        time.sleep(1.0)  # every sweep of both tried; the lock lets one sample per interval
    (now,) = history.read(1)
    samples = r.hget(PoolKeys("toy").history_bucket(now.minute), "n")
    assert samples is not None and int(samples) == 1, samples
