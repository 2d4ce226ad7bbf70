"""Waiting for a worker: a ticket in the pool's queue, woken by a handoff or by its own clock.

A waiter blocks on its own key, where a checkin (or a sweep) hands it a worker
inside the same script that freed it, so waiters on every host are served first
come, first served. It also keeps its own clock: at the earliest lease deadline
it wakes, sweeps, and so gets the worker of a holder that died even when no
Reaper runs; every third of its keep-alive it tells the pool it is still there.
Giving up (timeout, interrupt, error) is one script that also returns anything
handed over meanwhile, so no worker is ever leaked to a caller that left.
"""

from __future__ import annotations

import logging
import time as mod_time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import errors
from .errors import PoolError
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
    """One queued ``checkout``; :meth:`wait` returns its lease or raises."""

    pool: Pool
    ticket: str
    holder: str
    auto_renew: bool
    deadline: float | None  # local monotonic time to give up at; None: never
    ttl_ms: int  # the lease TTL this waiter asked for
    clock: tuple[float, int]  # (local send time, server ms) of the latest reply
    next_lease_end: int  # the earliest lease deadline (server ms), -1 if none
    nonce: str  # of the lease this waiter will hold, stored with its queue entry

    @property
    def wake(self) -> str:
        return self.pool.keys.wake(self.ticket)

    def wait(self) -> Lease:
        """Block until handed a worker; :class:`CheckoutTimeout` at the deadline."""
        try:
            while True:
                now = mod_time.monotonic()
                with self.pool.redis_errors("checkout (waiting)"):
                    handoff = self.pool._wire.pop_wait(self.wake, self._wake_at(now) - now)
                if handoff is not None:
                    return self._handed(handoff)
                if self.deadline is not None and mod_time.monotonic() >= self.deadline:
                    break
                lease = self._tick()
                if lease is not None:
                    return lease
        except BaseException:
            self._abandon()
            raise
        return self._give_up()

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

    def _tick(self) -> Lease | None:
        """Sweep, say we are alive; a lease if that freed a worker for us."""
        sent = mod_time.monotonic()
        remaining = None if self.deadline is None else self.deadline - sent
        args = (
            self.ticket, self.ttl_ms, self.holder, alive_ms(self.ttl_ms, remaining), self.nonce
        )
        tick = self.pool._run("wait_tick", args, extra_keys=(self.wake,))
        if int(tick[0]) == errors.OK:
            if len(tick) == 2:
                return self._handed(tick[1])
            return self.pool._lease(tick, self.nonce, self.auto_renew, sent)
        self.next_lease_end, self.clock = int(tick[1]), (sent, int(tick[2]))
        return None

    def _give_up(self) -> Lease:
        cancel = self.pool._run("cancel_wait", (self.ticket,), extra_keys=(self.wake,))
        if int(cancel[0]) == errors.OK:  # handed a worker just as we gave up: keep it
            return self._handed(cancel[1])
        raise self.pool._timeout()

    def _abandon(self) -> None:
        """Leave the queue after an error; check in anything handed meanwhile."""
        try:
            cancel = self.pool._run("cancel_wait", (self.ticket,), extra_keys=(self.wake,))
            if int(cancel[0]) == errors.OK:
                self.auto_renew = False
                self._handed(cancel[1]).checkin()
        except PoolError as exc:
            log.warning("pool %s: could not leave the wait queue: %s", self.pool.name, exc)

    def _handed(self, handoff: Any) -> Lease:
        """A Lease from a handoff ``token|deadline_ms|ttl_ms|nonce|worker_id``."""
        token, deadline_ms, ttl_ms, nonce, worker_id = text(handoff).split("|", 4)
        sent, server_now = self.clock
        deadline = sent + (int(deadline_ms) - server_now) / 1000
        ttl = int(ttl_ms) / 1000
        lease = Lease(
            self.pool, worker_id, int(token), ttl, auto_renew=self.auto_renew, deadline=deadline,
            nonce=nonce,
        )
        lease.renewed_at = deadline - ttl
        if self.auto_renew:
            self.pool._renewer.add(lease)
        return lease
