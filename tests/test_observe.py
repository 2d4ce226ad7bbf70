"""What the running processes write to the history and the event log, and that
writing it never costs a sweep or a job (a user without the rights, Redis gone)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from helpers import StartServer, StartWorkerMain, wait_for

from redispool import Lease, LeaseLost, Pool, Reaper, events, observe, rqkeys
from redispool.acl import acl_rules
from redispool.doubler import compute
from redispool.history import History
from redispool.jobs import NONCE_META, TOKEN_META


def _kinds(r: redis.Redis, pool: str, worker: str) -> list[str]:
    return [e.kind for e in events.read(r, pool) if e.worker == worker]


def test_a_stale_job_refused_by_its_worker_is_an_event_and_counted(
    start_worker_main: StartWorkerMain, redis_url: str, r: redis.Redis
) -> None:
    start_worker_main(workers=1)
    with Pool("doublers", redis_url, lease_ttl=0.3) as paused, Pool("doublers", redis_url) as pool:
        stale = paused.checkout(timeout=5, auto_renew=False)
        time.sleep(0.5)
        with pool.lease(timeout=5) as fresh:
            with pytest.raises(LeaseLost):
                compute(stale, 7)  # refused at its enqueue: never written
            # The same job past the enqueue script (RQ's own enqueue, as a client that
            # does not check the lease would): the worker refuses it.
            queue = rqkeys.classes("doublers").queue_for(stale.worker_id, pool.client)
            job = queue.enqueue("redispool.doubler.double", 7,
                                meta={TOKEN_META: str(stale.token), NONCE_META: stale.nonce})
            result = job.latest_result(timeout=10)
            assert result is not None and result.type == result.Type.FAILED
            assert compute(fresh, 8) == 16
    wait_for(lambda: "refused" in _kinds(r, "doublers", stale.worker_id), timeout=5,
             message="the refusal in the event log")  # fmt: skip
    (refusal,) = [e for e in events.read(r, "doublers") if e.kind == "refused"]
    assert str(stale.token) in refusal.detail
    assert History(r, "doublers").read(1)[0].counts["refused"] == 1


def test_a_job_outliving_its_lease_is_stopped_and_logged(
    start_worker_main: StartWorkerMain, redis_url: str, r: redis.Redis
) -> None:
    start_worker_main("--function", "time.sleep", "--stop-grace", "0.2", workers=1)
    with Pool("doublers", redis_url, lease_ttl=0.5) as pool:
        lease = pool.checkout(timeout=5, auto_renew=False)
        with pytest.raises(LeaseLost):
            lease.run("time.sleep", 5, timeout=30)
    wait_for(lambda: "stopped" in _kinds(r, "doublers", lease.worker_id), timeout=10,
             message="the stop in the event log")  # fmt: skip
    assert History(r, "doublers").read(1)[0].counts["stopped"] == 1


def test_a_killed_worker_is_an_event_of_its_death_and_its_burial(
    start_worker_main: StartWorkerMain, redis_url: str, r: redis.Redis
) -> None:
    import os
    import signal

    start_worker_main(workers=1)
    with Pool("doublers", redis_url) as pool:
        (worker,) = pool.workers()
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        wait_for(lambda: {"died", "buried"} <= set(_kinds(r, "doublers", worker.id)),
                 timeout=15, message="death and burial in the event log")  # fmt: skip
    counts = History(r, "doublers").read(2)
    assert sum(m.counts["deaths"] for m in counts) == 1
    assert sum(m.counts["burials"] for m in counts) == 1  # once: by the replacement or the Reaper


def test_a_user_without_rights_to_the_log_still_sweeps(
    make_pool: Callable[..., Pool], redis_url: str, r: redis.Redis
) -> None:
    pool = make_pool("toy", workers=2, lease_ttl=0.1)
    pool.checkout(auto_renew=False)  # loads the library as the admin, and expires
    rules = acl_rules(["toy"])  # a pool client's rights: its keys, no XADD
    assert "+xadd" not in rules
    r.execute_command("ACL", "SETUSER", "sweeper", "on", ">sweeper-pw", *rules)
    try:
        host_port = redis_url.split("://", 1)[1]
        user = redis.Redis.from_url(f"redis://sweeper:sweeper-pw@{host_port}")
        time.sleep(0.2)
        reaper = Reaper(user, ["toy"])
        assert reaper.sweep() == 1  # every write of the log refused: the sweep is whole
        limited = Pool("toy", redis=user)
        observe.refused(limited, "w1", "1", 2)
        observe.checkout(limited, "ok", 0.01)
        observe.flush()
        limited.close()
        user.close()
    finally:
        r.execute_command("ACL", "DELUSER", "sweeper")
    assert events.read(r, "toy") == [] and pool.status().idle == 2


def test_an_unreachable_redis_costs_the_hooks_nothing(make_pool: Callable[..., Pool]) -> None:
    from redispool.server import free_port

    gone = Pool("toy", url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        observe.swept(gone, 1, 1, "w1")
        observe.died(gone, "w1", 1, -9)
        assert events.record(gone.client, "toy", "buried") is False
    finally:
        gone.close()


def test_a_reaper_that_finds_redis_again_logs_it(fresh_server: StartServer) -> None:
    server = fresh_server()
    client = redis.Redis.from_url(server.url)
    pool = Pool("toy", redis=client)
    pool.add_worker("w1")
    try:
        with Reaper(client, ["toy"], sweep_interval=0.05) as reaper:
            server.restart()  # without persistence: the pool is gone, the Reaper comes back
            pool.add_worker("w1")
            wait_for(lambda: reaper.listening.is_set()
                     and "reconnected" in [e.kind for e in events.read(client, "toy")],
                     timeout=20, message="the reconnection in the event log")  # fmt: skip
        (event,) = [e for e in events.read(client, "toy") if e.kind == "reconnected"]
        assert "Redis back after" in event.detail
    finally:
        pool.close()
        client.close()


def test_counted_checkouts_reach_the_history_without_a_command_per_checkout(
    make_pool: Callable[..., Pool], r: redis.Redis
) -> None:
    from redispool import CheckoutTimeout
    from redispool.metrics import Metrics

    pool = make_pool("toy", workers=1)
    metrics = Metrics(r, ["toy"])

    def commands(checkout: Callable[[], Lease]) -> int:
        """Commands Redis processed for one checkout (its INFO call taken off)."""
        before = int(r.info("stats")["total_commands_processed"])
        lease = checkout()
        sent = int(r.info("stats")["total_commands_processed"]) - before - 1
        pool.checkin(lease)
        return sent

    plain = [commands(lambda: pool.checkout(timeout=1, auto_renew=False)) for _ in range(3)]
    counted = [commands(lambda: metrics.checkout(pool, timeout=1, auto_renew=False))
               for _ in range(3)]  # fmt: skip
    assert counted == plain, (counted, plain)
    held = metrics.checkout(pool, timeout=1, auto_renew=False)
    with pytest.raises(CheckoutTimeout):
        metrics.checkout(pool, timeout=0.05)
    assert History(r, "toy").read(1)[0].counts["checkouts"] == 0  # buffered, not yet written
    metrics.stop()  # writes what it counted
    pool.checkin(held)
    (now,) = History(r, "toy").read(1)
    assert (now.counts["checkouts"], now.counts["timeouts"], now.waits) == (4, 1, 4)
    assert now.wait_p99 is not None and now.wait_p99 <= 0.25
