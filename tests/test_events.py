"""The event log: capped, read as text whatever is in it, printed and followed by the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest
import redis
from click.testing import CliRunner
from helpers import wait_for

from redispool import Pool, events
from redispool.cli import cli
from redispool.keys import PoolKeys


def test_the_log_keeps_only_the_newest_events(r: redis.Redis) -> None:
    for n in range(events.MAX_EVENTS + 50):
        assert events.record(r, "toy", "reclaimed", worker=f"w{n}")
    assert r.xlen(PoolKeys("toy").events) == events.MAX_EVENTS
    shown = events.read(r, "toy", count=3)
    assert [e.worker for e in shown] == [f"w{events.MAX_EVENTS + n}" for n in (47, 48, 49)]


def test_an_unknown_kind_is_a_value_error_and_nothing_is_written(r: redis.Redis) -> None:
    with pytest.raises(ValueError, match="unknown event kind"):
        events.record(r, "toy", "exploded")
    assert not r.exists(PoolKeys("toy").events)


def test_a_log_that_cannot_be_written_costs_nothing(r: redis.Redis) -> None:
    r.set(PoolKeys("toy").events, "junk")  # not a stream
    assert events.record(r, "toy", "buried") is False
    assert events.read(r, "toy") == []


def test_entries_written_by_hand_read_as_text(r: redis.Redis) -> None:
    r.xadd(PoolKeys("toy").events, {"kind": "x" * 100, "count": "many", "junk": "1"})
    (event,) = events.read(r, "toy")
    assert event.kind == "x" * 40 and event.count == 0 and event.worker == ""


def test_events_prints_lines_and_json(make_pool: Callable[..., Pool], redis_url: str,
                                      r: redis.Redis) -> None:  # fmt: skip
    make_pool("toy", workers=1)
    events.record(r, "toy", "buried", worker="w1", detail="heartbeat lapsed\x1b[31m")
    runner = CliRunner()
    plain = runner.invoke(cli, ["-u", redis_url, "events", "toy"])
    assert plain.exit_code == 0, plain.output
    assert "buried  w1  heartbeat lapsed?[31m" in plain.output  # no terminal escape
    got = runner.invoke(cli, ["-u", redis_url, "events", "toy", "--json"])
    (line,) = got.output.splitlines()
    assert json.loads(line)["worker"] == "w1" and json.loads(line)["kind"] == "buried"
    missing = runner.invoke(cli, ["-u", redis_url, "events", "nothere"])
    assert missing.exit_code == 2


def test_events_follow_prints_new_events_as_they_come(
    make_pool: Callable[..., Pool], redis_url: str, r: redis.Redis
) -> None:
    make_pool("toy", workers=1)
    events.record(r, "toy", "died", worker="old")
    proc = subprocess.Popen(
        [sys.executable, "-m", "redispool.cli", "-u", redis_url, "events", "toy", "--follow",
         "--json"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),  # type: ignore[union-attr]
                              daemon=True)  # fmt: skip
    reader.start()
    try:
        wait_for(lambda: lines, timeout=10, message="the old event")
        events.record(r, "toy", "drained", worker="new")
        wait_for(lambda: len(lines) >= 2, timeout=10, message="the new event")
        assert [json.loads(x)["worker"] for x in lines[:2]] == ["old", "new"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=5)
        proc.stdout.close()  # type: ignore[union-attr]
    assert proc.returncode == 0


def test_redispool_drain_is_logged(make_pool: Callable[..., Pool], redis_url: str,
                                   r: redis.Redis) -> None:  # fmt: skip
    make_pool("toy", workers=2)
    done = CliRunner().invoke(cli, ["-u", redis_url, "drain", "toy", "w1"])
    assert done.exit_code == 0, done.output
    (event,) = events.read(r, "toy")
    assert (event.kind, event.worker) == ("drained", "w1")
