"""Attacks on the Cluster paths: a reply lost after the server ran the command, a
waiter blocked while its slot moves, history, events and the web view on a cluster.

One cluster per server kind, 3 masters and no replica (a script that keeps a
master busy must not start a failover), started once for the module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from clusters import Cluster
from helpers import wait_for
from redis.cluster import RedisCluster
from webserver import WebServer

from redispool import Lease, Pool, PoolUnavailable, events
from redispool.connect import client_from_url, close_client
from redispool.keys import PoolKeys
from redispool.observe import history_of
from redispool.server import server_binaries
from redispool.slot_client import slot_client
from redispool.web import create_app

#: Lua that counts a run in KEYS[1] and then keeps the server busy for ARGV[1]
#: loop turns (not by TIME: Valkey's TIME stands still inside a script).
BUSY_INCR = """
redis.call('INCR', KEYS[1])
local x = 0
for i = 1, tonumber(ARGV[1]) do x = x + i end
return 1
"""
BUSY_TURNS = 30_000_000  # loop turns: about half a second here
READ_TIMEOUT = 0.1  # seconds: the reply comes after the loop, so the client has lost it


@pytest.fixture(scope="module", params=["redis", "valkey"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    if request.param not in server_binaries():
        pytest.fail(f"no {request.param} server here")
    started = Cluster(request.param, masters=3, replicas=0).start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def rc(cluster: Cluster) -> Iterator[RedisCluster]:
    client = client_from_url(cluster.url)
    assert isinstance(client, RedisCluster)
    client.flushall()
    try:
        yield client
    finally:
        close_client(client)


def _count_when_idle(rc: RedisCluster, key: str) -> int:
    """``key``'s counter once its master answers again (the busy script is over)."""
    reader = slot_client(rc, key)
    deadline = time.monotonic() + 10
    while True:
        try:
            return int(reader.get(key) or 0)
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_command_whose_reply_is_lost_after_it_ran_is_not_sent_again(
    cluster: Cluster, rc: RedisCluster
) -> None:
    key = "redispool:{lost}:runs"
    impatient = RedisCluster(host="127.0.0.1", port=cluster.servers[0].port,
                             socket_timeout=READ_TIMEOUT)  # fmt: skip
    try:
        client = slot_client(impatient, key)
        with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
            client.eval(BUSY_INCR, 1, key, BUSY_TURNS)
        assert _count_when_idle(rc, key) == 1
    finally:
        impatient.close()


def test_a_transaction_whose_exec_reply_is_lost_is_not_sent_again(
    cluster: Cluster, rc: RedisCluster
) -> None:
    key = "redispool:{lost}:exec-runs"
    impatient = RedisCluster(host="127.0.0.1", port=cluster.servers[0].port,
                             socket_timeout=READ_TIMEOUT)  # fmt: skip
    try:
        client = slot_client(impatient, key)
        for explicit in (False, True):  # lease.run's enqueue calls multi() itself
            with client.pipeline(transaction=True) as pipe:
                if explicit:
                    pipe.multi()
                pipe.eval(BUSY_INCR, 1, key, BUSY_TURNS)
                with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
                    pipe.execute()
            assert _count_when_idle(rc, key) == 1 + explicit
    finally:
        impatient.close()


def _move_slot(cluster: Cluster, slot: int, to_port: int) -> None:
    """Move ``slot`` with its keys to the master on ``to_port`` (as redis-cli reshard)."""
    src = cluster.server_of_slot(slot)
    dst = next(s for s in cluster.masters() if s.port == to_port)
    src_id, dst_id = cluster.node_id(src), cluster.node_id(dst)
    with cluster.node(src) as source, cluster.node(dst) as target:
        target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        while keys := source.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            source.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000,
                                   "REPLACE", "KEYS", *keys)  # fmt: skip
        target.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        source.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    for srv in cluster.masters():
        if srv.port not in (src.port, dst.port):
            with cluster.node(srv) as other:
                other.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)


def test_a_waiter_blocked_while_its_slot_moves_gets_the_worker_checked_in_after(
    cluster: Cluster, rc: RedisCluster
) -> None:
    holder_pool = Pool("movingwait", redis=rc)
    waiter_pool = Pool("movingwait", redis=rc)
    try:
        holder_pool.add_worker("w1")
        held = holder_pool.checkout(auto_renew=False)
        got: list[Lease | BaseException] = []

        def wait() -> None:
            try:
                got.append(waiter_pool.checkout(timeout=20, auto_renew=False))
            except BaseException as exc:  # the test reports it
                got.append(exc)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        wait_for(lambda: holder_pool.status().waiting == 1, timeout=10, message="the waiter")
        slot = cluster.slot_of(PoolKeys("movingwait").prefix)
        home = cluster.server_of_slot(slot).port
        away = next(s.port for s in cluster.masters() if s.port != home)
        _move_slot(cluster, slot, away)
        held.checkin()
        checked_in = time.monotonic()
        waiter.join(timeout=15)
        assert got and isinstance(got[0], Lease), got
        woke = time.monotonic() - checked_in
        assert got[0].worker_id == "w1" and got[0].token > held.token
        assert woke < 5, f"the waiter woke {woke:.2f}s after the checkin"
        status = holder_pool.status()
        assert (status.size, status.busy, status.waiting) == (1, 1, 0)
        got[0].checkin()
    finally:
        holder_pool.close()
        waiter_pool.close()


def test_history_events_and_the_web_view_read_a_pool_on_a_cluster(rc: RedisCluster) -> None:
    pool = Pool("clusterweb", redis=rc)
    web = WebServer(create_app(rc))
    try:
        pool.add_worker("w1", host="<b>h</b>", pid=7)
        pool.checkout(auto_renew=False).checkin()
        history_of(pool.client, pool.name).add({"checkouts": 3})
        events.record(pool.client, pool.name, "action", worker="w1", detail="<i>x</i>")
        status, pools = web.json("api/pools")
        assert status == 200 and [p["pool"] for p in pools] == ["clusterweb"]
        status, snap = web.json("api/pools/clusterweb")
        assert status == 200 and snap["workers"][0]["host"] == "<b>h</b>"
        status, minutes = web.json("api/pools/clusterweb/history?minutes=2")
        assert status == 200 and sum(m["checkouts"] for m in minutes) >= 3
        status, log = web.json("api/pools/clusterweb/events")
        assert status == 200 and any(e["detail"] == "<i>x</i>" for e in log)
    finally:
        web.stop()
        pool.close()


def test_a_pool_over_a_plain_client_of_another_cluster_node_is_told_to_use_a_cluster_url(
    cluster: Cluster, rc: RedisCluster
) -> None:
    """A plain ``redis://`` client of a node that does not serve the pool's
    slot: every call answers MOVED. It must say to use ``redis+cluster://``,
    not "the slot is moving" forever. (A plain client of the node that does
    serve the slot is taken as a lone server: not refused, see the README.)"""
    node = cluster.masters()[0]
    name = next(f"plain{i}" for i in range(1000)
                if cluster.server_of_slot(cluster.slot_of(PoolKeys(f"plain{i}").prefix)).port
                != node.port)  # fmt: skip
    plain = redis.Redis(port=node.port)
    try:
        with Pool(name, redis=plain) as pool, pytest.raises(
            PoolUnavailable, match="redis\\+cluster://"
        ):
            pool.add_worker("w1")
    finally:
        plain.close()
