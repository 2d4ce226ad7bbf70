"""Every Redis key of a pool, built in one place.

All keys of pool ``P`` are ``redispool:{P}:<part>``. The braces are a Redis
Cluster hash tag: one pool lives in one slot, so every script of a pool runs
unchanged on a cluster. Scripts never build key names from strings except by
appending a worker id or a waiter ticket to the prefix they were given in KEYS.

The pool's jobs live there too: RQ keeps every key of the pool's jobs under
the RQ key prefix :attr:`PoolKeys.rq_prefix` (``redispool:{P}:rq``), so its
queues, job records, results, registries and worker records are the pool's
keys, readable and writable only by users of the pool (see
:mod:`redispool.rqkeys`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

__all__ = [
    "FenceKeys",
    "PoolKeys",
    "pool_name_from_key",
    "validate_pool_name",
    "validate_worker_id",
    "validate_worker_id_prefix",
]

NAMESPACE = "redispool"
#: The part after a pool's prefix under which RQ keeps the pool's jobs; the
#: scripts that bury a worker delete its RQ keys under ``<prefix>rq:``.
RQ_PART = "rq"

_POOL_NAME = re.compile(r"[A-Za-z0-9._:-]{1,100}")
_WORKER_ID = re.compile(r"[\x21-\x7e]{1,200}")


def validate_pool_name(name: object) -> str:
    """Return ``name`` if it is a valid pool name, else raise ``ValueError``."""
    if not isinstance(name, str) or not _POOL_NAME.fullmatch(name):
        raise ValueError(
            f"invalid pool name {name!r}: use 1 to 100 characters of letters, digits and ._:-"
        )
    return name


def validate_worker_id(worker_id: object) -> str:
    """Return ``worker_id`` if it is valid, else raise ``ValueError``."""
    if not isinstance(worker_id, str) or not _WORKER_ID.fullmatch(worker_id):
        raise ValueError(
            f"invalid worker id {worker_id!r}: use 1 to 200 printable ASCII characters, "
            "no whitespace"
        )
    return worker_id


def validate_worker_id_prefix(prefix: object) -> str:
    """Return ``prefix`` if ``<prefix>-<n>`` is a valid worker id for any n a
    supervisor makes (up to 9 digits), else raise ``ValueError``."""
    if not isinstance(prefix, str) or not _WORKER_ID.fullmatch(prefix + "-123456789"):
        raise ValueError(
            f"invalid worker id prefix {prefix!r}: worker ids are <prefix>-<n>, so use 1 to "
            "190 printable ASCII characters, no whitespace"
        )
    return prefix


def pool_name_from_key(key: str) -> str | None:
    """The pool a key belongs to, or None when it is not a redispool key."""
    head = NAMESPACE + ":{"
    if not key.startswith(head):
        return None
    end = key.find("}:", len(head))
    if end < 0:
        return None
    return key[len(head) : end]


@dataclass(frozen=True)
class PoolKeys:
    """The key names of one pool."""

    pool: str

    @cached_property
    def prefix(self) -> str:
        """``redispool:{pool}:``; scripts append ``lease:<id>`` or ``wake:<ticket>``."""
        return f"{NAMESPACE}:{{{self.pool}}}:"

    @cached_property
    def common(self) -> tuple[str, ...]:
        """KEYS[1..9] of the pool scripts, in the order of ``includes/pool.lua`` (the hot
        ones, checkout, checkin and cancel_wait, are sent :attr:`prefix` alone off a
        cluster and name these from it; see ``scripts.on_cluster``)."""
        return (
            self.prefix, self.config, self.workers, self.idle, self.deadlines, self.token,
            self.draining, self.waitq, self.waiters,
        )  # fmt: skip

    @cached_property
    def liveness(self) -> tuple[str, ...]:
        """KEYS[10..16] of the worker scripts, in the order of ``includes/workers.lua``."""
        return (
            self.heartbeats, self.incarnations, self.dead_leases, self.jobs, self.overflow,
            self.jobs_failed, self.removed,
        )  # fmt: skip

    @property
    def config(self) -> str:
        """Hash: the pool's settings (``lease_ttl_ms``, ``strategy``)."""
        return self.prefix + "config"

    @property
    def workers(self) -> str:
        """Hash: worker id -> ``host|pid`` (empty when unknown). Every registered worker."""
        return self.prefix + "workers"

    @property
    def idle(self) -> str:
        """List: idle worker ids; checkout pops from the head."""
        return self.prefix + "idle"

    @cached_property
    def deadlines(self) -> str:
        """Sorted set: leased worker id -> lease deadline (server ms)."""
        return self.prefix + "deadlines"

    @property
    def draining(self) -> str:
        """Set: leased workers that leave the pool when their lease ends."""
        return self.prefix + "draining"

    @property
    def token(self) -> str:
        """String: the last fencing token issued."""
        return self.prefix + "token"

    @property
    def waitq(self) -> str:
        """List: waiter tickets, oldest first."""
        return self.prefix + "waitq"

    @property
    def waiters(self) -> str:
        """Hash: ticket -> ``alive_until_ms|lease_ttl_ms|holder``."""
        return self.prefix + "waiters"

    def lease(self, worker_id: str) -> str:
        """String with a TTL: ``token|holder`` while ``worker_id`` is leased."""
        return self.prefix + "lease:" + worker_id

    def wake(self, ticket: str) -> str:
        """List: where a checkin hands a worker to the waiter ``ticket``."""
        return self.prefix + "wake:" + ticket

    @property
    def heartbeats(self) -> str:
        """Sorted set: id of a worker run by a process -> heartbeat deadline (server ms)."""
        return self.prefix + "heartbeats"

    @property
    def incarnations(self) -> str:
        """Hash: worker id -> incarnation (one per process start) that holds the id."""
        return self.prefix + "incarnations"

    @cached_property
    def dead_leases(self) -> str:
        """Sorted set: token -> server ms when that lease ended because its worker died."""
        return self.prefix + "dead_leases"

    @property
    def jobs(self) -> str:
        """Hash: worker id -> jobs it has started."""
        return self.prefix + "jobs"

    @property
    def jobs_failed(self) -> str:
        """Hash: worker id -> jobs that failed or were refused on it."""
        return self.prefix + "jobs_failed"

    @property
    def overflow(self) -> str:
        """Set: overflow workers (started on demand, leave when idle)."""
        return self.prefix + "overflow"

    @property
    def removed(self) -> str:
        """Hash: worker id -> incarnation taken out of service (removed, drained,
        left idle); that incarnation's heartbeat does not register it again."""
        return self.prefix + "removed"

    def alive(self, worker_id: str) -> str:
        """String with a TTL: the incarnation of ``worker_id`` while its process beats."""
        return self.prefix + "alive:" + worker_id

    @property
    def rq_prefix(self) -> str:
        """``redispool:{pool}:rq``: the RQ key prefix (``RQ_KEY_PREFIX``) of the pool's
        jobs. Every key RQ writes for them starts with it and a colon."""
        return self.prefix + RQ_PART

    def rq_queue(self, worker_id: str) -> str:
        """Name of the RQ queue of ``worker_id``: the id itself. Its list is
        ``<rq_prefix>:queue:<id>``; RQ's registries of it ``<rq_prefix>:<kind>:<id>``."""
        return worker_id

    def rq_result(self, job_id: str) -> str:
        """Stream: RQ's results of job ``job_id`` (``<rq_prefix>:results:<id>``)."""
        return f"{self.rq_prefix}:results:{job_id}"

    @property
    def events(self) -> str:
        """Stream, capped: what operators need to see (see :mod:`redispool.events`)."""
        return self.prefix + "events"

    @property
    def history(self) -> str:
        """Sorted set: minute (unix minutes) of each history bucket -> the same minute."""
        return self.prefix + "history"

    def history_bucket(self, minute: int) -> str:
        """Hash: the pool's counts and samples of one minute (see :mod:`redispool.history`)."""
        return f"{self.prefix}history:{minute}"

    @property
    def history_sampler(self) -> str:
        """String with a TTL: the process that samples the pool's numbers for history now."""
        return self.prefix + "history_sampler"

    def alive_worker(self, key: str) -> str | None:
        """The worker id of an alive key of this pool, else None."""
        head = self.prefix + "alive:"
        return key[len(head) :] if key.startswith(head) else None

    def lease_worker(self, key: str) -> str | None:
        """The worker id of a lease key of this pool, else None."""
        head = self.prefix + "lease:"
        return key[len(head) :] if key.startswith(head) else None


@dataclass(frozen=True)
class FenceKeys:
    """The key names of one fenced store (:mod:`redispool.fence`), all in one
    Cluster slot: ``redispool:fence:{name}:<part>``."""

    name: str

    @cached_property
    def prefix(self) -> str:
        return f"{NAMESPACE}:fence:{{{self.name}}}:"

    @property
    def highest(self) -> str:
        """String: the highest fencing token that has written to this store."""
        return self.prefix + "highest"

    def data(self, key: str) -> str:
        """String: the value last written under ``key``."""
        return self.prefix + "data:" + key
