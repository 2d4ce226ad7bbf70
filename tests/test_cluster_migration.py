"""A live slot migration of a busy pool: CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE of
its keys in batches, SETSLOT NODE, while clients run doubler jobs on worker_main.

No worker is lost or doubled, no stale job runs, every result is right, and clients
see nothing worse than PoolUnavailable, for a bounded time.
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
from clusters import Cluster, cluster_of
from helpers import FAST, WorkerMain, wait_for

from redispool import Pool, PoolError
from redispool.keys import PoolKeys

POOL = "moving"
WORKERS = 2
CLIENTS = 3
BATCH = 2  # keys per MIGRATE (redis-cli --cluster reshard sends 10): a longer window
PAUSE = 0.01  # seconds between two MIGRATEs: the clients work meanwhile
JOB = re.compile(r"worker (\S+) job (\S+) token (\d+) (started|ended)")


@pytest.fixture(scope="module", params=["redis", "valkey"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    yield from cluster_of(request.param)


@dataclass
class Load:
    url: str
    held: set[int] = field(default_factory=set)  # tokens clients held
    ok: list[tuple[float, float]] = field(default_factory=list)  # (begun, ended)
    errors: list[tuple[float, str]] = field(default_factory=list)
    messages: set[str] = field(default_factory=set)
    wrong: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for i in range(CLIENTS):
            thread = threading.Thread(target=self._client, args=(i,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(t.is_alive() for t in self.threads), "a client hung"

    def ok_since(self, moment: float) -> int:
        return sum(1 for begun, _ in self.ok if begun > moment)

    def _client(self, number: int) -> None:
        rng = random.Random(number)
        with Pool(POOL, url=self.url) as pool:
            while not self.stop.is_set():
                begun = time.monotonic()
                try:
                    with pool.lease(timeout=2) as lease:
                        self.held.add(lease.token)
                        n = rng.randrange(1000)
                        result = lease.run("redispool.doubler.double", n, timeout=5)
                    if result != 2 * n:
                        self.wrong.append(f"double({n}) = {result}")
                    self.ok.append((begun, time.monotonic()))
                except PoolError as exc:
                    self.errors.append((time.monotonic(), type(exc).__name__))
                    self.messages.add(re.sub(r"\d+", "N", str(exc)))
                    time.sleep(0.01)


def migrate(cluster: Cluster, slot: int, to_port: int) -> tuple[float, int]:
    """Move ``slot`` to the master on ``to_port`` the way redis-cli --cluster reshard
    does; (seconds from IMPORTING to the last SETSLOT NODE, keys moved)."""
    src = cluster.server_of_slot(slot)
    dst = next(s for s in cluster.masters() if s.port == to_port)
    src_id, dst_id = cluster.node_id(src), cluster.node_id(dst)
    moved = 0
    with cluster.node(src) as source, cluster.node(dst) as target:
        begun = time.monotonic()
        target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        while keys := source.execute_command("CLUSTER GETKEYSINSLOT", slot, BATCH):
            source.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000,
                                   "REPLACE", "KEYS", *keys)  # fmt: skip
            moved += len(keys)
            time.sleep(PAUSE)
        target.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        source.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        took = time.monotonic() - begun
    for srv in cluster.masters():  # as redis-cli does: every master learns it at once
        if srv.port not in (src.port, dst.port):
            with cluster.node(srv) as other:
                other.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    return took, moved


def _settled(pool: Pool) -> bool:
    try:
        status = pool.status()
    except PoolError:
        return False
    return (status.size, status.idle, status.busy) == (WORKERS, WORKERS, 0)


def _overlaps(log: str) -> list[str]:
    running: dict[str, tuple[str, str]] = {}
    found = []
    for worker, job, token, what in JOB.findall(log):
        if what == "started":
            if worker in running:
                found.append(f"{worker}: {job} (token {token}) while {running[worker]}")
            running[worker] = (job, token)
        elif running.get(worker) == (job, token):
            running.pop(worker)
    return found


def _longest_outage(load: Load, since: float) -> float:
    """The longest time from an error to the next good cycle, after ``since``."""
    longest = 0.0
    for at, _ in load.errors:
        if at > since:
            after = [end for _, end in load.ok if end > at]
            longest = max(longest, (min(after) if after else time.monotonic()) - at)
    return longest


def test_a_busy_pool_migrated_live_and_back_loses_and_doubles_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.wait_healthy()
    slot = cluster.slot_of(PoolKeys(POOL).prefix)
    home = cluster.server_of_slot(slot).port
    away = next(s.port for s in cluster.masters() if s.port != home)
    main = WorkerMain(cluster.url, POOL, tmp_path / "worker_main.log",
                      ("--workers", str(WORKERS), *FAST))  # fmt: skip
    timings = []
    try:
        with Pool(POOL, url=cluster.url) as admin:
            wait_for(lambda: _settled(admin), timeout=30, message="the workers idle")
            load = Load(cluster.url).start()
            try:
                started = time.monotonic()
                wait_for(lambda: load.ok_since(0) >= 20, timeout=30, message="jobs before")
                for to in (away, home):
                    before = time.monotonic()
                    took, keys = migrate(cluster, slot, to)
                    assert cluster.server_of_slot(slot).port == to
                    wait_for(lambda after=before + took: load.ok_since(after) >= 10,
                             timeout=30, message="jobs after the migration")  # fmt: skip
                    timings.append((took, keys))
            finally:
                load.finish()
            wait_for(lambda: _settled(admin), timeout=20, message="every worker idle again")
            idle = [w.decode() for w in admin.client.lrange(admin.keys.idle, 0, -1)]
        assert main.stop() == 0
    finally:
        main.kill_everything()
    log = main.log()
    ran = {int(t) for _, _, t, what in JOB.findall(log) if what == "started"}
    outage = _longest_outage(load, started)
    print(
        f"\n{cluster.kind} slot migration under load: "
        + "; ".join(f"{k} keys moved in {t * 1000:.0f} ms" for t, k in timings)
        + f"; {len(load.ok)} good cycles, errors {sorted({e for _, e in load.errors})} "
        f"x{len(load.errors)}, longest outage {outage:.2f} s"
    )
    print("\n".join(sorted(load.messages)))
    assert len(idle) == len(set(idle)) == WORKERS, idle  # none lost, none doubled
    assert not load.wrong, load.wrong
    assert not _overlaps(log), _overlaps(log)
    assert "died" not in log, "a worker process died in the migration"
    assert ran <= load.held, f"jobs ran under tokens no client held: {ran - load.held}"
    assert {e for _, e in load.errors} <= {"PoolUnavailable"}, load.errors
    assert outage < 5.0
