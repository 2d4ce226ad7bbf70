"""The Grafana dashboard asks only for metrics the exporter really serves."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from redispool import CheckoutTimeout, Pool, Reaper
from redispool.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "grafana" / "redispool.json"
METRIC = re.compile(r"\bredispool_[a-z_]+\b")


def _queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in board["panels"] for t in p["targets"]]
    found += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    assert all(p["targets"] for p in board["panels"]), "a panel without a query"
    return found


def _served(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        body = reply.read().decode()
    return {s.name for f in text_string_to_metric_families(body) for s in f.samples}


def test_every_panel_names_a_metric_the_exporter_serves(
    make_pool: Callable[..., Pool], r: redis.Redis
) -> None:
    pool = make_pool("toy", workers=1)
    reaper = Reaper(r, ["toy"])
    metrics = Metrics(r, ["toy"], reaper=reaper)
    port = metrics.serve(0, "127.0.0.1")
    try:  # every counter of the exporter once, so each has a sample
        lease = metrics.checkout(pool, timeout=1)
        with pytest.raises(CheckoutTimeout):
            metrics.checkout(pool, timeout=0.05)
        pool.checkin(lease)
        metrics.worker_restarts.labels("toy").inc()
        served = _served(port)
    finally:
        metrics.stop()
    named = {m for q in _queries() for m in METRIC.findall(q)}
    assert named, "the dashboard names no metric"
    assert named <= served, f"not served: {sorted(named - served)}"
    gauges = {n for n in served if n.startswith("redispool_pool_")}
    assert gauges <= named, f"pool numbers the dashboard does not show: {sorted(gauges - named)}"
