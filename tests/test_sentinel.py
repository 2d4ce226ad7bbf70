"""Redis behind Sentinel: a master, one replica and three sentinels on loopback.

One Sentinel set per server kind for the whole module (a failover takes ~2.5 s).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from helpers import WorkerMain, wait_for
from redis.sentinel import Sentinel
from sentinels import SERVICE, SentinelSet

from redispool import CheckoutTimeout, Lease, Pool, PoolUnavailable

TTL = 8.0  # longer than a failover: a lease acknowledged by a replica outlives it
CLIENTS = 3
JOB = re.compile(
    r"^(\S+ \S+) redispool\.worker\[\d+\] INFO worker (\S+) job (\S+) token (\d+) (started|ended)$",
    re.MULTILINE,
)
OUTAGE_CALLS = 150


@pytest.fixture(scope="module")
def sentinels(server_kind: str) -> Iterator[SentinelSet]:
    sset = SentinelSet(server_kind)
    try:
        yield sset.start()
    finally:
        sset.stop()


def _smoke(pool: Pool) -> None:
    """The core contract: add, check out, renew, check in, hand to a waiter."""
    pool.add_worker("w1")
    lease = pool.checkout(block=False)
    lease.renew()
    got: list[Lease] = []
    waiter = threading.Thread(target=lambda: got.append(pool.checkout(timeout=5)))
    waiter.start()
    wait_for(lambda: pool.status().waiting == 1, message="the waiter queued")
    assert lease.checkin() is True
    waiter.join(5)
    (handed,) = got
    assert handed.worker_id == "w1" and handed.token > lease.token
    assert handed.checkin() is True
    assert pool.status().idle == 1


def test_a_pool_works_through_a_sentinel_url(sentinels: SentinelSet) -> None:
    with Pool("by-url", url=sentinels.url) as pool:
        _smoke(pool)
        assert int(pool.sender.wire._free[0].port) == sentinels.master_port()


def test_a_pool_works_with_a_master_for_client(sentinels: SentinelSet) -> None:
    sentinel = Sentinel([("127.0.0.1", p) for p in sentinels.sentinel_ports], socket_timeout=2)
    client = sentinel.master_for(SERVICE, socket_timeout=5)
    with Pool("by-client", redis=client) as pool:
        _smoke(pool)
    client.close()
    for s in sentinel.sentinels:
        s.close()


def test_through_sentinel_many_failed_calls_leave_the_pool_working(
    sentinels: SentinelSet,
) -> None:
    sentinels.wait_healthy()
    with Pool("outage", url=sentinels.url) as pool:
        pool.add_worker("w1")
        master = sentinels.master()
        master.kill()  # back before the sentinels call it down (1 s)
        for _ in range(OUTAGE_CALLS):
            with pytest.raises(PoolUnavailable):
                pool.status()
        master.start()
        wait_for(lambda: _answers(pool), timeout=20, message="the pool answering again")
        pool.add_worker("w1")
        pool.checkout(block=False).checkin()
        assert len(pool.sender.wire) <= 2
        assert pool.client.connection_pool._created_connections <= 2  # type: ignore[attr-defined]


def _answers(pool: Pool) -> bool:
    try:
        pool.status()
    except PoolUnavailable:
        return False
    return True


# -- a failover under load -----------------------------------------------------------------


@dataclass
class Cycle:
    client: int
    token: int
    worker: str
    got_at: float  # time.time() when checkout returned
    job: str = ""  # "ok", "wrong ...", or the error's type
    checked_in: str = ""  # "True", "False" or the error's type


@dataclass
class Load:
    """Clients doing doubler jobs: checkout, run, checkin, as fast as they can."""

    url: str
    pool: str
    min_replicas: int
    cycles: list[Cycle] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for i in range(CLIENTS):
            self.threads.append(threading.Thread(target=self._client, args=(i,), daemon=True))
            self.threads[-1].start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(t.is_alive() for t in self.threads), "a client hung"

    def ok_since(self, moment: float) -> int:
        return sum(1 for c in self.cycles if c.got_at > moment and c.job == "ok")

    def _client(self, number: int) -> None:
        rng = random.Random(number)
        with Pool(self.pool, url=self.url, min_replicas=self.min_replicas) as pool:
            while not self.stop.is_set():
                try:
                    lease = pool.checkout(timeout=2)
                except (PoolUnavailable, CheckoutTimeout) as exc:
                    self.failures.append((time.time(), type(exc).__name__))
                    time.sleep(0.02)
                    continue
                cycle = Cycle(number, lease.token, lease.worker_id, time.time())
                self.cycles.append(cycle)
                n = rng.randrange(1000)
                try:
                    result = lease.run("redispool.doubler.double", n, timeout=5)
                    cycle.job = "ok" if result == 2 * n else f"wrong {result} for {n}"
                except Exception as exc:  # recorded: which errors a failover brings
                    cycle.job = type(exc).__name__
                cycle.checked_in = _check_in(lease)


def _check_in(lease: Lease) -> str:
    """How checkin went: ``lost`` if the lease was found ended before (by the renewer),
    ``True``/``False`` as the first answer said, ``retried, then False`` if an attempt
    that raised had been done by the master after all (its reply or WAIT missing)."""
    if lease.lost.is_set():
        return "lost"
    deadline = time.monotonic() + 3 * TTL
    retried = False
    while True:
        try:
            done = lease.checkin()
            return "retried, then False" if retried and not done else str(done)
        except PoolUnavailable as exc:
            retried = True
            if time.monotonic() > deadline:
                return type(exc).__name__
            time.sleep(0.05)


Job = tuple[float, str, str, int, str]  # (time.time(), worker, job id, token, started|ended)


def _jobs(log: str) -> list[Job]:
    def when(stamp: str) -> float:
        seconds, _, millis = stamp.partition(",")
        return time.mktime(time.strptime(seconds, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000

    return [(when(at), w, j, int(t), what) for at, w, j, t, what in JOB.findall(log)]


def _overlaps(jobs: list[Job]) -> list[str]:
    """Jobs of two tokens running at once on one worker, read from the log in order."""
    running: dict[str, tuple[str, int]] = {}
    found = []
    for _, worker, job, token, what in jobs:
        if what == "started":
            if worker in running:
                found.append(f"{worker}: {job} (token {token}) while {running[worker]}")
            running[worker] = (job, token)
        elif running.get(worker, (job, token)) == (job, token):
            running.pop(worker, None)
    return found


def _expiry_events_on(sentinels: SentinelSet) -> bool:
    with redis.Redis(port=sentinels.master().port, socket_timeout=2) as master:
        flags = str(master.config_get("notify-keyspace-events")["notify-keyspace-events"])
    return "E" in flags and ("x" in flags or "A" in flags)


def _settled(pool: Pool, workers: int) -> bool:
    try:
        status = pool.status()
    except PoolUnavailable:
        return False
    return (status.size, status.idle, status.busy) == (workers, workers, 0)


@pytest.mark.parametrize("min_replicas", [0, 1])
def test_a_master_killed_under_load_is_followed_and_nothing_runs_twice(
    sentinels: SentinelSet, min_replicas: int, tmp_path: Path
) -> None:
    sentinels.wait_healthy()
    name = f"failover-{min_replicas}"
    args = (
        "--workers", "2", "--sweep-interval", "0.2",
        "--lease-ttl", str(TTL), "--min-replicas", str(min_replicas),
    )  # fmt: skip
    main = WorkerMain(sentinels.url, name, tmp_path / "worker_main.log", args)
    old = None
    try:
        with Pool(name, url=sentinels.url) as admin:
            wait_for(lambda: _settled(admin, 2), timeout=20, message="2 workers idle")
            load = Load(sentinels.url, name, min_replicas).start()
            try:
                wait_for(lambda: load.ok_since(0) >= 20, timeout=20, message="jobs before")
                killed = time.time()
                old, named_after = sentinels.kill_master()
                if min_replicas:  # no replica left to acknowledge: none until one is back
                    sentinels.bring_back(old)
                    old = None
                wait_for(lambda: load.ok_since(killed) >= 20, timeout=40, message="jobs after")
                wait_for(lambda: _expiry_events_on(sentinels), timeout=10,
                         message="the Reaper's expired events on at the new master")  # fmt: skip
            finally:
                load.finish()
            wait_for(lambda: _settled(admin, 2), timeout=TTL + 10,
                     message="every worker idle again")  # fmt: skip
        assert main.stop() == 0
    finally:
        main.kill_everything()
        if old is not None:
            sentinels.bring_back(old)
    jobs = _jobs(main.log())
    before = [c for c in load.cycles if c.got_at < killed]
    after = [c for c in load.cycles if c.got_at > killed]
    first_failure = min((t for t, _ in load.failures if t > killed), default=killed)
    back = min(c.got_at for c in after if c.got_at > first_failure)
    lost = [
        c for c in before
        if c.checked_in not in ("True", "retried, then False") or "LeaseLost" in c.job
    ]  # fmt: skip
    stale_tokens = {c.token for c in lost}
    # a job started after the kill (with a second of slack for the log clock) on a lease
    # the failover lost: a stale holder acted
    stale = [j for j in jobs if j[3] in stale_tokens and j[4] == "started" and j[0] > killed + 1]
    failed_jobs = sorted({c.job for c in load.cycles if c.job != "ok"})
    print(
        f"\n{sentinels.kind} min_replicas={min_replicas}: sentinel named a new master "
        f"{named_after:.2f} s after the kill; checkouts failed until "
        f"{back - killed:.2f} s after it; "
        f"{len(load.failures)} failed checkouts; {len(before)} leases before the kill, "
        f"{len(lost)} of them lost ({[c.checked_in for c in lost]}); "
        f"job errors {failed_jobs}; {len(jobs) // 2} jobs run"
    )
    assert not _overlaps(jobs), _overlaps(jobs)
    assert not [c for c in load.cycles if c.job.startswith("wrong")]
    assert not stale, f"holders of leases lost in the failover ran jobs after it: {stale}"
    if min_replicas:
        assert not lost, f"acknowledged checkouts lost in the failover: {lost}"
