"""One command's bytes out and one reply in, on a redis-py connection's own socket and reader.

redis-py's ``send_packed_command`` and ``read_response`` wrap each call in
layers a pool's hot path does not need (a health check, an error-message
string formatted before every read, a protocol switch, a parser method per
layer): about 2 us of a ~20 us client-side round trip. Here the packed bytes go
out in one ``sendall`` on the connection's socket and the reply is read into
its hiredis reader, with redis-py's own semantics kept: an error reply raises
its exception (the connection stays usable), a socket error or timeout
disconnects the connection and raises ``ConnectionError``/``TimeoutError``,
an interrupt disconnects it too (its reply would be left unread), and a RESP3
push message goes to the parser's push handler before the reply is read.

Only connections of a class that sends and reads exactly as redis-py's base
class does (plain TCP, TLS, unix socket), parsed by hiredis, are used so; any
other class (Sentinel's, which turns a read-only reply into a reconnection;
a cluster slot's; a custom one) goes through its own methods.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

import redis
import redis._parsers
import redis.connection
from redis.connection import AbstractConnection

_Parser: Any
try:  # redis-py >= 6 marks "no whole reply yet" with its own sentinel
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH
    from redis._parsers.hiredis import _HiredisParser as _Parser
except ImportError:  # pragma: no cover - an older redis-py: no direct path
    _Parser, _NOT_ENOUGH = None, None

_Push: Any
try:
    from hiredis import PushNotification as _Push
except ImportError:  # pragma: no cover - hiredis < 3.2 hands push messages over as lists
    _Push = None

__all__ = ["awaited", "direct", "read", "send"]

#: Where a client waits on its server: redis-py's connections and parsers, sockets, TLS.
_WAITING = (
    os.path.dirname(redis._parsers.__file__), redis.connection.__file__, socket.__file__,
    ssl.__file__,
)  # fmt: skip

_CLOSED = "Connection closed by server."
#: Per connection class: whether it sends and reads as redis-py's base class does.
_PLAIN: dict[type, bool] = {}


def _plain(cls: type) -> bool:
    plain = _PLAIN.get(cls)
    if plain is None:
        plain = _PLAIN[cls] = (
            _Parser is not None
            and getattr(cls, "send_packed_command", None) is AbstractConnection.send_packed_command
            and getattr(cls, "read_response", None) is AbstractConnection.read_response
        )
    return plain


def direct(conn: Any) -> bool:
    """True if ``conn`` is connected, of a plain class and parsed by hiredis."""
    parser: Any = getattr(conn, "_parser", None)
    return (
        getattr(conn, "_sock", None) is not None
        and _plain(type(conn))
        and _Parser is not None
        and isinstance(parser, _Parser)
        and parser._reader is not None
    )


def send(conn: Any, packed: bytes) -> None:
    """Send ``packed`` on ``conn`` (which :func:`direct` accepted), as
    ``send_packed_command`` would: any failure disconnects it."""
    try:
        conn._sock.sendall(packed)
    except TimeoutError:  # the socket timeout (builtin TimeoutError, not redis-py's)
        conn.disconnect()
        raise redis.TimeoutError("Timeout writing to socket") from None
    except OSError as exc:
        conn.disconnect()
        raise redis.ConnectionError(f"Error while writing to {conn._host_error()}: {exc}") from exc
    except BaseException:
        conn.disconnect()
        raise


def read(conn: Any) -> Any:
    """The next reply on ``conn`` (which :func:`direct` accepted), as ``read_response``
    gives it: an error reply raises its ``ResponseError`` and leaves ``conn``
    usable; a closed socket, a socket error, a timeout or an interrupt
    disconnects ``conn`` and raises."""
    parser = conn._parser
    reader, sock, buffer = parser._reader, conn._sock, parser._buffer
    try:
        while True:
            reply = reader.gets()
            while reply is _NOT_ENOUGH:
                count = sock.recv_into(buffer)
                if not count:
                    raise redis.ConnectionError(_CLOSED)
                reader.feed(buffer, 0, count)
                reply = reader.gets()
            if type(reply) is list or _Push is None or not isinstance(reply, _Push):
                break  # (a push message is a list's subclass)
            parser.handle_push_response(reply)  # not this command's reply: read on
    except TimeoutError:  # the socket timeout (builtin TimeoutError, not redis-py's)
        conn.disconnect()
        raise redis.TimeoutError(f"Timeout reading from {conn._host_error()}") from None
    except OSError as exc:
        conn.disconnect()
        raise redis.ConnectionError(
            f"Error while reading from {conn._host_error()} : {exc.args}"
        ) from exc
    except BaseException:
        conn.disconnect()
        raise
    if type(reply) is list:  # a script's reply: one check, the hot path
        if reply and isinstance(reply[0], redis.ConnectionError):
            conn.disconnect()
            raise reply[0]
        return reply
    return _checked(conn, reply)


def awaited(exc: BaseException) -> bool:
    """Whether ``exc`` (an interrupt) came while the client waited on the server:
    connecting or reading a reply, as its traceback shows (this module's read,
    or redis-py's connection or parser code, or the socket or ssl module, on its
    way). A command cut there may have gone out, and one sent again would wait
    on the same server as long."""
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code is read.__code__ or code.co_filename.startswith(_WAITING):
            return True
        tb = tb.tb_next
    return False


def _checked(conn: Any, reply: Any) -> Any:
    """``reply``, unless it is an error reply: raised as redis-py raises it. A
    ConnectionError reply (LOADING, say) disconnects ``conn`` first, since
    redis-py raises it from inside its read; another error leaves it usable."""
    if isinstance(reply, redis.ConnectionError):
        conn.disconnect()
        raise reply
    if isinstance(reply, redis.ResponseError):
        raise reply
    return reply
