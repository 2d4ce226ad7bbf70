"""The Reaper returns the workers of leases that expired.

It listens for keyspace ``expired`` events on lease keys and runs the pool's
sweep at once, and it sweeps on a timer as well: Redis publishes events
fire-and-forget and only when it deletes the key, so a lost event only delays
a return until the next sweep. Any number of Reapers may run at once (every
worker host runs one); each sweep is one atomic script.
"""

from __future__ import annotations

import logging
import threading
import time as mod_time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import redis
from redis.cluster import RedisCluster

from . import liveness, observe
from .cluster import named_masters
from .cluster_events import ExpiredEvents
from .connect import Client
from .discovery import find_pools
from .errors import PoolError
from .keys import pool_name_from_key, validate_pool_name
from .pool import Pool
from .wire import text

__all__ = ["Reaper", "enable_expiry_events"]

log = logging.getLogger("redispool.reaper")

RECONNECT_DELAY = 0.5
#: On a cluster, seconds between two looks at its topology (new masters).
FOLLOW_EVERY = 1.0


def enable_expiry_events(client: redis.Redis) -> bool:
    """Turn on ``notify-keyspace-events`` for expired events, merging with the
    flags already set. False where ``CONFIG`` is forbidden: a pool user (see
    :mod:`redispool.acl`) has no ``CONFIG`` rights at all, since ``CONFIG GET``
    would show it the server's passwords; the events are then an operator's
    setting, and the sweep returns expired leases without them."""
    try:
        raw = client.config_get("notify-keyspace-events")
    except redis.exceptions.NoPermissionError:
        log.info(
            "this user may not read or change notify-keyspace-events: an operator turns "
            "expired events on (Ex); until then the sweep returns expired leases"
        )
        return False
    except redis.ResponseError as exc:
        log.warning("cannot read notify-keyspace-events (%s); relying on the sweep", exc)
        return False
    try:
        flags = text(next(iter(raw.values()), "")) if raw else ""
        wanted = flags
        if "E" not in wanted:
            wanted += "E"
        if "x" not in wanted and "A" not in wanted:
            wanted += "x"
        if wanted != flags:
            client.config_set("notify-keyspace-events", wanted)
        return True
    except redis.ResponseError as exc:
        log.warning(
            "cannot turn on expired keyspace events (%s); expired leases are returned "
            "by the sweep only",
            exc,
        )
        return False


def _enable_on_masters(
    client: RedisCluster, refresh: bool = False, done: frozenset[str] = frozenset()
) -> frozenset[str]:
    """:func:`enable_expiry_events` on every master that answers, but those named
    in ``done``; the names (``host:port``) of those it answered on, ``done``
    included. One that did not answer is asked again at the next look."""
    answered = set(done)
    for name, node in named_masters(client, refresh=refresh):  # names as ExpiredEvents'
        if name in done:
            continue
        try:
            enable_expiry_events(node)
            answered.add(name)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("cannot turn expired events on at master %s: %s", name, exc)
    return frozenset(answered)


class Reaper:
    """Returns expired leases of ``pools`` (None: every pool in this database).

    ``run()`` works in the foreground until :meth:`stop`; ``start()`` runs it
    in a daemon thread. Counts what it returned in ``by_event`` and
    ``by_sweep``, and the expired leases it heard of, by pool, in ``heard``
    (whether a sweep had returned their workers first or not).
    """

    def __init__(
        self,
        client: Client,
        pools: Iterable[str] | None = None,
        *,
        sweep_interval: float = 1.0,
    ) -> None:
        if not sweep_interval > 0:
            raise ValueError(f"sweep_interval must be positive, got {sweep_interval!r}")
        self.client = client
        self._names = None if pools is None else {validate_pool_name(p) for p in pools}
        self._pools: dict[str, Pool] = {}
        self.sweep_interval = sweep_interval
        self.by_event = 0
        self.by_sweep = 0
        self.heard: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._events: ExpiredEvents | None = None  # a cluster's, while listening
        self.listening = threading.Event()
        self._lost = ""  # why the last connection was lost, until it is back

    def _pool(self, name: str) -> Pool:
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = Pool(name, redis=self.client)
        return pool

    def _known_pools(self) -> list[str]:
        if self._names is not None:
            return sorted(self._names)
        return find_pools(self.client, skip_unreachable=True)  # one master down: sweep on

    def sweep(self) -> int:
        """Sweep every pool now; how many workers it returned."""
        total = 0
        for name in self._known_pools():
            try:
                pool = self._pool(name)
                reclaimed, buried = pool.reclaim_expired(), liveness.bury(pool)[0]
                observe.swept(pool, reclaimed, buried)  # history and events
                total += reclaimed + buried
            except (ValueError, PoolError) as exc:
                log.warning("sweep of pool %s failed: %s", name, exc)
        if total:
            log.info("sweep returned %d workers", total)
        self.by_sweep += total
        return total

    def _on_event(self, key: str) -> None:
        name = pool_name_from_key(key)
        if name is None or (self._names is not None and name not in self._names):
            return
        pool = self._pool(name)
        worker = pool.keys.lease_worker(key)
        if worker is None:
            if pool.keys.alive_worker(key) is not None:  # a worker's heartbeat lapsed
                buried = liveness.bury(pool)[0]
                observe.swept(pool, 0, buried, pool.keys.alive_worker(key) or "")
                self.by_event += buried
            return
        self.heard[name] += 1
        returned = pool.reclaim_expired()
        observe.swept(pool, returned, 0, worker)
        if returned:
            log.info("lease of worker %s in pool %s expired; returned %d", worker, name, returned)
        else:
            log.debug("lease of worker %s in pool %s expired; already returned", worker, name)
        self.by_event += returned

    def run(self) -> None:
        """Listen and sweep until :meth:`stop` is called.

        Each (re)connection turns expired events on again: after a failover the
        new master may not have them on.
        """
        if isinstance(self.client, RedisCluster):
            channel = ""  # a cluster has db 0 only, and one channel per master
        else:
            db = self.client.connection_pool.connection_kwargs.get("db", 0)
            channel = f"__keyevent@{db}__:expired"
        while not self._stop.is_set():
            try:
                if isinstance(self.client, RedisCluster):
                    self._listen_cluster(self.client)
                else:
                    self._listen(channel)
            except (redis.ConnectionError, redis.TimeoutError, PoolError) as exc:
                self.listening.clear()
                self._lost = str(exc) or type(exc).__name__
                log.warning("reaper lost its connection (%s); reconnecting", exc)
                self._stop.wait(RECONNECT_DELAY)

    def _listen_cluster(self, client: RedisCluster) -> None:
        """``_listen`` on every master of a cluster, following its topology at
        each sweep (a promoted replica, a new master: events turned on there)."""
        enabled = _enable_on_masters(client, refresh=True)
        events = self._events = ExpiredEvents(client)
        try:
            self.sweep()
            self.listening.set()
            now = mod_time.monotonic()
            next_sweep, next_look = now + self.sweep_interval, now + FOLLOW_EVERY
            while not self._stop.is_set():
                wait = min(0.5, next_sweep - mod_time.monotonic(), next_look - mod_time.monotonic())
                key = events.key(max(0.0, wait))
                if key is not None:
                    self._on_event(key)
                now = mod_time.monotonic()
                if now >= next_look:
                    next_look = now + FOLLOW_EVERY
                    before = events.masters
                    if events.follow():  # new masters, or events maybe lost: sweep
                        next_sweep = now
                    if events.masters != before:  # and events on there
                        log.info("cluster masters now %s", ", ".join(sorted(events.masters)))
                    enabled -= events.renewed()  # a master restarted may have them off
                    if not events.masters <= enabled:  # a new master, or one that failed
                        enabled = _enable_on_masters(client, done=enabled & events.masters)
                if now >= next_sweep:
                    self.sweep()
                    next_sweep = mod_time.monotonic() + self.sweep_interval
        finally:
            self._events = None
            events.close()

    def _listen(self, channel: str) -> None:
        assert isinstance(self.client, redis.Redis)
        enable_expiry_events(self.client)
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(channel)
            self.sweep()  # events published before we subscribed are lost
            self.listening.set()
            for name in self._known_pools() if self._lost else ():
                observe.reconnected(self._pool(name), self._lost)
            self._lost = ""
            next_sweep = mod_time.monotonic() + self.sweep_interval
            while not self._stop.is_set():
                wait = max(0.0, min(0.5, next_sweep - mod_time.monotonic()))
                message: Any = pubsub.get_message(timeout=wait)
                if message and message.get("type") == "message":
                    self._on_event(text(message["data"]))
                if mod_time.monotonic() >= next_sweep:
                    self.sweep()
                    next_sweep = mod_time.monotonic() + self.sweep_interval
        finally:
            pubsub.close()

    def hearing(self) -> frozenset[str]:
        """On a cluster, the masters (``host:port``) whose expired events it hears
        now: it follows a failover within a second or two of its client seeing it."""
        events = self._events
        return events.subscribed() if events is not None else frozenset()

    def start(self) -> Reaper:
        """Run in a daemon thread; returns self once it listens."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="redispool-reaper", daemon=True)
        self._thread.start()
        self.listening.wait(timeout=10)
        return self

    def request_stop(self) -> None:
        """Ask :meth:`run` to return after the work in hand (safe in a signal handler)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Reaper:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
