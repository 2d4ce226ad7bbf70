"""A lease: the exclusive use of one worker, proven by a fencing token."""

from __future__ import annotations

import os
import threading
import time as mod_time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pool import Pool

__all__ = ["Lease"]

_MAKE_EVENT = threading.Lock()  # two threads must not each make a lease its own `lost`


class Lease:
    """The right to use ``worker_id`` until the lease ends.

    A lease ends when it is checked in, or at its deadline if nobody renewed
    it in time, whether or not anything has reclaimed the worker yet. Whatever
    finds it ended (the background renewer, :meth:`renew`, :meth:`checkin`,
    a job) sets :attr:`lost`.

    ``token`` is the lease's fencing token: strictly increasing within a pool,
    even across a rollback of Redis data (see the README's clock assumption).
    ``nonce`` is a random value made by this client for this lease alone;
    renew, checkin and the worker's fence compare it with the token, so a
    holder whose token was issued again can still never act. Workers refuse
    jobs that carry a token or nonce other than their current lease's.
    """

    def __init__(
        self,
        pool: Pool,
        worker_id: str,
        token: int,
        ttl: float,
        *,
        auto_renew: bool,
        deadline: float,
        nonce: str = "",
    ) -> None:
        self.pool = pool
        self.worker_id = worker_id
        self.token = token
        self.nonce = nonce
        self.ttl = ttl
        self.auto_renew = auto_renew
        self._lost: threading.Event | None = None  # made on first use: most leases never need it
        #: Latest local ``time.monotonic()`` by which the lease surely holds.
        self.deadline = deadline
        self.renewed_at = mod_time.monotonic()
        self._closed = False
        self._pid = os.getpid()  # a forked child neither renews nor checks in this lease
        #: True once the lease is known to have ended because its worker died.
        self.worker_died = False

    @property
    def lost(self) -> threading.Event:
        """Set by whatever finds the lease ended (renewer, renew, checkin, a job)."""
        event = self._lost
        if event is None:
            with _MAKE_EVENT:
                if self._lost is None:
                    self._lost = threading.Event()
                event = self._lost
        return event

    @property
    def active(self) -> bool:
        """True until the lease is checked in or found lost."""
        return not self._closed and (self._lost is None or not self._lost.is_set())

    def remaining(self) -> float:
        """Seconds this lease surely still holds without another renewal (>= 0)."""
        return max(0.0, self.deadline - mod_time.monotonic())

    def renew(self) -> None:
        """Extend the lease by its TTL from now.

        Raises :class:`~redispool.LeaseLost` (and sets :attr:`lost`) if the
        lease has already ended.
        """
        self.pool.renew(self)

    def checkin(self) -> bool:
        """Return the worker. True if this call returned it; False if the
        lease had already ended (then :attr:`lost` is set, unless this lease
        was checked in before)."""
        return self.pool.checkin(self)

    def run(self, func: Callable[..., Any] | str, *args: Any, timeout: float = 30.0) -> Any:
        """Run the registered function ``func(*args)`` on this lease's worker and
        return its result (JSON in, JSON out). See :func:`redispool.jobs.run`
        for the errors it raises."""
        from .jobs import run

        return run(self, func, *args, timeout=timeout)

    def _mark_closed(self) -> bool:
        """Mark checked in; False if it already was."""
        was_open = not self._closed
        self._closed = True
        return was_open

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.checkin()

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else "closed" if self._closed else "active"
        return (
            f"<Lease pool={self.pool.name!r} worker={self.worker_id!r} token={self.token} {state}>"
        )
