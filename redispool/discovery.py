"""Finding the pools in a database: the one SCAN that metrics, the Reaper and the CLI share.

It takes the client to scan, so on a Redis Cluster it can be run once per
master (each pool lives in one slot, so on exactly one master).
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from .keys import NAMESPACE, PoolKeys, pool_name_from_key
from .wire import text

__all__ = ["find_pools"]

#: Keys scanned per SCAN call.
SCAN_COUNT = 1000


def find_pools(client: redis.Redis, parts: Iterable[str] = ("workers",)) -> list[str]:
    """The names of every pool in ``client``'s database that has one of the
    keys ``parts`` (default: registered workers), sorted. Reads only; a
    non-atomic SCAN, so a pool made or emptied meanwhile may or may not be listed."""
    found: set[str] = set()
    for part in parts:
        for key in client.scan_iter(match=f"{NAMESPACE}:{{*}}:{part}", count=SCAN_COUNT):
            name = pool_name_from_key(text(key))
            if name is not None and PoolKeys(name).prefix + part == text(key):
                found.add(name)
    return sorted(found)
