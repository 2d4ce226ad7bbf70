"""Faults the chaos run (test_chaos.py) found, each pinned down on its own.

Each test starts worker_main.py against a private server and stops every
process it started, by pid.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import StartServer, wait_for

from redispool import Pool, PoolError
from redispool.server import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent
WORKER_MAIN = ROOT / "worker_main.py"


@pytest.fixture
def worker_main(fresh_server: StartServer, tmp_path: Path) -> Iterator[tuple[EmbeddedServer, Path]]:
    """A server and one worker_main.py (one worker, time.sleep allowed) on it."""
    server = fresh_server()
    log = tmp_path / "worker_main.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER_MAIN), "--url", server.url, "--pool", "p",
             "--workers", "1", "--heartbeat-ttl", "1", "--sweep-interval", "0.2",
             "--function", "time.sleep"],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    try:
        yield server, log
    finally:
        children = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", log.read_text())]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in children:  # a worker its supervisor left behind
            with contextlib.suppress(OSError):
                if b"redispool.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)


def test_redis_going_away_mid_job_leaves_the_worker_alive_and_gives_the_client_a_pool_error(
    worker_main: tuple[EmbeddedServer, Path],
) -> None:
    server, log = worker_main
    with Pool("p", server.url) as pool:
        wait_for(lambda: pool.status().idle == 1, timeout=20, message="the worker idle")
        pid = pool.workers()[0].pid
        lease = pool.checkout(timeout=5)
        outcome: list[BaseException | None] = []

        def job() -> None:
            try:
                lease.run("time.sleep", 0.5, timeout=10)
                outcome.append(None)
            except Exception as exc:  # the worker's fate is the point here
                outcome.append(exc)

        thread = threading.Thread(target=job)
        thread.start()
        token = f"token {lease.token} started"
        wait_for(lambda: token in log.read_text(), timeout=5, message="the job started")
        server.kill()
        ended = f"token {lease.token} ended"
        wait_for(lambda: ended in log.read_text(), timeout=5, message="the job ended")
        server.start()
        thread.join(15)
        wait_for(lambda: pool.status().idle == 1, timeout=15, message="the worker back")
        assert pool.workers()[0].pid == pid, "the worker process died and was replaced"
        assert len(outcome) == 1 and isinstance(outcome[0], PoolError), outcome
    assert "died (exit" not in log.read_text()
