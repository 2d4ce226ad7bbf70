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
:class:`ExpiredEvents` hears expired keys on every master.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator

import redis
from redis import Redis
from redis.client import PubSub
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    RedisClusterException,
    TryAgainError,
)

__all__ = [
    "PROBE_CHANNEL_PREFIX",
    "PROBE_DEADLINE",
    "REFRESH_EVERY",
    "ExpiredEvents",
    "SlotRoute",
    "guard_key",
    "in_transit",
    "is_cluster",
    "masters",
    "named_masters",
]

log = logging.getLogger(__name__)


#: Seconds between two topology refreshes asked for by failing connections.
REFRESH_EVERY = 0.25
#: Seconds a probe of a master's expired-events subscription may go unanswered
#: before that subscription is made again (the Reaper looks every second).
PROBE_DEADLINE = 3.0
#: The probes' channels begin so: each subscription's is this, a random part, and
#: its master's name (the ACL rules of a job user grant them, redispool.acl).
PROBE_CHANNEL_PREFIX = "redispool:reaper-probe:"
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


class ExpiredEvents:
    """Expired-key events of every master of a cluster (keyspace events are per
    node), each heard on a connection of its own, following the topology:
    :meth:`follow` reads it again, subscribes on any master that is new (a
    promoted replica, an added node) and drops those gone.

    Each look also checks every subscription end to end: a probe published on
    the master, on a channel only that subscription listens to, must come back
    within :data:`PROBE_DEADLINE`, else the subscription is made again on a new
    connection. Seen on Valkey 8.1 after a failover: a subscription the promoted
    master listed as subscribed, on a connection that was open and read, got
    none of the events an outside subscriber got.

    Events published on a master while it had no working subscription here are
    lost, as any keyspace event can be: :meth:`follow` says so, and the Reaper
    sweeps.
    """

    def __init__(self, cluster: RedisCluster, db: int = 0) -> None:
        self.cluster = cluster
        self.channel = f"__keyevent@{db}__:expired"
        self._probe_prefix = f"{PROBE_CHANNEL_PREFIX}{secrets.token_hex(8)}:"
        self._subs: dict[str, PubSub] = {}  # master name -> its subscription
        self._pools: dict[str, redis.ConnectionPool] = {}  # their own connections
        self._probed: dict[str, float] = {}  # master -> when its unanswered probe went out
        self._next = 0  # round robin over the subscriptions
        self._lost = False  # a subscription failed or was made again since the last look
        self.remade = 0  # subscriptions made again after a probe went unanswered
        self.masters = self._names()
        self._subscribe_missing()
        self._lost = False  # the caller sweeps after subscribing

    def _names(self) -> frozenset[str]:
        primaries = self.cluster.get_primaries()  # type: ignore[no-untyped-call]
        return frozenset(str(node.name) for node in primaries)

    def subscribed(self) -> frozenset[str]:
        """The masters whose events are heard now."""
        return frozenset(self._subs)

    def key(self, timeout: float) -> str | None:
        """The next expired key within ``timeout`` seconds, or None."""
        deadline = time.monotonic() + timeout
        polled = 0
        while True:
            subs = list(self._subs.items())
            left = deadline - time.monotonic()
            if not subs or (left <= 0 and polled >= len(subs)):
                if subs or left <= 0:
                    return None
                time.sleep(left)  # nothing subscribed: wait as asked, not spin
                return None
            name, pubsub = subs[self._next % len(subs)]
            self._next += 1
            polled += 1
            try:
                message = pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=max(0.0, min(0.1, left))
                )
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("expired events of master %s lost: %s", name, exc)
                self._drop(name)  # made again at the next look
                continue
            if message is None or message.get("type") != "message":
                continue
            channel, data = _text(message["channel"]), _text(message["data"])
            if channel == self.channel:
                return data
            if channel == self._probe_prefix + name:
                self._probed.pop(name, None)  # this subscription hears its master

    def follow(self) -> bool:
        """Read the topology, subscribe where missing and probe every subscription;
        True if the masters changed or events may have been lost (sweep)."""
        try:
            self.cluster.nodes_manager.initialize()
        except (redis.RedisError, RedisClusterException):
            return False
        now = time.monotonic()
        for name, sent in list(self._probed.items()):
            if now - sent > PROBE_DEADLINE and name in self._subs:
                log.warning("expired events of master %s not heard: subscribing again", name)
                self.remade += 1
                self._drop(name)
        names = self._names()
        changed, self.masters = names != self.masters, names
        for name in set(self._subs) - names:  # no longer a master
            self._drop(name)
        self._subscribe_missing()
        self._probe(now)
        lost, self._lost = self._lost, False
        return changed or lost

    def _subscribe_missing(self) -> None:
        for node in self.cluster.get_primaries():  # type: ignore[no-untyped-call]
            name = str(node.name)
            if name in self._subs:
                continue
            pool = self._own_pool(node)
            pubsub = redis.Redis(connection_pool=pool).pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self.channel, self._probe_prefix + name)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("cannot hear expired events of master %s: %s", name, exc)
                pubsub.close()
                pool.disconnect()
                self._lost = True
                continue
            self._subs[name], self._pools[name] = pubsub, pool
            self._probed.pop(name, None)
            self._lost = True  # events before it are not heard

    def _own_pool(self, node: ClusterNode) -> redis.ConnectionPool:
        """A pool of connections to ``node`` as the cluster's own, but its own: the
        cluster's topology reads mark the connections of its pools for a reconnect."""
        client = node.redis_connection or self.cluster.get_redis_connection(node)
        kwargs = dict(client.connection_pool.connection_kwargs)
        kwargs.update(host=node.host, port=node.port)  # the master named, whatever else
        return redis.ConnectionPool(
            connection_class=client.connection_pool.connection_class, **kwargs
        )

    def _probe(self, now: float) -> None:
        """Publish a probe on each master whose subscription has none out."""
        for name in list(self._subs):
            if name in self._probed:
                continue
            try:
                receivers = redis.Redis(connection_pool=self._pools[name]).publish(
                    self._probe_prefix + name, "probe"
                )
            except (redis.ConnectionError, redis.TimeoutError):
                continue  # the master is unreachable: its subscription will say so
            self._probed[name] = now if receivers else now - PROBE_DEADLINE  # 0: deaf now

    def _drop(self, name: str) -> None:
        pubsub, pool = self._subs.pop(name, None), self._pools.pop(name, None)
        self._probed.pop(name, None)
        self._lost = True
        if pubsub is not None:
            pubsub.close()
        if pool is not None:
            pool.disconnect()

    def close(self) -> None:
        for name in list(self._subs):
            self._drop(name)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
