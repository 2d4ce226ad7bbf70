"""The Pool: check workers out and in, fairly, across every host.

Every state change is one Lua script (see ``scripts/``), so a worker is at
every moment idle, leased to exactly one token, or being handed to one
waiter; two round trips can never interleave into a lost or doubled worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time as mod_time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from redis import Redis

from . import direct_io, jobs, nonces, protocol
from .connect import Client, client_from_url, close_client
from .defaults import (
    DEFAULT_LEASE_TTL,
    MAX_TTL_MS,
    STRATEGIES,
    check_strategy,
    check_timeout,
    ttl_ms,
    worker_meta,
)
from .errors import LeaseLost, WorkerLost
from .keys import PoolKeys, validate_pool_name, validate_worker_id
from .lease import Lease
from .protocol import Checkin, Op
from .protocol.lease_life import HERE
from .renewer import Renewer
from .replicas import DEFAULT_REPLICA_TIMEOUT, Replicas
from .sender import Sender
from .slot_client import pool_client
from .status import (
    LeaseInfo,
    PoolSettings,
    PoolStatus,
    WorkerInfo,
    read_leases,
    read_settings,
    read_workers,
)
from .waiting import Waiter

__all__ = ["DEFAULT_LEASE_TTL", "STRATEGIES", "Pool"]

log = logging.getLogger("redispool.pool")


def _this_process() -> tuple[int, str]:
    pid = os.getpid()
    return pid, f"{socket.gethostname()}:{pid}"


#: ``(pid, 'host:pid')`` of this process, made again in a forked child.
_holder = _this_process()


def _forked() -> None:
    global _holder
    _holder = _this_process()


os.register_at_fork(after_in_child=_forked)


def holder_id() -> str:
    """``host:pid`` of this process, recorded with each lease for operators."""
    return _holder[1]


class Pool:
    """A pool of workers shared through Redis by any number of hosts.

    ``lease_ttl`` is this client's lease TTL in seconds; None uses the pool's
    setting in Redis. Give either ``url`` (any URL of :mod:`redispool.connect`,
    ``redis+sentinel://`` included) or a ``redis`` client, which may be
    Sentinel-managed (``Sentinel(...).master_for(service)``); the Pool closes
    only a client it made itself.

    ``min_replicas=N`` (Redisson's ``checkLockSyncedSlaves``): checkout, renew
    and checkin return only once N replicas acknowledged their write (``WAIT``
    on the same connection, at most ``replica_timeout`` seconds), so a
    failover to one of those replicas keeps it. Short of N in time, a checkout
    is undone (checked in) and raises :class:`PoolUnavailable`; a renew or
    checkin raises it too (see each for the state it leaves). 0, the default,
    sends no ``WAIT``.
    """

    def __init__(
        self,
        name: str,
        url: str | None = None,
        *,
        redis: Client | None = None,
        lease_ttl: float | None = None,
        min_replicas: int = 0,
        replica_timeout: float = DEFAULT_REPLICA_TIMEOUT,
    ) -> None:
        self.name = validate_pool_name(name)
        self.keys = PoolKeys(self.name)
        #: This client's lease TTL in ms; 0: the pool's setting in Redis.
        self.lease_ttl_ms = 0 if lease_ttl is None else ttl_ms(lease_ttl)
        self.replicas = Replicas.of(min_replicas, replica_timeout)
        self.min_replicas = self.replicas.need
        if (url is None) == (redis is None):
            raise ValueError("give exactly one of url= or redis=")
        self._owns_client = redis is None
        self._given: Client = redis if redis is not None else client_from_url(url or "")
        #: On a cluster: a client of the pool's own slot, following its master.
        self.client: Redis = pool_client(self._given, self.keys.prefix)
        #: Sends this pool's protocol operations (see :mod:`redispool.sender`).
        self.sender = Sender(self.client, self.name, self.replicas)
        #: Renews this pool's auto-renewed leases in the background.
        self.renewer = Renewer(self.name, self._renew_many)

    @property
    def on_cluster(self) -> bool:
        """True if the pool lives in one slot of a Redis Cluster."""
        return self.sender.wire.on_cluster

    def redis_errors(
        self, operation: str, worker_id: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """Turn redis-py's errors inside the block into the pool's own.

        Refused credentials or ACL rights: :class:`PoolAccessDenied`; Redis
        unreachable or timing out: :class:`PoolUnavailable`; any other error
        reply (a key of the wrong type, a junk value): :class:`PoolCorrupted`.
        """
        return self.sender.errors(operation, worker_id)

    # -- workers ----------------------------------------------------------------

    def add_worker(self, worker_id: str, host: str | None = None, pid: int | None = None) -> bool:
        """Register ``worker_id``, idle (or straight to the oldest waiter).

        Idempotent: a known worker gets its host/pid updated and any pending
        removal cancelled. Returns True if the worker is new.
        """
        validate_worker_id(worker_id)
        meta = worker_meta(host, pid)
        return self.sender.send(protocol.add_worker(self.keys, worker_id, meta, self.lease_ttl_ms))

    def remove_worker(self, worker_id: str) -> bool:
        """Deregister ``worker_id``. An idle worker leaves now; a busy one
        counts as busy until its lease ends, then leaves. A worker run by a
        process leaves for good: it does not register again, and its process
        exits 0 without being replaced. False if unknown."""
        validate_worker_id(worker_id)
        return self.sender.send(protocol.remove_worker(self.keys, worker_id))

    # -- checkout -------------------------------------------------------------

    def checkout(
        self, block: bool = True, timeout: float | None = None, *, auto_renew: bool = True
    ) -> Lease:
        """Check out a worker for exclusive use.

        ``block=False`` raises :class:`PoolFull` at once when nothing is idle.
        Otherwise waits first come, first served across every host: without
        limit (``timeout=None``), or at most ``timeout`` seconds, then raises
        :class:`CheckoutTimeout`. With ``auto_renew`` the lease is renewed in
        the background until checked in; without it, it ends after its TTL.
        """
        if timeout is not None:
            check_timeout(timeout)
            bound = protocol.clock.alive_ms(MAX_TTL_MS, timeout)
        else:
            bound = MAX_TTL_MS  # clock.alive_ms(MAX_TTL_MS, None), inline: the hot path
        # A waiter counts as alive for one lease TTL between its ticks (the script caps
        # this at the TTL it settles on); a timeout shortens that.
        nonce = nonces.fresh()
        # it may wait: it needs a ticket
        ticket = nonces.fresh() if block and (timeout is None or timeout > 0) else ""
        # nonce: this lease's proof beside its token; ticket: its place in the queue
        waiter = Waiter(
            self, self.keys, self.sender, self.renewer, ticket, _holder[1], auto_renew, nonce,
            ttl_ms=self.lease_ttl_ms,
        )  # fmt: skip
        return waiter.checkout(block, timeout, bound)

    @contextlib.contextmanager
    def lease(self, timeout: float | None = None, *, block: bool = True) -> Iterator[Lease]:
        """Check out (auto-renewed) for the ``with`` block; check in on exit, also on error."""
        lease = self.checkout(block=block, timeout=timeout)
        try:
            yield lease
        finally:
            self.checkin(lease)

    # -- checkin and renewal -----------------------------------------------------

    def _check_own(self, lease: Lease) -> None:
        if not isinstance(lease, Lease):
            raise ValueError(f"expected a Lease, got {lease!r}")
        if lease.pool is not self and lease.pool.name != self.name:
            raise ValueError(f"lease of pool {lease.pool.name!r} given to pool {self.name!r}")

    def checkin(self, lease: Lease) -> bool:
        """Return ``lease``'s worker. True if this call returned it; False if
        the lease had already ended (it sets ``lease.lost``) or was checked in.

        If Redis cannot be asked (:class:`PoolUnavailable` and the like), the lease
        stays open so that checkin can be tried again (a retry of one that did run
        answers False); no longer renewed, it otherwise ends after its TTL. One cut
        by an interrupt (``KeyboardInterrupt``) before it went out is sent once more
        first; cut while connecting or awaiting its reply, or failing again, it
        leaves the lease open too. With ``min_replicas``, a
        checkin the master made but too few replicas acknowledged raises
        :class:`PoolUnavailable` too, and the lease also stays open: after a
        failover to a replica that missed it, checkin again returns the worker
        (True); where the checkin did stick, it answers False.

        In a forked child, a lease of the parent is not the child's: checkin
        returns False without asking Redis (the parent still holds it).
        """
        # _check_own and lease.owned_here(), inline: the hot path
        if not isinstance(lease, Lease) or lease.pool is not self:
            self._check_own(lease)  # raises unless a Lease of a pool of this name
        if lease.pid != HERE.pid:
            log.warning("pool %s: a forked child did not check in its parent's lease", self.name)
            return False
        if lease.auto_renew:
            self.renewer.discard(lease)
        # The op is made before the lease is marked closed: no call (where an interrupt
        # can land) between close() and the try that reopens it, else a Ctrl-C there
        # leaves a closed lease whose checkin never went out (the worker stranded).
        op = protocol.checkin(
            self.keys, worker_id=lease.worker_id, token=lease.token, nonce=lease.nonce,
            wake_ticket=lease.wake_ticket,
        )  # fmt: skip
        if not lease.close():
            return False
        try:
            result, acks = self.sender.send_acked(op)
        except Exception:  # unreachable, or refused: it may not have run
            lease.reopen()
            raise
        except BaseException as exc:  # interrupted (Ctrl-C): finished first, then it goes on
            self._finish_interrupted(lease, op, exc)
            raise
        if result.returned:
            if acks < self.min_replicas:
                lease.reopen()
                done = "checkin may be tried again"
                raise self.sender.unacked("checkin", acks, lease.worker_id, done)
            return True
        lease.end(worker_died=result.worker_died)
        return False

    def _finish_interrupted(self, lease: Lease, op: Op[Checkin], cut: BaseException) -> None:
        """Send ``lease``'s checkin ``op`` again if the interrupt ``cut`` came before it
        went out: else the worker stays out, unrenewed, until its TTL (a ``with
        pool.lease()`` left by a Ctrl-C never checks in again). A checkin that had run
        answers no. Cut while connecting or awaiting its reply (a second would wait as
        long), or failing again, the lease stays open, for a later one."""
        if direct_io.awaited(cut):
            lease.reopen()
            return
        try:
            result, acks = self.sender.send_acked(op)
        except BaseException:  # the interrupt that brought us here goes on, not this
            lease.reopen()
            return
        if result.returned and acks < self.min_replicas:
            lease.reopen()

    def renew(self, lease: Lease) -> None:
        """Extend ``lease`` by its TTL; raise :class:`LeaseLost` if it has ended.

        With ``min_replicas``, a renewal too few replicas acknowledged raises
        :class:`PoolUnavailable` and leaves the lease as if it had not been
        renewed (its local deadline stays; the master did extend it).
        A forked child cannot renew its parent's lease: :class:`LeaseLost`.
        """
        # _check_own and lease.owned_here(), inline: the hot path
        if not isinstance(lease, Lease) or lease.pool is not self:
            self._check_own(lease)  # raises unless a Lease of a pool of this name
        if lease.pid != HERE.pid:
            where: dict[str, Any] = {"pool": self.name, "worker_id": lease.worker_id}
            raise LeaseLost(
                f"pool {self.name!r}: lease of worker {lease.worker_id!r} belongs to "
                f"process {lease.pid}, not this forked child", operation="renew", **where,
            )  # fmt: skip
        # _renew_many([lease]) without its list comprehension: the hot path
        batch = [(lease.worker_id, lease.token, lease.nonce, round(lease.ttl * 1000))]
        if lease.active and not self._renew_batch([lease], batch):
            return
        self.renewer.discard(lease)
        lease.end()
        where = {"pool": self.name, "worker_id": lease.worker_id}
        with self.redis_errors("renew", lease.worker_id):
            died = self.client.zscore(self.keys.dead_leases, lease.token) is not None
        about = f"pool {self.name!r}: lease of worker {lease.worker_id!r} (token {lease.token})"
        if lease.worker_died or died:
            lease.end(worker_died=True)
            raise WorkerLost(f"{about} ended: its worker process died", operation="renew", **where)
        raise LeaseLost(f"{about} has ended", operation="renew", **where)

    def _renew_many(self, leases: Sequence[Lease]) -> list[Lease]:
        """Renew ``leases`` in one round trip; return those that had ended."""
        return self._renew_batch(leases, protocol.renewal_batch(leases))

    def _renew_batch(
        self, leases: Sequence[Lease], batch: list[tuple[str, int, str, int]]
    ) -> list[Lease]:
        """Renew ``leases``, whose ``(worker_id, token, nonce, ttl_ms)`` are ``batch``."""
        sent = mod_time.monotonic()
        renewal, acks = self.sender.send_acked(protocol.renew(self.keys, batch))
        if acks < self.min_replicas:
            done = "the lease was not extended"
            raise self.sender.unacked("renew", acks, leases[0].worker_id, done)
        return protocol.renewal_done(leases, renewal.held, sent)

    # -- jobs -------------------------------------------------------------------

    def run(
        self, lease: Lease, func: Callable[..., Any] | str, *args: Any, timeout: float = 30.0
    ) -> Any:
        """``lease.run(func, *args)``: run a registered function on ``lease``'s
        worker (see :func:`redispool.jobs.run`)."""
        self._check_own(lease)
        return jobs.run(lease, func, *args, timeout=timeout)

    # -- sweeping ---------------------------------------------------------------

    def reclaim_expired(self) -> int:
        """Return the workers of every lease past its deadline; how many it returned.

        Also trims the wait queue of dead waiters and puts back any registered
        worker that is neither idle nor leased (a key lost to an eviction or a
        hand ``DEL``), so a damaged pool is whole again after one sweep.
        """
        total = 0
        op = protocol.reclaim(self.keys)
        while True:
            done = self.sender.send(op)
            total += done.returned
            if not done.more:
                return total

    # -- reading -----------------------------------------------------------------

    def status(self) -> PoolStatus:
        """The pool's numbers, read atomically."""
        return self.sender.send(protocol.status(self.keys))

    def workers(self) -> list[WorkerInfo]:
        """Every registered worker with its state, host and pid, sorted by id."""
        with self.redis_errors("workers"):
            return read_workers(self.client, self.keys)

    def leases(self) -> list[LeaseInfo]:
        """Every live lease with its token, holder and seconds left."""
        with self.redis_errors("leases"):
            return read_leases(self.client, self.keys)

    def configure(
        self, *, lease_ttl: float | None = None, strategy: str | None = None
    ) -> PoolSettings:
        """Create or change the pool's settings in Redis (every host reads them)."""
        ttl = None if lease_ttl is None else ttl_ms(lease_ttl)
        op = protocol.configure(
            self.keys, ttl_ms=ttl, strategy=check_strategy(strategy),
            default_ttl_ms=self.lease_ttl_ms,
        )  # fmt: skip
        return self.sender.send(op)

    def settings(self) -> PoolSettings:
        """The pool's settings as stored in Redis (defaults where none are)."""
        with self.redis_errors("settings"):
            raw = self.client.hgetall(self.keys.config)
        return read_settings(raw)

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Stop renewing (held leases then end after their TTL) and disconnect."""
        self.renewer.stop()
        self.sender.close()
        if self.client is not self._given:
            self.client.close()
        if self._owns_client:
            close_client(self._given)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Pool {self.name!r}>"
