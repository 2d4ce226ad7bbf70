"""The `redispool` command and the URL of a Redis Cluster: pools found on every master,
``status`` naming the master that holds the pool, and clear errors for bad cluster URLs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result
from clusters import Cluster, cluster_of, pool_names_on_every_master
from helpers import free_port

from redispool import Pool
from redispool.cli import cli
from redispool.connect import ClusterURL, client_from_url, close_client, validate_url


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    yield from cluster_of("redis")


@pytest.fixture(scope="module")
def spread(cluster: Cluster) -> Iterator[dict[str, int]]:
    """Six pools, two on each master, with two workers each: name -> master port."""
    client = client_from_url(cluster.url)
    client.flushall()
    names = pool_names_on_every_master(cluster, 6, prefix="cli")
    pools = [Pool(name, redis=client) for name in names]
    for pool in pools:
        pool.add_worker("w1", host="box", pid=101)
        pool.add_worker("w2", host="box", pid=102)
    try:
        yield {n: cluster.server_of_slot(cluster.slot_of(f"{{{n}}}")).port for n in names}
    finally:
        for pool in pools:
            pool.close()
        close_client(client)


def invoke(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", url, *args])


def test_pools_lists_the_pools_of_every_master_with_the_master_of_each(
    cluster: Cluster, spread: dict[str, int]
) -> None:
    result = invoke(cluster.url, "pools", "--json")
    assert result.exit_code == 0, result.output
    records = {r["pool"]: r for r in json.loads(result.stdout)}
    assert set(records) == set(spread)
    for name, port in spread.items():
        assert records[name]["size"] == 2
        assert records[name]["master"] == f"127.0.0.1:{port}"
    table = invoke(cluster.url, "pools")
    assert table.exit_code == 0 and "MASTER" in table.output


def test_status_names_the_master_holding_the_pool(
    cluster: Cluster, spread: dict[str, int]
) -> None:
    name, port = next(iter(spread.items()))
    result = invoke(cluster.url, "status", name, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["size"], record["idle"], record["master"]) == (2, 2, f"127.0.0.1:{port}")
    table = invoke(cluster.url, "status", name)
    assert f"127.0.0.1:{port}" in table.output


def test_workers_leases_check_and_watch_read_the_pool_on_its_master(
    cluster: Cluster, spread: dict[str, int]
) -> None:
    name = sorted(spread)[-1]
    with Pool(name, url=cluster.url) as pool:
        lease = pool.checkout(block=False, auto_renew=False)
        workers = json.loads(invoke(cluster.url, "workers", name, "--json").stdout)
        assert {w["id"]: w["state"] for w in workers} == {
            lease.worker_id: "busy", ({"w1", "w2"} - {lease.worker_id}).pop(): "idle"
        }
        leases = json.loads(invoke(cluster.url, "leases", name, "--json").stdout)
        assert [(r["worker"], r["token"]) for r in leases] == [(lease.worker_id, lease.token)]
        check = invoke(cluster.url, "check", name, "--json")
        assert check.exit_code == 0 and json.loads(check.stdout) == [], check.output
        watch = invoke(cluster.url, "watch", name, "--count", "2", "--interval", "0.1", "--json")
        lines = [json.loads(line) for line in watch.stdout.splitlines()]
        assert len(lines) == 2 and all(r["busy"] == 1 and r["master"] for r in lines)
        assert lease.checkin() is True


def test_install_loads_the_library_on_every_master_from_the_command_line(
    cluster: Cluster, spread: dict[str, int]
) -> None:
    result = invoke(cluster.url, "install")
    assert result.exit_code == 0, result.output


def test_an_unknown_pool_on_a_cluster_is_a_usage_error(cluster: Cluster) -> None:
    result = invoke(cluster.url, "status", "nosuchpool")
    assert result.exit_code == 2
    assert "no pool named 'nosuchpool'" in result.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://", "bad cluster node address"),
        ("redis+cluster://host:notaport", "bad cluster node address"),
        ("redis+cluster://h1:6379,,h2:6379", "bad cluster node address"),
        ("redis+cluster://h1:6379/3", "a cluster has only database 0"),
        ("redis+cluster://h1:6379?db=1", "takes no parameters"),
        ("redis+cluster://u:secret@h1:99999", "bad cluster node address"),
    ],
)
def test_bad_cluster_urls_are_clear_value_errors_that_hide_the_password(
    url: str, says: str
) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        validate_url(url)
    assert "secret" not in str(caught.value)


def test_a_cluster_url_is_read_with_its_credentials_and_default_port() -> None:
    parsed = ClusterURL.parse("redis+cluster://ann:p%40ss@h1,h2:7001/0")
    assert parsed.nodes == (("h1", 6379), ("h2", 7001))
    assert (parsed.username, parsed.password) == ("ann", "p@ss")


def test_a_bad_cluster_url_on_the_command_line_exits_2_with_one_line() -> None:
    result = invoke("redis+cluster://u:secret@h1:6379/5", "pools")
    assert result.exit_code == 2
    assert "only database 0" in result.stderr and "secret" not in result.stderr


def test_a_cluster_url_naming_no_live_node_exits_2_promptly() -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "redispool.cli", "--url", url, "pools"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("redispool: error: "), done.stderr


def test_a_cluster_url_naming_a_plain_server_says_so(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis+cluster://").rsplit("/", 1)[0]
    result = invoke(url, "pools")
    assert result.exit_code == 2
    assert "cluster" in result.stderr.lower()
