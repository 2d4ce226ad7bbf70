"""One task per asyncio Pool that keeps its leases alive.

Every live lease of the Pool is renewed in one round trip (the ``renew``
operation takes them all) when the first of them is due, a third of its TTL
after its last renewal, as the sync renewer thread does. A lease the server
no longer holds is marked lost; a lease whose local deadline passes while
Redis cannot be reached is marked lost too, since it has ended whatever the
server says later.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time as mod_time
from collections.abc import Awaitable, Callable, Sequence

from ..protocol import renewal_failed
from .lease import Lease

__all__ = ["RETRY_DELAY", "Renewer"]

log = logging.getLogger("redispool.renewer")

#: Seconds between attempts while Redis is unreachable.
RETRY_DELAY = 0.2

#: Renews the given leases in one round trip; returns those that had ended.
RenewMany = Callable[[Sequence[Lease]], Awaitable[list[Lease]]]


class Renewer:
    """Renews the registered leases of one pool until they end.

    Its task sleeps until a timer set for the earliest due lease wakes it, so
    a checkout only compares two numbers (a short checkout+checkin never
    wakes the task at all).
    """

    def __init__(self, name: str, renew_many: RenewMany) -> None:
        self._name = name
        self._renew_many = renew_many
        self._leases: dict[int, Lease] = {}  # by identity: tokens can repeat
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wake_at = math.inf  # when the timer wakes the task (monotonic)

    def add(self, lease: Lease) -> None:
        """Renew ``lease`` from now on (no await: a lease is never made unrenewed)."""
        self._leases[id(lease)] = lease
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"redispool-renewer-{self._name}"
            )
        due = lease.renew_due()
        if due < self._wake_at:
            self._wake_me_at(due)

    def _wake_me_at(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._wake_at = due
        delay = max(0.0, due - mod_time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._wake.set)

    def discard(self, lease: Lease) -> None:
        self._leases.pop(id(lease), None)

    def __len__(self) -> int:
        return len(self._leases)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._wake_at = None, math.inf
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._timer, self._wake_at = None, math.inf
            if not self._leases:
                continue  # the next add sets the timer again
            due = min(lease.renew_due() for lease in self._leases.values())
            if due > mod_time.monotonic():
                self._wake_me_at(due)
                continue
            await self._renew(list(self._leases.values()))
            self._wake.set()  # look again: the next due lease

    async def _renew(self, leases: list[Lease]) -> None:
        try:
            ended = await self._renew_many(leases)
        except Exception as exc:  # Redis unreachable or failing: retry soon
            log.warning("renewal of %d leases in pool %s failed: %s", len(leases), self._name, exc)
            ended = renewal_failed(leases, mod_time.monotonic(), RETRY_DELAY)
        for lease in ended:
            if lease.closed:  # checked in while the renewal was on its way: not lost
                continue
            log.warning(
                "lease lost in pool %s: worker %s token %s", self._name, lease.worker_id,
                lease.token,
            )  # fmt: skip
            lease.end()
            self.discard(lease)
