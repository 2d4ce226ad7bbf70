"""The Pool: check workers out and in, fairly, across every host.

Every state change is one Lua script (see ``scripts/``), so a worker is at
every moment idle, leased to exactly one token, or being handed to one
waiter; two round trips can never interleave into a lost or doubled worker.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time as mod_time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import redis
from redis import Redis

from . import cluster, errors, scripts
from .connect import Client, client_from_url, close_client
from .errors import CheckoutTimeout, LeaseLost, PoolError, PoolFull
from .keys import PoolKeys, validate_pool_name, validate_worker_id
from .lease import Lease
from .renewer import Renewer
from .replicas import DEFAULT_REPLICA_TIMEOUT, Replicas
from .slot_client import pool_client
from .status import LeaseInfo, PoolSettings, PoolStatus, WorkerInfo
from .waiting import Waiter, alive_ms
from .wire import Wire, text

__all__ = ["DEFAULT_LEASE_TTL", "STRATEGIES", "Pool"]

log = logging.getLogger("redispool.pool")

DEFAULT_LEASE_TTL = 10.0
STRATEGIES = ("lifo", "fifo")
MIN_TTL, MAX_TTL = 0.01, 7 * 24 * 3600.0
DENIED = "Redis refused access (redispool.acl lists the rules a pool user needs)"
SWEEP_BATCH = 1000


def _ttl_ms(value: float, what: str = "lease_ttl") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}")
    if not MIN_TTL <= value <= MAX_TTL:
        raise ValueError(f"{what} must be between {MIN_TTL} and {MAX_TTL:.0f} seconds, got {value}")
    return round(value * 1000)


_holder: tuple[int, str] = (0, "")


def holder_id() -> str:
    """``host:pid`` of this process, recorded with each lease for operators."""
    global _holder
    pid = os.getpid()
    if _holder[0] != pid:
        _holder = (pid, f"{socket.gethostname()}:{pid}")
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
        self._ttl_ms = 0 if lease_ttl is None else _ttl_ms(lease_ttl)
        self.replicas = Replicas.of(min_replicas, replica_timeout)
        self.min_replicas = self.replicas.need
        if (url is None) == (redis is None):
            raise ValueError("give exactly one of url= or redis=")
        self._owns_client = redis is None
        self._given: Client = redis if redis is not None else client_from_url(url or "")
        # On a cluster: a client of the pool's own slot, following its master.
        self.client: Redis = pool_client(self._given, self.keys.prefix)
        self._wire = Wire(self.client)
        self._renewer = Renewer(self)
        k = self.keys
        self._common = (
            k.prefix,
            k.config,
            k.workers,
            k.idle,
            k.deadlines,
            k.token,
            k.draining,
            k.waitq,
            k.waiters,
        )

    @property
    def on_cluster(self) -> bool:
        """True if the pool lives in one slot of a Redis Cluster."""
        return self._wire.on_cluster

    # -- running scripts ------------------------------------------------------

    @contextlib.contextmanager
    def redis_errors(self, operation: str, worker_id: str | None = None) -> Iterator[None]:
        """Turn redis-py's errors inside the block into the pool's own.

        Refused credentials or ACL rights: :class:`PoolAccessDenied`; Redis
        unreachable or timing out: :class:`PoolUnavailable`; any other error
        reply (a key of the wrong type, a junk value): :class:`PoolCorrupted`.
        """
        try:
            yield
        except redis.RedisError as exc:
            raise self._translate(exc, operation, worker_id) from exc

    def _translate(
        self, exc: redis.RedisError, operation: str, worker_id: str | None
    ) -> Exception:
        """The pool's exception for redis-py's ``exc`` (``exc`` itself if unknown)."""
        about = {"pool": self.name, "operation": operation, "worker_id": worker_id}
        where = f"pool {self.name!r}: {operation}"
        if isinstance(exc, (redis.AuthenticationError, redis.exceptions.NoPermissionError)) or (
            isinstance(exc, redis.ResponseError) and _is_permission_error(exc)
        ):
            return errors.PoolAccessDenied(f"{where}: {DENIED}: {exc}", **about)
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            return errors.PoolUnavailable(f"{where}: Redis unreachable: {exc}", **about)
        if isinstance(exc, redis.exceptions.ReadOnlyError):  # a demoted master or a replica
            return errors.PoolUnavailable(f"{where}: Redis is not the master: {exc}", **about)
        if cluster.in_transit(exc):  # the pool's slot is moving: nothing ran
            return errors.PoolUnavailable(f"{where}: the pool's slot is moving: {exc}", **about)
        if isinstance(exc, redis.ResponseError):
            return errors.PoolCorrupted(
                f"{where} failed; a key of the pool holds data redispool did not write: {exc}",
                **about,
            )
        return exc

    def _run(
        self,
        script: str,
        args: Sequence[Any] = (),
        *,
        extra_keys: Sequence[str] = (),
        keys: Sequence[str] | None = None,
        worker_id: str | None = None,
    ) -> list[Any]:
        all_keys = (*self._common, *extra_keys) if keys is None else keys
        try:  # no context manager here: this is the hot path
            reply: list[Any] = scripts.load(script)(self._wire, all_keys, args)
        except redis.RedisError as exc:
            raise self._translate(exc, script, worker_id) from exc
        return reply

    def _run_acked(
        self,
        script: str,
        args: Sequence[Any] = (),
        *,
        extra_keys: Sequence[str] = (),
        keys: Sequence[str] | None = None,
        worker_id: str | None = None,
    ) -> tuple[list[Any], int]:
        """``_run``, and how many replicas acknowledged its writes (0 with no
        ``min_replicas``: then no ``WAIT`` is sent)."""
        if not self.min_replicas:
            return self._run(script, args, extra_keys=extra_keys, keys=keys, worker_id=worker_id), 0
        all_keys = (*self._common, *extra_keys) if keys is None else keys
        try:
            reply, acks = scripts.load(script).acked(
                self._wire, all_keys, args, self.min_replicas, self.replicas.timeout_ms
            )
        except redis.RedisError as exc:
            raise self._translate(exc, script, worker_id) from exc
        return reply, acks

    def _confirmed(self, lease: Lease, acks: int) -> Lease:
        """``lease`` if enough replicas have it; else it is checked in and
        :class:`PoolUnavailable` raised."""
        if acks >= self.min_replicas:
            return lease
        try:
            lease.checkin()
            done = "the lease was checked in"
        except PoolError as exc:
            done = f"checking the lease in failed too ({exc}): it ends after its TTL"
        raise self.replicas.unacked(self.name, "checkout", acks, lease.worker_id, done)

    # -- workers ----------------------------------------------------------------

    def add_worker(self, worker_id: str, host: str | None = None, pid: int | None = None) -> bool:
        """Register ``worker_id``, idle (or straight to the oldest waiter).

        Idempotent: a known worker gets its host/pid updated and any pending
        removal cancelled. Returns True if the worker is new.
        """
        validate_worker_id(worker_id)
        meta = _worker_meta(host, pid)
        default = self._ttl_ms or round(DEFAULT_LEASE_TTL * 1000)
        reply = self._run(
            "add_worker", (worker_id, meta, default, STRATEGIES[0]), worker_id=worker_id
        )
        return bool(reply[1])

    def remove_worker(self, worker_id: str) -> bool:
        """Deregister ``worker_id``. An idle worker leaves now; a busy one
        counts as busy until its lease ends, then leaves. A worker run by a
        process leaves for good: it does not register again, and its process
        exits 0 without being replaced. False if unknown."""
        from .liveness import worker_keys

        validate_worker_id(worker_id)
        reply = self._run(
            "remove_worker", (worker_id,), extra_keys=worker_keys(self), worker_id=worker_id
        )
        return int(reply[0]) == errors.OK

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
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise ValueError(f"timeout must be a number of seconds or None, got {timeout!r}")
            if not timeout >= 0:
                raise ValueError(f"timeout must not be negative, got {timeout}")
        waiting = block and (timeout is None or timeout > 0)
        ticket = uuid.uuid4().hex if waiting else ""
        nonce = os.urandom(16).hex()  # this lease's proof beside its token
        # A waiter counts as alive for one lease TTL between its ticks (the script caps
        # this at the TTL it settles on); a timeout shortens that.
        bound = alive_ms(round(MAX_TTL * 1000), timeout)
        waiter = Waiter(self, ticket, holder_id(), auto_renew, nonce=nonce)
        return waiter.checkout(block, timeout, bound)

    def _full(self) -> PoolFull:
        message = f"pool {self.name!r}: no worker is idle"
        return PoolFull(message, pool=self.name, operation="checkout")

    def _lease(self, reply: list[Any], nonce: str, auto_renew: bool, sent: float) -> Lease:
        """A Lease from an ``{OK, worker_id, token, deadline_ms, ttl_ms}`` reply."""
        ttl = int(reply[4]) / 1000
        lease = Lease(
            self, text(reply[1]), int(reply[2]), ttl, auto_renew=auto_renew, deadline=sent + ttl,
            nonce=nonce,
        )
        lease.renewed_at = sent
        if auto_renew:
            self._renewer.add(lease)
        return lease

    def _timeout(self) -> CheckoutTimeout:
        return CheckoutTimeout(
            f"pool {self.name!r}: no worker became free in time",
            pool=self.name,
            operation="checkout",
        )

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

        If Redis cannot be asked (:class:`PoolUnavailable` and the like), or
        the call is interrupted (``KeyboardInterrupt``), the lease stays open
        so that checkin can be tried again (a retry of one that did run
        answers False); it is no longer
        renewed, so otherwise it ends after its TTL. With ``min_replicas``, a
        checkin the master made but too few replicas acknowledged raises
        :class:`PoolUnavailable` too, and the lease also stays open: after a
        failover to a replica that missed it, checkin again returns the worker
        (True); where the checkin did stick, it answers False.

        In a forked child, a lease of the parent is not the child's: checkin
        returns False without asking Redis (the parent still holds it).
        """
        self._check_own(lease)
        if lease._pid != os.getpid():
            log.warning("pool %s: a forked child did not check in its parent's lease", self.name)
            return False
        if lease.auto_renew:
            self._renewer.discard(lease)
        if not lease._mark_closed():
            return False
        try:
            reply, acks = self._run_acked(
                "checkin",
                (lease.worker_id, lease.token, lease.nonce),
                extra_keys=(self.keys.lease(lease.worker_id), self.keys.dead_leases),
                worker_id=lease.worker_id,
            )
        except BaseException:  # unreachable, or interrupted (Ctrl-C): it may not have run
            lease._closed = False
            raise
        if int(reply[0]) == errors.OK:
            if acks < self.min_replicas:
                lease._closed = False
                done = "checkin may be tried again"
                raise self.replicas.unacked(self.name, "checkin", acks, lease.worker_id, done)
            return True
        lease.worker_died = lease.worker_died or int(reply[0]) == errors.WORKER_DEAD
        lease.lost.set()
        return False

    def renew(self, lease: Lease) -> None:
        """Extend ``lease`` by its TTL; raise :class:`LeaseLost` if it has ended.

        With ``min_replicas``, a renewal too few replicas acknowledged raises
        :class:`PoolUnavailable` and leaves the lease as if it had not been
        renewed (its local deadline stays; the master did extend it).
        A forked child cannot renew its parent's lease: :class:`LeaseLost`.
        """
        self._check_own(lease)
        if lease._pid != os.getpid():
            raise LeaseLost(
                f"pool {self.name!r}: lease of worker {lease.worker_id!r} belongs to "
                f"process {lease._pid}, not this forked child",
                pool=self.name, worker_id=lease.worker_id, operation="renew",
            )  # fmt: skip
        if lease.active and not self._renew_many([lease]):
            return
        self._renewer.discard(lease)
        lease.lost.set()
        with self.redis_errors("renew", lease.worker_id):
            died = self.client.zscore(self.keys.dead_leases, lease.token) is not None
        if lease.worker_died or died:
            lease.worker_died = True
            raise errors.WorkerLost(
                f"pool {self.name!r}: lease of worker {lease.worker_id!r} "
                f"(token {lease.token}) ended: its worker process died",
                pool=self.name,
                worker_id=lease.worker_id,
                operation="renew",
            )
        raise LeaseLost(
            f"pool {self.name!r}: lease of worker {lease.worker_id!r} "
            f"(token {lease.token}) has ended",
            pool=self.name,
            worker_id=lease.worker_id,
            operation="renew",
        )

    def _renew_many(self, leases: Sequence[Lease]) -> list[Lease]:
        """Renew ``leases`` in one round trip; return those that had ended."""
        keys = [self.keys.deadlines, *(self.keys.lease(lease.worker_id) for lease in leases)]
        args: list[Any] = []
        for lease in leases:
            args += (lease.worker_id, lease.token, lease.nonce, round(lease.ttl * 1000))
        sent = mod_time.monotonic()
        reply, acks = self._run_acked("renew", args, keys=keys)
        if acks < self.min_replicas:
            done = "the lease was not extended"
            raise self.replicas.unacked(self.name, "renew", acks, leases[0].worker_id, done)
        ended = []
        for lease, held in zip(leases, reply[1:], strict=True):
            if int(held):
                lease.deadline, lease.renewed_at = sent + lease.ttl, sent
            else:
                ended.append(lease)
        return ended

    # -- sweeping ---------------------------------------------------------------

    def reclaim_expired(self) -> int:
        """Return the workers of every lease past its deadline; how many it returned.

        Also trims the wait queue of dead waiters and puts back any registered
        worker that is neither idle nor leased (a key lost to an eviction or a
        hand ``DEL``), so a damaged pool is whole again after one sweep.
        """
        total = 0
        while True:
            reply = self._run("reclaim", (SWEEP_BATCH,))
            total += int(reply[1])
            if int(reply[1]) < SWEEP_BATCH and int(reply[4]) < SWEEP_BATCH:
                return total

    # -- reading -----------------------------------------------------------------

    def status(self) -> PoolStatus:
        """The pool's numbers, read atomically."""
        reply = self._run("status", extra_keys=(self.keys.heartbeats, self.keys.overflow))
        r = [int(x) for x in reply[1:7]]
        return PoolStatus(
            size=r[0], idle=r[1], busy=r[2], waiting=r[3], draining=r[4], expired=r[5],
            dead=int(reply[8]), overflow=int(reply[9]),
        )

    def workers(self) -> list[WorkerInfo]:
        """Every registered worker with its state, host and pid, sorted by id."""
        from .status import read_workers

        with self.redis_errors("workers"):
            return read_workers(self)

    def leases(self) -> list[LeaseInfo]:
        """Every live lease with its token, holder and seconds left."""
        from .status import read_leases

        with self.redis_errors("leases"):
            return read_leases(self)

    def configure(
        self, *, lease_ttl: float | None = None, strategy: str | None = None
    ) -> PoolSettings:
        """Create or change the pool's settings in Redis (every host reads them)."""
        ttl = "" if lease_ttl is None else str(_ttl_ms(lease_ttl))
        if strategy is not None and strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        default = self._ttl_ms or round(DEFAULT_LEASE_TTL * 1000)
        reply = self._run("configure", (ttl, strategy or "", default, STRATEGIES[0]))
        return PoolSettings(lease_ttl=int(reply[1]) / 1000, strategy=text(reply[2]))

    def settings(self) -> PoolSettings:
        """The pool's settings as stored in Redis (defaults where none are)."""
        with self.redis_errors("settings"):
            raw = self.client.hgetall(self.keys.config)
        values = {text(k): text(v) for k, v in raw.items()}
        ttl_ms = values.get("lease_ttl_ms", "")
        return PoolSettings(
            lease_ttl=int(ttl_ms) / 1000 if ttl_ms.isdigit() else DEFAULT_LEASE_TTL,
            strategy=values.get("strategy", STRATEGIES[0]),
        )

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Stop renewing (held leases then end after their TTL) and disconnect."""
        self._renewer.stop()
        self._wire.close()
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


def _is_permission_error(exc: redis.ResponseError) -> bool:
    """A script's command refused by ACL (Redis reports it as a plain error)."""
    message = str(exc)
    return "NOPERM" in message or "can't run this command" in message or "no permissions" in message


def _worker_meta(host: str | None, pid: int | None) -> str:
    if host is not None and (not isinstance(host, str) or "|" in host or not host.isprintable()):
        raise ValueError(f"host must be printable text without '|', got {host!r}")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0):
        raise ValueError(f"pid must be a positive integer, got {pid!r}")
    return f"{host or ''}|{pid or ''}"
