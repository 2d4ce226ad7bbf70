"""Expired-key events of every master of a cluster, each heard on a connection of
its own and probed end to end.

Keyspace events are per node: the Reaper needs a subscription on every master,
and one that follows the topology (a promoted replica, an added node). Each
subscription here has its own connection pool, not the cluster's: the cluster's
topology reads mark the connections of its node pools for a reconnect.

Each look (:meth:`ExpiredEvents.follow`, every second) also checks every
subscription: a probe published on its master, on a channel only that
subscription listens to, must come back within :data:`PROBE_DEADLINE`, else the
subscription is made again on a new connection. Seen on Valkey 8.1 after a
failover, with redis-py's ``ClusterKeyspaceNotifications``: the subscription on
the promoted master was open and polled, the server did not list it as
subscribed, and no event came, for good. A PUBLISH counts only the subscribers
of the node it is sent to, so a probe that reached none (0) says at once that
the subscription is not on that master.

Events published on a master while it had no working subscription here are
lost, as any keyspace event can be: ``follow`` says so, and the Reaper sweeps.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import deque

import redis
from redis.client import PubSub
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from .wire import text

__all__ = ["PROBE_CHANNEL_PREFIX", "PROBE_DEADLINE", "PROBE_TIMEOUT", "ExpiredEvents"]

log = logging.getLogger(__name__)

#: Seconds a probe of a master's subscription may go unanswered before that
#: subscription is made again (the Reaper looks every second).
PROBE_DEADLINE = 3.0
#: Seconds a probe (a PUBLISH) or a new subscription's connect may take: a master
#: that hangs must not hold up the events of the others.
PROBE_TIMEOUT = 1.0
#: The probes' channels begin so: each subscription's is this, a random part and
#: its master's name (the ACL rules of a job user grant them, redispool.acl).
PROBE_CHANNEL_PREFIX = "redispool:reaper-probe:"
#: Messages read from one subscription at a look before the deadlines are judged.
DRAIN_LIMIT = 10_000


class ExpiredEvents:
    """Expired-key events of every master of a cluster: :meth:`key` gives the
    next; :meth:`follow` reads the topology again, subscribes where missing,
    drops masters gone, and probes every subscription."""

    def __init__(self, cluster: RedisCluster, db: int = 0) -> None:
        self.cluster = cluster
        self.channel = f"__keyevent@{db}__:expired"
        self._probe_prefix = f"{PROBE_CHANNEL_PREFIX}{secrets.token_hex(8)}:"
        self._subs: dict[str, PubSub] = {}  # master name -> its subscription
        self._pools: dict[str, redis.ConnectionPool] = {}  # the subscription's own
        self._probes: dict[str, redis.Redis] = {}  # a client with short timeouts, per master
        self._probed: dict[str, float] = {}  # master -> when its unanswered probe went out
        self._unprobed: set[str] = set()  # masters where the probe is not allowed (ACL)
        self._pending: deque[str] = deque()  # keys read while draining
        self._next = 0  # round robin over the subscriptions
        self._lost = False  # a subscription broke or was made again since the last look
        self._renewed: set[str] = set()  # masters subscribed again since renewed()
        self.remade = 0  # subscriptions made again after a probe went unanswered
        self.answered = 0  # probes that came back
        self.masters = self._names()
        try:
            self._subscribe_missing()
        except BaseException:
            self.close()
            raise
        self._lost = False  # the caller sweeps after subscribing
        self._renewed.clear()

    def _names(self) -> frozenset[str]:
        primaries = self.cluster.get_primaries()  # type: ignore[no-untyped-call]
        return frozenset(str(node.name) for node in primaries)

    def subscribed(self) -> frozenset[str]:
        """The masters whose events are heard now."""
        return frozenset(self._subs)

    def renewed(self) -> frozenset[str]:
        """The masters subscribed again (after a broken connection or an unanswered
        probe) since the last call: a restarted master may have its events off."""
        found, self._renewed = frozenset(self._renewed), set()
        return found

    def key(self, timeout: float) -> str | None:
        """The next expired key within ``timeout`` seconds, or None."""
        if self._pending:
            return self._pending.popleft()
        deadline = time.monotonic() + timeout
        polled = 0
        while True:
            subs = list(self._subs.items())
            left = deadline - time.monotonic()
            if not subs or (left <= 0 and polled >= len(subs)):
                if not subs and left > 0:
                    time.sleep(left)  # nothing subscribed: wait as asked, not spin
                return None
            name, pubsub = subs[self._next % len(subs)]
            self._next += 1
            polled += 1
            found = self._read(name, pubsub, max(0.0, min(0.1, left)))[1]
            if found is not None:
                return found

    def _read(self, name: str, pubsub: PubSub, timeout: float) -> tuple[bool, str | None]:
        """One message of ``name``'s subscription: (whether one was read, the
        expired key it names or None). A broken connection drops the subscription."""
        try:
            message = pubsub.get_message(timeout=timeout)  # confirmations too: see _drain
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("expired events of master %s lost: %s", name, exc)
            self._drop(name)  # made again at the next look
            return False, None
        except redis.ResponseError as exc:  # a refused SUBSCRIBE (ACL): no probe there
            log.warning("master %s refused a Reaper subscription (%s): not probed", name, exc)
            self._unprobed.add(name)
            self._probed.pop(name, None)
            return True, None
        if message is None:
            return False, None
        if message.get("type") != "message":
            return True, None
        channel = text(message["channel"])
        if channel == self.channel:
            return True, text(message["data"])
        if channel == self._probe_prefix + name:
            self._probed.pop(name, None)  # this subscription hears its master
            self.answered += 1
        return True, None

    def follow(self) -> bool:
        """Read the topology, subscribe where missing and probe every subscription;
        True if the masters changed or events may have been lost (sweep)."""
        self._drain()  # a probe's answer waiting behind other messages is not late
        now = time.monotonic()
        for name, sent in list(self._probed.items()):
            if now - sent > PROBE_DEADLINE and name in self._subs:
                log.warning("expired events of master %s not heard: subscribing again", name)
                self.remade += 1
                self._drop(name)
        changed = False
        try:
            self.cluster.nodes_manager.initialize()
        except (redis.RedisError, RedisClusterException):
            pass  # the masters known before: subscribe again where one broke
        else:
            names = self._names()
            changed, self.masters = names != self.masters, names
            for name in set(self._subs) - names:  # no longer a master
                self._drop(name)
        self._subscribe_missing()
        self._probe(now)
        lost, self._lost = self._lost, False
        return lost or changed

    def _drain(self) -> None:
        """Read what every subscription has waiting, without blocking: its keys
        are given by :meth:`key` next."""
        for name, pubsub in list(self._subs.items()):
            for _ in range(DRAIN_LIMIT):
                read, found = self._read(name, pubsub, 0.0)
                if found is not None:
                    self._pending.append(found)
                if not read or name not in self._subs:
                    break

    def _subscribe_missing(self) -> None:
        for node in self.cluster.get_primaries():  # type: ignore[no-untyped-call]
            name = str(node.name)
            if name not in self._subs:
                self._subscribe(name, node)

    def _subscribe(self, name: str, node: ClusterNode) -> None:
        pool, probes = self._own_pools(node)
        pubsub = redis.Redis(connection_pool=pool).pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(self.channel)
            if name not in self._unprobed:  # apart: a refused probe keeps the events
                pubsub.subscribe(self._probe_prefix + name)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("cannot hear expired events of master %s: %s", name, exc)
            pubsub.close()
            pool.disconnect()
            probes.disconnect()
            return  # tried again at the next look; the drop that made it missing said lost
        self._subs[name], self._pools[name] = pubsub, pool
        self._probes[name] = redis.Redis(connection_pool=probes)
        self._probed.pop(name, None)
        self._renewed.add(name)
        self._lost = True  # events before it are not heard

    def _own_pools(self, node: ClusterNode) -> tuple[redis.ConnectionPool, redis.ConnectionPool]:
        """Two pools of connections to ``node`` as the cluster's own: the
        subscription's, and the probes' (with :data:`PROBE_TIMEOUT`)."""
        client = node.redis_connection or self.cluster.get_redis_connection(node)
        kwargs = dict(client.connection_pool.connection_kwargs)
        kwargs.update(host=node.host, port=node.port)  # the master named, whatever else
        connect = kwargs.get("socket_connect_timeout")
        kwargs["socket_connect_timeout"] = min(connect or PROBE_TIMEOUT, PROBE_TIMEOUT)
        cls = client.connection_pool.connection_class
        probes = {**kwargs, "socket_timeout": PROBE_TIMEOUT}
        return (
            redis.ConnectionPool(connection_class=cls, **kwargs),
            redis.ConnectionPool(connection_class=cls, **probes),
        )

    def _probe(self, now: float) -> None:
        """Publish a probe on each master whose subscription has none out."""
        for name in list(self._subs):
            if name in self._probed or name in self._unprobed:
                continue
            try:
                receivers = self._probes[name].publish(self._probe_prefix + name, "probe")
            except (redis.ConnectionError, redis.TimeoutError):
                continue  # the master is unreachable: its subscription will say so
            except redis.ResponseError as exc:  # PUBLISH not allowed (ACL): no probe there
                log.warning("master %s refused the Reaper's probe (%s): not probed", name, exc)
                self._unprobed.add(name)
                continue
            self._probed[name] = now if receivers else now - PROBE_DEADLINE  # 0: deaf now

    def _drop(self, name: str) -> None:
        pubsub, pool = self._subs.pop(name, None), self._pools.pop(name, None)
        probes = self._probes.pop(name, None)
        self._probed.pop(name, None)
        self._lost = True
        if pubsub is not None:
            pubsub.close()
        for each in (pool, probes.connection_pool if probes is not None else None):
            if each is not None:
                each.disconnect()

    def close(self) -> None:
        for name in list(self._subs):
            self._drop(name)
