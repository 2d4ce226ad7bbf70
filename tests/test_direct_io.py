"""The Wire's own sending and reading behave as redis-py's would, on real servers.

The pool's hot path sends a command's bytes in one ``sendall`` on the
connection's socket and reads the reply into its hiredis reader
(:mod:`redispool.direct_io`). Each test here puts that path where redis-py's
own layers would have done something (an error reply, a server that hangs
up, a timeout, an interrupt, a RESP3 push, a unix socket) and checks that the
Wire does the same: the right exception, and a connection kept only while
it is still in step with the server.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import fakeredis
import pytest
import redis
from helpers import wait_for
from redis.sentinel import SentinelManagedConnection

from redispool import Pool, direct_io, nonces, protocol
from redispool.keys import PoolKeys
from redispool.protocol.op import HEADS_KEPT, pack_command
from redispool.wire import Wire


@pytest.fixture
def wire(redis_url: str) -> Iterator[Wire]:
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    wire = Wire(client)
    try:
        yield wire
    finally:
        wire.close()
        client.close()


def only_connection(wire: Wire) -> Any:
    assert len(wire) == 1
    return wire._free[0]


def test_a_plain_tcp_connection_is_read_directly(wire: Wire) -> None:
    assert wire.call("PING") in (b"PONG", True, "PONG")
    assert only_connection(wire)._redispool_direct is True


def test_sentinel_and_fake_connections_keep_their_own_methods() -> None:
    # Sentinel's read_response turns a read-only reply into a reconnection: never bypassed
    assert direct_io._plain(SentinelManagedConnection) is False
    client = fakeredis.FakeRedis()
    wire = Wire(client)
    assert wire.call("SET", "k", "v") in (b"OK", True, "OK")
    assert only_connection(wire)._redispool_direct is False
    assert wire.call("GET", "k") == b"v"
    wire.close()


def test_an_error_reply_raises_and_keeps_the_connection(wire: Wire, r: redis.Redis) -> None:
    r.set("text", "not a number")
    wire.call("PING")
    conn = only_connection(wire)
    with pytest.raises(redis.ResponseError, match="not an integer"):
        wire.call("INCR", "text")
    assert only_connection(wire) is conn  # still in step: the error was its whole reply
    assert wire.call("INCRBY", "n", 2) == 2
    assert only_connection(wire) is conn


def test_a_server_that_hangs_up_mid_command_raises_and_drops_the_connection(
    wire: Wire, r: redis.Redis
) -> None:
    wire.call("PING")
    conn_id = wire.call("CLIENT", "ID")
    failed: list[BaseException] = []

    def blocked() -> None:
        try:
            wire.call("BLPOP", "never", 10)
        except BaseException as exc:  # the test looks at what came
            failed.append(exc)

    thread = threading.Thread(target=blocked)
    thread.start()
    wait_for(lambda: any(c.get("cmd") == "blpop" for c in r.client_list()),
             message="BLPOP never blocked")  # fmt: skip
    r.client_kill_filter(_id=conn_id)
    thread.join(timeout=10)
    assert len(failed) == 1 and isinstance(failed[0], redis.ConnectionError), failed
    assert len(wire) == 0  # never reused
    assert wire.call("INCR", "after") == 1  # a new connection


def test_a_pooled_connection_the_server_closed_just_after_its_last_use_is_replaced(
    wire: Wire, r: redis.Redis
) -> None:
    # a restart, a failover or CLIENT KILL a moment after the last command: the
    # next one, however soon, goes out on a new connection instead of failing
    conn_id = wire.call("CLIENT", "ID")
    sock = only_connection(wire)._sock
    r.client_kill_filter(_id=conn_id)
    wait_for(lambda: select.select([sock], [], [], 0)[0], timeout=5, interval=0.001,
             message="the server's close to arrive")  # fmt: skip
    assert wire.call("INCR", "after") == 1
    assert wire.call("CLIENT", "ID") != conn_id


def test_a_pooled_connection_disconnected_while_it_sat_is_replaced(wire: Wire) -> None:
    wire.call("PING")
    only_connection(wire).disconnect()  # as a client's close() of its connections would
    assert wire.call("INCR", "after") == 1


def test_a_reply_later_than_the_socket_timeout_raises_and_drops_the_connection(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=0.2)
    wire = Wire(client)
    try:
        wire.call("PING")
        with pytest.raises(redis.TimeoutError):
            wire.call("BLPOP", "never", 3)
        assert len(wire) == 0  # its BLPOP's reply may still come: never reused
        assert wire.call("RPUSH", "never", "x") == 1
        assert wire.call("LPOP", "never") == b"x"  # the abandoned BLPOP took nothing
    finally:
        wire.close()
        client.close()


def test_an_interrupt_while_reading_drops_the_connection(wire: Wire) -> None:
    wire.call("PING")

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(KeyboardInterrupt):
            wire.call("BLPOP", "never", 3)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(wire) == 0  # the BLPOP's reply would be read as the next command's
    assert wire.call("RPUSH", "never", "x") == 1
    assert wire.call("LRANGE", "never", 0, -1) == [b"x"]


def test_a_resp3_push_before_a_reply_goes_to_the_push_handler(
    redis_url: str, r: redis.Redis
) -> None:
    client = redis.Redis.from_url(redis_url, protocol=3)
    wire = Wire(client)
    try:
        assert wire.call("CLIENT", "TRACKING", "ON") in (b"OK", "OK", True)
        r.set("tracked", "1")
        assert wire.call("GET", "tracked") == b"1"  # now tracked: a change pushes
        assert only_connection(wire)._redispool_direct is True
        r.set("tracked", "2")  # the server queues an invalidation push to the wire's connection
        assert wire.call("ECHO", "after") == b"after"  # not the push
        assert wire.call("GET", "tracked") == b"2"
    finally:
        wire.close()
        client.close()


def test_a_pool_over_a_unix_socket_cycles_on_the_direct_path(
    fresh_server: Any, tmp_path: Path
) -> None:
    path = tmp_path / "redis.sock"
    fresh_server(extra_args=("--unixsocket", str(path), "--unixsocketperm", "700"))
    with Pool("unix", f"unix://{path}") as pool:
        pool.add_worker("w1")
        for _ in range(3):
            lease = pool.checkout(block=False, auto_renew=False)
            assert lease.checkin() is True
        assert only_connection(pool.sender.wire)._redispool_direct is True
        assert pool.status().idle == 1


class _Conn:
    """Stands in for a connection: counts disconnects."""

    def __init__(self) -> None:
        self.disconnects = 0

    def disconnect(self) -> None:
        self.disconnects += 1


def test_a_connection_error_reply_disconnects_as_redis_py_does() -> None:
    conn = _Conn()
    with pytest.raises(redis.exceptions.BusyLoadingError):  # a ConnectionError: LOADING
        direct_io._checked(conn, redis.exceptions.BusyLoadingError("LOADING"))
    assert conn.disconnects == 1


def test_a_connection_error_first_in_a_list_reply_disconnects_as_redis_py_does() -> None:
    conn: Any = _Conn()
    conn._sock = None  # never read: the reader already holds the reply
    conn._parser = type("P", (), {"_buffer": bytearray(1)})()
    conn._parser._reader = _Reader([redis.exceptions.BusyLoadingError("LOADING"), 1])
    with pytest.raises(redis.exceptions.BusyLoadingError):
        direct_io.read(conn)
    assert conn.disconnects == 1


def test_a_plain_error_reply_leaves_the_connection() -> None:
    conn = _Conn()
    with pytest.raises(redis.ResponseError):
        direct_io._checked(conn, redis.ResponseError("WRONGTYPE"))
    assert conn.disconnects == 0


class _Reader:
    def __init__(self, reply: Any) -> None:
        self.reply = reply

    def gets(self) -> Any:
        return self.reply


# -- what goes out: Op.packed -------------------------------------------------------


def ops() -> list[protocol.Op[Any]]:
    keys = PoolKeys("packed")
    return [
        protocol.checkout(keys, ttl_ms=0, holder="h:1", ticket="", alive_ms=10, nonce="ab"),
        protocol.checkin(keys, worker_id="w-é", token=2**52, nonce="cd"),
        protocol.renew(keys, [("w1", 1, "n1", 3000), ("w2", 2, "n2", 3000)]),
        protocol.cancel_wait(keys, "t1"),
        protocol.status(keys),  # no ARGV at all
        protocol.renew(keys, [(f"w{i}", i, "n", 3000) for i in range(20)]),  # > 63 arguments
    ]


def test_an_ops_packed_bytes_are_its_whole_command() -> None:
    for op in ops():
        assert op.packed() == pack_command(op.command()), op.script
        assert op.packed() == pack_command(op.command()), op.script  # its head now kept


def test_packed_bytes_stay_right_once_the_kept_heads_are_forgotten() -> None:
    keys = PoolKeys("many")
    for i in range(HEADS_KEPT + 5):  # a checkin head per worker: more than are kept
        op = protocol.checkin(keys, worker_id=f"w{i}", token=i, nonce="ef")
        assert op.packed() == pack_command(op.command())
    for op in ops():
        assert op.packed() == pack_command(op.command())


# -- nonces ---------------------------------------------------------------------------


def test_nonces_are_128_bit_hex_and_never_repeat() -> None:
    seen = [nonces.fresh() for _ in range(nonces.BATCH * 20)]
    assert len(set(seen)) == len(seen)
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in seen)


def test_a_forked_child_never_hands_out_its_parents_buffered_nonces() -> None:
    nonces.fresh()  # the buffer now holds values the parent will hand out next
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next values, then exit without pytest's teardown
        os.close(read_end)
        os.write(write_end, " ".join(nonces.fresh() for _ in range(8)).encode())
        os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end) as pipe:
            childs = set(pipe.read().split())
    finally:
        os.waitpid(pid, 0)
    parents = {nonces.fresh() for _ in range(8)}
    assert len(childs) == 8 and not childs & parents
