"""A waiter interrupted by a real SIGINT at the moment of its handoff strands no worker."""

from __future__ import annotations

import random
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import in_thread, wait_for

from redispool import Lease, Pool, PoolUnavailable
from redispool import renewer as renewer_module

MakePool = Callable[..., Pool]
WAITER = Path(__file__).parent / "procs" / "interrupted_waiter.py"
ROUNDS = 120
#: SIGINT lands this many seconds around the checkin that hands the worker over.
SPREAD = (-0.001, 0.003)
#: Longest a round may take to say how it ended: its checkout times out after 10 s.
LINE_TIMEOUT = 20


def _line(proc: subprocess.Popen[str], err: Path, what: str) -> str:
    """The waiter's next line, within its checkout's own timeout and some. A
    waiter that prints nothing by then hangs: the failure carries its stacks
    (SIGUSR1: faulthandler); one that ended, what it wrote on stderr (``err``)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], LINE_TIMEOUT)
    if ready:
        line = proc.stdout.readline()
        if line:
            return line.strip()
        proc.wait(timeout=10)
        pytest.fail(f"the waiter ended ({proc.returncode}) waiting for {what}:\n{err.read_text()}")
    size = err.stat().st_size
    proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: err.stat().st_size > size, timeout=5, message="the waiter's stacks")
    time.sleep(0.2)  # a grace for the rest of the dump: only this failing path waits
    proc.kill()
    proc.wait(timeout=10)
    pytest.fail(f"the waiter wrote nothing for {LINE_TIMEOUT} s, waiting for {what}:\n"
                f"{err.read_text()}")  # fmt: skip


def _settled(pool: Pool) -> bool:
    status = pool.status()
    return (status.idle, status.busy, status.waiting) == (1, 0, 0)


def test_a_sigint_around_a_handoff_leaves_the_worker_to_someone(
    make_pool: MakePool, redis_url: str, tmp_path: Path
) -> None:
    pool = make_pool(workers=1, lease_ttl=60)  # a stranded worker would stay busy a minute
    err = tmp_path / "waiter.err"
    with err.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, str(WAITER), redis_url, "p"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err_file, text=True,
        )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    seen: Counter[str] = Counter()
    rng = random.Random(8)
    try:
        assert _line(proc, err, "ready") == "ready"
        for round_no in range(ROUNDS):
            held = pool.checkout(block=False)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            wait_for(lambda: pool.status().waiting == 1, timeout=5, message="the waiter queued")
            delay = rng.uniform(*SPREAD)
            if delay < 0:
                proc.send_signal(signal.SIGINT)
                time.sleep(-delay)
                held.checkin()
            else:
                held.checkin()
                time.sleep(delay)
                proc.send_signal(signal.SIGINT)
            at = f"SIGINT at {delay * 1000:+.2f} ms"
            outcome = _line(proc, err, f"round {round_no}'s outcome ({at})")
            seen[outcome] += 1
            wait_for(
                lambda: _settled(pool),
                timeout=2,
                message=f"round {round_no} ({outcome}, SIGINT at {delay * 1000:+.2f} ms): "
                f"the worker idle, nobody queued; else it is stranded: {pool.leases()}",
            )
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    print(f"outcomes over {ROUNDS} rounds: {dict(seen)}")
    assert set(seen) <= {"got", "interrupted"}
    assert seen["got"] > 0 and seen["interrupted"] > 0


def _cut_after(add: Callable[[Lease], None], cuts: list[int]) -> Callable[[Lease], None]:
    """``add``, after which the first registration is interrupted (as a Ctrl-C landing
    at the end of Renewer.add, or in its notify, would)."""

    def interrupted_add(lease: Lease) -> None:
        add(lease)
        if not cuts:
            cuts.append(lease.token)
            raise KeyboardInterrupt

    return interrupted_add


def _nothing_left(pool: Pool, waiter: Pool) -> None:
    status = pool.status()
    assert (status.idle, status.busy, status.waiting) == (1, 0, 0), status
    assert len(waiter.renewer) == 0, "a lease checked in is still renewed"


@pytest.mark.parametrize("way", ["granted", "ticked", "handed"])
def test_an_interrupt_in_the_registration_of_a_lease_checks_it_in(
    way: str, make_pool: MakePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the Lease was made and registered before it was kept to be checked in: an
    # interrupt at the end of its registration left it renewed for ever, and the
    # worker out for good (granted; ticked: the tick had taken the handoff out of
    # Redis). A handoff peeked without a claim was checked in, but its Lease stayed
    # registered and was later logged "lost"
    pool = make_pool(workers=1, lease_ttl=60)
    waiter = make_pool() if way != "granted" else pool
    held = None if way == "granted" else pool.checkout(auto_renew=False)
    cuts: list[int] = []
    monkeypatch.setattr(waiter.renewer, "add", _cut_after(waiter.renewer.add, cuts))
    if way == "ticked":  # no peek sees the handoff: each comes through a wait_tick
        def clock_first(key: str, timeout: float) -> None:
            time.sleep(min(timeout, 0.01))

        monkeypatch.setattr(waiter.sender, "peek_wait", clock_first)
    if held is None:
        with pytest.raises(KeyboardInterrupt):
            waiter.checkout(block=False)
    else:
        results: list[object] = []
        thread = in_thread(lambda: _interrupted(waiter), results)
        wait_for(lambda: pool.status().waiting == 1, message="the waiter queued")
        assert held.checkin() is True  # handed to the waiter
        thread.join(10)
        assert results == ["interrupted"], results
    assert cuts, "no registration was interrupted"
    monkeypatch.undo()
    _nothing_left(pool, waiter)


def _interrupted(pool: Pool) -> str:
    try:
        pool.checkout(timeout=5)
    except KeyboardInterrupt:
        return "interrupted"
    return "leased"


@pytest.mark.parametrize("began", [True, False])
def test_an_interrupted_start_of_the_renewer_leaks_nothing_and_the_pool_closes(
    began: bool, make_pool: MakePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the renewer's thread.start() cut short by an interrupt, after the thread began
    # or before: the lease was left renewed for ever (began), and Pool.close() raised
    # RuntimeError joining a thread never started, before closing its connections
    pool = make_pool(workers=1, lease_ttl=60)

    class CutStart(threading.Thread):
        def start(self) -> None:
            if began:
                super().start()
            raise KeyboardInterrupt

    monkeypatch.setattr(renewer_module.threading, "Thread", CutStart)
    with pytest.raises(KeyboardInterrupt):
        pool.checkout(block=False)
    monkeypatch.undo()
    _nothing_left(pool, pool)
    pool.close()
    assert pool.checkout(block=False).checkin() is True  # and it starts again


def test_a_lease_whose_waiter_could_not_leave_the_queue_is_still_checked_in(
    make_pool: MakePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the interrupted registration's Lease was checked in only after cancel_wait
    # succeeded: with Redis failing that one call, it stayed renewed for ever
    # (found by a review)
    pool = make_pool(workers=1, lease_ttl=60)
    waiter = make_pool()
    held = pool.checkout(auto_renew=False)
    cuts: list[int] = []
    monkeypatch.setattr(waiter.renewer, "add", _cut_after(waiter.renewer.add, cuts))
    send = waiter.sender.send

    def cancel_fails(op: Any) -> Any:
        if op.name == "cancel_wait":
            raise PoolUnavailable("pool 'p': cancel_wait: Redis unreachable", pool="p")
        return send(op)

    monkeypatch.setattr(waiter.sender, "send", cancel_fails)
    results: list[object] = []
    thread = in_thread(lambda: _interrupted(waiter), results)
    wait_for(lambda: pool.status().waiting == 1, message="the waiter queued")
    assert held.checkin() is True  # handed to the waiter
    thread.join(10)
    assert results == ["interrupted"] and cuts, results
    monkeypatch.undo()
    _nothing_left(pool, waiter)
