"""The renewer's thread is there whenever a lease is registered, at no per-lease thread check.

Registering a lease only asks a flag the thread keeps under the renewer's
lock (not ``Thread.is_alive()``), so these tests check that the flag never
lies: after a stop, and after the thread died, the next registration starts
a thread that renews.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence

import pytest
from helpers import wait_for

from redispool import Pool
from redispool.lease import Lease
from redispool.renewer import Renewer

MakePool = Callable[..., Pool]


class _Dies(BaseException):
    """Not an Exception: the renewer does not catch it, so its thread dies."""


class _Owner:
    name = "fake"


def lease(ttl: float) -> Lease:
    now = time.monotonic()
    return Lease(_Owner(), "w1", 1, ttl, auto_renew=True, deadline=now + ttl,  # type: ignore[arg-type]
                 renewed_at=now - ttl)  # fmt: skip  # due at once


def test_a_stopped_renewer_given_a_lease_starts_again_and_renews(
    make_pool: MakePool,
) -> None:
    pool = make_pool(workers=2, lease_ttl=0.6)
    first = pool.checkout(block=False)
    pool.renewer.stop()  # as Pool.close() does
    assert first.checkin() is True
    second = pool.checkout(block=False)  # registration after the stop
    time.sleep(1.2)  # two TTLs pass: only renewals keep it
    pool.renew(second)  # raises LeaseLost had the renewer not run
    assert second.active and second.checkin() is True


def test_a_renewer_thread_that_died_is_replaced_at_the_next_registration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    died = threading.Event()
    monkeypatch.setattr(threading, "excepthook", lambda args: died.set())
    calls: list[int] = []

    def renew_many(leases: Sequence[Lease]) -> list[Lease]:
        calls.append(len(leases))
        if len(calls) == 1:
            raise _Dies
        for each in leases:
            each.renewed(time.monotonic())
        return []

    renewer = Renewer("fake", renew_many)
    renewer.add(lease(0.3))
    wait_for(died.is_set, message="the renewer thread never died")
    assert renewer._thread is not None
    renewer._thread.join(timeout=5)
    renewer.add(lease(0.3))  # the next registration starts a new thread
    wait_for(lambda: len(calls) >= 2, message="no thread renewed after the first died")
    renewer.stop()


def test_every_registration_of_many_threads_is_renewed() -> None:
    renewed: list[int] = []

    def renew_many(leases: Sequence[Lease]) -> list[Lease]:
        renewed.append(len(leases))
        for each in leases:
            each.renewed(time.monotonic())
        return []

    renewer = Renewer("many", renew_many)
    threads = [threading.Thread(target=lambda: renewer.add(lease(0.3))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(renewer) == 8
    wait_for(lambda: renewed and max(renewed) == 8, message="not all 8 leases were renewed")
    alive = [t for t in threading.enumerate() if t.name == "redispool-renewer-many"]
    assert len(alive) == 1  # one thread, however many registered at once
    renewer.stop()


class _Interrupt(BaseException):
    """What a signal handler raises in the main thread, as Python's SIGINT does."""


def test_an_interrupt_anywhere_in_a_registration_never_leaves_the_renewer_locked() -> None:
    # An interrupt that landed just after Condition.__enter__ took the lock (its
    # Python frame checks for signals once the acquire returns) left the lock held
    # for ever: the next checkin (discard) and the renewer thread hung (a waiter
    # hit by SIGINT around its handoff, test_interrupts, once in ~1,000 rounds).
    renewer = Renewer("fake", lambda leases: [])
    main = threading.main_thread()
    assert threading.current_thread() is main
    stop = threading.Event()
    interrupts, armed = [0], [False]

    def on_signal(signum: int, frame: object) -> None:
        if armed[0]:  # one interrupt per registration, and only inside it
            armed[0] = False
            interrupts[0] += 1
            raise _Interrupt

    def keep_interrupting() -> None:
        while not stop.wait(0.00005):
            signal.pthread_kill(main.ident or 0, signal.SIGUSR2)

    previous = signal.signal(signal.SIGUSR2, on_signal)
    sender = threading.Thread(target=keep_interrupting, daemon=True)
    sender.start()
    leases = [lease(60.0) for _ in range(8)]
    ended = time.monotonic() + 3
    try:
        while time.monotonic() < ended and interrupts[0] < 20_000:
            for each in leases:
                try:
                    armed[0] = True
                    renewer.add(each)
                    renewer.discard(each)
                    armed[0] = False
                except _Interrupt:
                    pass
                got = renewer._lock.acquire(timeout=2)  # unarmed: nothing cuts this short
                if got:
                    renewer._lock.release()
                assert got, "an interrupt left the renewer's lock held"
    finally:
        stop.set()
        sender.join()
        signal.signal(signal.SIGUSR2, previous)
    assert interrupts[0] > 200, "too few interrupts to say anything"

    def renewers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "redispool-renewer-fake"]

    # a thread whose start was cut short is replaced, and ends once it looks
    wait_for(lambda: len(renewers()) <= 1, timeout=5, message="one renewer thread")
    renewer.stop()
    wait_for(lambda: not renewers(), timeout=5, message="no renewer thread after stop")
