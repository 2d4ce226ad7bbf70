"""Waiting for a worker: a ticket in the pool's queue, woken by a handoff or by its own clock.

A waiter blocks on its own key, where a checkin (or a sweep) hands it a worker
inside the same script that freed it, so waiters on every host are served first
come, first served. It also keeps its own clock: at the earliest lease deadline
it wakes, sweeps, and so gets the worker of a holder that died even when no
Reaper runs; every third of its keep-alive it tells the pool it is still there.
Giving up (timeout, interrupt, error) is one script that also returns anything
handed over meanwhile, so no worker is ever leaked to a caller that left.

A handoff stays in Redis until the waiter has made its Lease: the wait only
peeks at it, and it leaves Redis only after the Lease exists (at the lease's
checkin; with ``min_replicas``, through ``cancel_wait``, which also waits for
the replicas). So a waiter interrupted at any moment of a handoff (a
``KeyboardInterrupt``, a timeout firing) either finds the handoff still in
Redis or holds the Lease: it checks the worker in before the exception goes
on, and the worker goes to the next waiter. (A worker that a ``wait_tick`` or
``cancel_wait`` reply carries exists only in that reply: an interrupt inside
redis-py's few microseconds of reading it would lose it until its TTL.)
"""

from __future__ import annotations

import logging
import time as mod_time
from dataclasses import dataclass

from . import protocol
from .cluster import in_transit
from .errors import CheckoutTimeout, PoolError, PoolFull, PoolUnavailable
from .keys import PoolKeys
from .lease import Lease, LeaseOwner
from .protocol import Granted, Handoff, clock
from .renewer import Renewer
from .sender import Sender

__all__ = ["Waiter", "full", "timed_out"]

log = logging.getLogger("redispool.pool")

#: Seconds a waiter pauses before asking again while its cluster slot moves.
IN_TRANSIT_PAUSE = 0.05


def full(pool: str) -> PoolFull:
    return PoolFull(f"pool {pool!r}: no worker is idle", pool=pool, operation="checkout")


def timed_out(pool: str) -> CheckoutTimeout:
    return CheckoutTimeout(
        f"pool {pool!r}: no worker became free in time", pool=pool, operation="checkout"
    )


@dataclass
class Waiter:
    """One ``checkout``, queued if it must wait; :meth:`checkout` returns its lease or raises."""

    owner: LeaseOwner  # the pool the lease will name
    keys: PoolKeys  # the owner's
    sender: Sender
    renewer: Renewer
    ticket: str  # '' for a checkout that does not wait
    holder: str
    auto_renew: bool
    nonce: str = ""  # of the lease this waiter will hold, stored with its queue entry
    deadline: float | None = None  # local monotonic time to give up at; None: never
    ttl_ms: int = 0  # the lease TTL this waiter asked for, then the one the pool settled on
    clock: tuple[float, int] = (0.0, 0)  # (local send time, server ms) of the latest reply
    next_lease_end: int = -1  # the earliest lease deadline (server ms), -1 if none
    claiming: Lease | None = None  # a Lease made, kept until checkout returns

    def checkout(self, block: bool, timeout: float | None, alive_ms: int) -> Lease:
        """The whole checkout, from its first script to its Lease.

        Any exception (an interrupt included) from the first script on leaves
        the queue and checks in whatever was handed over, then propagates.
        """
        try:  # the body of the checkout is inline here (no _checkout): the hot path
            sent = mod_time.monotonic()
            self.deadline = None if timeout is None else sent + timeout
            op = protocol.checkout(
                self.keys, ttl_ms=self.ttl_ms, holder=self.holder, ticket=self.ticket,
                alive_ms=alive_ms, nonce=self.nonce,
            )  # fmt: skip
            while True:
                try:
                    result, acks = self.sender.send_acked(op)
                    break
                except PoolUnavailable as exc:
                    if not block:
                        raise
                    self._through_a_move(exc)
            if isinstance(result, Granted):
                lease = self._granted(result, sent)
                return lease if acks >= self.sender.need else self._confirmed(lease, acks)
            if not block:
                raise full(self.owner.name)
            if not self.ticket:
                raise timed_out(self.owner.name)
            self.ttl_ms, self.clock = result.ttl_ms, (sent, result.now_ms)
            self.next_lease_end = result.next_deadline_ms
            return self._wait()
        except (PoolFull, CheckoutTimeout):
            raise  # raised here after the ticket left the queue, or never was in it
        except BaseException:
            self._abandon()
            raise

    def _wait(self) -> Lease:
        """Block until handed a worker; :class:`CheckoutTimeout` at the deadline.

        A cluster slot that moves for longer than the slot client's own retries
        (``PoolUnavailable`` saying nothing ran) does not end the wait: the waiter
        is still queued, and asks again until its deadline.
        """
        while True:
            try:
                return self._wait_once()
            except PoolUnavailable as exc:
                self._through_a_move(exc)

    def _through_a_move(self, exc: PoolUnavailable) -> None:
        """Pause and return if ``exc`` says a cluster slot is moving (nothing ran) and
        the deadline leaves time to ask again; else raise it."""
        cause, deadline = exc.__cause__, self.deadline
        late = deadline is not None and mod_time.monotonic() + IN_TRANSIT_PAUSE >= deadline
        if cause is None or not in_transit(cause) or late:
            raise exc
        log.info("pool %s: waiting through a slot move: %s", self.owner.name, exc)
        mod_time.sleep(IN_TRANSIT_PAUSE)

    def _wait_once(self) -> Lease:
        wake = self.keys.wake(self.ticket)
        while True:
            now = mod_time.monotonic()
            wake_at = clock.waiter_wake_at(
                now, self.ttl_ms, self.next_lease_end, self.clock, self.deadline
            )
            peeked = self.sender.peek_wait(wake, wake_at - now)
            if peeked is not None:
                lease = self._claim(protocol.read_handoff(self.keys, self.ticket, peeked))
                if lease is not None:
                    return lease
                continue
            if self.deadline is not None and mod_time.monotonic() >= self.deadline:
                return self._give_up()
            lease = self._tick()
            if lease is not None:
                return lease

    def _claim(self, handoff: Handoff) -> Lease | None:
        """Take the handoff seen in the wake key; None if it was gone (then the
        waiter has left the queue and rejoins it).

        Without ``min_replicas`` there is nothing to ask Redis: the handoff's
        script already took this waiter out of the queue, so the Lease is made
        from what the wait saw, and the handoff stays in the wake key until the
        lease's checkin deletes it (or its TTL, the lease's own, ends it). An
        interrupt before the Lease is returned still finds it there. With
        ``min_replicas``, ``cancel_wait`` takes it and ``WAIT`` says whether
        enough replicas have the handoff."""
        self.claiming = self._handed(handoff)  # before Redis lets go of it
        if not self.sender.need:
            self.claiming.wake_ticket = self.ticket
            return self._register(self.claiming, 0)
        cancel, acks = self.sender.send_acked(protocol.cancel_wait(self.keys, self.ticket))
        if cancel is None:  # only this waiter takes its handoff: cannot happen
            self.claiming = None
            log.warning("pool %s: a handoff to waiter %s vanished", self.owner.name, self.ticket)
            return self._tick()
        return self._register(self.claiming, acks)

    def _register(self, lease: Lease, acks: int) -> Lease:
        """``lease`` confirmed by enough replicas, renewed if asked (kept as
        ``claiming`` first: an interrupt from here on checks it in)."""
        self.claiming = lease
        lease = self._confirmed(lease, acks)
        if self.auto_renew:
            self.renewer.add(lease)
        return lease

    def _confirmed(self, lease: Lease, acks: int) -> Lease:
        """``lease`` if enough replicas have it; else it is checked in and
        :class:`PoolUnavailable` raised."""
        if acks >= self.sender.need:
            return lease
        try:
            lease.checkin()
            done = "the lease was checked in"
        except PoolError as exc:
            done = f"checking the lease in failed too ({exc}): it ends after its TTL"
        raise self.sender.unacked("checkout", acks, lease.worker_id, done)

    def _tick(self) -> Lease | None:
        """Sweep, say we are alive; a lease if that freed a worker for us."""
        sent = mod_time.monotonic()
        remaining = None if self.deadline is None else self.deadline - sent
        op = protocol.wait_tick(
            self.keys, ticket=self.ticket, ttl_ms=self.ttl_ms, holder=self.holder,
            alive_ms=clock.alive_ms(self.ttl_ms, remaining), nonce=self.nonce,
        )  # fmt: skip
        tick, acks = self.sender.send_acked(op)
        if isinstance(tick, Handoff):
            return self._register(self._handed(tick), acks)
        if isinstance(tick, Granted):
            return self._confirmed(self._granted(tick, sent), acks)
        self.next_lease_end, self.clock = tick.next_deadline_ms, (sent, tick.now_ms)
        return None

    def _give_up(self) -> Lease:
        cancel, acks = self.sender.send_acked(protocol.cancel_wait(self.keys, self.ticket))
        if cancel is not None:  # handed a worker just as we gave up: keep it
            return self._register(self._handed(cancel), acks)
        raise timed_out(self.owner.name)

    def _abandon(self) -> None:
        """Leave the queue after an error or interrupt; check in anything
        handed meanwhile, whether still in Redis or already made a Lease."""
        handed: list[Lease] = []
        claiming = self.claiming  # the Lease made (and maybe being renewed): checked in
        try:
            try:
                if self.ticket:
                    cancel = self.sender.send(protocol.cancel_wait(self.keys, self.ticket))
                    if cancel is not None and (claiming is None or cancel.token != claiming.token):
                        handed.append(self._handed(cancel))
            finally:  # even if leaving the queue failed: the renewer lets go of it at least
                if claiming is not None:
                    handed.append(claiming)
                for lease in handed:
                    lease.checkin()
        except PoolError as exc:
            log.warning("pool %s: could not leave the wait queue: %s", self.owner.name, exc)

    def _granted(self, granted: Granted, sent: float) -> Lease:
        """The Lease of an idle worker taken by a checkout or tick sent at ``sent``."""
        auto_renew = self.auto_renew
        lease = Lease.granted(self.owner, granted, self.nonce, auto_renew=auto_renew, sent=sent)
        self.claiming = lease  # before the renewer has it: an interrupt from here checks it in
        if self.auto_renew:
            self.renewer.add(lease)
        return lease

    def _handed(self, handoff: Handoff) -> Lease:
        """A Lease (not yet renewed) from a handoff."""
        return Lease.handed(self.owner, handoff, self.clock, auto_renew=self.auto_renew)
