"""A live slot migration of a busy pool: CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE of
its keys in batches, SETSLOT NODE, while clients run doubler jobs on worker_main.

No worker is lost or doubled, no stale job runs, every result is right, and clients
see nothing worse than PoolUnavailable, for a bounded time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_load import JobLoad, job_overlaps, jobs_started
from clusters import Cluster, cluster_of
from helpers import WorkerMain, wait_for

from redispool import Pool, PoolError
from redispool.keys import PoolKeys

POOL = "moving"
WORKERS = 2
CLIENTS = 3
BATCH = 2  # keys per MIGRATE (redis-cli --cluster reshard sends 10): a longer window
PAUSE = 0.01  # seconds between two MIGRATEs: the clients work meanwhile


@pytest.fixture(scope="module", params=["redis", "valkey"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    yield from cluster_of(request.param)


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


def test_a_busy_pool_migrated_live_and_back_loses_and_doubles_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.wait_healthy()
    slot = cluster.slot_of(PoolKeys(POOL).prefix)
    home = cluster.server_of_slot(slot).port
    away = next(s.port for s in cluster.masters() if s.port != home)
    # While its slot migrates no script of the pool runs, heartbeats included: a
    # heartbeat TTL (default 5 s) shorter than the migration would bury the workers.
    args = ("--workers", str(WORKERS), "--heartbeat-ttl", "3", "--sweep-interval", "0.2")
    main = WorkerMain(cluster.url, POOL, tmp_path / "worker_main.log", args)
    timings = []
    try:
        with Pool(POOL, url=cluster.url) as admin:
            wait_for(lambda: _settled(admin), timeout=30, message="the workers idle")
            load = JobLoad(cluster.url, {POOL: CLIENTS}).start()
            try:
                started = time.monotonic()
                wait_for(lambda: load.ok_since(POOL, 0) >= 20, timeout=30, message="jobs before")
                for to in (away, home):
                    before = time.monotonic()
                    took, keys = migrate(cluster, slot, to)
                    assert cluster.server_of_slot(slot).port == to
                    wait_for(lambda after=before + took: load.ok_since(POOL, after) >= 10,
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
    ran = jobs_started(log)
    outage = load.longest_outage(POOL, started)
    errors = load.errors[POOL]
    print(
        f"\n{cluster.kind} slot migration under load: "
        + "; ".join(f"{k} keys moved in {t * 1000:.0f} ms" for t, k in timings)
        + f"; {len(load.ended[POOL])} good cycles, errors {sorted({e for _, e in errors})} "
        f"x{len(errors)}, longest outage {outage:.2f} s"
    )
    print("\n".join(sorted(load.messages)))
    assert len(idle) == len(set(idle)) == WORKERS, idle  # none lost, none doubled
    assert not load.wrong, load.wrong
    assert not job_overlaps(log), job_overlaps(log)
    assert "died" not in log, "a worker process died in the migration"
    assert ran <= load.held, f"jobs ran under tokens no client held: {ran - load.held}"
    assert {e for _, e in errors} <= {"PoolUnavailable"}, errors
    assert outage < 5.0
