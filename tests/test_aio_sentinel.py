"""The asyncio Pool through Redis Sentinel: found by URL, and following a failover.

One master, one replica and three sentinels per server kind, started once for
this module (``sentinels.py``) and stopped by pid.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from sentinels import SentinelSet

from redispool import PoolUnavailable, aio


@pytest.fixture(scope="module")
def sentinels(server_kind: str) -> Iterator[SentinelSet]:
    sset = SentinelSet(server_kind)
    try:
        yield sset.start()
    finally:
        sset.stop()


async def _served(pool: aio.Pool) -> tuple[int, int]:
    """Check out, hand to a waiter through the waiting room, check in."""
    held = await pool.checkout(block=False)
    waiter = asyncio.create_task(pool.checkout(timeout=5))
    while (await pool.status()).waiting < 1:
        await asyncio.sleep(0.02)
    assert await held.checkin() is True
    lease = await waiter
    assert await lease.checkin() is True
    return held.token, lease.token


def test_an_aio_pool_works_through_a_sentinel_url(sentinels: SentinelSet) -> None:
    async def scenario() -> tuple[int, int]:
        async with aio.Pool("aio-by-url", url=sentinels.url) as pool:
            await pool.add_worker("w1")
            return await _served(pool)

    first, second = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert second > first


def test_an_aio_pool_follows_a_failover(sentinels: SentinelSet) -> None:
    sentinels.wait_healthy()

    async def scenario() -> float:
        async with aio.Pool("aio-failover", url=sentinels.url) as pool:
            await pool.add_worker("w1")
            await _served(pool)
            old, _ = await asyncio.to_thread(sentinels.kill_master)
            killed = time.monotonic()
            while True:  # calls fail (PoolUnavailable) until a connection finds the new master
                try:
                    await pool.add_worker("w1")  # the replica may have missed it
                    break
                except PoolUnavailable:
                    assert time.monotonic() - killed < 30, "never followed the failover"
                    await asyncio.sleep(0.1)
            back = time.monotonic() - killed
            await _served(pool)
            await asyncio.to_thread(sentinels.bring_back, old)
            return back

    back = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert back < 30
