"""The waiting room's records: a ticket per waiting checkout, the claim it ends with,
and the schedule of their ticks and deadlines."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from dataclasses import dataclass, field

from ..protocol import Granted, Handoff

__all__ = ["Claim", "Schedule", "Ticket"]


@dataclass(frozen=True)
class Claim:
    """A worker given to a checkout: the grant or handoff, the local time its
    request was sent (a grant's), the waiter's latest ``(sent, server_now_ms)``
    (a handoff's deadline is mapped through it) and the lease's nonce."""

    result: Granted | Handoff
    sent: float
    clock: tuple[float, int]
    nonce: str


@dataclass(eq=False)
class Ticket:
    """One checkout's place in the queue, from before its first script to its Lease.

    ``state``: *reserved* (its checkout script is on its way), *waiting*
    (queued in Redis), *leaving* (giving up at its deadline), *abandoned* (its
    checkout is gone: the room leaves the queue for it), *gone*.
    """

    id: str
    key: str  # its wake list
    future: asyncio.Future[Claim]
    nonce: str = ""
    holder: str = ""
    state: str = "reserved"
    ttl_ms: int = 0
    deadline: float | None = None  # local monotonic time to give up at
    clock: tuple[float, int] = (0.0, 0)
    next_tick: float = math.inf
    early: list[Handoff] = field(default_factory=list)  # came while reserved

    @property
    def live(self) -> bool:
        return self.state in ("reserved", "waiting")


class Schedule:
    """Waiting tickets by the time they next need the room: a keep-alive tick or
    their deadline. A heap; entries a ticket no longer needs are skipped."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Ticket]] = []
        self._seq = itertools.count()

    def add(self, when: float, ticket: Ticket) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), ticket))

    @staticmethod
    def _wanted(when: float, ticket: Ticket) -> bool:
        return ticket.state == "waiting" and when in (ticket.next_tick, ticket.deadline)

    def first(self) -> float | None:
        """When the next ticket is due (monotonic), None if none is."""
        heap = self._heap
        while heap and not self._wanted(heap[0][0], heap[0][2]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, now: float, early: float) -> list[Ticket]:
        """Tickets due by ``now``; keep-alive ticks due within ``early`` seconds
        come along too (one round trip for many). Each ticket once."""
        found: dict[int, Ticket] = {}
        heap = self._heap
        while heap:
            when, _, ticket = heap[0]
            if not self._wanted(when, ticket):
                heapq.heappop(heap)
            elif when <= now or (when <= now + early and when == ticket.next_tick):
                heapq.heappop(heap)
                found[id(ticket)] = ticket
            else:
                break
        return list(found.values())
