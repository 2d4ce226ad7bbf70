"""A pool on a Redis Cluster keeps the core contract, on whichever master owns its slot.

One cluster (3 masters, one replica each) is started for the module.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis
from clusters import Cluster, cluster_of, pool_names_on_every_master
from helpers import in_thread, wait_for
from redis.cluster import RedisCluster

from redispool import (
    CheckoutTimeout,
    Lease,
    LeaseLost,
    Pool,
    PoolFull,
    PoolUnavailable,
    Reaper,
    install,
)
from redispool.acl import PROBE_CHANNELS, acl_rules
from redispool.cluster import guard_key, masters
from redispool.connect import client_from_url, close_client
from redispool.keys import PoolKeys
from redispool.scripts import installed_versions, library


@pytest.fixture(scope="module", params=["redis", "valkey"])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    yield from cluster_of(request.param)


@pytest.fixture
def rc(cluster: Cluster) -> Iterator[RedisCluster]:
    client = client_from_url(cluster.url)
    assert isinstance(client, RedisCluster)
    client.flushall()
    try:
        yield client
    finally:
        close_client(client)


@pytest.fixture
def pools(rc: RedisCluster) -> Iterator[list[Pool]]:
    made: list[Pool] = []
    yield made
    for pool in made:
        pool.close()


def _pool(rc: RedisCluster, made: list[Pool], name: str, workers: int = 0, **kw: object) -> Pool:
    pool = Pool(name, redis=rc, **kw)  # type: ignore[arg-type]
    made.append(pool)
    for i in range(1, workers + 1):
        pool.add_worker(f"w{i}")
    return pool


def _master_port(pool: Pool) -> int:
    return int(pool.client.connection_pool.connection_kwargs["slot_route"].address()[1])


def test_a_cluster_url_pool_checks_out_until_full_and_checks_in(
    cluster: Cluster, rc: RedisCluster
) -> None:
    with Pool("urlpool", url=cluster.url) as pool:
        for i in (1, 2):
            pool.add_worker(f"w{i}")
        leases = [pool.checkout(block=False) for _ in range(2)]
        with pytest.raises(PoolFull):
            pool.checkout(block=False)
        assert leases[0].checkin() is True
        assert pool.checkout(block=False).worker_id == leases[0].worker_id
        keys = {k.decode() for k in pool.client.keys(PoolKeys("urlpool").prefix + "*")}
        assert keys and all(k.startswith("redispool:{urlpool}:") for k in keys)
        assert rc.exists(guard_key(PoolKeys("urlpool").prefix)) == 0  # never written


def test_pools_spread_over_every_master_each_on_the_master_of_its_slot(
    cluster: Cluster, rc: RedisCluster, pools: list[Pool]
) -> None:
    names = pool_names_on_every_master(cluster, 6)
    for name in names:
        pool = _pool(rc, pools, name, workers=1)
        lease = pool.checkout(block=False)
        owner = cluster.server_of_slot(cluster.slot_of(pool.keys.prefix))
        assert _master_port(pool) == owner.port
        with cluster.node(owner) as node:
            assert node.exists(pool.keys.lease(lease.worker_id)) == 1
        assert lease.checkin() is True
    assert len({_master_port(p) for p in pools}) == 3


def test_timeout_then_a_waiter_woken_by_a_checkin_on_its_master(
    rc: RedisCluster, pools: list[Pool]
) -> None:
    pool = _pool(rc, pools, "waiting", workers=1)
    held = pool.checkout(block=False)
    started = time.monotonic()
    with pytest.raises(CheckoutTimeout):
        pool.checkout(timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 2.0
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(pool.checkout(timeout=10).worker_id))
    waiter.start()
    wait_for(lambda: pool.status().waiting == 1, timeout=5, message="the waiter queued")
    assert held.checkin() is True
    waiter.join(timeout=10)
    assert got == ["w1"]


def test_waiters_are_served_first_come_first_served(rc: RedisCluster, pools: list[Pool]) -> None:
    pool = _pool(rc, pools, "fifo", workers=1)
    held = pool.checkout(block=False)
    order: list[int] = []
    threads = []
    for i in range(3):
        def wait(i: int = i) -> None:
            lease = pool.checkout(timeout=20)
            order.append(i)
            lease.checkin()
        thread = threading.Thread(target=wait)
        thread.start()
        threads.append(thread)
        wait_for(lambda i=i: pool.status().waiting == i + 1, timeout=5, message="queued")
    held.checkin()
    for thread in threads:
        thread.join(timeout=20)
    assert order == [0, 1, 2]


def test_a_lease_lost_to_its_ttl_cannot_renew_or_check_in_over_the_new_holder(
    rc: RedisCluster, pools: list[Pool]
) -> None:
    pool = _pool(rc, pools, "stale", workers=1, lease_ttl=0.3)
    old = pool.checkout(block=False, auto_renew=False)
    new = wait_for(lambda: _try_checkout(pool), timeout=5, message="the worker back")
    assert isinstance(new, type(old)) and new.token > old.token
    with pytest.raises(LeaseLost):
        old.renew()
    assert old.checkin() is False
    assert pool.status().busy == 1
    assert new.checkin() is True


def _try_checkout(pool: Pool) -> object:
    try:
        return pool.checkout(block=False)
    except PoolFull:
        return None


def test_install_loads_the_library_on_every_master(cluster: Cluster, rc: RedisCluster) -> None:
    for node in masters(rc):
        node.function_flush()
    done = install(rc)
    assert done.library == library().name
    for srv in cluster.masters():
        with redis.Redis(port=srv.port) as node:
            assert installed_versions(node) == [library().name]


def test_a_master_that_lost_the_library_gets_it_from_the_first_call(
    cluster: Cluster, rc: RedisCluster, pools: list[Pool]
) -> None:
    pool = _pool(rc, pools, "reload", workers=1)
    with cluster.node(cluster.server_of_slot(cluster.slot_of(pool.keys.prefix))) as node:
        node.function_flush()
    assert pool.checkout(block=False).checkin() is True


def test_the_reaper_hears_expired_leases_on_every_master(
    cluster: Cluster, rc: RedisCluster, pools: list[Pool]
) -> None:
    names = pool_names_on_every_master(cluster, 3, prefix="reap")
    for name in names:
        _pool(rc, pools, name, workers=1, lease_ttl=0.2)
    with Reaper(rc, sweep_interval=60) as reaper:  # sweeps only at start: events do the rest
        for pool in pools:
            pool.checkout(block=False, auto_renew=False)
        wait_for(lambda: reaper.by_event >= 3, timeout=10, message="an event from each master")
        assert all(p.status().idle == 1 for p in pools)


class _Unreachable:
    """A master that does not answer (down, or gone in a failover not yet seen)."""

    def scan_iter(self, *args: object, **kwargs: object) -> Iterator[bytes]:
        raise redis.ConnectionError("Error 111 connecting to the dead master (the test)")


def test_a_reaper_of_every_pool_listens_on_while_one_master_does_not_answer(
    cluster: Cluster, rc: RedisCluster, pools: list[Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    # a Reaper of all pools finds them on every master at each sweep; one master
    # that did not answer made the whole Reaper reconnect, sweep and fail again,
    # listening to no master meanwhile (seen after a failover in test_cluster_failover)
    from redispool import cluster as cluster_module
    from redispool import discovery

    real = cluster_module.named_masters

    def one_dead(client: RedisCluster, **kw: bool) -> Iterator[tuple[str, object]]:
        yield "127.0.0.1:1", _Unreachable()
        yield from real(client, **kw)

    monkeypatch.setattr(discovery, "named_masters", one_dead, raising=False)
    monkeypatch.setattr(cluster_module, "named_masters", one_dead)  # masters() walks it too
    names = pool_names_on_every_master(cluster, 3, prefix="deadm")
    for name in names:
        _pool(rc, pools, name, workers=1, lease_ttl=0.2)
    with pytest.raises(redis.ConnectionError):  # an operator's listing says so
        discovery.find_pools(rc)
    assert discovery.find_pools(rc, skip_unreachable=True) == sorted(names)  # the Reaper's
    with Reaper(rc, sweep_interval=60) as reaper:
        assert reaper.listening.is_set()
        for pool in pools:
            pool.checkout(block=False, auto_renew=False)
        wait_for(lambda: reaper.by_event >= 3, timeout=10, message="an event from each master")


@pytest.mark.parametrize("how", ["deaf", "killed"])
def test_a_reaper_whose_subscription_on_a_master_broke_listens_there_again(
    cluster: Cluster, rc: RedisCluster, pools: list[Pool], how: str
) -> None:
    # deaf: as on Valkey 8.1 after a failover, the promoted master no longer counted
    # the Reaper's open, polled connection among the subscribers, and no event came
    # (an outside subscriber's did); here the connection leaves its channels behind
    # the client's back. killed: the connection is cut (CLIENT KILL).
    pool = _pool(rc, pools, f"{how}sub", workers=1, lease_ttl=0.2)
    port = _master_port(pool)
    name = f"127.0.0.1:{port}"
    with Reaper(rc, sweep_interval=60) as reaper:
        events = reaper._events
        assert events is not None
        broken = events._subs[name]
        others = {n: sub for n, sub in events._subs.items() if n != name}
        assert broken.connection is not None and len(others) == 2
        with cluster.node(port) as node:
            if how == "deaf":
                broken.connection.send_command("UNSUBSCRIBE")  # the client thinks it listens
                wait_for(lambda: node.pubsub_numsub(events.channel)[0][1] == 0, timeout=5,
                         message="the server to stop sending to the Reaper")  # fmt: skip
            else:
                local = broken.connection._sock.getsockname()  # type: ignore[attr-defined]
                node.client_kill(f"{local[0]}:{local[1]}")
        wait_for(lambda: events._subs.get(name) not in (None, broken), timeout=10,
                 message="a new subscription")  # fmt: skip
        assert events.remade == (1 if how == "deaf" else 0)  # killed: seen as it broke
        pool.checkout(block=False, auto_renew=False)
        wait_for(lambda: reaper.heard[pool.name] > 0, timeout=10,
                 message="the expired event on the new subscription")  # fmt: skip
        # the other masters' subscriptions were kept throughout: no whole reconnect
        assert reaper._events is events
        assert {n: sub for n, sub in events._subs.items() if n != name} == others


@pytest.mark.parametrize("probes", [True, False], ids=["acl-of-now", "acl-without-probes"])
def test_a_job_users_reaper_hears_every_master_with_or_without_the_right_to_probe(
    cluster: Cluster, rc: RedisCluster, pools: list[Pool], probes: bool
) -> None:
    # a job user's ACL made before the probes (no PUBLISH, no probe channels): the
    # refused probe must not end the Reaper, nor cost the expired events
    rules = acl_rules(["aclpool"], jobs=True)
    if not probes:
        rules = [r for r in rules if r not in ("+publish", PROBE_CHANNELS)]
    servers = [srv for srv in cluster.servers if srv.running]
    for srv in servers:
        with cluster.node(srv) as node:
            node.execute_command("ACL", "SETUSER", "reaperu", "on", ">pw", *rules)
    user = client_from_url(cluster.url.replace("://", "://reaperu:pw@", 1))
    try:
        pool = _pool(rc, pools, "aclpool", workers=1, lease_ttl=0.2)
        with Reaper(user, pools=["aclpool"], sweep_interval=60) as reaper:
            events = reaper._events
            assert events is not None and len(events.subscribed()) == 3
            if probes:
                wait_for(lambda: events.answered >= 3, timeout=10,
                         message="a probe answered on every master")  # fmt: skip
            else:
                wait_for(lambda: events._unprobed == events.subscribed(), timeout=10,
                         message="the probe refused on every master")  # fmt: skip
            pool.checkout(block=False, auto_renew=False)
            wait_for(lambda: reaper.heard["aclpool"] > 0, timeout=10,
                     message="the expired event")  # fmt: skip
            assert reaper._thread is not None and reaper._thread.is_alive()
            assert events.remade == 0 and reaper._events is events
    finally:
        close_client(user)
        for srv in servers:
            with cluster.node(srv) as node:
                node.execute_command("ACL", "DELUSER", "reaperu")


def test_a_reaper_that_could_not_turn_events_on_at_a_master_asks_it_again(
    cluster: Cluster, rc: RedisCluster, pools: list[Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    from redispool import reaper as reaper_module

    for srv in cluster.masters():
        with cluster.node(srv) as node:
            node.config_set("notify-keyspace-events", "")
    real = reaper_module.enable_expiry_events
    failed: list[int] = []

    def once_unreachable(client: redis.Redis) -> bool:
        if not failed:  # the first master asked does not answer, this once
            failed.append(client.connection_pool.connection_kwargs["port"])
            raise redis.ConnectionError("cut off (the test)")
        return real(client)

    monkeypatch.setattr(reaper_module, "enable_expiry_events", once_unreachable)

    def events_on(port: int) -> bool:
        with cluster.node(port) as node:
            flags = str(node.config_get("notify-keyspace-events")["notify-keyspace-events"])
        return "E" in flags and ("x" in flags or "A" in flags)

    with Reaper(rc, sweep_interval=60):
        wait_for(lambda: failed and events_on(failed[0]), timeout=10,
                 message="events on at the master that did not answer at first")  # fmt: skip
        assert all(events_on(srv.port) for srv in cluster.masters())


def test_a_fence_store_on_a_cluster_refuses_the_stale_token_after_the_new_one_wrote(
    cluster: Cluster, rc: RedisCluster, pools: list[Pool]
) -> None:
    from redispool import Fence, StaleToken

    pool = _pool(rc, pools, "fenced", workers=1, lease_ttl=0.3)
    fence = Fence(rc, "fenced-orders")
    old = pool.checkout(block=False, auto_renew=False)
    fence.write(old.token, "order-1", "old: first")
    new = pool.checkout(timeout=5, auto_renew=False)
    assert new.token > old.token
    fence.write(new.token, "order-1", "new")
    with pytest.raises(StaleToken):
        fence.write(old.token, "order-1", "old: late")
    assert fence.read("order-1") == b"new" and fence.highest() == new.token
    keys = [k.decode() for k in rc.keys("redispool:fence:*")]
    assert len({cluster.slot_of(k) for k in keys}) == 1  # one slot: the script's keys together


def _begin_migration(cluster: Cluster, slot: int) -> tuple[redis.Redis, redis.Redis, int, str]:
    src = cluster.server_of_slot(slot)
    dst = next(s for s in cluster.masters() if s.port != src.port)
    source, target = cluster.node(src), cluster.node(dst)
    target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", cluster.node_id(src))
    source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", cluster.node_id(dst))
    return source, target, dst.port, cluster.node_id(dst)


def _finish_migration(
    cluster: Cluster, slot: int, source: redis.Redis, target: redis.Redis, port: int, dst: str
) -> None:
    while keys := source.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
        source.execute_command("MIGRATE", "127.0.0.1", port, "", 0, 5000, "KEYS", *keys)
    for node in (target, source):
        node.execute_command("CLUSTER SETSLOT", slot, "NODE", dst)
        node.close()


def test_a_script_on_a_migrating_slot_never_half_runs(
    cluster: Cluster, rc: RedisCluster, pools: list[Pool]
) -> None:
    pool = _pool(rc, pools, "halfway", workers=2)
    slot = cluster.slot_of(pool.keys.prefix)
    source, target, port, dst = _begin_migration(cluster, slot)
    try:
        # Were every key checkout names on the old master, Redis would run it there and
        # stop it at the SET of the lease key, which is not ("Script attempted to access
        # a non local key"), after it popped the idle list. A named key that never
        # exists (the guard) makes it answer TRYAGAIN instead.
        started = time.monotonic()
        with pytest.raises(PoolUnavailable, match="slot is moving"):
            pool.checkout(block=False)
        assert 1.5 < time.monotonic() - started < 10  # TRYAGAIN sent again for ~2 s
        assert source.llen(pool.keys.idle) == 2  # nothing ran
    finally:
        _finish_migration(cluster, slot, source, target, port, dst)
    lease = pool.checkout(block=False)  # MOVED followed, on the new master
    assert cluster.server_of_slot(slot).port == port == _master_port(pool)
    assert pool.status().idle == 1 and lease.checkin() is True


def test_a_waiter_waits_through_a_slot_move_longer_than_the_slot_clients_retries(
    cluster: Cluster, rc: RedisCluster, pools: list[Pool]
) -> None:
    pool = _pool(rc, pools, "longmove", workers=1, lease_ttl=1.5)
    held = pool.checkout(block=False, auto_renew=False)
    got: list[object] = []  # the lease, or the failure this test is about
    waiter = in_thread(lambda: pool.checkout(timeout=20, auto_renew=False), got)
    wait_for(lambda: pool.status().waiting == 1, timeout=5, message="the waiter queued")
    slot = cluster.slot_of(pool.keys.prefix)
    source, target, port, dst = _begin_migration(cluster, slot)
    moving = time.monotonic()
    try:
        # the move lasts 3.5 s: past the slot client's 2 s of retries, and past the
        # held lease's TTL; every script of the pool is refused (TRYAGAIN) meanwhile
        while time.monotonic() - moving < 3.5 and not got:
            waiter.join(timeout=0.1)
    finally:
        _finish_migration(cluster, slot, source, target, port, dst)
    waiter.join(timeout=20)
    assert len(got) == 1 and isinstance(got[0], Lease), got
    assert got[0].worker_id == "w1" and got[0].token > held.token
    assert time.monotonic() - moving >= 3.5  # it was served after the move, not during it
    assert held.checkin() is False  # the expired holder cannot give it back twice
    assert got[0].checkin() is True and pool.status().idle == 1


def test_a_blocking_checkout_begun_during_a_long_slot_move_is_served_after_it(
    cluster: Cluster, rc: RedisCluster, pools: list[Pool]
) -> None:
    pool = _pool(rc, pools, "lateask", workers=1)
    slot = cluster.slot_of(pool.keys.prefix)
    source, target, port, dst = _begin_migration(cluster, slot)
    got: list[object] = []  # the lease, or the failure this test is about
    moving = time.monotonic()
    asker = in_thread(lambda: pool.checkout(timeout=20, auto_renew=False), got)
    try:
        while time.monotonic() - moving < 3.0 and not got:
            asker.join(timeout=0.1)
    finally:
        _finish_migration(cluster, slot, source, target, port, dst)
    asker.join(timeout=20)
    assert len(got) == 1 and isinstance(got[0], Lease), got
    with pytest.raises(PoolFull):  # one worker, leased once
        pool.checkout(block=False)
    assert got[0].checkin() is True


def test_connections_to_the_old_master_follow_moved_without_an_error(
    cluster: Cluster, rc: RedisCluster, pools: list[Pool]
) -> None:
    pool = _pool(rc, pools, "follows", workers=1)
    for _ in range(5):
        pool.checkout(block=False).checkin()  # connections made to the current master
    slot = cluster.slot_of(pool.keys.prefix)
    source, target, port, dst = _begin_migration(cluster, slot)
    _finish_migration(cluster, slot, source, target, port, dst)
    lease = pool.checkout(block=False)  # its free connection meets MOVED: sent again
    assert lease.checkin() is True
    assert _master_port(pool) == port


def test_a_master_added_later_gets_the_library_and_serves_a_moved_pool(
    cluster: Cluster, rc: RedisCluster, pools: list[Pool]
) -> None:
    """Runs last in its module: it leaves a fourth master (with one slot) behind."""
    pool = _pool(rc, pools, "newhome", workers=1)
    new = cluster.add_server()
    first = cluster.servers[0]
    with cluster.node(new) as node:
        node.execute_command("CLUSTER MEET", "127.0.0.1", first.port, cluster.bus_ports[first.port])
    wait_for(lambda: all(cluster.info(s).get("cluster_known_nodes") == str(len(cluster.servers))
                         for s in cluster.servers if s.running),
             timeout=20, interval=0.05, message="every node to know the new one")  # fmt: skip
    wait_for(lambda: cluster.info(new).get("cluster_state") == "ok", timeout=20,
             interval=0.05, message="the new node to see the cluster up")  # fmt: skip
    slot = cluster.slot_of(pool.keys.prefix)
    src = cluster.server_of_slot(slot)
    source, target = cluster.node(src), cluster.node(new)
    target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", cluster.node_id(src))
    source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", cluster.node_id(new))
    _finish_migration(cluster, slot, source, target, new.port, cluster.node_id(new))
    with redis.Redis(port=new.port) as node:
        assert installed_versions(node) == []  # a fresh server: no library yet
        lease = pool.checkout(block=False)  # MOVED to it; the call loads the library
        assert installed_versions(node) == [library().name]
        assert lease.checkin() is True and _master_port(pool) == new.port
        node.function_flush()
        install(rc)  # reads the topology afresh: the new master is one of them
        assert installed_versions(node) == [library().name]
