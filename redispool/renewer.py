"""One background thread per Pool that keeps its leases alive.

All live leases of a Pool are renewed in one round trip per interval (a third
of the shortest TTL), so thousands of leases cost one thread and one script
call per interval. A lease the server no longer holds is marked lost and
dropped; a lease whose local deadline passes while Redis is unreachable is
marked lost too, since it has ended whatever the server says later.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time as mod_time
import weakref
from collections.abc import Callable, Sequence

from .lease import Lease
from .protocol import renewal_failed

__all__ = ["Renewer"]

log = logging.getLogger("redispool.renewer")

RETRY_DELAY = 0.2  # seconds between attempts while Redis is unreachable
IDLE_NAP = 1.0  # most seconds the thread sleeps with no lease (a third of the shortest TTL seen)

_RENEWERS: weakref.WeakSet[Renewer] = weakref.WeakSet()


def _forget_parents_leases() -> None:
    """In a forked child: no renewer thread, no lease of the parent, no lock it held."""
    for renewer in list(_RENEWERS):
        renewer._reset()


os.register_at_fork(after_in_child=_forget_parents_leases)


#: Renews the leases given in one round trip and returns those that had ended.
RenewMany = Callable[[Sequence[Lease]], list[Lease]]


class Renewer:
    """Renews the registered leases of pool ``name`` with ``renew_many`` until they end.

    A forked child starts with an empty renewer (``os.register_at_fork``): it
    never renews its parent's leases, and never waits on a lock that the
    parent's renewer thread held at the fork.
    """

    def __init__(self, name: str, renew_many: RenewMany) -> None:
        self.name = name
        self._renew_many = renew_many
        self._idle_nap = IDLE_NAP
        self._reset()
        _RENEWERS.add(self)

    def _reset(self) -> None:
        self._leases: dict[int, Lease] = {}
        # Never taken twice by one thread: a plain Lock, cheaper than the default
        # RLock. Every ``with`` takes the Lock itself, never the Condition: the
        # Condition's ``__enter__`` is Python code that checks for signals once
        # its acquire returns, so an interrupt there (a KeyboardInterrupt in the
        # main thread) left the lock held for ever; a C lock's ``__enter__`` lets
        # nothing run between the acquire and the block that releases it.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # for wait and notify only
        self._thread: threading.Thread | None = None
        #: A thread runs and will see new leases; set and cleared under the lock,
        #: so asking costs no ``Thread.is_alive()`` at each registration.
        self._running = False
        self._stopping = False
        self._wake_at = math.inf  # when the thread wakes next (monotonic)

    def add(self, lease: Lease) -> None:
        with self._lock:
            self._leases[id(lease)] = lease  # by identity: tokens can repeat
            if not self._running:
                self._start()
            self._idle_nap = min(self._idle_nap, lease.ttl / 3)
            if lease.renew_due() < self._wake_at:
                self._cond.notify_all()  # due before the thread would wake: wake it now

    def _start(self) -> None:
        """Start a thread (under the lock) and make it the one that renews. If
        ``start()`` is interrupted, whether the thread began cannot be told:
        the next registration starts another, and a thread that is no longer
        the one named here ends at its next look."""
        self._stopping = False
        self._wake_at = math.inf
        thread = threading.Thread(
            target=self._run, name=f"redispool-renewer-{self.name}", daemon=True
        )
        self._thread, self._running = thread, True
        try:
            thread.start()
        except BaseException:
            self._running = False
            raise

    def discard(self, lease: Lease) -> None:
        with self._lock:
            self._leases.pop(id(lease), None)

    def __len__(self) -> int:
        return len(self._leases)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            # RuntimeError: its start() was interrupted before it began; none to join
            with contextlib.suppress(RuntimeError):
                thread.join(timeout=5)

    def _next_due(self) -> float | None:
        if not self._leases:
            return None
        return min(lease.renew_due() for lease in self._leases.values())

    def _run(self) -> None:
        me = threading.current_thread()
        try:
            self._loop(me)
        except BaseException:  # the thread dies: the next registration starts another
            with self._lock:
                if self._thread is me:
                    self._running = False
            raise

    def _loop(self, me: threading.Thread) -> None:
        while True:
            with self._lock:
                while True:
                    if self._thread is not me:  # replaced (see _start): the other renews
                        return
                    if self._stopping:
                        self._running = False
                        return
                    now = mod_time.monotonic()
                    due = self._next_due()
                    if due is None:  # idle: nap as long as a new lease could wait
                        due = now + self._idle_nap
                    elif due <= now:
                        break
                    self._wake_at = due
                    self._cond.wait(timeout=due - now)
                leases = list(self._leases.values())
            self._renew(leases)

    def _renew(self, leases: list[Lease]) -> None:
        try:
            ended = self._renew_many(leases)
        except Exception as exc:  # Redis unreachable or failing: retry soon
            log.warning("renewal of %d leases in pool %s failed: %s", len(leases), self.name, exc)
            ended = renewal_failed(leases, mod_time.monotonic(), RETRY_DELAY)
        for lease in ended:
            if lease.closed:  # checked in while the renewal was on its way: not lost
                continue
            log.warning(
                "lease lost in pool %s: worker %s token %s", self.name, lease.worker_id, lease.token
            )
            lease.end()
            self.discard(lease)
