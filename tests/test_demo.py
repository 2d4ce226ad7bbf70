"""`redispool demo` end to end, as a real process: the story, the time, what it leaves."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from helpers import pid_alive, wait_for

ROOT = Path(__file__).resolve().parent.parent
STORY = [
    r"started (valkey|redis) [\d.]+ server \(pid \d+\)|using redis://",
    r"started worker_main\.py \(pid \d+\) with 3 workers",
    r"w1 = checkout\(\)  -> worker \S+, fencing token \d+",
    r"w4 = checkout\(\)  -> full",
    r"checkin\(w1\)      -> worker \S+ is idle again",
    r"Doubler\.compute\(w4, 21\) on worker \S+ -> 42",
    r"worker log: .*Doubling 21",
    r"checked in all 3 workers",
    r"client A: checkout -> worker \S+, token (\d+); writes order-17 through the fence",
    r"client B: checkout -> worker \S+, token \d+; its write lands",
    r"client A comes back, writes with token \d+ -> refused by the store",
    r"the store holds order-17 = 'B: fresh'",
    r"a client process checked out worker \S+ and exited without checkin",
    r"worker \S+ is idle again [\d.]+s after the client exited",
    r"killed worker \S+ \(pid \d+\) with SIGKILL",
    r"the pool replaced it [\d.]+s later",
    r"stopped worker_main\.py \(pid \d+, exit status 0\)",
    r"done",
]


def run_demo(*args: str, tmpdir: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    if not (ROOT / "worker_main.py").exists():
        pytest.skip("worker_main.py is not in this checkout yet")
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    env.pop("REDISPOOL_URL", None)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "redispool.cli", *args, "demo"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=5)
    elapsed = time.monotonic() - started
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), elapsed


def assert_tells_the_story(out: str) -> None:
    lines = out.splitlines()
    assert all(re.match(r"\[ *\d+\.\d\ds\] ", line) for line in lines), out
    at = 0
    for step in STORY:
        at = next((i for i in range(at, len(lines)) if re.search(step, lines[i])), -1)
        assert at >= 0, f"missing, or out of order: {step!r} in\n{out}"


def test_demo_tells_pooltoys_story_in_under_30_s_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    result, elapsed = run_demo(tmpdir=tmpdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 30
    assert_tells_the_story(result.stdout)
    pids = {int(p) for p in re.findall(r"pid (\d+)", result.stdout)}
    assert len(pids) >= 5  # server, worker_main, three workers (and a replacement)
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=5,
             message="every process the demo started to be gone")
    assert list(tmpdir.iterdir()) == []


def test_demo_with_a_url_uses_a_pool_of_its_own_and_removes_it(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    r.set("someone-elses-key", "kept")
    r.hset("redispool:{doublers}:workers", "theirs", "|")
    result, elapsed = run_demo("--url", redis_url, tmpdir=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 30
    assert_tells_the_story(result.stdout)
    assert re.search(r"deleted the \d+ keys of pool demo-[0-9a-f]{8}", result.stdout)
    assert sorted(r.keys()) == [b"redispool:{doublers}:workers", b"someone-elses-key"], r.keys()
