"""Fencing survives a rollback of the pool's data: a stale holder can never act again.

A holder A checks out the pool's one worker; then the pool's data goes back to
a moment before that checkout: a snapshot restored (SAVE, SIGKILL, restart from
the RDB), an AOF ``everysec`` whose unsynced tail is lost when the server is
SIGKILLed (the file is cut back to its size before A's checkout, which is what
an OS crash does to the second that was not fsynced), or the token counter set
back by hand. A new holder B then gets the same worker. In each case A's
renew raises LeaseLost, its checkin returns False, its job is refused by the
worker's fence and never runs, and B is untouched. A last case forces B's lease
to carry A's very token (a broken clock): the nonce alone still fences A.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from helpers import FAST, StartServer, WorkerMain, wait_for
from rq.job import JobStatus

from redispool import Lease, LeaseLost, Pool, rqkeys
from redispool.doubler import compute
from redispool.jobs import NONCE_META, TOKEN_META
from redispool.server import EmbeddedServer

POOL = "rb"
TTL = 5.0


@pytest.fixture
def worker_main(tmp_path: Path) -> Iterator[Callable[[str], WorkerMain]]:
    started: list[WorkerMain] = []

    def start(url: str) -> WorkerMain:
        main = WorkerMain(url, POOL, tmp_path / "worker_main.log", ("--workers", "1", *FAST))
        started.append(main)
        with Pool(POOL, url) as pool:
            wait_for(lambda: pool.status().idle == 1, timeout=20, message="the worker idle")
        return main

    try:
        yield start
    finally:
        for main in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                main.stop(timeout=10)
            main.kill_everything()


def send_stale_job(url: str, lease: Lease, n: int, main: WorkerMain) -> None:
    """Send a job under ``lease``'s token and nonce straight to its worker's queue (as a
    client that does not know its lease ended would) and assert the fence refused it."""
    client = redis.Redis.from_url(url)
    try:
        queue = rqkeys.classes(lease.pool.name).queue_for(lease.worker_id, client)
        job = queue.enqueue_call(
            "redispool.doubler.double", args=[n], timeout=10, ttl=10, result_ttl=300,
            failure_ttl=300, meta={TOKEN_META: str(lease.token), NONCE_META: lease.nonce},
        )  # fmt: skip
        done = (JobStatus.FAILED, JobStatus.FINISHED)
        wait_for(lambda: job.get_status(refresh=True) in done, timeout=15, message="the job")
        assert job.get_status(refresh=True) == JobStatus.FAILED
    finally:
        client.close()
    log = main.log()
    assert f"refused job {job.id}" in log
    assert f"Doubling {n}" not in log, "the stale holder's job ran"


def aof_tail(server: EmbeddedServer) -> Path:
    """The AOF file that takes the newest writes (Redis 7 multi-part AOF)."""
    files = sorted((Path(server._dir or "") / "appendonlydir").glob("*.incr.aof"),
                   key=lambda p: int(p.name.split(".")[-3]))  # fmt: skip
    assert files, "no incremental AOF file"
    return files[-1]


def roll_back(how: str, server: EmbeddedServer, r: redis.Redis) -> Callable[[], None]:
    """Note the pool's state now; the returned function takes the pool back to it."""
    if how == "snapshot":
        r.save()

        def restore() -> None:
            server.kill()
            server.start()

        return restore
    if how == "aof":
        # Writes the server has answered are in the file once its AOF buffer is empty
        # (a write can be postponed while a background fsync runs).
        def flushed() -> bool:
            info = r.info("persistence")
            return int(info["aof_buffer_length"]) == 0 and not int(info["aof_pending_bio_fsync"])

        wait_for(flushed, timeout=5, message="the AOF written")
        tail = aof_tail(server)
        size = tail.stat().st_size

        def lose_tail() -> None:
            server.kill()
            with open(tail, "r+b") as f:
                f.truncate(size)
            server.start()

        return lose_tail
    counter = r.get(f"redispool:{{{POOL}}}:token")
    assert counter is not None

    def set_back() -> None:
        lease_key = f"redispool:{{{POOL}}}:lease:"
        wait_for(lambda: not any(r.scan_iter(match=lease_key.replace("{", "[{]") + "*")),
                 timeout=10, message="A's lease to expire")  # fmt: skip
        r.set(f"redispool:{{{POOL}}}:token", counter)

    return set_back


CASES = ("snapshot", "aof", "by hand", "token collision")


@pytest.mark.parametrize("how", CASES)
def test_after_a_rollback_the_stale_holder_can_never_act_and_the_new_one_is_untouched(
    how: str, fresh_server: StartServer, worker_main: Callable[[str], WorkerMain]
) -> None:
    aof = how == "aof"
    server = fresh_server(appendonly=aof, extra_args=("--appendfsync", "everysec") if aof else ())
    r = redis.Redis.from_url(server.url)
    main = worker_main(server.url)
    ttl = TTL if how in ("snapshot", "aof") else 0.3  # by hand: A's lease expires first
    with Pool(POOL, server.url, lease_ttl=ttl) as pool_a, Pool(POOL, server.url) as pool_b:
        pool_a.checkout(block=False, auto_renew=False).checkin()  # the counter exists
        rollback = roll_back(how, server, r)
        stale = pool_a.checkout(block=False, auto_renew=False)
        rollback()
        counter = r.get(pool_a.keys.token)
        assert counter is not None and int(counter) < stale.token, "nothing was rolled back"
        fresh = pool_b.checkout(timeout=15, auto_renew=False)
        assert fresh.worker_id == stale.worker_id
        assert fresh.token > stale.token, "a token repeated after the rollback"
        if how == "token collision":  # as if the clock had failed: B's lease gets A's token
            key = pool_b.keys.lease(fresh.worker_id)
            value = r.get(key)
            assert value is not None
            r.set(key, f"{stale.token}|{value.decode().split('|', 1)[1]}", keepttl=True)
            fresh.token = stale.token
        print(f"\n[rollback] {how} [{server.kind}]: A's token {stale.token}, counter after "
              f"the rollback {int(counter)}, B's token {fresh.token} on {fresh.worker_id}")
        send_stale_job(server.url, stale, 7, main)
        with pytest.raises(LeaseLost):
            stale.renew()
        assert stale.checkin() is False
        fresh.renew()
        assert compute(fresh, 8) == 16
        assert fresh.checkin() is True
    r.close()
