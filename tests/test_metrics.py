"""Prometheus metrics: scraped over HTTP, from a Metrics object and from `redispool reaper`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families

from redispool import CheckoutTimeout, JobFailed, Pool, PoolFull
from redispool.metrics import Metrics, start_metrics

ROOT = Path(__file__).resolve().parent.parent


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at http://127.0.0.1:port/metrics, by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        body = reply.read().decode()
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@pytest.fixture
def toy(redis_url: str) -> Iterator[Pool]:
    pool = Pool("toy", redis_url)
    for n in (1, 2):
        pool.add_worker(f"w{n}")
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def metrics(r: redis.Redis) -> Iterator[Metrics]:
    m = Metrics(r, ["toy"])
    m.serve(0, "127.0.0.1")
    try:
        yield m
    finally:
        m.stop()


def test_pool_numbers_are_read_from_redis_at_each_scrape(toy: Pool, metrics: Metrics) -> None:
    assert metrics.port is not None
    first = scrape(metrics.port)
    assert first[("redispool_pool_size", (("pool", "toy"),))] == 2
    assert first[("redispool_pool_idle", (("pool", "toy"),))] == 2
    assert first[("redispool_up", ())] == 1
    lease = toy.checkout(auto_renew=False)
    second = scrape(metrics.port)
    assert second[("redispool_pool_busy", (("pool", "toy"),))] == 1
    assert second[("redispool_pool_waiting", (("pool", "toy"),))] == 0
    toy.checkin(lease)


def test_checkouts_are_counted_by_outcome_and_timed(toy: Pool, metrics: Metrics) -> None:
    assert metrics.port is not None
    leases = [metrics.checkout(toy, block=False) for _ in range(2)]
    with pytest.raises(PoolFull):
        metrics.checkout(toy, block=False)
    with pytest.raises(CheckoutTimeout):
        metrics.checkout(toy, timeout=0.05)
    got = scrape(metrics.port)
    pool = ("pool", "toy")
    assert got[("redispool_checkouts_total", (("outcome", "ok"), pool))] == 2
    assert got[("redispool_checkouts_total", (("outcome", "full"), pool))] == 1
    assert got[("redispool_checkouts_total", (("outcome", "timeout"), pool))] == 1
    assert got[("redispool_checkout_timeouts_total", (pool,))] == 1
    assert got[("redispool_checkout_wait_seconds_count", (pool,))] == 2
    for lease in leases:
        toy.checkin(lease)


def test_a_scrape_while_redis_is_unreachable_reports_up_0() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=1)
    metrics = start_metrics(0, "toy", client=client, addr="127.0.0.1")
    try:
        assert metrics.port is not None
        assert scrape(metrics.port)[("redispool_up", ())] == 0
    finally:
        metrics.stop()
        client.close()


def test_start_metrics_wants_a_client_or_a_url() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        start_metrics(0)


def test_reaper_command_serves_pool_numbers_and_leases_it_reclaimed(
    redis_url: str, toy: Pool
) -> None:
    toy.configure(lease_ttl=0.2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "redispool.cli", "-u", redis_url, "reaper", "toy",
         "--metrics-port", "0", "--metrics-addr", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        address = re.compile(r"metrics on http://[\d.]+:(\d+)/")
        line = wait_for(lambda: address.search(proc.stderr.readline()), timeout=10,
                        message="the metrics address")
        port = int(line.group(1))  # type: ignore[attr-defined]
        assert scrape(port)[("redispool_pool_size", (("pool", "toy"),))] == 2
        toy.checkout(auto_renew=False)  # nobody renews it: it ends after 0.2 s
        reclaimed = ("redispool_leases_reclaimed_total", (("how", "event"),))
        by_sweep = ("redispool_leases_reclaimed_total", (("how", "sweep"),))
        wait_for(lambda: scrape(port)[reclaimed] + scrape(port)[by_sweep] == 1, timeout=5,
                 message="the reclaimed lease counted")
        assert scrape(port)[("redispool_pool_idle", (("pool", "toy"),))] == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=5)


def test_worker_main_serves_pool_numbers_and_jobs_per_worker(redis_url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "worker_main.py"), "--url", redis_url, "--pool", "dbl",
         "--workers", "2", "--metrics-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    pool = Pool("dbl", redis_url)
    try:
        assert proc.stderr is not None
        address = re.compile(r"serving metrics on [\d.]+:(\d+)")
        line = wait_for(lambda: address.search(proc.stderr.readline()), timeout=10,
                        message="the metrics address in worker_main's log")
        port = int(line.group(1))  # type: ignore[attr-defined]
        idle = ("redispool_pool_idle", (("pool", "dbl"),))
        wait_for(lambda: scrape(port).get(idle) == 2, timeout=15, message="2 idle workers")
        from redispool.doubler import compute

        with pool.lease(timeout=5) as lease:
            assert compute(lease, 21) == 42
            with pytest.raises(JobFailed):
                lease.run("redispool.doubler.double", "not a number")
            worker = lease.worker_id
        got = scrape(port)
        assert got[("redispool_worker_jobs", (("pool", "dbl"), ("worker", worker)))] == 2
        assert got[("redispool_jobs_total", (("outcome", "started"), ("pool", "dbl")))] == 2
        # the worker counts a failure after RQ recorded it, which is what the client saw
        failed = ("redispool_jobs_total", (("outcome", "failed"), ("pool", "dbl")))
        wait_for(lambda: scrape(port).get(failed) == 1, timeout=5, message="the failure counted")
        victim = next(w for w in pool.workers() if w.id != worker)
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)  # the supervisor replaces it and counts that
        restarts = ("redispool_worker_restarts_total", (("pool", "dbl"),))
        wait_for(lambda: scrape(port).get(restarts) == 1, timeout=10, message="the restart")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
        assert proc.returncode == 0
    finally:
        pool.close()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
