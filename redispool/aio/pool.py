"""The asyncio Pool: the same pool, names, errors and meanings as :class:`redispool.Pool`.

Both Pools build every call with :mod:`redispool.protocol` and keep each
lease's state in :class:`~redispool.protocol.LeaseLife`; this one only sends
and waits the asyncio way (:mod:`.wire`, :mod:`.waiting`, :mod:`.renewer`).

Cancellation is safe. A checkout cancelled at any moment never leaks a
worker: once its script is sent, its reply is read whatever happens to the
task, and a lease it carries is checked in (:mod:`.wire`'s orphans); a
waiting checkout hands its ticket to the Pool's waiting task, which leaves
the queue and checks in anything handed to it. Leases are renewed by one
task per Pool, all in one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as mod_time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import redis
import redis.asyncio

from .. import defaults, nonces, protocol
from ..errors import CheckoutTimeout, PoolError, PoolFull
from ..keys import PoolKeys, validate_pool_name, validate_worker_id
from ..pool import holder_id
from ..protocol import Granted, Queued, clock
from ..status import LeaseInfo, PoolSettings, PoolStatus, WorkerInfo
from . import reading
from .calls import Caller
from .connect import client_from_url, close_client
from .jobs import Jobs
from .lease import Lease
from .renewer import Renewer
from .tickets import Claim, Ticket
from .waiting import WaitingRoom
from .wire import Wire

__all__ = ["Pool"]

log = logging.getLogger("redispool.pool")


class Pool:
    """A pool of workers shared through Redis, for asyncio programs.

    Give ``url`` (any URL of :mod:`redispool.connect`) or a ``redis``
    :class:`redis.asyncio.Redis` client (its connection settings are used;
    the Pool closes only a client it made). ``lease_ttl`` is this client's
    lease TTL in seconds (None: the pool's setting). ``connections`` is how
    many connections carry the Pool's commands (every task shares them);
    waiting checkouts share one more. Use it from one event loop.
    """

    def __init__(
        self,
        name: str,
        url: str | None = None,
        *,
        redis: redis.asyncio.Redis | None = None,
        lease_ttl: float | None = None,
        connections: int = 2,
    ) -> None:
        self.name = validate_pool_name(name)
        self.keys = PoolKeys(self.name)
        self._ttl_ms = 0 if lease_ttl is None else defaults.ttl_ms(lease_ttl)
        if (url is None) == (redis is None):
            raise ValueError("give exactly one of url= or redis=")
        if isinstance(connections, bool) or not isinstance(connections, int) or connections < 1:
            raise ValueError(f"connections must be a positive integer, got {connections!r}")
        self._owns_client = redis is None
        self._url = url
        self.client = redis if redis is not None else client_from_url(url or "")
        self._wire = Wire(self.client, connections)
        self._caller = Caller(self._wire, self.name)
        self._renewer = Renewer(self.name, self._renew_many)
        self._room = WaitingRoom(self.keys, self._caller, self._undo)
        self._jobs = Jobs(self.name, url, self.client, self._ttl_ms)
        self._chores: set[asyncio.Task[Any]] = set()  # checkins of leases nobody holds

    @property
    def connections_opened(self) -> int:
        """Connections this Pool has opened so far (the benchmark reports it)."""
        return self._wire.opened

    # -- workers --------------------------------------------------------------

    async def add_worker(self, worker_id: str, host: str | None = None,
                         pid: int | None = None) -> bool:  # fmt: skip
        """Register ``worker_id`` (see :meth:`redispool.Pool.add_worker`)."""
        validate_worker_id(worker_id)
        meta = defaults.worker_meta(host, pid)
        return await self._caller.run(
            protocol.add_worker(self.keys, worker_id, meta, self._ttl_ms)
        )

    async def remove_worker(self, worker_id: str) -> bool:
        """Deregister ``worker_id`` (see :meth:`redispool.Pool.remove_worker`)."""
        validate_worker_id(worker_id)
        return await self._caller.run(protocol.remove_worker(self.keys, worker_id))

    # -- checkout -------------------------------------------------------------

    async def checkout(
        self, block: bool = True, timeout: float | None = None, *, auto_renew: bool = True
    ) -> Lease:
        """Check out a worker for exclusive use (see :meth:`redispool.Pool.checkout`).

        ``block=False`` raises :class:`PoolFull` at once when nothing is idle;
        otherwise waits first come, first served across every host, sync or
        asyncio, at most ``timeout`` seconds (:class:`CheckoutTimeout`).
        Cancelling it at any moment leaks no worker. Use ``timeout`` rather
        than ``asyncio.wait_for`` around it: a lease granted as ``wait_for``
        gives up is returned by nobody before Python 3.12.
        """
        defaults.check_timeout(timeout)
        waits = block and (timeout is None or timeout > 0)
        nonce, holder = nonces.fresh(), holder_id()
        ticket = self._room.reserve(nonce, holder) if waits else None
        sent, result = await self._first_call(ticket, nonce, holder, timeout)
        if isinstance(result, Granted):
            if ticket is not None:
                self._room.release(ticket)
            return self._lease(Claim(result, sent, (sent, 0), nonce), auto_renew)
        if ticket is None or not result.queued:
            if ticket is not None:
                self._room.release(ticket)
            raise self._full(block)
        claimed = self._room.wait(ticket, result, sent, None if timeout is None else sent + timeout)
        try:
            claim = await claimed
        except BaseException:  # cancelled, timed out, failed: the room undoes the rest
            self._room.abandon(ticket)
            raise
        return self._lease(claim, auto_renew)

    async def _first_call(
        self, ticket: Ticket | None, nonce: str, holder: str, timeout: float | None
    ) -> tuple[float, Granted | Queued]:
        """The ``checkout`` script: a grant, or the queue. Once it is sent, a
        cancelled caller leaves its reply to :meth:`_orphan_checkout`."""
        op = protocol.checkout(
            self.keys, ttl_ms=self._ttl_ms, holder=holder, ticket=ticket.id if ticket else "",
            alive_ms=clock.alive_ms(defaults.MAX_TTL_MS, timeout), nonce=nonce,
        )  # fmt: skip
        sent = mod_time.monotonic()

        def orphan(reply: Any) -> None:
            self._orphan_checkout(op, reply, ticket, nonce, sent)

        line = self._caller.line_now()
        try:
            if line is None:
                line = await self._caller.line()
            future = self._caller.send(line, op, orphan)
        except BaseException:  # not sent
            if ticket is not None:
                self._room.release(ticket)
            raise
        try:
            return sent, await self._caller.result(op, future, orphan)
        except asyncio.CancelledError:
            raise  # the orphan handler has its reply
        except BaseException:
            if ticket is not None:
                self._room.abandon(ticket)  # it may have been queued
            raise

    def _full(self, block: bool) -> PoolFull:
        if not block:
            message = f"pool {self.name!r}: no worker is idle"
            return PoolFull(message, pool=self.name, operation="checkout")
        return CheckoutTimeout(
            f"pool {self.name!r}: no worker became free in time",
            pool=self.name, operation="checkout",
        )  # fmt: skip

    def _orphan_checkout(
        self, op: protocol.Op[Granted | Queued], reply: Any, ticket: Ticket | None, nonce: str,
        sent: float,
    ) -> None:
        """A checkout's reply whose caller was cancelled: undo what it did."""
        try:
            if isinstance(reply, BaseException):
                raise reply
            result = op.read(reply)
        except BaseException:  # it may have run: leave the queue if it queued
            if ticket is not None:
                self._room.abandon(ticket)
            return
        if isinstance(result, Granted):
            if ticket is not None:
                self._room.release(ticket)
            self._undo(Claim(result, sent, (sent, 0), nonce))
        elif ticket is not None and result.queued:
            self._room.abandon(ticket)
        elif ticket is not None:
            self._room.release(ticket)

    def _lease(self, claim: Claim, auto_renew: bool) -> Lease:
        """The Lease of ``claim``, renewed from now on if asked (no await)."""
        result = claim.result
        if isinstance(result, Granted):
            deadline, renewed_at = Lease.granted_times(result, claim.sent)
        else:
            deadline, renewed_at = Lease.handoff_times(result, claim.clock)
        lease = Lease(
            self, result.worker_id, result.token, result.ttl, auto_renew=auto_renew,
            deadline=deadline, nonce=claim.nonce, renewed_at=renewed_at,
        )  # fmt: skip
        if auto_renew:
            self._renewer.add(lease)
        return lease

    def _undo(self, claim: Claim) -> None:
        """Check in the worker of a claim nobody will hold (in the background)."""
        lease = self._lease(claim, auto_renew=False)
        self._chore(self.checkin(lease), f"checkin of orphaned worker {lease.worker_id}")

    def _chore(self, work: Any, what: str) -> None:
        async def run() -> None:
            try:
                await work
            except PoolError as exc:
                log.warning("pool %s: %s failed: %s", self.name, what, exc)

        task = asyncio.get_running_loop().create_task(run())
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    @contextlib.asynccontextmanager
    async def lease(
        self, timeout: float | None = None, *, block: bool = True
    ) -> AsyncIterator[Lease]:
        """Check out (auto-renewed) for the ``async with`` block; check in on exit,
        also on error or cancellation."""
        lease = await self.checkout(block=block, timeout=timeout)
        try:
            yield lease
        finally:
            await self.checkin(lease)

    # -- checkin and renewal ----------------------------------------------------

    def _check_own(self, lease: Lease) -> None:
        if not isinstance(lease, Lease):
            raise ValueError(f"expected an aio Lease, got {lease!r}")
        if lease.pool is not self and lease.pool.name != self.name:
            raise ValueError(f"lease of pool {lease.pool.name!r} given to pool {self.name!r}")

    async def checkin(self, lease: Lease) -> bool:
        """Return ``lease``'s worker (see :meth:`redispool.Pool.checkin`).

        Cancelled once the checkin went out, it still happens (its reply is
        read by the connection); cancelled before, it is done in the
        background. Redis unreachable: :class:`PoolUnavailable`, and the
        lease stays open for another try.
        """
        self._check_own(lease)
        if not lease.owned_here():
            return False
        self._renewer.discard(lease)
        op = protocol.checkin(  # made first, as in the sync Pool: nothing between close and try
            self.keys, worker_id=lease.worker_id, token=lease.token, nonce=lease.nonce
        )
        if not lease.close():
            return False
        line = self._caller.line_now()
        try:
            if line is None:
                line = await self._caller.line()
            future = self._caller.send(line, op)
        except asyncio.CancelledError:  # not sent: send it in the background
            self._chore(self._caller.run(op), f"checkin of worker {lease.worker_id}")
            raise
        except BaseException:
            lease.reopen()
            raise
        try:
            done = await self._caller.result(op, future)
        except asyncio.CancelledError:
            raise  # sent: it runs, and its reply is read
        except BaseException:
            lease.reopen()
            raise
        if not done.returned:
            lease.end(worker_died=done.worker_died)
        return done.returned

    async def renew(self, lease: Lease) -> None:
        """Extend ``lease`` by its TTL; :class:`LeaseLost` if it has ended."""
        self._check_own(lease)
        if not lease.owned_here():
            raise lease.ended_error(self.name, "renew")
        if lease.active and not await self._renew_many([lease]):
            return
        self._renewer.discard(lease)
        died = await self._caller.command("ZSCORE", self.keys.dead_leases, lease.token,
                                          operation="renew")  # fmt: skip
        lease.end(worker_died=died is not None)
        raise lease.ended_error(self.name, "renew")

    async def _renew_many(self, leases: Sequence[Lease]) -> list[Lease]:
        """Renew ``leases`` in one round trip; return those that had ended."""
        sent = mod_time.monotonic()
        renewal = await self._caller.run(protocol.renew(self.keys, protocol.renewal_batch(leases)))
        return protocol.renewal_done(leases, renewal.held, sent)

    # -- jobs -------------------------------------------------------------------

    async def run_job(
        self, lease: Lease, func: Callable[..., Any] | str, *args: Any, timeout: float = 30.0
    ) -> Any:
        """``lease.run``: the job goes through RQ (sync) in a thread (see :mod:`.jobs`)."""
        self._check_own(lease)
        return await self._jobs.run(lease, func, *args, timeout=timeout)

    # -- reading ------------------------------------------------------------------

    async def status(self) -> PoolStatus:
        """The pool's numbers, read atomically."""
        return await self._caller.run(protocol.status(self.keys))

    async def workers(self) -> list[WorkerInfo]:
        """Every registered worker with its state, host and pid, sorted by id."""
        return await reading.workers(self._caller, self.keys)

    async def leases(self) -> list[LeaseInfo]:
        """Every live lease with its token, holder and seconds left."""
        return await reading.leases(self._caller, self.keys)

    async def configure(
        self, *, lease_ttl: float | None = None, strategy: str | None = None
    ) -> PoolSettings:
        """Create or change the pool's settings in Redis (every host reads them)."""
        ttl = None if lease_ttl is None else defaults.ttl_ms(lease_ttl)
        op = protocol.configure(
            self.keys, ttl_ms=ttl, strategy=defaults.check_strategy(strategy),
            default_ttl_ms=self._ttl_ms,
        )  # fmt: skip
        return await self._caller.run(op)

    async def settings(self) -> PoolSettings:
        """The pool's settings as stored in Redis (defaults where none are)."""
        return await reading.settings(self._caller, self.keys)

    async def reclaim_expired(self) -> int:
        """Return the workers of every lease past its deadline; how many it returned."""
        total = 0
        while True:
            done = await self._caller.run(protocol.reclaim(self.keys))
            total += done.returned
            if done.returned < defaults.SWEEP_BATCH and done.trimmed < defaults.SWEEP_BATCH:
                return total

    # -- lifecycle ---------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop renewing (held leases then end after their TTL), fail waiting
        checkouts with :class:`PoolUnavailable`, and disconnect."""
        await self._renewer.stop()
        await self._room.aclose()
        while self._chores:
            await asyncio.gather(*self._chores, return_exceptions=True)
        await self._wire.aclose()
        self._jobs.close()
        if self._owns_client:
            await close_client(self.client)

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<aio.Pool {self.name!r}>"
