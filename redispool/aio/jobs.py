"""``await lease.run(func, *args)`` for asyncio leases: the sync job path, in a thread.

A job goes through RQ, which is sync; :func:`redispool.jobs.run` does the
whole exchange (enqueue with the lease's token and nonce, wait for the
result, check the lease meanwhile) and runs here in a worker thread, on a
sync Pool of the same server made on first use (from the Pool's URL, or from
the host, port, db and credentials of its ``redis.asyncio`` client). The
lease is the asyncio one: a job that finds it ended marks it lost.

Cancelling the ``await`` withdraws the job, as an interrupt of the sync
``lease.run`` does: one not yet started never starts (within
:data:`redispool.jobs.CHECK_INTERVAL` of the cancellation); one already
started runs on under its lease and its result is dropped.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio

from .. import jobs
from ..errors import LeaseLost, WorkerLost
from ..lease import Lease as SyncLease
from ..pool import Pool as SyncPool
from .lease import Lease

__all__ = ["Jobs"]

#: The settings of a redis.asyncio client that a sync client of the same server takes.
KEPT = ("host", "port", "db", "username", "password", "socket_timeout",
        "socket_connect_timeout", "protocol")  # fmt: skip


class Jobs:
    """Runs the jobs of one asyncio Pool's leases."""

    def __init__(
        self, name: str, url: str | None, client: redis.asyncio.Redis, ttl_ms: int
    ) -> None:
        self._name, self._url, self._client, self._ttl_ms = name, url, client, ttl_ms
        self._sync: SyncPool | None = None
        self._made: redis.Redis | None = None  # a sync client made here, closed here

    def _twin(self) -> SyncPool:
        if self._sync is None:
            ttl = self._ttl_ms / 1000 or None
            if self._url is not None:
                self._sync = SyncPool(self._name, self._url, lease_ttl=ttl)
            else:
                kwargs = self._client.connection_pool.connection_kwargs
                self._made = redis.Redis(**{k: kwargs[k] for k in KEPT if k in kwargs})
                self._sync = SyncPool(self._name, redis=self._made, lease_ttl=ttl)
        return self._sync

    async def run(
        self, lease: Lease, func: Callable[..., Any] | str, *args: Any, timeout: float
    ) -> Any:
        """Run ``func(*args)`` on ``lease``'s worker (see :func:`redispool.jobs.run`)."""
        if not lease.active:
            raise lease.ended_error(self._name, "run")
        twin = SyncLease(
            self._twin(), lease.worker_id, lease.token, lease.ttl, auto_renew=False,
            deadline=lease.deadline, nonce=lease.nonce, renewed_at=lease.renewed_at,
        )  # fmt: skip
        given_up = threading.Event()
        try:
            return await asyncio.to_thread(
                jobs.run_until, twin, func, args, timeout=timeout, given_up=given_up
            )
        except LeaseLost as exc:
            lease.end(worker_died=isinstance(exc, WorkerLost) or twin.worker_died)
            raise
        except asyncio.CancelledError:
            given_up.set()  # the thread withdraws the job at its next look
            raise

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
        if self._made is not None:
            self._made.close()
