"""Redis Cluster: each pool is one slot, served by the master that owns it.

Every key of pool ``P`` carries the hash tag ``{P}``, so a pool lives in one
slot. On a cluster a :class:`~redispool.Pool` talks to a *slot client*: a plain
``redis.Redis`` whose connections, each time they connect, ask the cluster's
topology (redis-py's ``RedisCluster.nodes_manager``) for the slot's current
master and connect there. Everything that works on one server (the hot path,
pipelines and transactions, RQ, the fence) then works unchanged on the pool's
master, and follows a failover or a migration the way a Sentinel client does:

- a ``MOVED`` reply (the slot moved, or a promoted replica now serves it)
  updates the topology and raises :class:`SlotMoved`, a ``ConnectionError``
  (so redis-py and RQ connect again, to the new master) that is also a
  ``MovedError`` (so the pool's hot path sends the command again at once: a
  command answered ``MOVED`` did not run);
- a connection that fails marks the topology stale: the next connection first
  asks the cluster again (at most every :data:`REFRESH_EVERY` seconds);
- an ``ASK`` reply (a key already migrated) is followed by the hot path on a
  one-off connection to the importing master (``ASKING`` then the command).

While a slot migrates, Redis runs a script on the old master if every key it
names is still there, and stops it at the first other key it touches that is
not (a key it creates, or one already moved), keeping the writes before it
(checked here: "Script attempted to access a non local key"). If some named
key is missing it answers ``TRYAGAIN`` and runs nothing. Today most scripts
name the pool's prefix, which is never a key, so they are refused; to not
depend on that, every script call on a cluster also names :func:`guard_key`, a
key of the pool's slot that never exists (see ``scripts.Script``). Outside a
migration Redis does not look at it (no cost measured).

:func:`masters` gives a plain client of every master, for what must be done
on each (loading the library, expired events, finding pools).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import redis
from redis import Redis
from redis.client import Pipeline
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Connection, ConnectionPool
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    TryAgainError,
    WatchError,
)
from redis.keyspace_notifications import ClusterKeyspaceNotifications, KeyNotification

__all__ = [
    "REFRESH_EVERY",
    "ExpiredEvents",
    "SlotClient",
    "SlotMoved",
    "SlotRoute",
    "guard_key",
    "in_transit",
    "is_cluster",
    "master_name",
    "masters",
    "pool_client",
    "slot_client",
]

T = TypeVar("T")

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


class SlotMoved(redis.ConnectionError, MovedError):
    """A ``MOVED`` reply: the command did not run; the slot is served elsewhere."""


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


#: Seconds a command of a slot client answered MOVED, ASK or TRYAGAIN (it did
#: not run: the slot moved or is migrating) is sent again for, before it raises.
MIGRATION_WAIT = 2.0
_NOT_RUN = (AskError, TryAgainError)  # MovedError (and SlotMoved) is an AskError


def _again(call: Callable[[], T]) -> T:
    """``call()``, again while it is answered with a reply that says nothing ran,
    for at most :data:`MIGRATION_WAIT` seconds."""
    give_up, pause = time.monotonic() + MIGRATION_WAIT, 0.005
    while True:
        try:
            return call()
        except _NOT_RUN:
            if time.monotonic() + pause > give_up:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


class SlotClient(Redis):
    """``redis.Redis`` of one slot (see :func:`slot_client`).

    A command, or a transaction (MULTI/EXEC, not watched), that the cluster
    answers ``MOVED``, ``ASK`` or ``TRYAGAIN`` did not run: it is sent again,
    to the slot's master of the moment, until the migration or failover is
    over (at most :data:`MIGRATION_WAIT` seconds). A pipeline without a
    transaction is never sent again (some of it may have run).
    """

    def execute_command(self, *args: Any, **options: Any) -> Any:
        run = super().execute_command
        return _again(lambda: run(*args, **options))  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return SlotPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class SlotPipeline(Pipeline):
    """A pipeline of a :class:`SlotClient`: a transaction the cluster did not
    run is sent again; a watched one raises ``WatchError`` (its caller's loop
    watches and tries again, as after a change of a watched key)."""

    def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        run = super().immediate_execute_command  # WATCH, and the reads after it
        return _again(lambda: run(*args, **options))  # type: ignore[no-untyped-call]

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        run = super().execute
        if self.watching or self.explicit_transaction:
            try:
                return list(run(raise_on_error))
            except _NOT_RUN as exc:  # it did not run: as if a watched key had changed
                time.sleep(0.01)
                raise WatchError(f"the pool's slot moved or is moving: {exc}") from exc
        if not vars(self).get("transaction"):  # the attribute, not Redis.transaction()
            return list(run(raise_on_error))
        stack = list(self.command_stack)

        def once() -> list[Any]:
            self.command_stack = list(stack)
            return list(run(raise_on_error))

        return _again(once)


class SlotConnection(Connection):
    """A connection to whichever master serves its route's slot when it connects."""

    def __init__(self, *, slot_route: SlotRoute, **kwargs: Any) -> None:
        self.slot_route = slot_route
        self._moved = False  # it met a MOVED: connect again (elsewhere) before sending
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._moved:
            self._moved = False
            self.disconnect()  # type: ignore[no-untyped-call]
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        # connect() and a send on a closed connection both come here
        if self._sock:
            return
        self.host, self.port = self.slot_route.address()
        try:
            super().connect_check_health(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError):
            self.slot_route.failed()
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except MovedError as exc:  # the replies after it may still be read (a pipeline)
            self.slot_route.moved(exc)
            self._moved = True
            raise SlotMoved(f"{exc.slot_id} {exc.host}:{exc.port}") from exc  # MOVED's own words
        except (redis.ConnectionError, redis.TimeoutError):
            self.slot_route.failed()
            raise


class SlotConnectionPool(ConnectionPool):
    """redis-py's pool of :class:`SlotConnection` for one slot; also follows ``ASK``."""

    def __init__(self, route: SlotRoute, **kwargs: Any) -> None:
        super().__init__(connection_class=SlotConnection, slot_route=route, **kwargs)
        self.route = route
        self._node_kwargs = kwargs

    def ask(self, exc: AskError, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``commands`` sent after ``ASKING`` to the node an ``ASK`` reply named,
        on a connection of their own; their replies (errors as values)."""
        conn = Connection(host=exc.host, port=exc.port, **self._node_kwargs)  # type: ignore[no-untyped-call]
        try:
            conn.connect()  # type: ignore[no-untyped-call]
            packed = conn.pack_commands([("ASKING",), *commands])  # type: ignore[no-untyped-call]
            conn.send_packed_command(packed)  # type: ignore[no-untyped-call]
            conn.read_response()  # OK
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as error:
                    replies.append(error)
            return replies
        finally:
            conn.disconnect()  # type: ignore[no-untyped-call]


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


def _node_kwargs(cluster: RedisCluster) -> dict[str, Any]:
    """The connection settings the cluster gives its nodes (auth, timeouts, protocol)."""
    kwargs = dict(cluster.nodes_manager.connection_kwargs)
    for name in ("host", "port", "connection_class", "connection_pool", "cache", "cache_config",
                 "redis_connect_func", "oss_cluster_maint_notifications_handler"):  # fmt: skip
        kwargs.pop(name, None)
    return kwargs


def slot_client(cluster: RedisCluster, key: str) -> Redis:
    """A plain client whose every connection goes to the master of ``key``'s slot."""
    route = SlotRoute(cluster, int(cluster.keyslot(key)))  # type: ignore[no-untyped-call]
    return SlotClient(connection_pool=SlotConnectionPool(route, **_node_kwargs(cluster)))


def pool_client(client: Redis | RedisCluster, key: str) -> Redis:
    """``client`` itself, or on a cluster the :func:`slot_client` of ``key``."""
    return client if isinstance(client, Redis) else slot_client(client, key)


def masters(client: Redis | RedisCluster, *, refresh: bool = False) -> Iterator[Redis]:
    """A plain client of every master of ``client`` (just ``client`` on one server).

    The clients are the cluster's own per-node clients: do not close them.
    ``refresh`` reads the topology first (after a failover, a new master).
    """
    if not isinstance(client, RedisCluster):
        yield client
        return
    if refresh:
        client.nodes_manager.initialize()
    for node in client.get_primaries():  # type: ignore[no-untyped-call]
        node_client = node.redis_connection
        if node_client is None:
            node_client = client.get_redis_connection(node)
        yield node_client


def master_name(client: Redis) -> str:
    """``host:port`` of the server ``client`` talks to now (for ``status``)."""
    pool = client.connection_pool
    if isinstance(pool, SlotConnectionPool):
        host, port = pool.route.address()
        return f"{host}:{port}"
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


class ExpiredEvents:
    """Expired-key events of every master of a cluster (keyspace events are
    per node), following the topology: :meth:`follow` reads it again and
    subscribes on any master that is new (a promoted replica, an added node).

    Events published on a master before it was subscribed are lost, as any
    keyspace event can be: the Reaper's sweep covers them.
    """

    def __init__(self, cluster: RedisCluster, db: int = 0) -> None:
        self.cluster = cluster
        self._events = ClusterKeyspaceNotifications(cluster)
        self._events.subscribe_keyevent("expired", db=db)
        self.masters = self._names()

    def _names(self) -> frozenset[str]:
        primaries = self.cluster.get_primaries()  # type: ignore[no-untyped-call]
        return frozenset(str(node.name) for node in primaries)

    def key(self, timeout: float) -> str | None:
        """The next expired key within ``timeout`` seconds, or None."""
        found: KeyNotification | None = self._events.get_message(timeout=timeout)
        if found is None:
            return None
        key = found.key
        return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)

    def follow(self) -> bool:
        """Read the topology and subscribe where missing; True if the masters
        changed (events may have been lost: sweep)."""
        try:
            self.cluster.nodes_manager.initialize()
        except (redis.RedisError, RedisClusterException):
            return False
        names = self._names()
        subscribed = frozenset(self._events._node_pubsubs)
        changed, self.masters = names != self.masters, names
        if changed or subscribed != names:
            self._events.refresh_subscriptions()  # type: ignore[no-untyped-call]
        return changed or subscribed != names

    def close(self) -> None:
        self._events.close()  # type: ignore[no-untyped-call]
