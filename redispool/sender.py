"""The sync side's sending: protocol operations over :mod:`redispool.wire`.

A :class:`Sender` belongs to one Pool (one client, one Wire). It sends an
:class:`~redispool.protocol.Op` as ``FCALL`` (loading the library where it is
missing, see :class:`redispool.scripts.Script`), optionally followed by
``WAIT`` for ``min_replicas``, reads the reply through the op, and turns
redis-py's errors into the pool's (:func:`redispool.protocol.translate`).
The asyncio API sends the same ops over ``redis.asyncio`` instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

import redis

from . import scripts
from .errors import PoolUnavailable
from .protocol import Op, Reads, translate
from .replicas import Replicas
from .wire import Wire

__all__ = ["Sender"]

T = TypeVar("T")


class Sender:
    """Sends one pool's operations; every other module of the sync side goes through it."""

    def __init__(self, client: redis.Redis, pool: str, replicas: Replicas) -> None:
        self.client = client
        self.pool = pool
        self.replicas = replicas
        #: Replicas that must acknowledge a write (``min_replicas``); 0 sends no ``WAIT``.
        self.need = replicas.need
        self.wire = Wire(client)
        #: On a cluster every call goes through :class:`redispool.scripts.Script`,
        #: which names the slot's guard key (a script never half-runs while its
        #: slot migrates) and drops the guard's entry from a per-key reply.
        self.on_cluster = self.wire.on_cluster

    def send(self, op: Op[T]) -> T:
        """Send ``op`` and return its typed result (or raise its code's exception)."""
        # The hot path: the op's command straight over the Wire and its parse
        # inline (Script and Op.read do the same in two more calls); the rare
        # paths (library missing, a reply of the wrong shape) go through them.
        try:
            if self.on_cluster:
                reply = scripts.load(op.script)(self.wire, op.keys, op.args)
            else:
                reply = self.wire.call_packed(op.packed(), op.command)
        except redis.ResponseError as exc:
            reply = self._missing_library(op, exc)
        except redis.RedisError as exc:
            raise translate(exc, self.pool, op.name, op.worker_id) from exc
        try:
            return op.parse(reply)
        except (IndexError, TypeError, ValueError) as exc:
            raise op.corrupted(reply, exc) from None

    def send_acked(self, op: Op[T]) -> tuple[T, int]:
        """:meth:`send`, and how many replicas acknowledged its writes (0, and
        no ``WAIT`` sent, without ``min_replicas``)."""
        if not self.need:
            return self.send(op), 0
        try:
            reply, acks = scripts.load(op.script).acked(
                self.wire, op.keys, op.args, self.replicas.need, self.replicas.timeout_ms
            )
        except redis.RedisError as exc:
            raise translate(exc, self.pool, op.name, op.worker_id) from exc
        return op.read(reply), acks

    def _missing_library(self, op: Op[Any], exc: redis.ResponseError) -> Any:
        """The reply of ``op`` sent again through :class:`redispool.scripts.Script`, which
        loads the library first, when ``exc`` says the server lacks it; else ``exc``
        translated."""
        if "function not found" not in str(exc).lower():
            raise translate(exc, self.pool, op.name, op.worker_id) from exc
        try:
            return scripts.load(op.script)(self.wire, op.keys, op.args)
        except redis.RedisError as again:
            raise translate(again, self.pool, op.name, op.worker_id) from again

    def unacked(self, operation: str, acks: int, worker_id: str, done: str) -> PoolUnavailable:
        """The error for a write only ``acks`` replicas acknowledged; ``done`` says what it left."""
        return self.replicas.unacked(self.pool, operation, acks, worker_id, done)

    def block_for(self, seconds: float) -> float:
        """Seconds a blocking command (``BLMOVE``, ``XREAD BLOCK``) may block for
        ``seconds``: under half the client's socket timeout (a URL may set one
        under a second), since a reply later than that is taken for a lost
        server; at least a millisecond."""
        kwargs = getattr(self.wire.client.connection_pool, "connection_kwargs", {})
        limit = kwargs.get("socket_timeout")
        if isinstance(limit, (int, float)) and limit > 0:
            seconds = min(seconds, limit / 2)
        return max(0.001, seconds)

    def read(self, reads: Reads[T]) -> T:
        """Send ``reads``' commands back to back on one connection; their typed result."""
        with self.errors(reads.operation, reads.worker_id):
            replies = self.wire.call_reads(*reads.commands)
        return reads.read(replies)

    def peek_wait(self, key: str, timeout: float) -> Any:
        """The head of list ``key``, left in place, waiting at most ``timeout`` seconds;
        None when nothing came (see :meth:`redispool.wire.Wire.peek_wait`)."""
        with self.errors("checkout (waiting)"):
            return self.wire.peek_wait(key, timeout)

    @contextlib.contextmanager
    def errors(self, operation: str, worker_id: str | None = None) -> Iterator[None]:
        """Turn redis-py's errors inside the block into the pool's own."""
        try:
            yield
        except redis.RedisError as exc:
            raise translate(exc, self.pool, operation, worker_id) from exc

    def close(self) -> None:
        """Close the Wire's connections (not the client's)."""
        self.wire.close()
