"""``redispool web`` as a process: loopback by default, actions only with a token."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from sentinels import SentinelSet
from webserver import WebProcess

from redispool import Pool, events
from redispool.cli import cli

TOKEN = "operator-token-0123456789"


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp has them) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


@pytest.fixture
def web_cli(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., int]]:
    """Start ``redispool web`` with extra args and env; its port. Stopped by pid."""
    procs: list[WebProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, url: str = redis_url) -> int:
        procs.append(WebProcess(url, tmp_path / f"web-{len(procs)}.log", *args, env=env))
        return procs[-1].port

    try:
        yield start
    finally:
        for proc in procs:
            proc.stop()


def _post(port: int, path: str, body: object, token: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/{path}", method="POST",
                                 data=json.dumps(body).encode(), headers=headers)  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_it_listens_on_loopback_only_by_default(
    make_pool: Callable[..., Pool], web_cli: Callable[..., int]
) -> None:
    make_pool("toy", workers=1)
    port = web_cli()
    assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
    assert _post(port, "api/pools/toy/drain", {"worker": "w1"}, TOKEN) == 403  # read-only


def test_actions_with_the_operators_token_from_the_environment(
    make_pool: Callable[..., Pool], web_cli: Callable[..., int], r: redis.Redis
) -> None:
    pool = make_pool("toy", workers=2)
    port = web_cli("--allow-actions", env={"REDISPOOL_WEB_TOKEN": TOKEN})
    assert _post(port, "api/pools/toy/drain", {"worker": "w1"}, None) == 401
    assert _post(port, "api/pools/toy/drain", {"worker": "w1"}, "not-" + TOKEN) == 401
    assert pool.status().size == 2
    assert _post(port, "api/pools/toy/drain", {"worker": "w1"}, TOKEN) == 200
    assert [w.id for w in pool.workers()] == ["w2"]
    assert [(e.kind, e.worker) for e in events.read(r, "toy")] == [("action", "w1")]


def test_allow_actions_without_a_token_is_a_usage_error(redis_url: str) -> None:
    for token in (None, "short"):  # None: unset
        runner = CliRunner(env={"REDISPOOL_WEB_TOKEN": token})
        got = runner.invoke(cli, ["-u", redis_url, "web", "--allow-actions"])
        assert got.exit_code == 2
        assert "REDISPOOL_WEB_TOKEN" in got.output


@pytest.fixture(scope="module")
def sentinels(server_kind: str) -> Iterator[SentinelSet]:
    sset = SentinelSet(server_kind)
    try:
        yield sset.start()
    finally:
        sset.stop()


def test_it_reads_pools_through_a_sentinel_url(
    sentinels: SentinelSet, web_cli: Callable[..., int]
) -> None:
    with Pool("guarded", url=sentinels.url) as pool:
        pool.add_worker("w1")
        pool.checkout(auto_renew=False)
        port = web_cli(url=sentinels.url)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/pools/guarded",
                                    timeout=10) as reply:  # fmt: skip
            snap = json.loads(reply.read())
        assert (snap["size"], snap["busy"], snap["workers"][0]["id"]) == (1, 1, "w1")
        pool.client.delete(*pool.client.keys("redispool:{guarded}:*"))
