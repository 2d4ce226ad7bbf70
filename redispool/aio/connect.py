"""The asyncio client made from a URL: the same URLs and timeouts as :mod:`redispool.connect`."""

from __future__ import annotations

import redis.asyncio
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from ..connect import (
    CLUSTER_SCHEMES,
    CONNECT_TIMEOUT,
    SENTINEL_SCHEME,
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
    if url.partition("://")[0].lower() in CLUSTER_SCHEMES:
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
    sentinel_kwargs = parsed.sentinel_kwargs(socket_timeout, connect_timeout)
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
