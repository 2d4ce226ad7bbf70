"""redispool for asyncio programs: the same pool, names, errors and meanings.

    from redispool.aio import Pool

    pool = Pool("doublers", url="redis://host:6379/0", lease_ttl=10.0)
    async with pool.lease(timeout=5) as lease:
        assert await lease.run("redispool.doubler.double", 21) == 42

Sync and asyncio clients share one pool in Redis (one queue of waiters, one
table of leases): they differ only in how they send and wait. See
:class:`Pool` and :class:`Lease`.
"""

from __future__ import annotations

from ..errors import (
    CheckoutTimeout,
    LeaseLost,
    PoolError,
    PoolFull,
    PoolUnavailable,
    WorkerLost,
)
from .connect import client_from_url
from .lease import Lease
from .pool import Pool

__all__ = [
    "CheckoutTimeout",
    "Lease",
    "LeaseLost",
    "Pool",
    "PoolError",
    "PoolFull",
    "PoolUnavailable",
    "WorkerLost",
    "client_from_url",
]
