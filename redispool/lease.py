"""A lease: the exclusive use of one worker, proven by a fencing token."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from redis import Redis

from .keys import PoolKeys
from .protocol import Granted, Handoff, LeaseLife
from .sender import Sender

__all__ = ["Lease", "LeaseOwner"]

_MAKE_EVENT = threading.Lock()  # two threads must not each make a lease its own `lost`


class LeaseOwner(Protocol):
    """What a lease needs of the pool it came from (:class:`redispool.Pool` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def keys(self) -> PoolKeys: ...

    @property
    def client(self) -> Redis: ...

    @property
    def sender(self) -> Sender: ...

    @property
    def lease_ttl_ms(self) -> int: ...

    def renew(self, lease: Lease) -> None: ...

    def checkin(self, lease: Lease) -> bool: ...

    def run(
        self, lease: Lease, func: Callable[..., Any] | str, *args: Any, timeout: float = 30.0
    ) -> Any: ...


class Lease(LeaseLife[threading.Event]):
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

    #: The ticket of the waiter this lease was handed to while its handoff is
    #: still in the waiter's wake key (taken without a claim): the checkin
    #: deletes it. A class default: most leases have none.
    wake_ticket = ""

    def __init__(
        self,
        pool: LeaseOwner,
        worker_id: str,
        token: int,
        ttl: float,
        *,
        auto_renew: bool,
        deadline: float,
        nonce: str = "",
        renewed_at: float | None = None,
    ) -> None:
        super().__init__(
            worker_id, token, ttl, auto_renew=auto_renew, deadline=deadline, nonce=nonce,
            renewed_at=renewed_at,
        )  # fmt: skip
        self.pool = pool

    @classmethod
    def granted(
        cls, pool: LeaseOwner, granted: Granted, nonce: str, *, auto_renew: bool, sent: float
    ) -> Lease:
        """The lease a checkout (sent at local time ``sent``) was granted."""
        # LeaseLife.granted_times and __init__ without keywords, inline: the hot path
        # (three levels of keyword arguments cost more than the rest of it)
        ttl = granted.ttl_ms / 1000
        lease = cls.__new__(cls)
        LeaseLife.__init__(lease, granted.worker_id, granted.token, ttl, auto_renew, sent + ttl,
                           nonce, sent)  # fmt: skip
        lease.pool = pool
        return lease

    @classmethod
    def handed(
        cls, pool: LeaseOwner, handoff: Handoff, clock: tuple[float, int], *, auto_renew: bool
    ) -> Lease:
        """The lease handed to a waiter whose latest reply gave ``clock`` = ``(sent, now_ms)``."""
        deadline, renewed_at = cls.handoff_times(handoff, clock)
        return cls(
            pool, handoff.worker_id, handoff.token, handoff.ttl, auto_renew=auto_renew,
            deadline=deadline, nonce=handoff.nonce, renewed_at=renewed_at,
        )  # fmt: skip

    def _new_event(self) -> threading.Event:
        with _MAKE_EVENT:
            if self._lost is None:
                self._lost = threading.Event()
            return self._lost

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
        return self.pool.run(self, func, *args, timeout=timeout)

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
        return (
            f"<Lease pool={self.pool.name!r} worker={self.worker_id!r} token={self.token} "
            f"{self.state}>"
        )
