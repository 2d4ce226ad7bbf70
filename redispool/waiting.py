"""Waiting for a worker: a ticket in the pool's queue, woken by a handoff or by its own clock.

A waiter blocks on its own key, where a checkin (or a sweep) hands it a worker
inside the same script that freed it, so waiters on every host are served first
come, first served. It also keeps its own clock: at the earliest lease deadline
it wakes, sweeps, and so gets the worker of a holder that died even when no
Reaper runs; every third of its keep-alive it tells the pool it is still there.
Giving up (timeout, interrupt, error) is one script that also returns anything
handed over meanwhile, so no worker is ever leaked to a caller that left.

A handoff stays in Redis until the waiter has made its Lease: the wait only
peeks at it, and the script that then takes it (``cancel_wait``) runs after
the Lease exists. So a waiter interrupted at any moment of a handoff (a
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
from typing import TYPE_CHECKING, Any

from . import errors
from .errors import CheckoutTimeout, PoolError, PoolFull
from .lease import Lease
from .wire import text

if TYPE_CHECKING:
    from .pool import Pool

__all__ = ["HANDOFF_GRACE_MS", "Waiter", "alive_ms"]

log = logging.getLogger("redispool.pool")

#: Grace after a waiter's own timeout during which a handoff is still taken.
HANDOFF_GRACE_MS = 100
#: A waiter wakes this long after the lease deadline it waits for (ms).
DEADLINE_MARGIN = 0.002


def alive_ms(keepalive_ms: int, timeout: float | None) -> int:
    """How long the pool counts a waiter as alive without hearing from it."""
    if timeout is None:
        return keepalive_ms
    return min(keepalive_ms, round(timeout * 1000) + HANDOFF_GRACE_MS)


@dataclass
class Waiter:
    """One ``checkout``, queued if it must wait; :meth:`checkout` returns its lease or raises."""

    pool: Pool
    ticket: str  # '' for a checkout that does not wait
    holder: str
    auto_renew: bool
    deadline: float | None = None  # local monotonic time to give up at; None: never
    ttl_ms: int = 0  # the lease TTL this waiter asked for
    clock: tuple[float, int] = (0.0, 0)  # (local send time, server ms) of the latest reply
    next_lease_end: int = -1  # the earliest lease deadline (server ms), -1 if none
    claiming: Lease | None = None  # a Lease made, kept until checkout returns
    nonce: str = ""  # of the lease this waiter will hold, stored with its queue entry


    @property
    def wake(self) -> str:
        return self.pool.keys.wake(self.ticket)

    def checkout(self, block: bool, timeout: float | None, alive_ms: int) -> Lease:
        """The whole checkout, from its first script to its Lease.

        Any exception (an interrupt included) from the first script on leaves
        the queue and checks in whatever was handed over, then propagates.
        """
        try:
            return self._checkout(block, timeout, alive_ms)
        except (PoolFull, CheckoutTimeout):
            raise  # raised here after the ticket left the queue, or never was in it
        except BaseException:
            self._abandon()
            raise

    def _checkout(self, block: bool, timeout: float | None, alive_ms: int) -> Lease:
        pool = self.pool
        sent = mod_time.monotonic()
        self.deadline = None if timeout is None else sent + timeout
        args = (pool._ttl_ms, self.holder, self.ticket, alive_ms, self.nonce)
        reply, acks = pool._run_acked("checkout", args)
        if int(reply[0]) == errors.OK:
            self.claiming = pool._lease(reply, self.nonce, self.auto_renew, sent)
            return pool._confirmed(self.claiming, acks)
        if not block:
            raise pool._full()
        if not self.ticket:
            raise pool._timeout()
        self.ttl_ms, self.clock = int(reply[3]), (sent, int(reply[2]))
        self.next_lease_end = int(reply[1])
        return self._wait()

    def _wait(self) -> Lease:
        """Block until handed a worker; :class:`CheckoutTimeout` at the deadline."""
        while True:
            now = mod_time.monotonic()
            with self.pool.redis_errors("checkout (waiting)"):
                peeked = self.pool._wire.peek_wait(self.wake, self._wake_at(now) - now)
            if peeked is not None:
                lease = self._claim(peeked)
                if lease is not None:
                    return lease
                continue
            if self.deadline is not None and mod_time.monotonic() >= self.deadline:
                return self._give_up()
            lease = self._tick()
            if lease is not None:
                return lease

    def _wake_at(self, now: float) -> float:
        """When to stop blocking: keep-alive, the next lease deadline, or our own."""
        wake_at = now + self.ttl_ms / 1000 / 3
        if self.next_lease_end >= 0:
            sent, server_now = self.clock
            lease_end = sent + (self.next_lease_end - server_now) / 1000 + DEADLINE_MARGIN
            wake_at = min(wake_at, max(lease_end, now + 0.001))
        if self.deadline is not None:
            wake_at = min(wake_at, self.deadline)
        return max(wake_at, now)

    def _claim(self, peeked: Any) -> Lease | None:
        """Take the handoff seen in the wake key; None if it was gone (then the
        waiter has left the queue and rejoins it)."""
        self.claiming = self._handed(peeked)  # before Redis lets go of it
        cancel, acks = self._cancel()
        if int(cancel[0]) != errors.OK:  # only this waiter takes its handoff: cannot happen
            self.claiming = None
            log.warning("pool %s: a handoff to waiter %s vanished", self.pool.name, self.ticket)
            return self._tick()
        return self._register(self.claiming, acks)

    def _cancel(self) -> tuple[list[Any], int]:
        return self.pool._run_acked("cancel_wait", (self.ticket,), extra_keys=(self.wake,))

    def _register(self, lease: Lease, acks: int) -> Lease:
        """``lease`` confirmed by enough replicas, renewed if asked."""
        lease = self.pool._confirmed(lease, acks)
        if self.auto_renew:
            self.pool._renewer.add(lease)
        return lease

    def _tick(self) -> Lease | None:
        """Sweep, say we are alive; a lease if that freed a worker for us."""
        sent = mod_time.monotonic()
        remaining = None if self.deadline is None else self.deadline - sent
        args = (
            self.ticket, self.ttl_ms, self.holder, alive_ms(self.ttl_ms, remaining), self.nonce
        )
        tick, acks = self.pool._run_acked("wait_tick", args, extra_keys=(self.wake,))
        if int(tick[0]) == errors.OK:
            if len(tick) == 2:
                return self._register(self._handed(tick[1]), acks)
            lease = self.pool._lease(tick, self.nonce, self.auto_renew, sent)
            return self.pool._confirmed(lease, acks)
        self.next_lease_end, self.clock = int(tick[1]), (sent, int(tick[2]))
        return None

    def _give_up(self) -> Lease:
        cancel, acks = self._cancel()
        if int(cancel[0]) == errors.OK:  # handed a worker just as we gave up: keep it
            return self._register(self._handed(cancel[1]), acks)
        raise self.pool._timeout()

    def _abandon(self) -> None:
        """Leave the queue after an error or interrupt; check in anything
        handed meanwhile, whether still in Redis or already made a Lease."""
        try:
            handed = []
            if self.ticket:
                cancel = self.pool._run("cancel_wait", (self.ticket,), extra_keys=(self.wake,))
                if int(cancel[0]) == errors.OK:
                    handed.append(self._handed(cancel[1]))
            claiming = self.claiming
            if claiming is not None and all(h.token != claiming.token for h in handed):
                handed.append(claiming)
            for lease in handed:
                lease.checkin()
        except PoolError as exc:
            log.warning("pool %s: could not leave the wait queue: %s", self.pool.name, exc)

    def _handed(self, handoff: Any) -> Lease:
        """A Lease (not yet renewed) from a handoff ``token|deadline_ms|ttl_ms|nonce|worker_id``."""
        token, deadline_ms, ttl_ms, nonce, worker_id = text(handoff).split("|", 4)
        sent, server_now = self.clock
        deadline = sent + (int(deadline_ms) - server_now) / 1000
        ttl = int(ttl_ms) / 1000
        lease = Lease(
            self.pool, worker_id, int(token), ttl, auto_renew=self.auto_renew, deadline=deadline,
            nonce=nonce,
        )
        lease.renewed_at = deadline - ttl
        return lease
