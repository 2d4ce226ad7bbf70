"""The hot path to Redis: commands sent on redis-py connections directly.

redis-py's per-command layer costs more than a whole checkout script does on
the server (../shared/FACTS.md measured it), so the pool keeps its own list of
free :class:`redis.connection.Connection` objects, made by the client's
connection pool with all its settings (URL, auth, TLS, RESP version), and
talks to them with ``send_command``/``read_response``.

A blocking wait (``BLPOP``) is timed by the client, not by Redis: Redis fires
blocking timeouts only on its timer tick, up to ~100 ms late. The waiting
connection is woken with ``CLIENT UNBLOCK`` from another connection, and the
blocked command's reply is still read, so a value pushed at that instant is
never lost.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.connection import AbstractConnection

_pack_command: Callable[[tuple[Any, ...]], bytes] | None
try:  # hiredis packs a command in C; redis-py's packer loops over arguments in Python
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - without hiredis redis-py packs
    _pack_command = None

__all__ = ["Wire", "text"]

#: Seconds the server's own BLPOP timeout runs past ours, in case an UNBLOCK is lost.
BLOCK_BACKSTOP = 1.0
#: A pooled connection idle longer than this (seconds) is checked for a close by
#: the server before use; one just released is not worth the system call.
STALE_CHECK_AFTER = 0.05


def _closed_by_server(conn: AbstractConnection) -> bool:
    """True if an idle connection has something to read: the server closed it."""
    if not conn._sock:
        return False  # not connected yet: it connects on first use
    try:
        return bool(conn.can_read(timeout=0))
    except (redis.ConnectionError, OSError):
        return True


def text(value: Any) -> str:
    """A reply value as ``str``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class Wire:
    """Commands over a private list of connections of one redis-py client.

    Thread-safe: each call takes a connection for itself. Safe across
    ``fork``: a child never reuses its parent's sockets.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._free: list[AbstractConnection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _acquire(self) -> tuple[AbstractConnection, bool]:
        """A connection for this caller alone, and whether it was used before."""
        if self._pid != os.getpid():
            with self._lock:
                self._free = []
                self._pid = os.getpid()
        try:
            return self._free.pop(), True
        except IndexError:
            return self.client.connection_pool.make_connection(), False  # type: ignore[return-value]

    def _release(self, conn: AbstractConnection) -> None:
        if self._pid == os.getpid():
            conn._redispool_idle_since = time.monotonic()  # type: ignore[attr-defined]
            self._free.append(conn)

    def call(self, *args: Any) -> Any:
        """Send one command and return its reply; Redis errors are raised.

        A connection that sat in the free list may have been closed by the
        server meanwhile (a restart, a failover, an idle timeout). It is looked
        at before use: one the server closed reads as ready, and is replaced
        with its siblings. A command is sent again only if it could not be sent
        at all; once sent, a lost reply raises, since the server may have run
        it: no operation ever runs twice.
        """
        conn, reused = self._usable()
        try:
            self._send(conn, args)
        except redis.ConnectionError:
            if not reused:
                raise  # a new connection failed: Redis is unreachable
            self.close()
            conn = self.client.connection_pool.make_connection()  # type: ignore[assignment]
            self._send(conn, args)
        reply = self._read(conn)
        self._release(conn)
        return reply

    def _usable(self) -> tuple[AbstractConnection, bool]:
        """A connection for this caller, and whether it was pooled; a pooled one
        the server closed is replaced (with its siblings) by a new one."""
        conn, reused = self._acquire()
        idle = time.monotonic() - getattr(conn, "_redispool_idle_since", 0.0)
        if reused and idle > STALE_CHECK_AFTER and _closed_by_server(conn):
            self.close()  # the others sat as long: drop them all
            conn.disconnect()
            return self.client.connection_pool.make_connection(), False  # type: ignore[return-value]
        return conn, reused

    def _send(self, conn: AbstractConnection, args: tuple[Any, ...]) -> None:
        try:
            if _pack_command is not None:
                conn.send_packed_command([_pack_command(args)], check_health=False)
            else:
                conn.send_command(*args)
        except BaseException:
            conn.disconnect()
            raise

    def _read(self, conn: AbstractConnection) -> Any:
        try:
            return conn.read_response()
        except redis.ResponseError:
            self._release(conn)
            raise
        except BaseException:
            conn.disconnect()
            raise

    def pop_wait(self, key: str, timeout: float) -> Any:
        """``BLPOP key`` for at most ``timeout`` seconds by the client's clock.

        Returns the popped value, or None when nothing came in time.
        """
        conn, _ = self._usable()
        try:
            value = self._pop_wait(conn, key, timeout)
        except BaseException:
            conn.disconnect()
            raise
        self._release(conn)
        return value

    def _pop_wait(self, conn: AbstractConnection, key: str, timeout: float) -> Any:
        client_id = getattr(conn, "_redispool_id", None)
        if client_id is None or not conn._sock:
            conn.send_command("CLIENT", "ID")
            client_id = conn.read_response()
            conn._redispool_id = client_id  # type: ignore[attr-defined]
        # The server's own timeout is only a backstop: our clock ends the wait.
        conn.send_command("BLPOP", key, f"{max(timeout, 0.0) + BLOCK_BACKSTOP:.3f}")
        try:
            ready = conn.can_read(timeout=timeout)
        except BaseException:
            self._unblock(conn, client_id)
            raise
        if not ready:
            self._unblock(conn, client_id)
        reply = conn.read_response()
        return None if reply is None else reply[1]

    def _unblock(self, conn: AbstractConnection, client_id: int) -> None:
        """End the BLPOP on ``conn`` now; its reply is then ready to read.

        The UNBLOCK travels on another connection, so it can reach the server
        before the BLPOP has blocked (it answers 0 then) or after the BLPOP was
        answered (0 too, and the reply is on its way): retry until one of them.
        """
        while not self.call("CLIENT", "UNBLOCK", client_id):
            if conn.can_read(timeout=0.001):
                return

    def close(self) -> None:
        """Disconnect every free connection."""
        with self._lock:
            free, self._free = self._free, []
        for conn in free:
            conn.disconnect()
