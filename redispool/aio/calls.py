"""Sending the protocol layer's operations over the asyncio :class:`~redispool.aio.wire.Wire`.

The asyncio twin of the sync side's sending: an :class:`~redispool.protocol.Op`
says what to send and how to read the reply; this module only sends it,
reads it through ``op.read`` and turns redis-py's errors into the pool's own
(:func:`redispool.protocol.translate`). A server that lacks the library
(restarted without persistence) gets it loaded, when this user may, and the
call is made again: the missing function ran nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from redis.exceptions import NoPermissionError, ResponseError

from .. import scripts
from ..protocol import Op, Reads, translate
from .wire import Line, Wire, settle

__all__ = ["Caller"]

T = TypeVar("T")


def _missing_library(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and "function not found" in str(exc).lower()


class Caller:
    """Runs operations for one pool over one Wire."""

    def __init__(self, wire: Wire, pool: str) -> None:
        self.wire = wire
        self.pool = pool

    def line_now(self) -> Line | None:
        """A connected line if one is ready, without waiting (the hot path)."""
        return self.wire.ready_line()

    async def line(self) -> Line:
        try:
            return await self.wire.line()
        except redis.RedisError as exc:
            raise translate(exc, self.pool, "connect") from exc

    def send(
        self, line: Line, op: Op[T], orphan: Callable[[Any], None] | None = None
    ) -> asyncio.Future[Any]:
        """Write ``op`` on ``line`` now (no await): the future of its raw reply."""
        try:
            (future,) = line.send(op.packed(), orphan=orphan)  # its FCALL head packed once
        except redis.RedisError as exc:
            raise translate(exc, self.pool, op.name, op.worker_id) from exc
        return future

    async def result(
        self, op: Op[T], future: asyncio.Future[Any], orphan: Callable[[Any], None] | None = None
    ) -> T:
        """``op``'s typed result from the future :meth:`send` gave."""
        try:
            reply = await settle(future, orphan)
        except redis.RedisError as exc:
            if not _missing_library(exc):
                raise translate(exc, self.pool, op.name, op.worker_id) from exc
            await self.load_library(op)
            return await self.run(op, orphan)
        return op.read(reply)

    async def run(self, op: Op[T], orphan: Callable[[Any], None] | None = None) -> T:
        """Send ``op`` and return its typed result (its error code raised).

        If the caller is cancelled after ``op`` went out, its reply is still
        read and, with ``orphan``, handed there (a reply or the exception it
        became), so whatever the operation granted can be undone.
        """
        line = self.line_now() or await self.line()
        return await self.result(op, self.send(line, op, orphan), orphan)

    async def run_many(self, ops: Sequence[Op[Any]]) -> list[Any]:
        """``ops`` back to back in one round trip: each one's result, or the
        pool's exception it raised, in order."""
        if not ops:
            return []
        try:
            replies = await self.wire.call_many([op.command() for op in ops])
        except redis.RedisError as exc:
            raise translate(exc, self.pool, ops[0].name) from exc
        results: list[Any] = []
        for op, reply in zip(ops, replies, strict=True):
            if isinstance(reply, redis.RedisError) and _missing_library(reply):
                await self.load_library(op)
                reply = await self._retry(op)
            try:
                if isinstance(reply, redis.RedisError):
                    raise translate(reply, self.pool, op.name, op.worker_id)
                results.append(op.read(reply))
            except Exception as exc:  # handed back in its place
                results.append(exc)
        return results

    async def _retry(self, op: Op[Any]) -> Any:
        try:
            return await self.wire.call(*op.command())
        except redis.RedisError as exc:
            return exc

    async def reads(self, reads: Reads[T]) -> T:
        """Plain read commands back to back; their typed reading."""
        try:
            replies = await self.wire.call_many(list(reads.commands))
        except redis.RedisError as exc:
            raise translate(exc, self.pool, reads.operation or "read", reads.worker_id) from exc
        for reply in replies:
            if isinstance(reply, redis.RedisError):
                raise translate(reply, self.pool, reads.operation or "read", reads.worker_id)
        return reads.read(replies)

    async def command(self, *args: Any, operation: str) -> Any:
        """One plain command (a read of :meth:`Pool.workers` and the like)."""
        try:
            return await self.wire.call(*args)
        except redis.RedisError as exc:
            raise translate(exc, self.pool, operation) from exc

    async def load_library(self, op: Op[Any]) -> None:
        """``FUNCTION LOAD`` this version's library (an operator's right)."""
        try:
            await self.wire.call("FUNCTION", "LOAD", "REPLACE", scripts.library().source)
        except NoPermissionError as refused:
            error = NoPermissionError(
                f"the server lacks redispool's library {scripts.library().name} and this "
                f"user may not load code: {scripts.INSTALL_HINT} ({refused})"
            )
            raise translate(error, self.pool, op.name, op.worker_id) from refused
        except redis.RedisError as exc:
            raise translate(exc, self.pool, op.name, op.worker_id) from exc
