"""The `redispool` command: what operators type, on real Valkey and Redis servers.

In-process through click's CliRunner for the behaviour, and as real subprocesses for
what only a process shows: exit codes, stderr, signals, an unreachable Redis.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result
from helpers import free_port, wait_for

from redispool import Pool
from redispool.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def invoke(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", url, *args])


def one_error_line(result_stderr: str) -> str:
    lines = result_stderr.strip().splitlines()
    assert len(lines) == 1, result_stderr
    assert lines[0].startswith("redispool: error: ")
    return lines[0]


@pytest.fixture
def toy(redis_url: str) -> Iterator[Pool]:
    """Pool "toy" with three idle workers w1..w3 (PoolToy's three Doublers)."""
    pool = Pool("toy", redis_url)
    for n in (1, 2, 3):
        pool.add_worker(f"w{n}", host="box", pid=100 + n)
    try:
        yield pool
    finally:
        pool.close()


# -- reading ------------------------------------------------------------------


def test_status_json_is_one_flat_object_with_the_pools_numbers(toy: Pool, redis_url: str) -> None:
    lease = toy.checkout(auto_renew=False)
    result = invoke(redis_url, "status", "toy", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["pool"] == "toy"
    assert (record["size"], record["idle"], record["busy"], record["waiting"]) == (3, 2, 1, 0)
    assert record["lease_ttl"] == 10.0 and record["strategy"] == "lifo"
    assert all(not isinstance(v, (dict, list)) for v in record.values())
    toy.checkin(lease)


def test_status_table_lines_up_its_columns(toy: Pool, redis_url: str) -> None:
    result = invoke(redis_url, "status", "toy")
    header, row = result.stdout.splitlines()
    assert header.split()[:5] == ["POOL", "SIZE", "IDLE", "BUSY", "WAITING"]
    # each number ends where its header ends
    for name, value in (("SIZE", "3"), ("IDLE", "3"), ("BUSY", "0")):
        end = header.index(name) + len(name)
        assert row[end - len(value) : end] == value


def test_pools_lists_every_pool_with_its_numbers(toy: Pool, redis_url: str) -> None:
    Pool("other", redis_url).configure(lease_ttl=5)
    result = invoke(redis_url, "pools", "--json")
    assert json.loads(result.stdout) == [
        {"pool": "other", "size": 0, "idle": 0, "busy": 0, "waiting": 0},
        {"pool": "toy", "size": 3, "idle": 3, "busy": 0, "waiting": 0},
    ]
    table = invoke(redis_url, "pools").stdout.splitlines()
    assert [line.split()[0] for line in table] == ["POOL", "other", "toy"]


def test_workers_shows_each_worker_with_host_pid_state_and_token(toy: Pool, redis_url: str) -> None:
    lease = toy.checkout(auto_renew=False)
    rows = json.loads(invoke(redis_url, "workers", "toy", "--json").stdout)
    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == {"w1", "w2", "w3"}
    assert by_id[lease.worker_id]["state"] == "busy"
    assert by_id[lease.worker_id]["token"] == lease.token
    assert {row["host"] for row in rows} == {"box"}
    assert by_id["w1"]["pid"] == 101 and "jobs" in by_id["w1"]
    table = invoke(redis_url, "workers", "toy").stdout.splitlines()
    assert table[0].split() == ["WORKER", "STATE", "HOST", "PID", "TOKEN", "JOBS", "DRAINING"]
    assert len({line.index(line.split()[1]) for line in table}) == 1  # STATE column aligned


def test_leases_shows_holder_and_time_left(toy: Pool, redis_url: str) -> None:
    lease = toy.checkout(auto_renew=False)
    (row,) = json.loads(invoke(redis_url, "leases", "toy", "--json").stdout)
    assert row["worker"] == lease.worker_id and row["token"] == lease.token
    assert row["pid"] == os.getpid() and row["host"] and row["holder"].endswith(f":{os.getpid()}")
    assert 0 < row["ttl_left"] <= 10.0


def test_watch_prints_one_json_line_per_refresh(toy: Pool, redis_url: str) -> None:
    result = invoke(redis_url, "watch", "toy", "--count", "3", "--interval", "0.1", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3
    assert all(r["size"] == 3 and len(r["workers"]) == 3 for r in records)


def test_one_connection_is_made_and_shared_by_a_command(
    toy: Pool, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = []
    real = redis.Redis.from_url

    def counting(url: str, **kwargs: object) -> redis.Redis:
        made.append(url)
        return real(url, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.Redis, "from_url", counting)
    result = invoke(redis_url, "watch", "toy", "--count", "3", "--interval", "0.1")
    assert result.exit_code == 0
    assert made == [redis_url]


def test_url_comes_from_redispool_url_when_not_given(toy: Pool, redis_url: str) -> None:
    result = CliRunner().invoke(cli, ["status", "toy", "--json"], env={"REDISPOOL_URL": redis_url})
    assert result.exit_code == 0 and json.loads(result.stdout)["size"] == 3


# -- checkout, checkin, init, drain -------------------------------------------------


def test_fourth_checkout_of_three_workers_is_full_and_exits_1(toy: Pool, redis_url: str) -> None:
    taken = [json.loads(invoke(redis_url, "checkout", "toy", "--json").stdout) for _ in range(3)]
    assert sorted(t["worker"] for t in taken) == ["w1", "w2", "w3"]
    full = invoke(redis_url, "checkout", "toy")
    assert full.exit_code == 1
    assert "no worker is idle" in one_error_line(full.stderr)
    first = taken[0]
    back = invoke(redis_url, "checkin", "toy", first["worker"], str(first["token"]))
    assert back.exit_code == 0, back.output
    again = json.loads(invoke(redis_url, "checkout", "toy", "--json").stdout)
    assert again["worker"] == first["worker"] and again["token"] > first["token"]


def test_checkout_with_timeout_waits_then_exits_1(toy: Pool, redis_url: str) -> None:
    held = [toy.checkout(auto_renew=False) for _ in range(3)]
    started = time.monotonic()
    result = invoke(redis_url, "checkout", "toy", "--timeout", "0.3")
    assert result.exit_code == 1
    assert 0.3 <= time.monotonic() - started < 3
    assert "in time" in one_error_line(result.stderr)
    for lease in held:
        toy.checkin(lease)


def test_checkin_of_an_ended_lease_exits_1(toy: Pool, redis_url: str) -> None:
    lease = toy.checkout(auto_renew=False)
    wrong = invoke(redis_url, "checkin", "toy", lease.worker_id, str(lease.token + 1))
    assert wrong.exit_code == 1 and "no live lease" in one_error_line(wrong.stderr)
    assert invoke(redis_url, "checkin", "toy", lease.worker_id, str(lease.token)).exit_code == 0
    twice = invoke(redis_url, "checkin", "toy", lease.worker_id, str(lease.token))
    assert twice.exit_code == 1


def test_init_creates_a_pool_and_changes_its_settings(redis_url: str) -> None:
    made = invoke(redis_url, "init", "fresh", "--lease-ttl", "2.5", "--strategy", "fifo", "--json")
    assert json.loads(made.stdout) == {"pool": "fresh", "lease_ttl": 2.5, "strategy": "fifo"}
    status = json.loads(invoke(redis_url, "status", "fresh", "--json").stdout)
    assert status["size"] == 0 and status["lease_ttl"] == 2.5 and status["strategy"] == "fifo"


def test_drain_takes_an_idle_worker_out_at_once_and_a_busy_one_after_its_lease(
    toy: Pool, redis_url: str
) -> None:
    lease = toy.checkout(auto_renew=False)
    idle = next(w for w in ("w1", "w2", "w3") if w != lease.worker_id)
    assert "left pool" in invoke(redis_url, "drain", "toy", idle).stdout
    busy = invoke(redis_url, "drain", "toy", lease.worker_id)
    assert "when its current lease ends" in busy.stdout
    assert toy.status().size == 2
    toy.checkin(lease)
    assert toy.status().size == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["status", "nope"], "no pool named 'nope'"),
        (["status", "bad name!"], "invalid pool name"),
        (["checkin", "toy", "w1", "seven"], "'seven' is not a valid integer"),
        (["checkout", "toy", "--timeout", "soon"], "'soon' is not a valid float"),
        (["init", "toy", "--lease-ttl", "-1"], "lease_ttl must be between"),
        (["init", "toy", "--strategy", "random"], "'random' is not one of"),
        (["drain", "toy", "w9"], "has no worker 'w9'"),
        (["status"], "Missing argument 'POOL'"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(
    toy: Pool, redis_url: str, args: list[str], says: str
) -> None:
    result = invoke(redis_url, *args)
    assert result.exit_code == 2, result.output
    assert says in one_error_line(result.stderr)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["checkin", "toy", "rack 7", "1"], "invalid worker id"),
        (["drain", "toy", "w\u00e9"], "invalid worker id"),
        (["checkout", "toy", "--timeout", "nan"], "not a finite number of seconds"),
        (["checkout", "toy", "--hold", "inf"], "not a finite number of seconds"),
        (["double", "toy", "nan"], "'nan' is not a finite number"),
        (["double", "toy", "21", "--job-timeout", "nan"], "not a finite number of seconds"),
        (["init", "toy", "--lease-ttl", "nan"], "not a finite number of seconds"),
        (["reaper", "ok", "bad pool"], "invalid pool name"),
        (["watch", "toy", "--interval", "nan"], "not a finite number of seconds"),
    ],
)
def test_bad_options_exit_2_before_any_redis_call(args: list[str], says: str) -> None:
    nothing_listens = f"redis://127.0.0.1:{free_port()}/0"  # a Redis call would say unreachable
    result = invoke(nothing_listens, *args)
    assert result.exit_code == 2, result.output
    assert says in one_error_line(result.stderr)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://127.0.0.1:99999/0", "Port out of range"),
        ("redis://127.0.0.1:6379/zero", "database 'zero' is not a number"),
        ("redis://:hunter2@/0", "no host"),
        ("127.0.0.1:6379", "must look like redis://"),
    ],
)
def test_a_bad_url_exits_2_before_any_command_runs(url: str, says: str) -> None:
    result = CliRunner().invoke(cli, ["--url", url, "pools"])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    assert says in line and "hunter2" not in line


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (("--worker-id-prefix", "rack 7"), "invalid worker id prefix"),
        (("--worker-id-prefix", "x" * 195), "invalid worker id prefix"),
        (("--url", "http://127.0.0.1:6379/0"), "bad Redis URL"),
        (("--url", "redis://127.0.0.1:70000/0"), "Port out of range"),
        (("--pool", "bad pool"), "invalid pool name"),
        (("--function", "os.system; rm"), "function name must be a dotted path"),
        (("--heartbeat-ttl", "nan"), "not a finite number of seconds"),
        (("--sweep-interval", "0"), "not in the range"),
        (("--workers", "-1"), "not in the range"),
        (("--metrics-port", "70000"), "not in the range"),
    ],
)
def test_worker_main_refuses_a_bad_option_before_it_starts_anything(
    r: redis.Redis, redis_url: str, option: tuple[str, str], says: str
) -> None:
    base = ["--url", redis_url, "--pool", "toy", "--workers", "1"]  # the last of each counts
    result = subprocess.run(
        [sys.executable, str(ROOT / "worker_main.py"), *base, *option],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "started worker" not in result.stderr
    assert r.dbsize() == 0, "something started"


# -- real processes -----------------------------------------------------------------

Spawn = Callable[..., subprocess.Popen[str]]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "redispool.cli", *args]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start `redispool ...` processes; each is killed by pid when the test ends."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=5)


def test_unreachable_redis_fails_fast_with_exit_2() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    started = time.monotonic()
    result = run("--url", url, "pools")
    assert time.monotonic() - started < 5
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "Redis unreachable at" in line and url in line
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_url_that_is_not_redis_exits_2() -> None:
    result = run("--url", "http://example.invalid/", "status", "toy")
    assert result.returncode == 2
    assert "bad Redis URL" in one_error_line(result.stderr)


def test_password_in_the_url_is_not_printed() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = run("status", "toy", env={"REDISPOOL_URL": url})
    assert result.returncode == 2 and "hunter2" not in result.stderr


def test_checkout_and_checkin_as_processes_with_exit_codes(toy: Pool, redis_url: str) -> None:
    for _ in range(3):
        assert run("-u", redis_url, "checkout", "toy").returncode == 0
    full = run("-u", redis_url, "checkout", "toy")
    assert full.returncode == 1 and "no worker is idle" in one_error_line(full.stderr)
    worker, token = next((w.id, w.token) for w in toy.workers())
    assert run("-u", redis_url, "checkin", "toy", worker, str(token)).returncode == 0
    assert toy.status().idle == 1


def test_checkout_hold_keeps_the_lease_past_its_ttl_then_checks_in(
    redis_url: str, spawn: Spawn
) -> None:
    pool = Pool("short", redis_url)
    pool.configure(lease_ttl=0.3)
    pool.add_worker("w1")
    proc = spawn("-u", redis_url, "checkout", "short", "--hold", "1.2")
    wait_for(lambda: pool.status().busy == 1, timeout=10, message="worker leased")
    time.sleep(0.8)  # the point of the test: longer than the 0.3 s TTL, the lease still holds
    assert pool.status().busy == 1 and pool.reclaim_expired() == 0
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out.startswith("worker w1 token ") and "checked in worker w1" in out
    assert pool.status().idle == 1
    pool.close()


def test_sigterm_during_hold_checks_the_worker_in(toy: Pool, redis_url: str, spawn: Spawn) -> None:
    proc = spawn("-u", redis_url, "checkout", "toy", "--hold", "60")
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("worker ")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    assert proc.returncode == 0
    assert toy.status().idle == 3


def test_reaper_returns_a_dead_clients_worker_and_stops_on_sigterm(
    redis_url: str, spawn: Spawn
) -> None:
    pool = Pool("toy", redis_url)
    pool.configure(lease_ttl=0.2)
    pool.add_worker("w1")
    reaper = spawn("-u", redis_url, "reaper", "toy", "--sweep-interval", "5")
    client = redis.Redis.from_url(redis_url)
    subscribed = lambda: dict(client.pubsub_numsub("__keyevent@0__:expired")).get(  # noqa: E731
        b"__keyevent@0__:expired"
    )
    wait_for(subscribed, timeout=10, message="reaper subscribed to expired events")
    client.close()
    assert run("-u", redis_url, "checkout", "toy").returncode == 0  # nothing renews it
    wait_for(lambda: pool.status().idle == 1, timeout=3, message="worker back idle")
    reaper.send_signal(signal.SIGTERM)
    _, err = reaper.communicate(timeout=10)
    assert reaper.returncode == 0
    assert "reaper stopped: returned 1 by event" in err
    pool.close()


# -- a corrupted pool ---------------------------------------------------------------


def test_status_reports_junk_in_a_key_and_exits_2(
    toy: Pool, redis_url: str, r: redis.Redis
) -> None:
    r.set(toy.keys.token, "junk")
    result = invoke(redis_url, "status", "toy", "--json")
    assert result.exit_code == 2
    record = json.loads(result.stdout)
    assert record == {"pool": "toy", "problems": 1}  # the pool's scripts refuse junk
    assert "redispool check toy" in one_error_line(result.stderr)
    human = invoke(redis_url, "status", "toy")
    assert f"problem: {toy.keys.token}" in human.stdout
    listed = invoke(redis_url, "check", "toy", "--json")
    assert listed.exit_code == 2
    assert [p["key"] for p in json.loads(listed.stdout)] == [toy.keys.token]


def test_status_lists_problems_even_when_the_numbers_cannot_be_read(
    toy: Pool, redis_url: str, r: redis.Redis
) -> None:
    r.delete(toy.keys.idle)
    r.set(toy.keys.idle, "junk")
    result = invoke(redis_url, "status", "toy")
    assert result.exit_code == 2
    assert f"problem: {toy.keys.idle}" in result.stdout


def test_check_of_a_sound_pool_exits_0(toy: Pool, redis_url: str) -> None:
    result = invoke(redis_url, "check", "toy", "--json")
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])
