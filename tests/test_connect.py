"""URLs, connection accounting through outages, replica acknowledgement, fork safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner
from helpers import WORKER_MAIN, StartServer, wait_for

from redispool import LeaseLost, Pool, PoolUnavailable
from redispool.cli import cli
from redispool.connect import SentinelURL, client_from_url, close_client, validate_url

MakePool = Callable[..., Pool]
OUTAGE_CALLS = 150


# -- URLs ----------------------------------------------------------------------------------


def test_a_sentinel_url_names_its_sentinels_service_db_and_credentials() -> None:
    url = "redis+sentinel://app:s%40cret@127.0.0.1:26379,[::1]:26380,sentinel-3/cache/2"
    parsed = SentinelURL.parse(url + "?sentinel_password=other")
    assert parsed.sentinels == (("127.0.0.1", 26379), ("::1", 26380), ("sentinel-3", 26379))
    assert (parsed.service, parsed.db) == ("cache", 2)
    assert (parsed.username, parsed.password) == ("app", "s@cret")
    assert parsed.sentinel_password == "other"
    assert SentinelURL.parse("redis+sentinel://h:1/cache").db == 0


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+sentinel://h:1", "must name the Sentinel service"),
        ("redis+sentinel://h:1/a/b/c", "must name the Sentinel service"),
        ("redis+sentinel://h:99999/mm", "bad sentinel address"),
        ("redis+sentinel://h:1,/mm", "bad sentinel address"),
        ("redis+sentinel://h:1/mm/x", "bad database number"),
        ("redis+sentinel://h:1/mm?password=x", "unknown parameter"),
        ("http://h:1/0", "unknown URL scheme"),
        ("localhost:6379", "url must look like"),
        ("redis://", "names no host"),
    ],
)
def test_a_bad_url_is_refused_before_anything_connects(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        validate_url(url)
    with pytest.raises(ValueError, match=complaint):
        Pool("p", url=url)


def test_the_password_of_a_sentinel_url_is_not_shown_in_errors() -> None:
    with pytest.raises(ValueError) as info:
        validate_url("redis+sentinel://app:topsecret@h:1/mm/x")
    assert "topsecret" not in str(info.value)


def test_worker_main_and_the_cli_refuse_a_bad_url_with_a_usage_error() -> None:
    bad = "redis+sentinel://h:1"
    done = subprocess.run(
        [sys.executable, str(WORKER_MAIN), "--url", bad, "--pool", "p"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2 and "must name the Sentinel service" in done.stderr
    result = CliRunner().invoke(cli, ["-u", "redis+sentinel://h:1", "status", "p"])
    assert result.exit_code == 2 and "must name the Sentinel service" in result.output


def test_replica_settings_are_validated() -> None:
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="min_replicas"):
            Pool("p", url="redis://127.0.0.1:1/0", min_replicas=bad)  # type: ignore[arg-type]
    for bad_timeout in (0, -1, 6, float("nan"), "1"):
        with pytest.raises(ValueError, match="replica_timeout"):
            Pool("p", url="redis://127.0.0.1:1/0", min_replicas=1, replica_timeout=bad_timeout)  # type: ignore[arg-type]
    result = CliRunner().invoke(cli, ["--min-replicas", "-1", "status", "p"])
    assert result.exit_code == 2


# -- connections through an outage ---------------------------------------------------------


def test_a_pool_works_again_after_many_failed_calls_and_holds_few_connections(
    fresh_server: StartServer,
) -> None:
    srv = fresh_server()
    with Pool("p", url=srv.url) as pool:
        pool.add_worker("w1")
        srv.kill()
        for _ in range(OUTAGE_CALLS):
            with pytest.raises(PoolUnavailable):
                pool.status()
        srv.restart()
        pool.add_worker("w1")  # no persistence: the pool is new
        assert pool.status().idle == 1
        pool.checkout(block=False).checkin()
        assert len(pool.sender.wire) <= 2, "the wire kept connections it does not use"
        assert pool.client.connection_pool._created_connections <= 2  # type: ignore[attr-defined]


# -- replica acknowledgement ---------------------------------------------------------------


def test_with_a_replica_checkout_renew_and_checkin_are_acknowledged(
    fresh_server: StartServer,
) -> None:
    master = fresh_server()
    replica = fresh_server(extra_args=("--replicaof", "127.0.0.1", str(master.port)))
    client = client_from_url(master.url)
    wait_for(lambda: client.wait(1, 100) == 1, timeout=10, message="the replica to sync")
    with Pool("p", redis=client, min_replicas=1) as pool:
        pool.add_worker("w1")
        lease = pool.checkout(block=False)
        lease.renew()
        assert lease.checkin() is True
        copy = redis.Redis.from_url(replica.url)
        assert copy.lrange(pool.keys.idle, 0, -1) == [b"w1"]  # the checkin is on the replica
        copy.close()
    close_client(client)


def test_a_checkout_no_replica_acknowledged_is_undone(make_pool: MakePool, redis_url: str) -> None:
    make_pool(workers=1)
    with Pool("p", url=redis_url, min_replicas=1, replica_timeout=0.1) as pool:
        started = time.monotonic()
        with pytest.raises(PoolUnavailable, match="0 of 1 replicas acknowledged"):
            pool.checkout(block=False)
        assert time.monotonic() - started < 2
        status = pool.status()
        assert (status.idle, status.busy) == (1, 0), "the unacknowledged checkout was not undone"


def test_an_unacknowledged_renew_and_checkin_raise_and_say_so(
    make_pool: MakePool, redis_url: str
) -> None:
    plain = make_pool(workers=1)
    lease = plain.checkout(block=False, auto_renew=False)
    with Pool("p", url=redis_url, min_replicas=1, replica_timeout=0.05) as pool:
        lease.pool = pool
        deadline = lease.deadline
        with pytest.raises(PoolUnavailable, match="not extended"):
            pool.renew(lease)
        assert lease.deadline == deadline
        with pytest.raises(PoolUnavailable, match="checkin may be tried again"):
            pool.checkin(lease)
        assert plain.status().idle == 1  # the master did return it
        assert pool.checkin(lease) is False  # and says so when asked again


# -- fork ----------------------------------------------------------------------------------


def _in_child(body: Callable[[], int], timeout: float = 10.0) -> int:
    """Run ``body`` in a forked child; its exit code (killed by pid if it hangs)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 99
        try:
            code = body()
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child hung")


def test_a_child_forked_while_the_renewer_holds_its_lock_never_hangs_nor_touches_leases(
    make_pool: MakePool,
) -> None:
    pool = make_pool(workers=2, lease_ttl=2)
    lease = pool.checkout()  # renewed by the renewer thread
    held, release = threading.Event(), threading.Event()

    def hold_renewer_lock() -> None:
        with pool.renewer._cond, pool.sender.wire._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_renewer_lock)
    holder.start()
    held.wait(5)

    def child() -> int:
        if lease.checkin() is not False:  # the parent's lease: not the child's to return
            return 1
        try:
            lease.renew()
            return 2
        except LeaseLost:
            pass
        own = pool.checkout(block=False)  # the child's own leases work
        return 0 if own.checkin() and len(pool.renewer) == 0 else 3

    try:
        assert _in_child(child) == 0
    finally:
        release.set()
        holder.join(5)
    assert lease.active and not lease.lost.is_set()
    lease.renew()  # still the parent's, still held
    assert pool.status().busy == 1
    assert lease.checkin() is True


def test_a_connection_that_meets_a_demoted_master_is_dropped_not_reused(
    fresh_server: StartServer,
) -> None:
    srv = fresh_server()
    other = fresh_server()
    with Pool("p", url=srv.url) as pool:
        pool.add_worker("w1")
        pool.checkout(block=False).checkin()
        admin = redis.Redis.from_url(srv.url)
        admin.replicaof("127.0.0.1", other.port)  # demoted: now a replica of an empty server
        with pytest.raises(PoolUnavailable, match="not the master"):
            pool.checkout(block=False)
        assert len(pool.sender.wire) == 0, "a connection to the replica was kept"
        admin.replicaof("NO", "ONE")
        admin.close()
        pool.add_worker("w1")  # the replica synced the empty master's data
        pool.checkout(block=False).checkin()


def test_the_cli_waits_for_replicas_when_asked_and_undoes_an_unacknowledged_checkout(
    make_pool: MakePool, redis_url: str
) -> None:
    pool = make_pool(workers=1)
    args = ["-u", redis_url, "--min-replicas", "1", "--replica-timeout", "0.05", "checkout", "p"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "0 of 1 replicas acknowledged" in result.output
    assert pool.status().idle == 1
    result = CliRunner().invoke(cli, ["-u", redis_url, "--min-replicas", "0", "checkout", "p"])
    assert result.exit_code == 0, result.output


def test_the_asyncio_client_refuses_a_cluster_url_clearly() -> None:
    from redispool.aio.connect import client_from_url as aio_client_from_url

    with pytest.raises(ValueError, match="asyncio Pool does not run on a Redis Cluster"):
        aio_client_from_url("redis+cluster://user:secret@127.0.0.1:7000,127.0.0.1:7001")
    try:
        aio_client_from_url("redis+cluster://user:secret@127.0.0.1:7000")
    except ValueError as exc:
        assert "secret" not in str(exc)
