"""redis-py's errors turned into the pool's own (the same for sync and asyncio clients).

``redis.asyncio`` raises the classes of :mod:`redis.exceptions` too, so both
clients call :func:`translate` on whatever a send raised.
"""

from __future__ import annotations

import redis

from .. import errors
from ..cluster import in_transit

__all__ = ["DENIED", "is_permission_error", "translate"]

DENIED = "Redis refused access (redispool.acl lists the rules a pool user needs)"


def is_permission_error(exc: redis.ResponseError) -> bool:
    """A script's command refused by ACL (Redis reports it as a plain error)."""
    message = str(exc)
    return "NOPERM" in message or "can't run this command" in message or "no permissions" in message


def translate(
    exc: redis.RedisError, pool: str, operation: str, worker_id: str | None = None
) -> Exception:
    """The pool's exception for redis-py's ``exc`` (``exc`` itself if unknown).

    Refused credentials or ACL rights: :class:`~redispool.PoolAccessDenied`;
    Redis unreachable, timing out, or not the master:
    :class:`~redispool.PoolUnavailable`; any other error reply (a key of the
    wrong type, a junk value): :class:`~redispool.PoolCorrupted`.
    """
    about = {"pool": pool, "operation": operation, "worker_id": worker_id}
    where = f"pool {pool!r}: {operation}"
    if isinstance(exc, (redis.AuthenticationError, redis.exceptions.NoPermissionError)) or (
        isinstance(exc, redis.ResponseError) and is_permission_error(exc)
    ):
        return errors.PoolAccessDenied(f"{where}: {DENIED}: {exc}", **about)
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return errors.PoolUnavailable(f"{where}: Redis unreachable: {exc}", **about)
    if isinstance(exc, redis.exceptions.ReadOnlyError):  # a demoted master or a replica
        return errors.PoolUnavailable(f"{where}: Redis is not the master: {exc}", **about)
    if isinstance(exc, redis.exceptions.MovedError):  # another node serves the pool's slot
        return errors.PoolUnavailable(
            f"{where}: another node of a Redis Cluster serves the pool's slot ({exc}); "
            "connect to a cluster with a redis+cluster:// URL (or redis=RedisCluster(...))",
            **about,
        )
    if in_transit(exc):  # a cluster's slot of the pool is moving: nothing ran
        return errors.PoolUnavailable(f"{where}: the pool's slot is moving: {exc}", **about)
    if isinstance(exc, redis.ResponseError):
        return errors.PoolCorrupted(
            f"{where} failed; a key of the pool holds data redispool did not write: {exc}",
            **about,
        )
    return exc
