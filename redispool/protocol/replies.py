"""The typed results of the operations (what each script's reply means)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..wire import text

__all__ = [
    "Buried",
    "Checkin",
    "Granted",
    "Handoff",
    "Queued",
    "Reclaimed",
    "Renewal",
    "Waiting",
]


@dataclass(slots=True, unsafe_hash=True)  # not frozen: the hot path (see op.Op)
class Granted:
    """A worker leased to the caller: ``{OK, worker_id, token, deadline_ms, ttl_ms}``."""

    worker_id: str
    token: int
    deadline_ms: int  # server ms
    ttl_ms: int

    @classmethod
    def of(cls, reply: Any) -> Granted:
        return cls(text(reply[1]), int(reply[2]), int(reply[3]), int(reply[4]))

    @property
    def ttl(self) -> float:
        return self.ttl_ms / 1000


@dataclass(slots=True, unsafe_hash=True)  # not frozen: the hot path (see op.Op)
class Queued:
    """No worker was idle: ``{QUEUED|FULL, next_deadline_ms, now_ms, ttl_ms}``.

    ``queued`` says whether the caller now waits in the queue (it gave a
    ticket); ``next_deadline_ms`` is the earliest lease deadline, -1 if none;
    ``ttl_ms`` the lease TTL the pool settled on for this caller.
    """

    queued: bool
    next_deadline_ms: int
    now_ms: int
    ttl_ms: int


@dataclass(frozen=True)
class Waiting:
    """A waiter's tick found nothing for it: ``{QUEUED, next_deadline_ms, now_ms}``."""

    next_deadline_ms: int
    now_ms: int


@dataclass(frozen=True)
class Handoff:
    """A worker handed to a waiter, stored as ``token|deadline_ms|ttl_ms|nonce|worker_id``
    in its wake list (a ``wait_tick`` or ``cancel_wait`` reply carries it too)."""

    worker_id: str
    token: int
    deadline_ms: int  # server ms
    ttl_ms: int
    nonce: str

    @classmethod
    def parse(cls, raw: Any) -> Handoff:
        token, deadline_ms, ttl_ms, nonce, worker_id = text(raw).split("|", 4)
        return cls(worker_id, int(token), int(deadline_ms), int(ttl_ms), nonce)

    @property
    def ttl(self) -> float:
        return self.ttl_ms / 1000


@dataclass(slots=True, unsafe_hash=True)  # not frozen: the hot path (see op.Op)
class Checkin:
    """What a checkin did: ``returned`` the worker, or found the lease ended
    (``worker_died`` when its worker process had died)."""

    returned: bool
    worker_died: bool = False


@dataclass(slots=True, unsafe_hash=True)  # not frozen: the hot path (see op.Op)
class Renewal:
    """One renew call: the server's ``now_ms`` and, per lease in order, whether it still held."""

    now_ms: int
    held: tuple[bool, ...]


@dataclass(frozen=True)
class Reclaimed:
    """One reclaim call: expired leases whose workers it returned, dead waiter
    entries trimmed, lost workers put back; ``more`` when it stopped at its
    limit (call again)."""

    returned: int
    next_deadline_ms: int
    now_ms: int
    trimmed: int
    repaired: int
    more: bool = False


@dataclass(frozen=True)
class Buried:
    """One burial call: ``buried`` dead workers; ``state`` of the lease asked
    about (``OK``, ``WORKER_DEAD``, ``NOT_HELD``; -1 when none was asked);
    ``more`` when it stopped at its limit (call again)."""

    buried: int
    state: int
    more: bool = False
