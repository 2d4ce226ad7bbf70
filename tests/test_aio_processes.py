"""Clients as real processes, of either API: paused past their TTL, queued from many processes,
sync and asyncio clients in one queue."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import pytest
from apis import CLIENT_SCRIPTS, ClientProcess
from helpers import wait_for

from redispool import Pool

MakePool = Callable[..., Pool]
Start = Callable[..., ClientProcess]


@pytest.fixture
def clients() -> Iterator[Start]:
    started: list[ClientProcess] = []

    def start(kind: str, *args: str) -> ClientProcess:
        client = ClientProcess(kind, *args)
        started.append(client)
        return client

    try:
        yield start
    finally:
        for client in started:
            client.stop()


@pytest.mark.parametrize("kind", sorted(CLIENT_SCRIPTS))
def test_a_paused_holder_finds_its_lease_lost_and_leaves_the_new_holder_alone(
    kind: str, make_pool: MakePool, redis_url: str, clients: Start
) -> None:
    pool = make_pool(workers=1)
    paused = clients(kind, redis_url, "p", "0.3", "paused")
    _, worker, token = paused.line()
    os.kill(paused.proc.pid, signal.SIGSTOP)
    successor = pool.checkout(timeout=5)  # served once the paused lease expires
    assert successor.worker_id == worker and successor.token > int(token)
    os.kill(paused.proc.pid, signal.SIGCONT)
    paused.tell("go")
    assert paused.line() == ["LOST"]
    assert paused.line() == ["CHECKIN", "False"]
    assert not successor.lost.is_set()
    successor.renew()
    assert successor.checkin() is True


@pytest.mark.parametrize(
    "kinds", [("sync",) * 4, ("aio",) * 4, ("sync", "aio", "aio", "sync", "aio", "sync")],
    ids=["sync", "aio", "sync-and-aio"],
)  # fmt: skip
def test_waiters_in_different_processes_are_served_in_arrival_order(
    kinds: tuple[str, ...], make_pool: MakePool, redis_url: str, clients: Start
) -> None:
    pool = make_pool(workers=1)
    held = pool.checkout()
    waiters = []
    for n, kind in enumerate(kinds):
        waiters.append(clients(kind, redis_url, "p", "5", "wait", "30"))
        wait_for(lambda n=n: pool.status().waiting == n + 1, timeout=10, message=f"waiter {n}")
    held.checkin()
    tokens = [int(waiter.line(15)[2]) for waiter in waiters]
    assert tokens == sorted(tokens), f"a later waiter was served first: {kinds}"
    for waiter in waiters:
        assert waiter.proc.wait(10) == 0
    assert pool.status().idle == 1
