"""A Redis Cluster on loopback for the cluster tests: 3 masters, one replica each.

Every server is an :class:`EmbeddedServer` (stopped by its pid); the cluster is made
with CLUSTER ADDSLOTSRANGE / MEET / REPLICATE from here, so no ``redis-cli`` is needed
and the same code runs Valkey. ``cluster-node-timeout`` is short (1 s) so that a
SIGKILLed master is replaced by its replica in a few seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from helpers import free_port, wait_for

from redispool.server import EmbeddedServer, server_binaries

__all__ = ["Cluster", "cluster_of", "pool_names_on_every_master"]

SLOTS = 16384
NODE_TIMEOUT_MS = 1000


def _args(node_timeout_ms: int, bus_port: int) -> tuple[str, ...]:
    return (
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", str(node_timeout_ms),
        # a replica serving stale data during a partition is not what we test
        "--cluster-replica-validity-factor", "0",
        # the masters that still serve their slots go on while one fails over
        "--cluster-require-full-coverage", "no",
        "--cluster-port", str(bus_port),  # the default (port + 10000) may not exist
    )  # fmt: skip


class Cluster:
    """``masters`` masters with ``replicas`` replicas each; roles change with failovers."""

    def __init__(self, kind: str, masters: int = 3, replicas: int = 1) -> None:
        self.kind = kind
        self.n_masters, self.n_replicas = masters, replicas
        self.servers: list[EmbeddedServer] = []
        self.bus_ports: dict[int, int] = {}  # port -> cluster bus port

    # -- life -------------------------------------------------------------------

    def start(self) -> Cluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        for _ in range(self.n_masters * (1 + self.n_replicas)):
            self.add_server()
        masters = self.servers[: self.n_masters]
        per = SLOTS // self.n_masters
        for i, srv in enumerate(masters):
            last = SLOTS - 1 if i == self.n_masters - 1 else (i + 1) * per - 1
            self.node(srv).execute_command("CLUSTER ADDSLOTSRANGE", i * per, last)
        for srv in self.servers[1:]:
            first = self.servers[0].port
            bus = self.bus_ports[first]
            self.node(srv).execute_command("CLUSTER MEET", "127.0.0.1", first, bus)
        total = len(self.servers)
        wait_for(lambda: all(self._known(s) == total for s in self.servers), timeout=20,
                 interval=0.02, message="every node to know every other")  # fmt: skip
        for i, srv in enumerate(self.servers[self.n_masters :]):
            master = masters[i % self.n_masters]
            with self.node(srv) as replica:
                replica.execute_command("CLUSTER REPLICATE", self.node_id(master))
                # expired events off: once promoted, it has them only if a Reaper turns them on
                replica.config_set("notify-keyspace-events", "")
        self.wait_healthy()

    def add_server(self) -> EmbeddedServer:
        """A fresh cluster-enabled server, not yet part of the cluster."""
        bus = free_port()
        srv = EmbeddedServer(self.kind, extra_args=_args(NODE_TIMEOUT_MS, bus)).start()
        self.servers.append(srv)
        self.bus_ports[srv.port] = bus
        return srv

    def stop(self) -> None:
        for srv in self.servers:
            srv.stop()
        self.servers = []

    # -- looking ----------------------------------------------------------------

    @staticmethod
    def node(srv: EmbeddedServer | int) -> redis.Redis:
        port = srv if isinstance(srv, int) else srv.port
        return redis.Redis(port=port, socket_timeout=5, decode_responses=True)

    def node_id(self, srv: EmbeddedServer) -> str:
        with self.node(srv) as client:
            return str(client.execute_command("CLUSTER MYID"))

    def info(self, srv: EmbeddedServer) -> dict[str, str]:
        """CLUSTER INFO of ``srv``."""
        with self.node(srv) as client:
            info: dict[str, str] = client.execute_command("CLUSTER INFO")
        return info

    def _known(self, srv: EmbeddedServer) -> int:
        return int(self.info(srv).get("cluster_known_nodes", 0))

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.servers if s.running)
        return f"redis+cluster://{hosts}"

    def masters(self) -> list[EmbeddedServer]:
        """The running servers that are masters with slots, per the nodes' own view."""
        found = []
        for srv in self.servers:
            if not srv.running:
                continue
            try:
                with self.node(srv) as client:
                    role = client.execute_command("ROLE")
                    if role[0] == "master" and self._has_slots(client):
                        found.append(srv)
            except redis.RedisError:
                continue
        return found

    @staticmethod
    def _has_slots(client: redis.Redis) -> bool:
        nodes: dict[str, dict[str, Any]] = client.execute_command("CLUSTER NODES")
        return any("myself" in n["flags"] and n["slots"] for n in nodes.values())

    def server_of_slot(self, slot: int) -> EmbeddedServer:
        """The master serving ``slot``, as a live node reports it."""
        for srv in self.servers:
            if not srv.running:
                continue
            try:
                with self.node(srv) as client:
                    for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                        if int(start) <= slot <= int(end):
                            port = int(master[1])
                            return next(s for s in self.servers if s.port == port)
            except redis.RedisError:
                continue
        raise AssertionError(f"no node serves slot {slot}")

    def slot_of(self, key: str) -> int:
        with self.node(next(s for s in self.servers if s.running)) as client:
            return int(client.execute_command("CLUSTER KEYSLOT", key))

    def healthy(self) -> bool:
        """Every running node reports cluster_state:ok and the same epoch view;
        every master has a synced replica."""
        try:
            for srv in self.servers:
                if not srv.running:
                    continue
                if self.info(srv).get("cluster_state") != "ok":
                    return False
            masters = self.masters()
            if len(masters) != self.n_masters:
                return False
            for srv in masters:
                with self.node(srv) as client:
                    info: dict[str, Any] = client.info("replication")
                    if int(info.get("connected_slaves", 0)) < self.n_replicas:
                        return False
                    if int(client.wait(self.n_replicas, 500)) < self.n_replicas:
                        return False
            return True
        except redis.RedisError:
            return False

    def wait_healthy(self, timeout: float = 30.0) -> None:
        wait_for(self.healthy, timeout=timeout, interval=0.05, message="a healthy cluster")

    # -- failures ---------------------------------------------------------------

    def kill_master_of(self, slot: int) -> tuple[EmbeddedServer, float, float]:
        """SIGKILL the master of ``slot``; (it, the monotonic time it was killed,
        seconds until another node serves the slot)."""
        old = self.server_of_slot(slot)
        old.kill()
        killed = time.monotonic()

        def moved() -> bool:
            try:
                return self.server_of_slot(slot).port != old.port
            except AssertionError:
                return False

        wait_for(moved, timeout=30, interval=0.02, message="a replica promoted")
        return old, killed, time.monotonic() - killed

    def bring_back(self, old: EmbeddedServer) -> None:
        """Restart a killed node (its nodes.conf kept): it rejoins as a replica."""
        old.start()
        self.wait_healthy()


def pool_names_on_every_master(cluster: Cluster, count: int, prefix: str = "c") -> list[str]:
    """``count`` pool names whose slots spread evenly over the masters."""
    from redispool.keys import PoolKeys

    by_master: dict[int, list[str]] = {}
    i = 0
    want = -(-count // cluster.n_masters)
    while sum(len(v) for v in by_master.values()) < count:
        name = f"{prefix}{i}"
        i += 1
        port = cluster.server_of_slot(cluster.slot_of(PoolKeys(name).prefix)).port
        if len(by_master.setdefault(port, [])) < want:
            by_master[port].append(name)
    return sorted(n for names in by_master.values() for n in names)[:count]


def cluster_of(kind: str, make: Callable[[str], Cluster] = Cluster) -> Iterator[Cluster]:
    """A started cluster of ``kind`` (``make(kind)``, a :class:`Cluster` by default) for a
    module fixture; skipped where the kind is missing (failed under CI=true), stopped by
    pid at the end."""
    if kind not in server_binaries():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires every server kind: no {kind} server here")
        pytest.skip(f"no {kind} server here")
    started = make(kind).start()
    try:
        yield started
    finally:
        started.stop()
