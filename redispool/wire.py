"""The hot path to Redis: commands sent on redis-py connections directly.

redis-py's per-command layer costs more than a whole checkout script does on
the server (../shared/FACTS.md measured it), so the pool keeps its own list of
free :class:`redis.connection.Connection` objects and talks to them with
``send_command``/``read_response``. Connections are made the way the client's
connection pool makes them (its class and settings: URL, auth, TLS, RESP
version, and for a Sentinel-managed client the master lookup at each connect),
but they are the Wire's own: redis-py's pool never counts them, so failed
attempts cannot use up its ``max_connections``. The Wire holds only the
connections it is using and those free in its list; one that failed is
dropped, and so are its free siblings, which met the same server.

A wait for a handoff is a *blocking peek*: ``BLMOVE key key LEFT LEFT`` hands
back the head of the waiter's own wake list and leaves it there, so whatever
happens to the client (its own timer ends the wait by dropping the connection,
an interrupt, a lost reply) the value stays in Redis until a script takes it.
The wait is timed by the client, not by Redis, whose blocking timeouts fire
only on its timer tick, up to ~100 ms late; ending a wait needs no right over
other clients (no ``CLIENT UNBLOCK``).
"""

from __future__ import annotations

import os
import select
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis
from redis.connection import AbstractConnection
from redis.exceptions import AskError, MovedError, ReadOnlyError, TryAgainError

from . import direct_io
from .packing import pack_command as _pack_command
from .slot_client import SlotConnectionPool

__all__ = ["Wire", "number", "text"]

#: Seconds the server's own BLMOVE timeout runs past ours: only a backstop.
BLOCK_BACKSTOP = 1.0
#: Seconds a ``WAIT`` reply may come after the replica timeout it was given.
WAIT_SLACK = 2.0
#: On a cluster: how many ``MOVED``/``ASK`` replies one call follows, and for how
#: many seconds a call answered ``TRYAGAIN`` (its slot migrating) is sent again.
#: Each of these replies says the command did not run, so sending it again never
#: runs it twice.
MAX_REDIRECTS = 5
TRYAGAIN_FOR = 2.0
_REDIRECTED = (AskError, TryAgainError)  # MovedError is an AskError


def _closed_by_server(conn: AbstractConnection) -> bool:
    """True if an idle connection is gone or has something to read: the server
    closed it (or sent what no command asked for: it cannot be trusted either).

    Asked of every pooled connection before its reuse, however briefly it sat:
    a server that closed it meanwhile (a restart, a failover, ``CLIENT KILL``)
    would otherwise answer the next command with nothing, and a command sent
    cannot be sent again. A plain socket's check is one ``poll`` (~0.25 us).
    """
    poller = getattr(conn, "_redispool_poller", None)
    if poller is not None and conn._sock is not None and not poller.poll(0):
        return False  # the hot path: nothing came, so nothing closed it
    if not conn._sock:
        return True  # disconnected while it sat (the Wire never reuses one)
    try:
        return bool(conn.can_read(timeout=0))
    except (redis.ConnectionError, OSError):
        return True


def _poller(conn: AbstractConnection) -> Any:
    """A poll object on ``conn``'s plain socket (None for a TLS one, whose
    decrypted bytes can wait above the socket: redis-py's check sees those)."""
    sock = conn._sock
    if sock is None or hasattr(sock, "pending"):
        return None
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return poller


def text(value: Any) -> str:
    """A reply value as ``str``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def number(value: Any, signed: bool = False) -> int | None:
    """A reply value's whole number, written in ASCII digits (a leading ``-``
    too if ``signed``); None for anything else. ``str.isdigit`` is no guard:
    it passes digits ``int`` refuses ("\u00b2") or reads ("\u0663")."""
    raw = text(value)
    body = raw[1:] if signed and raw.startswith("-") else raw
    return int(raw) if body.isascii() and body.isdigit() else None


def _factory(client: redis.Redis) -> Callable[[], AbstractConnection]:
    """Makes connected connections of ``client``'s kind, outside its pool's accounting.

    ``connect()`` is called here, as redis-py's pool does: a Sentinel-managed
    connection looks up the master there (sending on an unconnected one would
    skip that and go to localhost). Each is marked for whether the Wire may
    send and read on its socket directly (:mod:`redispool.direct_io`).
    """
    pool = client.connection_pool
    cls, kwargs = pool.connection_class, dict(pool.connection_kwargs)

    def make() -> AbstractConnection:
        conn: AbstractConnection = cls(**kwargs)
        conn.connect()
        conn._redispool_direct = direct_io.direct(conn)  # type: ignore[attr-defined]
        conn._redispool_poller = _poller(conn)  # type: ignore[attr-defined]
        return conn

    return make


def _reply(conn: AbstractConnection) -> Any:
    """The next reply on ``conn``, as ``conn.read_response()`` gives it."""
    if conn._redispool_direct:  # type: ignore[attr-defined]
        return direct_io.read(conn)
    return conn.read_response()


_WIRES: weakref.WeakSet[Wire] = weakref.WeakSet()


def _forget_parents_connections() -> None:
    """In a forked child: no Wire reuses its parent's sockets or a lock it held."""
    for wire in list(_WIRES):
        wire._free, wire._lock = [], threading.Lock()


os.register_at_fork(after_in_child=_forget_parents_connections)


class Wire:
    """Commands over a private list of connections of one redis-py client.

    Thread-safe: each call takes a connection for itself. Safe across
    ``fork``: a child starts with no connection of its parent.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        #: True if this Wire talks to the master of one slot of a Redis Cluster.
        self.on_cluster = isinstance(client.connection_pool, SlotConnectionPool)
        self._new = _factory(client)
        self._free: list[AbstractConnection] = []
        self._lock = threading.Lock()
        _WIRES.add(self)

    def _release(self, conn: AbstractConnection) -> None:
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
        return self.call_packed(_pack_command(args), lambda: args)

    def call_packed(self, packed: bytes, command: Callable[[], tuple[Any, ...]]) -> Any:
        """:meth:`call` of ``command()``, whose bytes are ``packed`` (made by the
        protocol layer: :meth:`redispool.protocol.Op.packed`). ``command`` is
        asked for the arguments only if they must be sent another way."""
        conn: Any
        conn, reused = self._usable()
        if conn._redispool_direct:  # _sent's sending, inline: the hot path
            try:
                direct_io.send(conn, packed)
            except redis.ConnectionError:
                if not reused:
                    raise  # a new connection failed: Redis is unreachable
                self.close()
                conn = self._new()
                self._send(conn, (command(),))
        else:
            conn = self._sent_on(conn, reused, (command(),))
        try:
            reply = self._read(conn)
        except _REDIRECTED as exc:  # a cluster's slot moved or is moving: it did not run
            return self._redirected(exc, (command(),))[0]
        self._release(conn)
        return reply

    def call_acked(self, args: tuple[Any, ...], replicas: int, timeout_ms: int) -> tuple[Any, int]:
        """``call(*args)`` followed on the same connection by ``WAIT replicas timeout_ms``.

        Returns the command's reply and how many replicas acknowledged every
        write this connection made so far. Both go out in one round trip. A
        command that fails raises (after its ``WAIT`` reply was read).
        """
        commands = (args, ("WAIT", replicas, timeout_ms))
        conn = self._sent(*commands)
        try:
            reply = _reply(conn)
        except ReadOnlyError:
            self._drop(conn)
            raise
        except MovedError as exc:  # the connection is gone with the slot
            self._drop(conn)
            reply, acks = self._redirected(exc, commands)
            return reply, int(acks)
        except redis.ResponseError as exc:
            reply = exc
        except BaseException:
            self._drop(conn)
            raise
        acks = self._read(conn, timeout=timeout_ms / 1000 + WAIT_SLACK)
        self._release(conn)
        if isinstance(reply, _REDIRECTED):
            reply, acks = self._redirected(reply, commands)
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply, int(acks)

    def call_reads(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Read-only ``commands`` in one round trip on one connection; their
        replies in order (an error reply raises, after every reply was read)."""
        replies = self._exchange(commands)
        redirect = next((r for r in replies if isinstance(r, _REDIRECTED)), None)
        if redirect is not None:
            return self._redirected(redirect, commands)
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return replies

    def _exchange(self, commands: tuple[tuple[Any, ...], ...]) -> list[Any]:
        """The replies to ``commands`` sent in one round trip, error replies as
        values; a ``MOVED`` ends the list (its connection is gone)."""
        conn = self._sent(*commands)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(_reply(conn))
            except ReadOnlyError:
                self._drop(conn)
                raise
            except MovedError as exc:
                self._drop(conn)
                return [exc]
            except redis.ResponseError as exc:
                replies.append(exc)
            except BaseException:
                self._drop(conn)
                raise
        self._release(conn)
        return replies

    def _redirected(
        self, exc: AskError | TryAgainError, commands: tuple[tuple[Any, ...], ...]
    ) -> list[Any]:
        """The replies to ``commands``, which a cluster answered with ``exc``
        (``MOVED``, ``ASK`` or ``TRYAGAIN``: they did not run), sent again
        where the slot is served now; errors other than these raise."""
        redirects, give_up, pause = 0, time.monotonic() + TRYAGAIN_FOR, 0.005
        replies: list[Any]
        while True:
            if isinstance(exc, TryAgainError):  # migrating: wait for its end, briefly
                if time.monotonic() + pause > give_up:
                    raise exc
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
                replies = self._exchange(commands)
            else:
                redirects += 1
                pool = self.client.connection_pool
                if redirects > MAX_REDIRECTS:
                    raise exc
                if isinstance(exc, MovedError):  # the topology was updated: send again
                    replies = self._exchange(commands)
                elif isinstance(pool, SlotConnectionPool):  # ASK: once, to the importing node
                    replies = pool.ask(exc, commands)
                else:
                    raise exc
            redirect = next((r for r in replies if isinstance(r, _REDIRECTED)), None)
            if redirect is None:
                for reply in replies:
                    if isinstance(reply, redis.ResponseError):
                        raise reply
                return replies
            exc = redirect

    def _sent(self, *commands: tuple[Any, ...]) -> AbstractConnection:
        """A connection on which ``commands`` were sent, pipelined."""
        return self._sent_on(*self._usable(), commands)

    def _sent_on(
        self, conn: AbstractConnection, reused: bool, commands: tuple[tuple[Any, ...], ...]
    ) -> AbstractConnection:
        """``conn`` (pooled if ``reused``), or a new one if sending on a pooled one
        failed, once ``commands`` were sent on it."""
        try:
            self._send(conn, commands)
        except redis.ConnectionError:
            if not reused:
                raise  # a new connection failed: Redis is unreachable
            self.close()
            conn = self._new()
            self._send(conn, commands)
        return conn

    def _usable(self) -> tuple[AbstractConnection, bool]:
        """A connection for this caller, and whether it was pooled; a pooled one
        the server closed is replaced (with its siblings) by a new one."""
        try:
            conn = self._free.pop()
        except IndexError:
            return self._new(), False
        if _closed_by_server(conn):
            self._drop(conn)  # the others sat as long: drop them all
            return self._new(), False
        return conn, True

    def _send(self, conn: AbstractConnection, commands: tuple[tuple[Any, ...], ...]) -> None:
        try:
            if conn._redispool_direct:  # type: ignore[attr-defined]  # one sendall for them all
                direct_io.send(conn, b"".join([_pack_command(c) for c in commands]))
            else:
                conn.send_packed_command([_pack_command(c) for c in commands], check_health=False)
        except BaseException:
            conn.disconnect()
            raise

    def _read(self, conn: AbstractConnection, timeout: float | None = None) -> Any:
        try:
            if timeout is not None:
                return conn.read_response(timeout=timeout)
            if conn._redispool_direct:  # type: ignore[attr-defined]
                return direct_io.read(conn)
            return conn.read_response()
        except ReadOnlyError:  # a demoted master, or a replica: never reuse it
            self._drop(conn)
            raise
        except MovedError:  # a cluster's slot is served elsewhere: so are the siblings'
            self._drop(conn)
            raise
        except redis.ResponseError:
            self._release(conn)
            raise
        except BaseException:
            self._drop(conn)
            raise

    def _drop(self, conn: AbstractConnection) -> None:
        """Disconnect ``conn`` and its free siblings, which met the same server."""
        conn.disconnect()
        self.close()

    def peek_wait(self, key: str, timeout: float) -> Any:
        """The head of list ``key``, waiting at most ``timeout`` seconds by the
        client's clock; None when nothing came in time.

        The value stays in the list (``BLMOVE key key LEFT LEFT``): a caller
        interrupted at any point, even after Redis answered, has lost nothing.
        """
        conn, _ = self._usable()
        backstop = f"{max(timeout, 0.0) + BLOCK_BACKSTOP:.3f}"
        self._send(conn, (("BLMOVE", key, key, "LEFT", "LEFT", backstop),))
        try:
            ready = conn.can_read(timeout=max(timeout, 0.0))
        except BaseException:
            conn.disconnect()
            raise
        if not ready:  # our clock ran out: leave the blocked connection behind
            conn.disconnect()
            return None
        try:
            reply = self._read(conn)
        except _REDIRECTED:  # a cluster's slot moved or is moving: as if nothing came
            return None
        self._release(conn)
        return reply

    def close(self) -> None:
        """Disconnect every free connection."""
        with self._lock:
            free, self._free = self._free, []
        for conn in free:
            conn.disconnect()

    def __len__(self) -> int:
        """How many free connections the Wire holds."""
        return len(self._free)
