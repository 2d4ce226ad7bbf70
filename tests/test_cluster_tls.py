"""A pool on a Redis Cluster reached over TLS: ``rediss+cluster://`` URLs and
``RedisCluster(ssl=True, ...)`` clients.

One cluster of 3 TLS-only masters (no replicas: failover over TLS is the same
code as test_cluster_failover's) is started for the module; only Redis, since
Valkey's embedded build has no TLS. Every node listens on a plain port too, for
the fixture's own set-up, but the cluster's bus and the topology clients see are
TLS (``tls-cluster yes``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from clusters import Cluster, _args, cluster_of, pool_names_on_every_master
from helpers import FAST, WorkerMain, free_port, self_signed_certificate, wait_for
from redis.cluster import RedisCluster

from redispool import Pool
from redispool.connect import ClusterURL, client_from_url, close_client, validate_url
from redispool.server import EmbeddedServer
from redispool.slot_client import SlotSSLConnection


class TLSCluster(Cluster):
    """A :class:`Cluster` whose nodes serve clients and each other over TLS."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__("redis", masters=3, replicas=0)  # Valkey's embedded build has no TLS
        self.cert, self.key = cert, key
        self.tls_ports: dict[int, int] = {}  # plain port -> TLS port

    def add_server(self) -> EmbeddedServer:
        bus, tls = free_port(), free_port()
        tls_args = (
            "--tls-port", str(tls), "--tls-cert-file", str(self.cert),
            "--tls-key-file", str(self.key), "--tls-ca-cert-file", str(self.cert),
            "--tls-auth-clients", "no", "--tls-cluster", "yes", "--tls-replication", "yes",
        )  # fmt: skip
        srv = EmbeddedServer("redis", extra_args=(*_args(1000, bus), *tls_args)).start()
        self.servers.append(srv)
        self.bus_ports[srv.port] = bus
        self.tls_ports[srv.port] = tls
        return srv

    def tls_url(self, *, ca: bool = True) -> str:
        hosts = ",".join(f"127.0.0.1:{self.tls_ports[s.port]}" for s in self.servers)
        return f"rediss+cluster://{hosts}" + (f"?ssl_ca_certs={self.cert}" if ca else "")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSCluster]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("the TLS cluster test needs the openssl command to make a certificate")
    cert, key = self_signed_certificate(openssl, tmp_path_factory.mktemp("tls"))
    made = cluster_of("redis", lambda kind: TLSCluster(cert, key))
    started = next(made)
    assert isinstance(started, TLSCluster)
    yield started
    next(made, None)


@pytest.fixture
def rc(cluster: TLSCluster) -> Iterator[RedisCluster]:
    client = client_from_url(cluster.tls_url())
    assert isinstance(client, RedisCluster)
    client.flushall()
    try:
        yield client
    finally:
        close_client(client)


def test_a_rediss_cluster_url_pool_leases_on_every_master_over_tls(cluster: TLSCluster) -> None:
    names = pool_names_on_every_master(cluster, 3, prefix="tls")
    for name in names:
        with Pool(name, url=cluster.tls_url()) as pool:
            pool.add_worker("w1")
            lease = pool.checkout(block=False)
            conn = pool.client.connection_pool.make_connection()
            try:
                assert isinstance(conn, SlotSSLConnection)
            finally:
                conn.disconnect()
            assert pool.status().busy == 1
            assert lease.checkin() is True
            assert pool.status().idle == 1


def test_a_redis_cluster_client_with_ssl_runs_a_pool_over_tls(
    cluster: TLSCluster, rc: RedisCluster
) -> None:
    first = cluster.servers[0]
    client = RedisCluster(
        host="127.0.0.1", port=cluster.tls_ports[first.port], ssl=True,
        ssl_ca_certs=str(cluster.cert),
    )  # fmt: skip
    try:
        with Pool("tls-direct", redis=client) as pool:
            pool.add_worker("w1")
            with pool.checkout(timeout=2) as lease:
                lease.renew()  # raises LeaseLost if it did not hold
                assert pool.status().busy == 1
            assert pool.status().idle == 1
    finally:
        client.close()


def test_a_tls_cluster_whose_certificate_is_not_trusted_is_refused_clearly(
    cluster: TLSCluster,
) -> None:
    with pytest.raises(redis.ConnectionError) as info:
        client_from_url(cluster.tls_url(ca=False))
    assert "certificate" in str(info.value).lower()


def test_a_worker_main_on_a_rediss_cluster_url_runs_fenced_jobs(
    cluster: TLSCluster, rc: RedisCluster, tmp_path: Path
) -> None:
    url = cluster.tls_url()
    main = WorkerMain(url, "tlsjobs", tmp_path / "worker_main.log", ("--workers", "1", *FAST))
    try:
        with Pool("tlsjobs", url=url) as pool:
            wait_for(lambda: pool.status().idle >= 1, timeout=20, message="the worker idle")
            with pool.checkout(timeout=5) as lease:
                assert lease.run("redispool.doubler.double", 21) == 42
            wait_for(lambda: "Doubling 21" in main.log(), timeout=5, message="the job's log line")
    finally:
        main.stop(timeout=10)
        main.kill_everything()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("rediss+cluster://h1:6379?ssl_ca_cert=/x", "unknown parameter 'ssl_ca_cert'"),
        ("rediss+cluster://h1:6379?ssl_cert_reqs=maybe", "ssl_cert_reqs wants one of"),
        ("rediss+cluster://h1:6379?ssl_check_hostname=yes", "ssl_check_hostname wants one of"),
        ("rediss+cluster://h1:6379?ssl_ca_certs=", "ssl_ca_certs wants one path"),
        ("rediss+cluster://h1:6379?ssl_ca_certs=/a&ssl_ca_certs=/b", "wants one path"),
        ("redis+cluster://h1:6379?ssl_ca_certs=/a", "TLS options go on a rediss+cluster"),
        ("rediss+cluster://u:secret@h1:6379/1", "only database 0"),
    ],
)
def test_a_bad_tls_cluster_url_is_refused_before_connecting(url: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_url(url)
    assert why in str(info.value)
    assert "secret" not in str(info.value)


def test_a_tls_cluster_url_is_read_into_tls_options() -> None:
    url = "rediss+cluster://u:p@h1:7000,h2?ssl_ca_certs=/ca.pem&ssl_cert_reqs=REQUIRED&ssl_check_hostname=false"
    parsed = ClusterURL.parse(validate_url(url))
    assert parsed.tls is True
    assert parsed.nodes == (("h1", 7000), ("h2", 6379))
    assert dict(parsed.tls_options) == {
        "ssl_ca_certs": "/ca.pem", "ssl_cert_reqs": "required", "ssl_check_hostname": False,
    }  # fmt: skip
    assert ClusterURL.parse("redis+cluster://h1:7000").tls is False
