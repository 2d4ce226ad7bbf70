"""The asyncio client's connections: commands pipelined, every reply read by the connection.

redis.asyncio reads a command's reply in the task that sent it, so a task
cancelled between sending and reading leaves the reply on the connection and
the next command reads it instead of its own (redis-py#2624, #2665). Here a
caller never reads: each :class:`Line` (one connection) is read by an
:class:`asyncio.Protocol` that the event loop calls as bytes arrive; it
parses every reply (hiredis) and hands each to the future of the command
that asked, in order. A caller that was cancelled simply stops waiting; its
reply is still read (so the next command gets its own), and a command sent
with an ``orphan`` callback hands its reply to that callback when its caller
has left, so a reply that carries a lease is checked in, not lost.

Many tasks share one connection this way (commands are written back to back
and answered in order), so a thousand tasks need no thousand connections.
Connections are made by the client's own connection class and settings (URL,
auth, TLS, RESP version, Sentinel lookup); once connected, the Line takes
the transport over from redis-py's stream reader.

A line that gets no reply in time (the client's ``socket_timeout``, or a
blocking command's own) or loses its connection fails every command waiting
on it with :class:`redis.ConnectionError`/:class:`redis.TimeoutError` and is
replaced at the next call; a command is never sent twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import redis
import redis.asyncio
from redis._parsers.base import BaseParser
from redis.asyncio.connection import AbstractConnection

from ..packing import pack_command

__all__ = ["Line", "Orphan", "Wire"]

log = logging.getLogger("redispool.aio")

#: Called with the reply of a command whose caller stopped waiting for it (or
#: with the exception that took its place: an error reply, a lost connection).
Orphan = Callable[[Any], None]
#: Seconds a reply may take when the client sets no socket timeout.
DEFAULT_TIMEOUT = 10.0


@dataclass
class _Pending:
    future: asyncio.Future[Any]
    orphan: Orphan | None
    expires: float  # monotonic seconds


def _error(reply: hiredis.ReplyError) -> redis.RedisError:
    """redis-py's exception for an error reply (NOPERM, READONLY, ...)."""
    error: redis.RedisError = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
    return error


def pack(*commands: Sequence[Any]) -> bytes:
    """The RESP bytes of ``commands``, back to back."""
    return b"".join(pack_command(tuple(command)) for command in commands)


class _Replies(asyncio.Protocol):
    """Reads a line's replies as they arrive (no task of its own: the event loop
    calls it), parses them with hiredis and answers the line's oldest command."""

    def __init__(self, line: Line) -> None:
        self._line = line
        self._parser = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        try:
            while (reply := self._parser.gets()) is not False:
                self._line._answer(reply)
        except Exception as exc:  # a protocol error, a reply nobody asked for
            self._line._break(redis.ConnectionError(f"cannot read Redis: {exc}"))

    def eof_received(self) -> bool:
        self._line._break(redis.ConnectionError("Connection closed by server."))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._line._break(redis.ConnectionError(f"Connection lost: {exc or 'closed'}"))


class Line:
    """One connection: commands written in order, replies matched in order as they come."""

    def __init__(self, conn: AbstractConnection, timeout: float) -> None:
        self._conn = conn
        self._timeout = timeout
        self._pending: collections.deque[_Pending] = collections.deque()
        self._broken: BaseException | None = None
        self._timer: asyncio.TimerHandle | None = None
        writer: asyncio.StreamWriter = conn._writer  # type: ignore[assignment]
        # redis-py connected (auth, TLS, RESP version, Sentinel); from here on the
        # replies come to our protocol instead of its stream reader
        self._transport = writer.transport
        self._transport.set_protocol(_Replies(self))

    @classmethod
    async def open(cls, client: redis.asyncio.Redis) -> Line:
        """A new connected line of ``client``'s kind (outside its pool's accounting)."""
        pool = client.connection_pool
        conn = pool.connection_class(**pool.connection_kwargs)
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect()
            raise
        timeout = pool.connection_kwargs.get("socket_timeout") or DEFAULT_TIMEOUT
        return cls(conn, float(timeout))

    @property
    def usable(self) -> bool:
        return self._broken is None

    def __len__(self) -> int:
        """Commands sent and not yet answered."""
        return len(self._pending)

    def send(
        self, data: bytes, count: int = 1, *, orphan: Orphan | None = None,
        timeout: float | None = None,
    ) -> list[asyncio.Future[Any]]:
        """Write ``data`` (``count`` commands) now; one future per reply, in order.

        No ``await`` between writing and queueing the futures: the order of
        the futures is the order of the commands on the connection.
        """
        if self._broken is not None:
            raise redis.ConnectionError(f"connection lost: {self._broken}")
        loop = asyncio.get_running_loop()
        expires = time.monotonic() + (self._timeout if timeout is None else timeout)
        futures = [loop.create_future() for _ in range(count)]
        for future in futures:
            self._pending.append(_Pending(future, orphan, expires))
        self._transport.write(data)
        if self._timer is None:
            self._arm()
        return futures

    def _arm(self) -> None:
        if not self._pending:
            self._timer = None
            return
        delay = max(0.0, self._pending[0].expires - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._check_late)

    def _check_late(self) -> None:
        """The oldest command's time is up: the line is dead (else look again later)."""
        self._timer = None
        if self._pending and self._pending[0].expires <= time.monotonic():
            self._break(redis.TimeoutError("Timeout reading from Redis"))
        else:
            self._arm()

    def _answer(self, reply: Any) -> None:
        if not self._pending:
            raise redis.ConnectionError(f"a reply nobody asked for: {reply!r}")
        pending = self._pending.popleft()
        if isinstance(reply, hiredis.ReplyError):
            reply = _error(reply)
        future = pending.future
        if future.cancelled():
            if pending.orphan is not None:
                _call_orphan(pending.orphan, reply)
        elif isinstance(reply, Exception):
            future.set_exception(reply)
        else:
            future.set_result(reply)

    def _break(self, error: BaseException) -> None:
        """Fail every command still waiting; the connection is closed."""
        if self._broken is None:
            self._broken = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            pending = self._pending.popleft()
            failure: redis.RedisError = redis.ConnectionError(str(error))
            if isinstance(error, redis.TimeoutError):
                failure = redis.TimeoutError(str(error))
            if not pending.future.done():
                pending.future.set_exception(failure)
                pending.future.exception()  # retrieved: a caller that left must not warn
            elif pending.future.cancelled() and pending.orphan is not None:
                _call_orphan(pending.orphan, failure)
        self._transport.close()

    async def aclose(self) -> None:
        self._break(redis.ConnectionError("connection closed by the client"))
        with contextlib.suppress(Exception):
            await self._conn.disconnect(nowait=True)


def _call_orphan(orphan: Orphan, reply: Any) -> None:
    try:
        orphan(reply)
    except Exception:  # an orphan's handler must never stop the reader
        log.exception("handling the reply of a cancelled command failed")


async def settle(future: asyncio.Future[Any], orphan: Orphan | None) -> Any:
    """Wait for ``future``; if the caller is cancelled after the reply came,
    the reply goes to ``orphan`` (the reader hands it there if it comes later)."""
    try:
        return await future
    except asyncio.CancelledError:
        if orphan is not None and future.done() and not future.cancelled():
            failure = future.exception()
            _call_orphan(orphan, future.result() if failure is None else failure)
        raise


class Wire:
    """A few :class:`Line` objects shared by every task of one client.

    ``lines`` connections at most carry the commands (each command goes on
    the line with the fewest waiting); blocking commands get lines of their
    own from :meth:`open_line`.
    """

    def __init__(self, client: redis.asyncio.Redis, lines: int = 2) -> None:
        self.client = client
        self._size = lines
        self._lines: list[Line] = []
        self._opening: asyncio.Task[Line] | None = None
        self.opened = 0  # connections made so far (the benchmark reports it)
        self._closed = False

    @staticmethod
    def pack(command: Sequence[Any]) -> bytes:
        """The RESP bytes of one command."""
        packed: bytes = pack_command(tuple(command))
        return packed

    def ready_line(self) -> Line | None:
        """An idle connected line, or the least busy one once all are open; None
        when a new one should be opened (then call :meth:`line`)."""
        best: Line | None = None
        for line in self._lines:
            if line.usable and (best is None or len(line) < len(best)):
                best = line
        if best is not None and (len(best) == 0 or len(self._lines) >= self._size):
            return best
        return None

    async def line(self) -> Line:
        """A line to send on: :meth:`ready_line`, else a new connection."""
        lines = [line for line in self._lines if line.usable]
        if len(lines) != len(self._lines):
            dropped = [line for line in self._lines if not line.usable]
            self._lines = lines
            for line in dropped:
                await line.aclose()
        if lines:
            best = min(lines, key=len)
            if len(best) == 0 or len(lines) >= self._size:
                return best
        if self._closed:
            raise redis.ConnectionError("the pool was closed")
        if self._opening is None:  # one connect at a time, shared by its callers
            self._opening = asyncio.get_running_loop().create_task(self._open())
        opening = self._opening
        line = await asyncio.shield(opening)
        return line

    async def _open(self) -> Line:
        try:
            line = await self.open_line()
            self._lines.append(line)
            return line
        finally:
            self._opening = None

    async def open_line(self) -> Line:
        """A new line for the caller alone (a blocking command's)."""
        line = await Line.open(self.client)
        self.opened += 1
        return line

    async def call(self, *args: Any, orphan: Orphan | None = None) -> Any:
        """Send one command and return its reply; Redis errors are raised.

        If the caller is cancelled, the reply is still read; with ``orphan``
        it is handed there, so a reply that carries something (a lease) is
        never lost with the task that asked.
        """
        line = self.ready_line() or await self.line()
        (future,) = line.send(pack_command(args), orphan=orphan)
        return await settle(future, orphan)

    async def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """``commands`` back to back on one connection; their replies in order
        (an error reply is returned in its place, as an exception object)."""
        line = self.ready_line() or await self.line()
        futures = line.send(pack(*commands), len(commands))
        replies: list[Any] = []
        for future in futures:
            try:
                replies.append(await future)
            except redis.ResponseError as exc:
                replies.append(exc)
        return replies

    async def aclose(self) -> None:
        self._closed = True
        lines, self._lines = self._lines, []
        for line in lines:
            await line.aclose()
