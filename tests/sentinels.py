"""A master, one replica and three sentinels on loopback, for the Sentinel tests.

Every process is started here and stopped by its pid. The sentinels run the same
binary as the servers with ``--sentinel`` (Debian's redis-server does; Valkey's too).
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from pathlib import Path

import redis
from helpers import free_port, wait_for

from redispool.server import EmbeddedServer, server_binaries

__all__ = ["SERVICE", "SentinelSet"]

SERVICE = "mm"
SENTINELS = 3
CONF = """port {port}
bind 127.0.0.1
dir {dir}
sentinel monitor {service} 127.0.0.1 {master} 2
sentinel down-after-milliseconds {service} 1000
sentinel failover-timeout {service} 3000
sentinel parallel-syncs {service} 1
"""


class SentinelSet:
    """Servers (roles change with each failover) and the sentinels watching them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.binary = server_binaries()[kind]
        self.servers: list[EmbeddedServer] = []
        self.sentinel_ports: list[int] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._dir = Path(tempfile.mkdtemp(prefix="redispool-sentinels-"))

    def start(self) -> SentinelSet:
        master = self._server()
        self._server(*self._replica_of(master.port))
        for i in range(SENTINELS):
            port = free_port()
            conf = self._dir / f"sentinel-{i}.conf"
            conf.write_text(
                CONF.format(port=port, dir=self._dir, service=SERVICE, master=master.port)
            )
            log = open(self._dir / f"sentinel-{i}.log", "wb")  # noqa: SIM115 - the process keeps it
            self._procs.append(
                subprocess.Popen([self.binary, str(conf), "--sentinel"], stdout=log, stderr=log)
            )
            log.close()
            self.sentinel_ports.append(port)
        self.wait_healthy()
        return self

    @staticmethod
    def _replica_of(port: int) -> tuple[str, ...]:
        # expired events off: once promoted, it has them only if a Reaper turns them on
        return ("--replicaof", "127.0.0.1", str(port), "--notify-keyspace-events", "")

    def _server(self, *args: str, port: int | None = None) -> EmbeddedServer:
        srv = EmbeddedServer(self.kind, port=port, extra_args=args).start()
        self.servers.append(srv)
        return srv

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def master_port(self, i: int = 0) -> int:
        with redis.Redis(port=self.sentinel_ports[i], socket_timeout=2) as sentinel:
            _, port = sentinel.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def master(self) -> EmbeddedServer:
        port = self.master_port()
        return next(s for s in self.servers if s.port == port and s.running)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every sentinel names the same live master, sees one synced replica
        and the two other sentinels: then a failover can be authorised."""

        def healthy() -> bool:
            try:
                ports = {self.master_port(i) for i in range(SENTINELS)}
                if len(ports) != 1:
                    return False
                master = self.master()
                for i in range(SENTINELS):
                    with redis.Redis(port=self.sentinel_ports[i], socket_timeout=2) as sentinel:
                        state = sentinel.sentinel_master(SERVICE)
                        replicas = sentinel.sentinel_slaves(SERVICE)
                    if state["num-slaves"] < 1 or state["num-other-sentinels"] < 2:
                        return False
                    if state["is_sdown"] or state["is_odown"]:
                        return False
                    if any(r["is_sdown"] or r["is_disconnected"] for r in replicas):
                        return False
                with redis.Redis(port=master.port, socket_timeout=5) as client:
                    return bool(client.wait(1, 500) >= 1)
            except (redis.RedisError, StopIteration, KeyError):
                return False

        wait_for(healthy, timeout=timeout, interval=0.1, message="a healthy Sentinel set")

    def kill_master(self) -> tuple[EmbeddedServer, float]:
        """SIGKILL the master; (it, seconds until a sentinel named another)."""
        old = self.master()
        old.kill()
        killed = time.monotonic()
        wait_for(lambda: self.master_port() != old.port, timeout=30, interval=0.02,
                 message="a sentinel to name a new master")  # fmt: skip
        return old, time.monotonic() - killed

    def bring_back(self, old: EmbeddedServer) -> None:
        """Start the killed master again on its port, as a replica of the new one."""
        port = old.port
        old.stop()
        self.servers.remove(old)
        self._server(*self._replica_of(self.master_port()), port=port)
        self.wait_healthy()

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for srv in self.servers:
            srv.stop()
        with contextlib.suppress(OSError):
            for path in self._dir.iterdir():
                path.unlink()
            self._dir.rmdir()
