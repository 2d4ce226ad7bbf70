"""Clients as real processes: killed, paused past their TTL, queued from several processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import wait_for

from redispool import Pool, PoolFull

MakePool = Callable[..., Pool]
CLIENT = Path(__file__).parent / "procs" / "client.py"


class Client:
    """A client process whose stdout lines the test reads."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CLIENT), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def line(self, timeout: float = 10) -> list[str]:
        assert self.proc.stdout is not None
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"client {self.proc.pid} said nothing in {timeout} s"
        return self.proc.stdout.readline().split()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    started: list[Client] = []

    def start(*args: str) -> Client:
        client = Client(*args)
        started.append(client)
        return client

    try:
        yield start
    finally:
        for client in started:
            client.stop()


def test_worker_of_a_killed_holder_returns_after_its_ttl(
    make_pool: MakePool, redis_url: str, clients: Callable[..., Client]
) -> None:
    pool = make_pool(workers=1)
    holder = clients(redis_url, "p", "0.5", "hold")
    kind, worker, _token = holder.line()
    assert kind == "LEASE"
    time.sleep(0.8)  # longer than the TTL: only renewal keeps the holder's lease
    with pytest.raises(PoolFull):
        pool.checkout(block=False)
    os.kill(holder.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    lease = pool.checkout(timeout=5)
    assert lease.worker_id == worker
    assert time.monotonic() - killed < 1.5


def test_paused_holder_finds_its_lease_lost_and_leaves_the_new_holder_alone(
    make_pool: MakePool, redis_url: str, clients: Callable[..., Client]
) -> None:
    pool = make_pool(workers=1)
    paused = clients(redis_url, "p", "0.3", "paused")
    _, worker, token = paused.line()
    os.kill(paused.proc.pid, signal.SIGSTOP)
    successor = pool.checkout(timeout=5)  # served once the paused lease expires
    assert successor.worker_id == worker and successor.token > int(token)
    os.kill(paused.proc.pid, signal.SIGCONT)
    assert paused.proc.stdin is not None
    paused.proc.stdin.write("go\n")
    paused.proc.stdin.flush()
    assert paused.line() == ["LOST"]
    assert paused.line() == ["CHECKIN", "False"]
    assert not successor.lost.is_set()
    successor.renew()
    assert pool.status().busy == 1
    assert successor.checkin() is True


def test_waiters_in_different_processes_are_served_in_arrival_order(
    make_pool: MakePool, redis_url: str, clients: Callable[..., Client]
) -> None:
    pool = make_pool(workers=1)
    held = pool.checkout()
    waiters = []
    for n in range(4):
        waiters.append(clients(redis_url, "p", "5", "wait", "20"))
        wait_for(lambda n=n: pool.status().waiting == n + 1, timeout=10, message=f"waiter {n}")
    held.checkin()
    tokens = [int(waiter.line()[2]) for waiter in waiters]
    assert tokens == sorted(tokens), "a later waiter was served first"
    for waiter in waiters:
        assert waiter.proc.wait(10) == 0
    assert pool.status().idle == 1


def test_a_forked_child_does_not_keep_its_dead_parents_lease_alive(
    make_pool: MakePool, redis_url: str
) -> None:
    pool = make_pool(workers=2)
    script = Path(__file__).parent / "procs" / "fork_holder.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), redis_url, "p", "0.5"], stdout=subprocess.PIPE, text=True
    )
    child_pid = None
    try:
        assert proc.stdout is not None
        parent_worker = proc.stdout.readline().split()[1]
        child_line = proc.stdout.readline().split()
        child_pid = next(int(h.holder.split(":")[1]) for h in pool.leases()
                         if h.worker_id == child_line[1])  # fmt: skip
        lease = pool.checkout(timeout=5)  # the parent's worker, once its lease ends
        assert lease.worker_id == parent_worker
        assert pool.status().busy == 2  # the child still holds its own
    finally:
        proc.wait(5)
        if child_pid is not None:
            os.kill(child_pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
