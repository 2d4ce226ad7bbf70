"""Waiting for a worker, asyncio side: one waiting room per Pool serves every waiting checkout.

A checkout that finds no idle worker is queued in Redis as a waiter, exactly
as a sync one is (``checkout`` with a ticket): the queue is in Redis, so
waiters of every host, sync or asyncio, are served first come, first served.
What differs is how the client waits. A sync waiter blocks a connection on
its own wake key; here one task per Pool (the :class:`WaitingRoom`) blocks
one connection on the wake keys of the Pool's oldest waiting tickets at once
(``BLPOP key1 key2 ...``), so a thousand waiting tasks cost one blocked
connection. The room also keeps every waiter's time: keep-alive ticks
(``wait_tick``, many in one round trip), a sweep at the earliest lease
deadline (one tick of the oldest ticket, which hands freed workers to the
head of the queue), and giving up at each waiter's deadline (``cancel_wait``).

It watches the :data:`WINDOW` oldest tickets: the queue is served in order,
so a handoff goes to one of them. One that reaches a younger ticket anyway
(two checkouts reordered on their way to Redis) waits in its wake key and
comes with that ticket's next tick; nothing is lost. To add a key to the
watched set the room must end the blocked ``BLPOP``: it pushes onto its own
*bell* key, which is in the set (no ``CLIENT UNBLOCK`` right needed). A few
unused tickets are watched ahead of need, so a new waiter usually takes one
that is already watched and nothing is sent again.

``BLPOP`` takes the handoff out of Redis, so the room's read is never
cancelled: the room ends its own wait only with the bell, and a handoff it
reads always reaches a Lease, or a checkin when its checkout is gone
(cancelled, timed out, failed). Only a connection lost while the reply was in
flight loses a handoff; its lease then ends after its TTL and the worker is
reclaimed, as for any holder that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time as mod_time
from collections.abc import Callable
from typing import Any

import redis

from .. import protocol
from ..errors import CheckoutTimeout, PoolError, PoolUnavailable
from ..keys import PoolKeys
from ..protocol import Granted, Handoff, Op, Queued, Waiting, clock
from ..wire import text
from .calls import Caller
from .tickets import Claim, Schedule, Ticket
from .wire import Line, Wire

__all__ = ["WaitingRoom"]

log = logging.getLogger("redispool.pool")

#: The oldest waiting tickets the blocked ``BLPOP`` watches.
WINDOW = 64
#: Unused tickets it watches ahead of need.
SPARES = 16
#: Seconds the server's own ``BLPOP`` timeout lasts: the room sends it again then.
BACKSTOP = 5.0
#: Seconds a ``BLPOP`` reply may come after its backstop before the line is dead.
BACKSTOP_SLACK = 5.0
#: Milliseconds the bell key lives (a client that died leaves nothing behind).
BELL_TTL_MS = 60_000
#: Seconds between attempts to reconnect the blocked line while Redis is unreachable.
RETRY_DELAY = 0.2
#: Keep-alive ticks due this soon go with the ones due now (seconds).
TICK_EARLY = 0.05


class WaitingRoom:
    """The Pool's waiting room (see the module's doc).

    ``undo`` is called with a claim whose checkout is gone: the Pool checks
    its worker in. Every method but :meth:`aclose` returns without awaiting,
    so a checkout hands its ticket over whatever moment it is cancelled at.
    """

    def __init__(self, keys: PoolKeys, caller: Caller, undo: Callable[[Claim], None]) -> None:
        self._keys = keys
        self._caller = caller
        self._undo = undo
        self._tickets: dict[str, Ticket] = {}  # by wake key, oldest first
        self._schedule = Schedule()
        self._spares: list[str] = []
        self._leaving: list[Ticket] = []
        self._bell = keys.wake(f"bell-{os.urandom(8).hex()}")
        self._ids = (f"{os.urandom(8).hex()}{n:x}" for n in itertools.count())
        self._task: asyncio.Task[None] | None = None
        self._poked: asyncio.Future[None] | None = None
        self._line: Line | None = None
        self._blocked: asyncio.Future[Any] | None = None
        self._watched: frozenset[str] = frozenset()
        self._rung = False
        self._next_lease_end = -1  # server ms of the earliest lease deadline
        self._lease_clock: tuple[float, int] = (0.0, 0)
        self._closing = False

    # -- what checkouts call (none of it awaits) --------------------------------

    def reserve(self, nonce: str, holder: str) -> Ticket:
        """A ticket for a checkout about to be sent; its wake key is watched
        (or will be) before the checkout can be queued under it."""
        if self._closing:
            raise PoolUnavailable("the pool is closed", pool=self._keys.pool, operation="checkout")
        ticket_id = self._spares.pop() if self._spares else next(self._ids)
        future: asyncio.Future[Claim] = asyncio.get_running_loop().create_future()
        ticket = Ticket(ticket_id, self._keys.wake(ticket_id), future, nonce, holder)
        self._tickets[ticket.key] = ticket
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"redispool-waiting-{self._keys.pool}"
            )
        if ticket.key not in self._watched and len(self._tickets) <= WINDOW:
            self._poke()
        return ticket

    def release(self, ticket: Ticket) -> None:
        """The checkout was not queued (a worker was idle, or ``block=False``)."""
        if self._tickets.pop(ticket.key, None) is ticket and ticket.state == "reserved":
            self._spares.append(ticket.id)  # never queued: it may serve again
        ticket.state = "gone"

    def wait(
        self, ticket: Ticket, queued: Queued, sent: float, deadline: float | None
    ) -> asyncio.Future[Claim]:
        """The checkout was queued: the future of its claim (or of
        :class:`CheckoutTimeout`, or of the error that ended its wait)."""
        if ticket.state != "reserved":
            return ticket.future
        ticket.state, ticket.ttl_ms, ticket.deadline = "waiting", queued.ttl_ms, deadline
        ticket.clock = (sent, queued.now_ms)
        self._lease_end(queued.next_deadline_ms, ticket.clock)
        self._tick_at(ticket, sent)
        if deadline is not None:
            self._schedule.add(deadline, ticket)
        for handoff in ticket.early:
            self._deliver(ticket, handoff, sent)
        ticket.early.clear()
        self._poke()
        return ticket.future

    def abandon(self, ticket: Ticket) -> None:
        """The checkout is gone (cancelled, failed) after its first script
        answered: leave the queue, and check in whatever was or will be
        handed to it. (A checkout cancelled before that answer leaves it to
        the answer's orphan handler, which calls this or :meth:`release`.)"""
        if ticket.state == "abandoned":
            return
        future = ticket.future
        if future.done() and not future.cancelled() and future.exception() is None:
            ticket.future = asyncio.get_running_loop().create_future()  # undone once only
            self._undo(future.result())  # handed over as its checkout was cancelled
        for handoff in ticket.early:
            self._undo(Claim(handoff, 0.0, ticket.clock, handoff.nonce))
        ticket.early.clear()
        ticket.state = "abandoned"
        self._tickets.setdefault(ticket.key, ticket)
        self._leaving.append(ticket)
        self._poke()

    def __len__(self) -> int:
        """Tickets reserved or waiting."""
        return sum(1 for t in self._tickets.values() if t.live)

    # -- the room's task ------------------------------------------------------------

    def _poke(self) -> None:
        if self._poked is not None and not self._poked.done():
            self._poked.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                await self._block()
            except PoolError as exc:
                self._fail_all(exc)
                await asyncio.sleep(RETRY_DELAY)
                continue
            self._poked = loop.create_future()
            waits: set[asyncio.Future[Any]] = {self._poked}
            if self._blocked is not None:
                waits.add(self._blocked)
            await asyncio.wait(waits, timeout=self._timer(), return_when=asyncio.FIRST_COMPLETED)
            if self._blocked is not None and self._blocked.done():
                self._read_blocked()
            await self._keep_time()
        await self._unblock()

    def _timer(self) -> float | None:
        """Seconds until the room must act without being woken (None: never)."""
        if self._leaving:
            return 0.0
        due = self._schedule.first()
        if self._next_lease_end >= 0 and self._oldest_waiting() is not None:
            lease_end = clock.local_time(*self._lease_clock, self._next_lease_end)
            lease_end += clock.DEADLINE_MARGIN
            due = lease_end if due is None else min(due, lease_end)
        return None if due is None else max(0.0, due - mod_time.monotonic())

    def _oldest_waiting(self) -> Ticket | None:
        return next((t for t in self._tickets.values() if t.state == "waiting"), None)

    def _window(self) -> list[str]:
        live = (t.key for t in self._tickets.values() if t.live)
        return list(itertools.islice(live, WINDOW))

    async def _block(self) -> None:
        """Keep a ``BLPOP`` blocked on the wake keys of the oldest live tickets."""
        if self._blocked is not None and self._watched.issuperset(self._window()):
            return
        await self._unblock()
        if self._line is None or not self._line.usable:
            if self._line is not None:
                await self._line.aclose()
                self._line = None
            try:
                self._line = await self._caller.wire.open_line()
            except redis.RedisError as exc:
                raise protocol.translate(exc, self._keys.pool, "checkout (waiting)") from exc
        # no await from here to the send: a ticket reserved meanwhile is in `keys`
        while len(self._spares) < SPARES:
            self._spares.append(next(self._ids))
        keys = [*self._window(), *(self._keys.wake(s) for s in self._spares), self._bell]
        command = ("BLPOP", *keys, f"{BACKSTOP:.3f}")
        (self._blocked,) = self._line.send(Wire.pack(command), timeout=BACKSTOP + BACKSTOP_SLACK)
        self._watched, self._rung = frozenset(keys), False

    async def _unblock(self) -> None:
        """End the blocked ``BLPOP`` with the bell and read what it answered."""
        blocked = self._blocked
        if blocked is None:
            return
        if not blocked.done() and not self._rung:
            self._rung = True
            with contextlib.suppress(redis.RedisError):
                await self._caller.wire.call_many(
                    [("LPUSH", self._bell, "1"), ("PEXPIRE", self._bell, BELL_TTL_MS)]
                )
        await asyncio.wait({blocked})
        self._read_blocked()

    def _read_blocked(self) -> None:
        blocked, self._blocked = self._blocked, None
        self._watched = frozenset()
        if blocked is None:
            return
        try:
            reply = blocked.result()
        except redis.RedisError as exc:
            if not self._closing:
                self._fail_all(protocol.translate(exc, self._keys.pool, "checkout (waiting)"))
            return
        if not reply or text(reply[0]) == self._bell:
            return  # the backstop ran out, or the bell rang: sent again
        self._handed(self._tickets.get(text(reply[0])), Handoff.parse(reply[1]))

    def _handed(self, ticket: Ticket | None, handoff: Handoff) -> None:
        if ticket is not None and ticket.state == "reserved":
            ticket.early.append(handoff)
        elif ticket is not None and ticket.state == "waiting":
            self._deliver(ticket, handoff, mod_time.monotonic())
        else:  # its checkout is gone
            self._undo(Claim(handoff, 0.0, ticket.clock if ticket else (0.0, 0), handoff.nonce))

    def _deliver(self, ticket: Ticket, result: Granted | Handoff, sent: float) -> None:
        claim = Claim(result, sent, ticket.clock, ticket.nonce)
        self._tickets.pop(ticket.key, None)
        ticket.state = "gone"
        if ticket.future.done():  # cannot happen: a checkout that left abandoned first
            self._undo(claim)
        else:
            ticket.future.set_result(claim)

    def _finish(self, ticket: Ticket, error: BaseException) -> None:
        self._tickets.pop(ticket.key, None)
        ticket.state = "gone"
        if not ticket.future.done():
            ticket.future.set_exception(error)

    def _fail_all(self, error: BaseException) -> None:
        for ticket in list(self._tickets.values()):
            if ticket.live:
                self._finish(ticket, error)

    def _lease_end(self, next_deadline_ms: int, at: tuple[float, int]) -> None:
        self._next_lease_end, self._lease_clock = next_deadline_ms, at

    def _tick_at(self, ticket: Ticket, sent: float) -> None:
        ticket.next_tick = clock.waiter_wake_at(sent, ticket.ttl_ms, -1, ticket.clock, None)
        self._schedule.add(ticket.next_tick, ticket)

    # -- timekeeping: ticks, timeouts, leaving, in one round trip ------------------

    async def _keep_time(self) -> None:
        now = mod_time.monotonic()
        jobs: list[tuple[Op[Any], Callable[[Any, float], None]]] = []
        leaving, self._leaving = self._leaving, []
        for ticket in leaving:
            jobs.append((protocol.cancel_wait(self._keys, ticket.id), self._left(ticket)))
        due = self._schedule.due(now, TICK_EARLY)
        lease_end = clock.local_time(*self._lease_clock, self._next_lease_end)
        if self._next_lease_end >= 0 and lease_end <= now:  # one tick sweeps for all
            self._next_lease_end = -1  # until a tick tells the next one
            oldest = self._oldest_waiting()
            if oldest is not None and oldest not in due:
                due.append(oldest)
        for ticket in due:
            if ticket.deadline is not None and ticket.deadline <= now:
                ticket.state = "leaving"
                jobs.append((protocol.cancel_wait(self._keys, ticket.id), self._gave_up(ticket)))
            else:
                jobs.append((self._tick_op(ticket, now), self._ticked(ticket)))
        if not jobs:
            return
        sent = mod_time.monotonic()
        try:
            results = await self._caller.run_many([op for op, _ in jobs])
        except PoolError as exc:
            results = [exc] * len(jobs)
        for (_, then), result in zip(jobs, results, strict=True):
            then(result, sent)

    def _tick_op(self, ticket: Ticket, now: float) -> Op[Handoff | Granted | Waiting]:
        left = None if ticket.deadline is None else ticket.deadline - now
        return protocol.wait_tick(
            self._keys, ticket=ticket.id, ttl_ms=ticket.ttl_ms, holder=ticket.holder,
            alive_ms=clock.alive_ms(ticket.ttl_ms, left), nonce=ticket.nonce,
        )  # fmt: skip

    def _ticked(self, ticket: Ticket) -> Callable[[Any, float], None]:
        def then(result: Any, sent: float) -> None:
            if isinstance(result, BaseException):
                if ticket.state == "waiting":
                    self._finish(ticket, result)
            elif isinstance(result, Waiting):
                ticket.clock = (sent, result.now_ms)
                self._lease_end(result.next_deadline_ms, ticket.clock)
                if ticket.state == "waiting":
                    self._tick_at(ticket, sent)
            elif ticket.state == "waiting":
                self._deliver(ticket, result, sent)
            else:
                self._undo(Claim(result, sent, (sent, 0), ticket.nonce))

        return then

    def _gave_up(self, ticket: Ticket) -> Callable[[Any, float], None]:
        def then(result: Any, sent: float) -> None:
            if isinstance(result, Handoff):  # handed a worker just as it gave up: keep it
                self._deliver(ticket, result, sent)
                return
            if not isinstance(result, BaseException):
                result = CheckoutTimeout(
                    f"pool {self._keys.pool!r}: no worker became free in time",
                    pool=self._keys.pool, operation="checkout",
                )  # fmt: skip
            self._finish(ticket, result)

        return then

    def _left(self, ticket: Ticket) -> Callable[[Any, float], None]:
        def then(result: Any, sent: float) -> None:
            self._tickets.pop(ticket.key, None)
            if isinstance(result, Handoff):
                self._undo(Claim(result, sent, ticket.clock, ticket.nonce))
            elif isinstance(result, BaseException):
                log.warning("pool %s: could not leave the wait queue: %s", self._keys.pool, result)

        return then

    # -- closing -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Fail every waiting checkout, leave the queue, check in what came."""
        self._closing = True
        closed = PoolUnavailable("the pool was closed", pool=self._keys.pool, operation="checkout")
        for ticket in list(self._tickets.values()):
            if ticket.live:
                self._leaving.append(ticket)
                self._finish(ticket, closed)
        self._poke()
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        await self._keep_time()  # leave the queue
        if self._line is not None:
            await self._line.aclose()
