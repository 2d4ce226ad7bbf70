"""The asyncio client made from a URL: the same URLs and timeouts as :mod:`redispool.connect`."""

from __future__ import annotations

from typing import Any

import redis.asyncio
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from ..connect import (
    CLUSTER_SCHEME,
    CONNECT_TIMEOUT,
    SENTINEL_SCHEME,
    SENTINEL_TIMEOUT,
    SOCKET_TIMEOUT,
    SentinelURL,
    redact_url,
    validate_url,
)

__all__ = ["client_from_url", "close_client"]


def client_from_url(
    url: str, *, socket_timeout: float = SOCKET_TIMEOUT, connect_timeout: float = CONNECT_TIMEOUT
) -> redis.asyncio.Redis:
    """A :class:`redis.asyncio.Redis` of the Redis that ``url`` names
    (``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://``, read as
    :func:`redispool.connect.client_from_url` reads them). Nothing connects yet."""
    validate_url(url)
    if url.lower().startswith(CLUSTER_SCHEME + "://"):
        raise ValueError(
            f"bad Redis URL {redact_url(url)!r}: the asyncio Pool does not run on a Redis "
            "Cluster yet; use redispool.Pool (threads) there"
        )
    if not url.lower().startswith(SENTINEL_SCHEME + "://"):
        try:
            return redis.asyncio.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout
            )
        except ValueError as exc:
            raise ValueError(f"bad Redis URL {redact_url(url)!r}: {exc}") from None
    parsed = SentinelURL.parse(url)
    ask = min(SENTINEL_TIMEOUT, socket_timeout, connect_timeout)
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": ask, "socket_connect_timeout": ask}
    if parsed.sentinel_password is not None:
        sentinel_kwargs["username"] = parsed.sentinel_username
        sentinel_kwargs["password"] = parsed.sentinel_password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs
    )
    client: redis.asyncio.Redis = sentinel.master_for(
        parsed.service, db=parsed.db, username=parsed.username, password=parsed.password,
        socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
    )  # fmt: skip
    return client


async def close_client(client: redis.asyncio.Redis) -> None:
    """Close ``client``, and the sentinels' clients of a Sentinel-managed one."""
    await client.aclose()
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            await sentinel.aclose()
