"""What a running job knows about the lease it runs under: ``redispool.current_lease()``.

A job runs on a worker only while its lease is current; the worker watches
that lease for the whole job. Inside the job::

    lease = redispool.current_lease()
    store.write(lease.token, ...)   # hand the token on: the store fences itself
    if lease.lost.wait(0):          # or lease.check(), which raises LeaseLost
        ...

The moment the worker learns that the lease ended (expired, reclaimed,
checked in, its worker buried) it sets :attr:`JobLease.lost`; a job that has
not returned within the worker's stop grace (``--stop-grace``) is killed, and
whatever it would have returned is never reported as a success.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .errors import LeaseLost

__all__ = ["JobLease", "current_lease", "mark_lost", "set_current"]

_current: JobLease | None = None
_current_lock = threading.Lock()


@dataclass(frozen=True)
class JobLease:
    """The lease a job runs under: its pool, worker, fencing token, and ``lost``."""

    pool: str
    worker_id: str
    token: int
    #: Set the moment the worker learns that this lease has ended; never cleared.
    lost: threading.Event = field(default_factory=threading.Event, compare=False)

    def check(self) -> None:
        """Raise :class:`~redispool.LeaseLost` if the lease is known to have ended."""
        if self.lost.is_set():
            raise LeaseLost(
                f"pool {self.pool!r}: lease of worker {self.worker_id!r} (token {self.token}) "
                "ended while its job ran",
                pool=self.pool,
                worker_id=self.worker_id,
                operation="job",
            )


def current_lease() -> JobLease:
    """The lease of the job running now (from any thread of the job's process).

    Raises ``LookupError`` outside a job run by a redispool worker.
    """
    lease = _current
    if lease is None:
        raise LookupError("current_lease() is only known inside a job run by a redispool worker")
    return lease


def set_current(lease: JobLease | None) -> None:
    """The job process marks the job it starts (or that none runs)."""
    global _current
    with _current_lock:
        _current = lease


def mark_lost(token: int) -> None:
    """The job process heard that the lease of ``token`` ended."""
    with _current_lock:
        lease = _current
    if lease is not None and lease.token == token:
        lease.lost.set()
