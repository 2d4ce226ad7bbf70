"""An asyncio lease: the exclusive use of one worker, proven by a fencing token.

Its state is :class:`redispool.protocol.LeaseLife`, the same as the sync
lease's; only its ``lost`` event is an :class:`asyncio.Event`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Protocol

from ..protocol import LeaseLife

__all__ = ["Lease", "LeaseOwner"]


class LeaseOwner(Protocol):
    """What a lease needs of the pool it came from (:class:`redispool.aio.Pool` is one)."""

    @property
    def name(self) -> str: ...

    async def renew(self, lease: Lease) -> None: ...

    async def checkin(self, lease: Lease) -> bool: ...

    async def run_job(
        self, lease: Lease, func: Callable[..., Any] | str, *args: Any, timeout: float = 30.0
    ) -> Any: ...


class Lease(LeaseLife[asyncio.Event]):
    """The right to use ``worker_id`` until the lease ends (see :class:`redispool.Lease`).

    ``lost`` is an :class:`asyncio.Event`, set by whatever finds the lease
    ended: the pool's renewer task, :meth:`renew`, :meth:`checkin`, a job.
    A lease belongs to the event loop of the pool that made it.
    """

    def __init__(self, pool: LeaseOwner, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool = pool

    def _new_event(self) -> asyncio.Event:
        return asyncio.Event()

    async def renew(self) -> None:
        """Extend the lease by its TTL from now; :class:`~redispool.LeaseLost`
        (and :attr:`lost` set) if it has ended."""
        await self.pool.renew(self)

    async def checkin(self) -> bool:
        """Return the worker: True if this call returned it, False if the lease
        had already ended (then :attr:`lost` is set) or was checked in."""
        return await self.pool.checkin(self)

    async def run(self, func: Callable[..., Any] | str, *args: Any, timeout: float = 30.0) -> Any:
        """Run the registered function ``func(*args)`` on this lease's worker and
        return its result, as :meth:`redispool.Lease.run` does (same errors)."""
        return await self.pool.run_job(self, func, *args, timeout=timeout)

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[Lease]:
        """An ``async with`` block whose body is cancelled as soon as the lease is lost.

        The block then raises :class:`~redispool.LeaseLost` (a
        :class:`~redispool.WorkerLost` if its worker died) instead of the
        cancellation; a cancellation from outside stays a cancellation.
        Entering the block with a lease already lost raises at once.
        """
        if not self.active:
            raise self.ended_error(self.pool.name, "guard")
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - an async with always runs in a task
            raise RuntimeError("lease.guard() needs a running task")
        fired = False

        def lost() -> None:
            nonlocal fired
            fired = True
            task.cancel()

        watcher = asyncio.get_running_loop().create_task(self.lost.wait())
        watcher.add_done_callback(lambda w: None if w.cancelled() else lost())
        try:
            yield self
        except asyncio.CancelledError:
            if fired and _uncancel(task) == 0:
                raise self.ended_error(self.pool.name, "guard") from None
            raise
        finally:
            watcher.cancel()
        if fired:  # lost just as the body ended: its cancellation is still pending
            _uncancel(task)
            raise self.ended_error(self.pool.name, "guard")

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.checkin()

    def __repr__(self) -> str:
        return (
            f"<aio.Lease pool={self.pool.name!r} worker={self.worker_id!r} token={self.token} "
            f"{self.state}>"
        )


def _uncancel(task: asyncio.Task[Any]) -> int:
    """Withdraw one cancellation request; how many are left (Python 3.11+; 0 before)."""
    uncancel = getattr(task, "uncancel", None)
    return int(uncancel()) if uncancel is not None else 0
