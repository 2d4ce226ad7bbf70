"""Finding the pools in a database: the one SCAN that metrics, the Reaper and the CLI share.

On a Redis Cluster it scans every master (each pool lives in one slot, so
on exactly one master).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis
from redis.cluster import RedisCluster

from .cluster import named_masters
from .connect import Client
from .keys import NAMESPACE, PoolKeys, pool_name_from_key
from .wire import text

__all__ = ["find_pools"]

log = logging.getLogger("redispool.discovery")

#: Keys scanned per SCAN call.
SCAN_COUNT = 1000


def find_pools(
    client: Client, parts: Iterable[str] = ("workers",), *, skip_unreachable: bool = False
) -> list[str]:
    """The names of every pool in ``client``'s database (on a cluster: on any
    master) that has one of the keys ``parts`` (default: registered workers),
    sorted. Reads only; a non-atomic SCAN, so a pool made or emptied meanwhile
    may or may not be listed. A server or master that cannot be reached raises,
    unless ``skip_unreachable`` (the Reaper's sweep, which must go on with the
    other masters of a cluster): then it is left out, with a warning. A refused
    login always raises."""
    if not isinstance(client, RedisCluster):
        return sorted(_pools_on(client, parts))
    found: set[str] = set()
    for name, node in named_masters(client):
        try:
            found.update(_pools_on(node, parts))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not skip_unreachable or isinstance(exc, redis.AuthenticationError):
                raise
            # one master down (or gone in a failover the client has not seen yet):
            # the pools of the others are still found; its own cannot be served anyway
            log.warning("cannot look for pools on master %s: %s", name, exc)
    return sorted(found)


def _pools_on(node: redis.Redis, parts: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for part in parts:
        for key in node.scan_iter(match=f"{NAMESPACE}:{{*}}:{part}", count=SCAN_COUNT):
            name = pool_name_from_key(text(key))
            if name is not None and PoolKeys(name).prefix + part == text(key):
                found.add(name)
    return found
