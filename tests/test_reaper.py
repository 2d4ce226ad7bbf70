"""The Reaper: expiry events return a dead holder's worker; the sweep covers lost events."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from helpers import wait_for

from redispool import Pool, Reaper
from redispool.reaper import enable_expiry_events

MakePool = Callable[..., Pool]


@pytest.fixture
def reaper_factory(r: redis.Redis) -> Iterator[Callable[..., Reaper]]:
    started: list[Reaper] = []

    def start(pools: list[str] | None = None, sweep_interval: float = 60.0) -> Reaper:
        reaper = Reaper(r, pools, sweep_interval=sweep_interval).start()
        started.append(reaper)
        return reaper

    try:
        yield start
    finally:
        for reaper in started:
            reaper.stop()


def test_expiry_event_returns_the_worker_with_no_client_activity(
    make_pool: MakePool, reaper_factory: Callable[..., Reaper]
) -> None:
    pool = make_pool(workers=1, lease_ttl=0.2)
    reaper = reaper_factory(["p"], sweep_interval=60)  # only events can act in time
    pool.checkout(auto_renew=False)
    assert pool.status().idle == 0
    wait_for(lambda: pool.status().idle == 1, timeout=3, message="the event-driven return")
    wait_for(lambda: reaper.by_event == 1, timeout=1, message="the reaper to count it")
    assert reaper.by_sweep == 0


def test_sweep_returns_workers_when_events_are_off(
    make_pool: MakePool, r: redis.Redis, reaper_factory: Callable[..., Reaper]
) -> None:
    pool = make_pool(workers=2, lease_ttl=0.1)
    reaper = reaper_factory(None, sweep_interval=0.2)
    r.config_set("notify-keyspace-events", "")  # events lost from now on
    pool.checkout(auto_renew=False)
    pool.checkout(auto_renew=False)
    wait_for(lambda: pool.status().idle == 2, timeout=3, message="the sweep")
    wait_for(lambda: reaper.by_sweep == 2, timeout=1, message="the reaper to count them")


def test_reclaim_expired_is_one_sweep_now(make_pool: MakePool) -> None:
    pool = make_pool(workers=3, lease_ttl=0.05)
    held = [pool.checkout(auto_renew=False) for _ in range(3)]
    time.sleep(0.1)  # past every deadline
    assert pool.reclaim_expired() == 3
    assert pool.reclaim_expired() == 0
    assert all(lease.checkin() is False for lease in held)
    assert pool.status().idle == 3


def test_enable_expiry_events_merges_with_flags_already_set(r: redis.Redis) -> None:
    r.config_set("notify-keyspace-events", "Kg")
    assert enable_expiry_events(r) is True
    flags = r.config_get("notify-keyspace-events")["notify-keyspace-events"]
    assert set(flags) >= set("Kgx") and "E" in flags


def test_reaper_ignores_other_pools_and_other_keys(
    make_pool: MakePool, r: redis.Redis, reaper_factory: Callable[..., Reaper]
) -> None:
    mine, other = make_pool("mine", workers=1, lease_ttl=0.1), make_pool("other", workers=1)
    r.set("unrelated", "x", px=50)
    reaper = reaper_factory(["mine"])
    mine.checkout(auto_renew=False)
    wait_for(lambda: mine.status().idle == 1, timeout=3, message="mine returned")
    wait_for(lambda: reaper.by_event == 1, timeout=1, message="the reaper to count it")
    assert other.status().idle == 1


def test_bad_sweep_interval_is_refused(r: redis.Redis) -> None:
    with pytest.raises(ValueError, match="sweep_interval"):
        Reaper(r, sweep_interval=0)
