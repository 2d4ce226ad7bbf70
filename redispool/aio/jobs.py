"""``await lease.run(func, *args)`` for asyncio leases: the sync job path, in a thread.

A job goes through RQ, which is sync; :func:`redispool.jobs.run` does the
whole exchange (enqueue with the lease's token and nonce, wait for the
result, check the lease meanwhile) and runs here in a worker thread, on a
sync Pool of the same server made on first use. The lease is the asyncio
one: a job that finds it ended marks it lost (:attr:`Lease.lost`).

Cancelling the ``await`` stops waiting for the result; a job already started
runs on and its result is dropped (one not yet started may still run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import jobs
from ..errors import LeaseLost, WorkerLost
from ..lease import Lease as SyncLease

if TYPE_CHECKING:
    from .lease import Lease
    from .pool import Pool

__all__ = ["run"]

async def run(
    pool: Pool, lease: Lease, func: Callable[..., Any] | str, *args: Any, timeout: float
) -> Any:
    """Run ``func(*args)`` on ``lease``'s worker (see :func:`redispool.jobs.run`)."""
    if not lease.active:
        raise lease.ended_error(pool.name, "run")
    twin = SyncLease(
        pool.sync_twin(), lease.worker_id, lease.token, lease.ttl, auto_renew=False,
        deadline=lease.deadline, nonce=lease.nonce,
    )  # fmt: skip
    try:
        return await asyncio.to_thread(jobs.run, twin, func, *args, timeout=timeout)
    except LeaseLost as exc:
        lease.end(worker_died=isinstance(exc, WorkerLost) or twin.worker_died)
        raise
