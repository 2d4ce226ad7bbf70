"""The sync hot path (checkout, checkin, renew through the Sender) keeps every
guarantee of the slower path it replaced: the library reloaded when a server
lost it (the operation runs once), a reply of the wrong shape is corruption
naming the pool, a forked child is its own holder, a waiter's ticket and its
lease's nonce are two values, and junk in a waiter's wake key is corruption
that leaves every worker where it was."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from helpers import wait_for

from redispool import Pool, PoolCorrupted, protocol
from redispool.replicas import Replicas
from redispool.sender import Sender

MakePool = Callable[..., Pool]
HEX32 = re.compile(r"[0-9a-f]{32}")


def test_a_server_that_lost_the_library_mid_lease_still_takes_the_checkin_once(
    make_pool: MakePool, r: redis.Redis
) -> None:
    pool = make_pool(workers=1, lease_ttl=5)
    lease = pool.checkout(auto_renew=False)
    r.function_flush()  # a restart without persistence, an operator's FUNCTION FLUSH
    assert lease.checkin() is True
    assert r.lrange(pool.keys.idle, 0, -1) == [lease.worker_id.encode()], "returned once"
    again = pool.checkout(block=False, auto_renew=False)
    r.function_flush()
    pool.renew(again)  # renew and checkout's replies come through the same path
    assert again.checkin() is True


class _Junk:
    """A wire whose every reply is ``reply`` (what a server of another program might say)."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    def call(self, *args: Any) -> Any:
        return self.reply

    def call_packed(self, packed: bytes, command: Any) -> Any:
        return self.reply

    def close(self) -> None:
        pass


@pytest.mark.parametrize("reply", [[0, "w1"], [], "OK", [0, "w1", "x", 1, 2]])
def test_a_reply_of_the_wrong_shape_on_the_hot_path_is_corruption_naming_the_pool(
    reply: Any,
) -> None:
    sender = Sender(redis.Redis(port=1), "jobs", Replicas.of(0, 1.0))  # never connects
    sender.wire = _Junk(reply)  # type: ignore[assignment]
    keys = Pool("jobs", redis=redis.Redis(port=1)).keys
    op = protocol.checkout(keys, ttl_ms=0, holder="h:1", ticket="", alive_ms=10, nonce="ab")
    for send in (sender.send, lambda op: sender.send_acked(op)[0]):
        with pytest.raises(PoolCorrupted) as caught:
            send(op)
        assert (caught.value.pool, caught.value.operation) == ("jobs", "checkout")
    renew = protocol.renew(keys, [("w1", 7, "ab", 5000)])
    with pytest.raises(PoolCorrupted, match="jobs"):
        sender.send_acked(renew)


def test_a_lease_taken_in_a_forked_child_names_the_child_as_its_holder(
    make_pool: MakePool,
) -> None:
    pool = make_pool(workers=2, lease_ttl=5)
    parents = pool.checkout(auto_renew=False)
    assert parents.nonce and pool.leases()[0].holder == f"{socket.gethostname()}:{os.getpid()}"
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its lease's holder, then exit without cleanup
        code = 1
        try:
            own = pool.checkout(block=False, auto_renew=False)
            holders = {info.worker_id: info.holder for info in pool.leases()}
            os.write(write, holders[own.worker_id].encode())
            code = 0 if parents.checkin() is False and own.checkin() else 2
        finally:
            os._exit(code)
    os.close(write)
    try:
        holder = os.read(read, 200).decode()
        deadline = time.monotonic() + 20
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the forked child hung")
            time.sleep(0.01)
    finally:
        os.close(read)
    assert holder == f"{socket.gethostname()}:{pid}"
    assert os.waitstatus_to_exitcode(status) == 0, "the child checked in its parent's lease"
    assert parents.active and parents.checkin() is True


def test_a_waiters_ticket_and_its_leases_nonce_are_two_random_values(
    make_pool: MakePool, r: redis.Redis
) -> None:
    pool = make_pool(workers=1, lease_ttl=5)
    held = pool.checkout(auto_renew=False)
    got: list[Any] = []
    waiter = threading.Thread(
        target=lambda: got.append(pool.checkout(timeout=20, auto_renew=False))
    )
    waiter.start()
    try:
        wait_for(lambda: r.llen(pool.keys.waitq) == 1, timeout=10, message="the waiter queued")
        ticket, _ttl, nonce, _holder = r.lindex(pool.keys.waitq, 0).decode().split("|", 3)
        assert HEX32.fullmatch(ticket) and HEX32.fullmatch(nonce) and ticket != nonce
        assert nonce != held.nonce
    finally:
        held.checkin()
        waiter.join(20)
    lease = got[0]
    assert lease.nonce == nonce  # the handed-over lease is proven by the nonce it queued with
    assert r.get(pool.keys.lease(lease.worker_id)).decode().startswith(f"{lease.token}|{nonce}|")
    assert lease.checkin() is True


def test_junk_in_a_waiters_wake_key_is_corruption_and_loses_no_worker(
    make_pool: MakePool, r: redis.Redis
) -> None:
    pool = make_pool(workers=1, lease_ttl=5)
    held = pool.checkout(auto_renew=False)
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            pool.checkout(timeout=20, auto_renew=False)
        except BaseException as exc:  # what the caller would see
            raised.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    try:
        wait_for(lambda: r.zcard(pool.keys.waiters) == 1, timeout=10, message="the waiter queued")
        ticket = r.zrange(pool.keys.waiters, 0, 0)[0].decode()
        r.rpush(pool.keys.wake(ticket), "not a handoff")
        waiter.join(20)
    finally:
        held_back = held.checkin()
    assert len(raised) == 1 and isinstance(raised[0], PoolCorrupted), raised
    assert raised[0].pool == pool.name and "wake" in str(raised[0])
    assert held_back is True
    status = pool.status()
    assert (status.idle, status.busy, status.waiting) == (1, 0, 0)
