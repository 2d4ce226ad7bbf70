"""Prometheus metrics of a redispool process (``prometheus-client``).

Two kinds of numbers:

* What the pools hold, read from Redis at every scrape, so every host shows
  the same figures and nothing goes stale: ``redispool_pool_size``,
  ``_idle``, ``_busy``, ``_waiting``, ``_draining``, ``_expired`` (one gauge
  per number ``Pool.status()`` reports, labelled ``pool``),
  ``redispool_worker_jobs{pool,worker}``,
  ``redispool_jobs_total{pool,outcome=started|failed}`` (the workers count
  them in Redis), and ``redispool_up`` (0 when the last scrape could not
  read Redis).
* What this process did, as counters it keeps itself:
  ``redispool_checkouts_total{pool,outcome=ok|full|timeout}``,
  ``redispool_checkout_wait_seconds{pool}`` (histogram),
  ``redispool_checkout_timeouts_total{pool}``,
  ``redispool_leases_reclaimed_total{how=event|sweep}`` (read from the
  process's :class:`~redispool.Reaper`), ``redispool_worker_restarts_total{pool}``.

worker_main passes its Metrics to the Supervisor, which reports its Reaper
and counts every worker it replaces.
"""

from __future__ import annotations

import dataclasses
import logging
import time as mod_time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .connect import client_from_url
from .discovery import find_pools
from .errors import CheckoutTimeout, PoolError, PoolFull
from .keys import validate_pool_name
from .pool import Pool

if TYPE_CHECKING:
    from .lease import Lease
    from .reaper import Reaper

__all__ = ["Metrics", "PoolCollector", "start_metrics"]

log = logging.getLogger("redispool.metrics")

WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class PoolCollector(Collector):
    """Reads the pools' numbers (and a Reaper's counts) from Redis at each scrape."""

    def __init__(self, client: redis.Redis, pools: Iterable[str] = (),
                 reaper: Reaper | None = None) -> None:
        self.client = client
        self.names = [validate_pool_name(p) for p in pools]
        self.reaper = reaper
        self._pools: dict[str, Pool] = {}

    def _pool(self, name: str) -> Pool:
        if name not in self._pools:
            self._pools[name] = Pool(name, redis=self.client)
        return self._pools[name]

    def _job_totals(self, pool: Pool) -> tuple[int, int]:
        """Jobs started and failed on the pool's workers, as the workers count them in Redis."""
        with pool.redis_errors("metrics"):
            started = pool.client.hvals(pool.keys.jobs)
            failed = pool.client.hvals(pool.keys.jobs_failed)
        return sum(int(v) for v in started), sum(int(v) for v in failed)

    def collect(self) -> Iterator[Metric]:
        gauges: dict[str, GaugeMetricFamily] = {}
        jobs = GaugeMetricFamily("redispool_worker_jobs", "Jobs each registered worker started",
                                 labels=["pool", "worker"])
        totals = CounterMetricFamily("redispool_jobs", "Jobs the pool's workers started, failed",
                                     labels=["pool", "outcome"])
        up = 1
        try:
            for name in self.names or find_pools(self.client):
                pool = self._pool(name)
                for field, value in dataclasses.asdict(pool.status()).items():
                    if field not in gauges:
                        gauges[field] = GaugeMetricFamily(
                            f"redispool_pool_{field}", f"Workers of the pool: {field}",
                            labels=["pool"],
                        )
                    gauges[field].add_metric([name], value)
                for worker in pool.workers():
                    jobs.add_metric([name, worker.id], getattr(worker, "jobs", 0))
                started, failed = self._job_totals(pool)
                totals.add_metric([name, "started"], started)
                totals.add_metric([name, "failed"], failed)
        except (PoolError, redis.RedisError) as exc:
            log.warning("metrics scrape could not read the pools: %s", exc)
            up = 0
        yield from gauges.values()
        yield jobs
        yield totals
        yield GaugeMetricFamily("redispool_up", "1 if the last scrape read Redis", value=up)
        if self.reaper is not None:
            reclaimed = CounterMetricFamily(
                "redispool_leases_reclaimed", "Expired leases whose workers were returned",
                labels=["how"],
            )
            reclaimed.add_metric(["event"], self.reaper.by_event)
            reclaimed.add_metric(["sweep"], self.reaper.by_sweep)
            yield reclaimed

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()


class Metrics:
    """The metrics of one process, in a registry of their own."""

    def __init__(self, client: redis.Redis, pools: Iterable[str] = (), *,
                 reaper: Reaper | None = None) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.checkouts = Counter("redispool_checkouts", "Checkouts by outcome",
                                 ["pool", "outcome"], registry=reg)
        self.checkout_wait = Histogram("redispool_checkout_wait_seconds",
                                       "Time from asking for a worker to getting one",
                                       ["pool"], buckets=WAIT_BUCKETS, registry=reg)
        self.checkout_timeouts = Counter("redispool_checkout_timeouts",
                                         "Blocking checkouts that got no worker in time",
                                         ["pool"], registry=reg)
        self.worker_restarts = Counter("redispool_worker_restarts",
                                       "Worker processes replaced after they died",
                                       ["pool"], registry=reg)
        self.collector = PoolCollector(client, pools, reaper)
        reg.register(self.collector)
        self._server: Any = None
        self.port: int | None = None

    def watch_reaper(self, reaper: Reaper) -> None:
        """Report ``reaper``'s counts as ``redispool_leases_reclaimed_total``."""
        self.collector.reaper = reaper

    def checkout(self, pool: Pool, **kwargs: Any) -> Lease:
        """``pool.checkout(**kwargs)``, counted and timed."""
        started = mod_time.monotonic()
        try:
            lease = pool.checkout(**kwargs)
        except CheckoutTimeout:
            self.checkouts.labels(pool.name, "timeout").inc()
            self.checkout_timeouts.labels(pool.name).inc()
            raise
        except PoolFull:
            self.checkouts.labels(pool.name, "full").inc()
            raise
        self.checkouts.labels(pool.name, "ok").inc()
        self.checkout_wait.labels(pool.name).observe(mod_time.monotonic() - started)
        return lease

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` over HTTP in a daemon thread; the port bound (0 picks one)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        self.port = int(server.server_port)
        log.info("serving metrics on %s:%s", addr, self.port)
        return self.port

    def stop(self) -> None:
        """Stop serving and release the pools' connections."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.collector.close()


def start_metrics(
    port: int,
    *pools: str,
    client: redis.Redis | None = None,
    url: str | None = None,
    reaper: Reaper | None = None,
    addr: str = "0.0.0.0",
) -> Metrics:
    """Serve the metrics of ``pools`` (none: every pool) on ``port``; give ``client`` or ``url``."""
    if (client is None) == (url is None):
        raise ValueError("give exactly one of client= or url=")
    if client is None:
        client = client_from_url(url or "", socket_timeout=5.0)
    metrics = Metrics(client, pools, reaper=reaper)
    metrics.serve(port, addr)
    return metrics
