"""A lease's life, granted -> renewed -> lost or closed, kept in one place.

:class:`LeaseLife` holds a lease's identity (worker, fencing token, nonce),
its local deadline and its state; every change of state is one of its
methods. The sync :class:`redispool.Lease` and the asyncio one subclass it and
differ only in the event they set when the lease is found lost
(``threading.Event`` or ``asyncio.Event``: :meth:`LeaseLife._new_event`).
"""

from __future__ import annotations

import os
import time as mod_time
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from ..errors import LeaseLost, WorkerLost
from . import clock
from .replies import Granted, Handoff

__all__ = ["HERE", "Event", "LeaseLife", "renewal_batch", "renewal_done", "renewal_failed"]


class _Process:
    """This process's id, kept up to date across ``fork`` (read without a call:
    the hot path compares it with a lease's ``pid`` at every checkin)."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def forked(self) -> None:
        self.pid = os.getpid()


#: This process (``HERE.pid``); a forked child's is its own.
HERE = _Process()
os.register_at_fork(after_in_child=HERE.forked)


class Event(Protocol):
    """What a lease needs of its ``lost`` event (both kinds of Event have it)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...


E = TypeVar("E", bound=Event)


class LeaseLife(Generic[E]):
    """The state of one lease.

    ``deadline`` is the latest local ``time.monotonic()`` by which the lease
    surely holds; ``renewed_at`` when it was last granted or renewed (the
    renewer's schedule). A lease is *active* until it is closed (checked in)
    or found lost; ``worker_died`` says a lost lease ended because its worker
    process died. A lease belongs to the process that made it: a forked child
    neither renews nor checks it in (:meth:`owned_here`).
    """

    def __init__(
        self,
        worker_id: str,
        token: int,
        ttl: float,
        auto_renew: bool,
        deadline: float,
        nonce: str = "",
        renewed_at: float | None = None,
    ) -> None:
        # positional too (not keyword-only): the sync Lease's granted() passes them so
        self.worker_id = worker_id
        self.token = token
        self.nonce = nonce
        self.ttl = ttl
        self.auto_renew = auto_renew
        self.deadline = deadline
        self.renewed_at = mod_time.monotonic() if renewed_at is None else renewed_at
        self.closed = False
        self.worker_died = False
        self.pid = HERE.pid
        self._lost: E | None = None  # made on first use: most leases never need it

    # -- how a lease is made ----------------------------------------------------

    @staticmethod
    def granted_times(granted: Granted, sent: float) -> tuple[float, float]:
        """``(deadline, renewed_at)`` of a lease granted by a reply to a request sent at
        ``sent``."""
        return sent + granted.ttl, sent

    @staticmethod
    def handoff_times(handoff: Handoff, clock_at: tuple[float, int]) -> tuple[float, float]:
        """``(deadline, renewed_at)`` of a handed-over lease, from the waiter's
        latest ``(sent, server_now_ms)``."""
        deadline = clock.local_time(*clock_at, handoff.deadline_ms)
        return deadline, deadline - handoff.ttl

    # -- its event ----------------------------------------------------------------

    def _new_event(self) -> E:
        raise NotImplementedError

    @property
    def lost(self) -> E:
        """Set by whatever finds the lease ended (renewer, renew, checkin, a job)."""
        event = self._lost
        if event is None:
            event = self._lost = self._new_event()
        return event

    # -- its state --------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True until the lease is checked in or found lost."""
        return not self.closed and (self._lost is None or not self._lost.is_set())

    @property
    def state(self) -> str:
        """``active``, ``lost`` or ``closed``."""
        if self._lost is not None and self._lost.is_set():
            return "lost"
        return "closed" if self.closed else "active"

    def owned_here(self) -> bool:
        """False in a forked child: the lease is its parent's."""
        return self.pid == HERE.pid

    def remaining(self, now: float | None = None) -> float:
        """Seconds this lease surely still holds without another renewal (>= 0)."""
        return clock.remaining(self.deadline, mod_time.monotonic() if now is None else now)

    def renew_due(self) -> float:
        """When the renewer should renew it next (monotonic)."""
        return clock.renew_due(self.renewed_at, self.ttl)

    # -- its changes ------------------------------------------------------------

    def renewed(self, sent: float) -> None:
        """The server extended it by its TTL, asked at local time ``sent``."""
        self.deadline, self.renewed_at = sent + self.ttl, sent

    def retry_renewal(self, now: float, delay: float) -> None:
        """A renewal failed (Redis unreachable): be due again ``delay`` seconds from ``now``."""
        self.renewed_at = clock.retry_due(self.renewed_at, now, self.ttl, delay)

    def close(self) -> bool:
        """Mark it checked in; False if it already was."""
        was_open = not self.closed
        self.closed = True
        return was_open

    def reopen(self) -> None:
        """Undo :meth:`close`: the checkin may not have reached Redis, so it can be tried again."""
        self.closed = False

    def ended_error(self, pool: str, operation: str) -> LeaseLost:
        """The exception for acting on this lease once it has ended:
        :class:`~redispool.WorkerLost` if its worker died, else
        :class:`~redispool.LeaseLost`."""
        about = {"pool": pool, "worker_id": self.worker_id, "operation": operation}
        where = f"pool {pool!r}: lease of worker {self.worker_id!r} (token {self.token})"
        if self.worker_died:
            return WorkerLost(f"{where} ended: its worker process died", **about)
        return LeaseLost(f"{where} has ended", **about)

    def end(self, *, worker_died: bool = False) -> None:
        """It is found lost (its worker process died, if ``worker_died``): set :attr:`lost`."""
        self.worker_died = self.worker_died or worker_died
        self.lost.set()


L = TypeVar("L", bound=LeaseLife[Any])


def renewal_batch(leases: Sequence[L]) -> list[tuple[str, int, str, int]]:
    """The ``renew`` operation's ``(worker_id, token, nonce, ttl_ms)`` for each lease."""
    return [(x.worker_id, x.token, x.nonce, round(x.ttl * 1000)) for x in leases]


def renewal_done(leases: Sequence[L], held: Sequence[bool], sent: float) -> list[L]:
    """Apply a renewal sent at ``sent`` (``held[i]``: lease i still held); the leases that
    had ended (the caller marks them lost)."""
    ended = []
    for lease, still in zip(leases, held, strict=True):
        if still:
            lease.renewed(sent)
        else:
            ended.append(lease)
    return ended


def renewal_failed(leases: Sequence[L], now: float, delay: float) -> list[L]:
    """A renewal that could not reach Redis: each lease is due again ``delay``
    seconds from ``now``; those whose local deadline has passed have ended
    whatever the server says later (the caller marks them lost)."""
    for lease in leases:
        lease.retry_renewal(now, delay)
    return [lease for lease in leases if lease.deadline <= now]
