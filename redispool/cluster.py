"""Redis Cluster: each pool is one slot, served by the master that owns it.

Every key of pool ``P`` carries the hash tag ``{P}``, so a pool lives in one
slot. :class:`SlotRoute` says which master serves a slot now, per redis-py's
view of the topology (``RedisCluster.nodes_manager``), and reads the topology
again when a connection failed; the pool's own client is built on it (see
:mod:`redispool.slot_client`).

While a slot migrates, Redis runs a script on the old master if every key it
names is still there, and stops it at the first other key it touches that is
not (a key it creates, or one already moved), keeping the writes before it
(checked here: "Script attempted to access a non local key"). If some named
key is missing it answers ``TRYAGAIN`` and runs nothing, but only while some
named key is still there: if every named key is missing it answers ``ASK``, and
the importing master would run the script on half a pool. So every script call
on a cluster names the pool's real keys (the hot scripts, which off a cluster
get only the prefix, are sent all nine common keys there, ``scripts.on_cluster``)
and also :func:`guard_key`, a key of the pool's slot that never exists (see
``scripts.Script``): some named key is always missing, so a migrating slot
answers ``TRYAGAIN``. Outside a migration Redis does not look at it (no cost
measured).

:func:`masters` gives a plain client of every master, for what must be done
on each (loading the library, expired events, finding pools);
:mod:`redispool.cluster_events` hears expired keys on every master.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import redis
from redis import Redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    RedisClusterException,
    TryAgainError,
)

__all__ = [
    "REFRESH_EVERY",
    "SlotRoute",
    "guard_key",
    "in_transit",
    "is_cluster",
    "masters",
    "named_masters",
]


#: Seconds between two topology refreshes asked for by failing connections.
REFRESH_EVERY = 0.25
#: The part of the guard key after the pool's hash tag: no script writes it.
GUARD_PART = "cluster-guard"


def is_cluster(client: object) -> bool:
    """True for a ``RedisCluster`` client."""
    return isinstance(client, RedisCluster)


def guard_key(first_key: str) -> str:
    """A key in the slot of ``first_key`` (a pool's key) that never exists."""
    start = first_key.index("{")
    tag = first_key[start : first_key.index("}", start) + 1]
    return f"redispool:{tag}:{GUARD_PART}"


class SlotRoute:
    """Where one slot of a cluster is served now, per redis-py's topology."""

    def __init__(self, cluster: RedisCluster, slot: int) -> None:
        self.cluster = cluster
        self.slot = slot
        self._stale = False
        self._refreshed = 0.0
        self._lock = threading.Lock()

    def address(self) -> tuple[str, int]:
        """(host, port) of the slot's master; asks the cluster again first if a
        connection failed since the last look."""
        if self._stale:
            self.refresh()
        try:
            node: ClusterNode = self.cluster.nodes_manager.get_node_from_slot(self.slot)
        except RedisClusterException as exc:  # no node covers it (mid-refresh, all down)
            self._stale = True
            raise redis.ConnectionError(f"no master serves slot {self.slot}: {exc}") from exc
        return str(node.host), int(node.port)

    def refresh(self, force: bool = False) -> None:
        """Read the topology from the cluster (rate-limited unless ``force``)."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._refreshed < REFRESH_EVERY:
                return
            self._refreshed = now
            self._stale = False
        try:
            self.cluster.nodes_manager.initialize()
        except (redis.RedisError, RedisClusterException):
            self._stale = True  # no node answered: try again on the next connect

    def failed(self) -> None:
        """A connection to the slot's master failed: look again before the next."""
        self._stale = True

    def moved(self, exc: AskError) -> None:
        """A ``MOVED`` reply named the slot's new master: remember it."""
        if exc.slot_id == self.slot:
            self.cluster.nodes_manager.move_slot(exc)
        else:  # not our slot: the topology is older than we thought
            self._stale = True


#: Replies that say a command did not run because its slot is moving or the
#: cluster is changing: the pool is unavailable for now, not corrupted.
_IN_TRANSIT = (AskError, TryAgainError, ClusterDownError)
_NON_LOCAL = "non local key"


def in_transit(exc: BaseException) -> bool:
    """True for a reply that means "the slot is moving, try later" (``ASK``,
    ``TRYAGAIN``, ``CLUSTERDOWN``, a script that met a key already migrated)."""
    return isinstance(exc, _IN_TRANSIT) or (
        isinstance(exc, redis.ResponseError) and _NON_LOCAL in str(exc)
    )


def masters(client: Redis | RedisCluster, *, refresh: bool = False) -> Iterator[Redis]:
    """A plain client of every master of ``client`` (just ``client`` on one server).

    The clients are the cluster's own per-node clients: do not close them.
    ``refresh`` reads the topology first (after a failover, a new master).
    """
    if not isinstance(client, RedisCluster):
        yield client
        return
    for _, node_client in named_masters(client, refresh=refresh):
        yield node_client


def named_masters(client: RedisCluster, *, refresh: bool = False) -> Iterator[tuple[str, Redis]]:
    """``(host:port, plain client)`` of every master of a cluster (see :func:`masters`)."""
    if refresh:
        client.nodes_manager.initialize()
    for node in client.get_primaries():  # type: ignore[no-untyped-call]
        node_client = node.redis_connection
        if node_client is None:
            node_client = client.get_redis_connection(node)
        yield str(node.name), node_client
