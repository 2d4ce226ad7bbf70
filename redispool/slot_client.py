"""The client of one pool on a Redis Cluster: a plain ``redis.Redis`` of its slot.

A *slot client*'s connections, each time they connect, ask the cluster's
topology (:class:`~redispool.cluster.SlotRoute`) for the slot's current master
and connect there. Everything that works on one server (the hot path,
pipelines and transactions, RQ, the fence) then works unchanged on the pool's
master, and follows a failover or a migration the way a Sentinel client does:

- a ``MOVED`` reply (the slot moved, or a promoted replica now serves it)
  updates the topology and raises :class:`SlotMoved`, a ``ConnectionError``
  that is also a ``MovedError`` (the pool's hot path sends the command again
  at once: a command answered ``MOVED`` did not run); the connection connects
  again, to the new master, before it next sends;
- a command (or an unwatched transaction) answered ``MOVED``, ``ASK`` or
  ``TRYAGAIN`` is sent again by :class:`SlotClient` until the migration or
  failover is over, at most :data:`MIGRATION_WAIT` seconds; a watched
  transaction raises ``WatchError`` instead, so its caller (RQ) watches again;
- a connection that fails marks the topology stale: the next connection first
  asks the cluster again;
- an ``ASK`` reply (a key already migrated) is followed by the hot path on a
  one-off connection to the importing master (``ASKING`` then the command).

A cluster reached over TLS (``RedisCluster(ssl=True, ...)`` or a
``rediss+cluster://`` URL) gets TLS connections with the cluster's own
certificate settings: :class:`SlotSSLConnection`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis import Redis
from redis.client import Pipeline
from redis.cluster import RedisCluster
from redis.connection import AbstractConnection, Connection, ConnectionPool, SSLConnection
from redis.exceptions import AskError, MovedError, TryAgainError, WatchError

from .cluster import SlotRoute

__all__ = [
    "MIGRATION_WAIT",
    "SlotClient",
    "SlotConnection",
    "SlotConnectionPool",
    "SlotMoved",
    "SlotPipeline",
    "SlotSSLConnection",
    "master_name",
    "pool_client",
    "slot_client",
]

T = TypeVar("T")


class SlotMoved(redis.ConnectionError, MovedError):
    """A ``MOVED`` reply: the command did not run; the slot is served elsewhere."""


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
    run (MULTI/EXEC, with or without an explicit ``multi()``) is sent again; a
    watched one raises ``WatchError`` (its caller's loop
    watches and tries again, as after a change of a watched key)."""

    def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        run = super().immediate_execute_command  # WATCH, and the reads after it
        return _again(lambda: run(*args, **options))  # type: ignore[no-untyped-call]

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        run = super().execute
        if self.watching:  # what it read under WATCH may be stale: its caller decides
            try:
                return list(run(raise_on_error))
            except _NOT_RUN as exc:  # it did not run: as if a watched key had changed
                time.sleep(0.01)
                raise WatchError(f"the pool's slot moved or is moving: {exc}") from exc
        explicit = self.explicit_transaction  # multi() called (RQ's enqueue does)
        if not (explicit or vars(self).get("transaction")):  # the attribute, not .transaction()
            return list(run(raise_on_error))
        stack = list(self.command_stack)

        def once() -> list[Any]:  # execute() reset the pipeline: queue it again
            self.command_stack = list(stack)
            self.explicit_transaction = explicit
            return list(run(raise_on_error))

        return _again(once)


class _SlotFollowing(AbstractConnection):
    """What makes a connection go to whichever master serves its route's slot
    when it connects (mixed into a plain or a TLS connection below)."""

    slot_route: SlotRoute
    _moved: bool

    def _follow(self, slot_route: SlotRoute) -> None:
        self.slot_route = slot_route
        self._moved = False  # it met a MOVED: connect again (elsewhere) before sending

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


class SlotConnection(_SlotFollowing, Connection):
    """A plain connection to whichever master serves its route's slot when it connects."""

    def __init__(self, *, slot_route: SlotRoute, **kwargs: Any) -> None:
        self._follow(slot_route)
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]


class SlotSSLConnection(_SlotFollowing, SSLConnection):
    """A TLS connection to whichever master serves its route's slot when it connects."""

    def __init__(self, *, slot_route: SlotRoute, **kwargs: Any) -> None:
        self._follow(slot_route)
        super().__init__(**kwargs)


class SlotConnectionPool(ConnectionPool):
    """redis-py's pool of slot-following connections for one slot; also follows ``ASK``."""

    def __init__(self, route: SlotRoute, *, tls: bool = False, **kwargs: Any) -> None:
        cls = SlotSSLConnection if tls else SlotConnection
        super().__init__(connection_class=cls, slot_route=route, **kwargs)
        self.route = route
        self.tls = tls
        self._node_kwargs = kwargs

    def ask(self, exc: AskError, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``commands`` sent after ``ASKING`` to the node an ``ASK`` reply named,
        on a connection of their own; their replies (errors as values)."""
        cls = SSLConnection if self.tls else Connection
        conn = cls(host=exc.host, port=exc.port, **self._node_kwargs)
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


def _node_kwargs(cluster: RedisCluster) -> tuple[dict[str, Any], bool]:
    """The connection settings the cluster gives its nodes (auth, timeouts,
    protocol, TLS certificates), and whether they are reached over TLS."""
    kwargs = dict(cluster.nodes_manager.connection_kwargs)
    for name in ("host", "port", "connection_class", "connection_pool", "cache", "cache_config",
                 "redis_connect_func", "oss_cluster_maint_notifications_handler"):  # fmt: skip
        kwargs.pop(name, None)
    # the cluster keeps redis.Redis's options: ``ssl`` picks the connection class there
    tls = bool(kwargs.pop("ssl", False))
    if not tls:  # certificate options without TLS: redis.Redis ignores them, so do we
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("ssl_")}
    return kwargs, tls


def slot_client(cluster: RedisCluster, key: str) -> Redis:
    """A plain client whose every connection goes to the master of ``key``'s slot."""
    route = SlotRoute(cluster, int(cluster.keyslot(key)))  # type: ignore[no-untyped-call]
    kwargs, tls = _node_kwargs(cluster)
    return SlotClient(connection_pool=SlotConnectionPool(route, tls=tls, **kwargs))


def pool_client(client: Redis | RedisCluster, key: str) -> Redis:
    """``client`` itself, or on a cluster the :func:`slot_client` of ``key``."""
    return client if isinstance(client, Redis) else slot_client(client, key)


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
