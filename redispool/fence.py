"""A fenced store: refuses writes from a token older than the newest it has seen.

A fencing token protects only what checks it (Kleppmann, "How to do
distributed locking"). The worker checks a job's token for the whole job,
but a process paused long enough can still send a write after its lease has
ended. The store it writes to closes that gap itself::

    fence = Fence(store_redis, "orders")
    fence.write(redispool.current_lease().token, "order:17", payload)

Each write is one atomic script (``scripts/fence_write.lua``): it lands only
if its token is at least the highest this fence has seen, and then that token
is the highest. A write from an ended lease, arriving after the lease that
replaced it has written, raises :class:`~redispool.StaleToken` and changes
nothing. One fence takes tokens of one pool (tokens are ordered per pool).
The store's Redis need not be the pool's, and may be a Redis Cluster (a
fence's keys share one slot).
"""

from __future__ import annotations

from functools import cache

from redis.commands.core import Script

from . import errors
from .connect import Client
from .errors import StaleToken
from .keys import FenceKeys, validate_pool_name
from .scripts import source_of

__all__ = ["Fence"]


@cache
def _source() -> str:
    return source_of("fence_write")


def _token(token: object) -> int:
    if isinstance(token, bool) or not isinstance(token, int) or token < 1:
        raise ValueError(f"token must be a lease's fencing token (a positive int), got {token!r}")
    return token


class Fence:
    """A store of keyed values that refuses writes carrying a stale token."""

    def __init__(self, client: Client, name: str) -> None:
        try:
            validate_pool_name(name)
        except ValueError:
            raise ValueError(
                f"invalid fence name {name!r}: use 1 to 100 characters of letters, "
                "digits and ._:-"
            ) from None
        self.client = client
        self.name = name
        self.keys = FenceKeys(name)
        self._write: Script = client.register_script(_source())

    def write(self, token: int, key: str, value: str | bytes) -> None:
        """Store ``value`` under ``key`` if ``token`` is not older than the
        newest token that wrote here; raise StaleToken (nothing written) if it is."""
        _token(token)
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty string, got {key!r}")
        if not isinstance(value, (str, bytes)):
            raise ValueError(f"value must be str or bytes, got {type(value).__name__}")
        reply = self._write(keys=[self.keys.highest, self.keys.data(key)], args=[token, value])
        code = int(reply[0])
        if code == errors.STALE_TOKEN:
            raise StaleToken(
                f"fence {self.name!r}: write of {key!r} with token {token} refused: "
                f"{errors.CODES[code][1]} (token {int(reply[1])})",
                operation="fence write",
            )
        errors.raise_for(code, pool=self.name, operation="fence write")

    def read(self, key: str) -> bytes | None:
        """The value last written under ``key``, or None."""
        value = self.client.get(self.keys.data(key))
        return value.encode() if isinstance(value, str) else value

    def highest(self) -> int | None:
        """The newest token that has written here, or None."""
        value = self.client.get(self.keys.highest)
        return None if value is None else int(value)
