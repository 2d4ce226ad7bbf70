"""Several hosts on one machine: network namespaces joined by a bridge.

A :class:`Network` is a bridge in a namespace of its own plus one namespace
per :class:`Host`, each joined to the bridge by a veth pair, on a private
subnet that exists only inside these namespaces. Nothing is added to the
root namespace. Every process that talks to a namespace address runs inside
a namespace (``Host.run``): the test process itself never connects to one.

``Host.cut()`` takes the host's link down on the bridge's side (the far side,
so its peers see timeouts as in a real partition); ``Host.heal()`` brings it
back. ``Network.close()`` kills, by pid, every process still running in its
namespaces, then deletes the namespaces (the veths and the bridge go with
them). Needs root and iproute2's ``ip``; :func:`unavailable` says why not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["Host", "Network", "NsServer", "unavailable"]

SUBNET = "10.77.0"  # /24, private to the namespaces of one Network
REDIS_PORT = 6379
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

_PING = """
import socket, sys, time
deadline = time.monotonic() + float(sys.argv[3])
while True:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5) as s:
            s.sendall(b"PING\\r\\n")
            if s.recv(64).startswith(b"+PONG"):
                sys.exit(0)
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.02)
"""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be made here, or None if they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not on PATH"
    probe = f"rpprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class Network:
    """A bridge namespace and the host namespaces attached to it."""

    def __init__(self, tag: str = "") -> None:
        self.tag = f"rp{os.getpid()}{tag}"
        self.bridge_ns = f"{self.tag}-br"
        self.hosts: list[Host] = []
        self.servers: list[NsServer] = []
        self.dir = Path(tempfile.mkdtemp(prefix=f"redispool-{self.tag}-"))
        self._namespaces: list[str] = []
        self._add_ns(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")

    def _add_ns(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def host(self, name: str) -> Host:
        """A new host namespace on the bridge, with the next address of the subnet."""
        if not name.isalnum() or len(name) > 10:
            raise ValueError(f"host name must be 1-10 letters or digits, got {name!r}")
        ns, peer = f"{self.tag}-{name}", f"v{name}"
        addr = f"{SUBNET}.{len(self.hosts) + 1}"
        self._add_ns(ns)
        _ip("-n", self.bridge_ns, "link", "add", peer, "type", "veth", "peer", "name", "eth0",
            "netns", ns)  # fmt: skip
        _ip("-n", self.bridge_ns, "link", "set", peer, "master", "br0")
        _ip("-n", self.bridge_ns, "link", "set", peer, "up")
        _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        host = Host(self, name, ns, addr, peer)
        self.hosts.append(host)
        return host

    def close(self) -> None:
        """Kill every process in our namespaces (by pid), then delete them all."""
        for server in self.servers:
            server.stop()
        for host in self.hosts:
            host.kill_all()
        for ns in reversed(self._namespaces):
            _kill_namespace_pids(ns)
            _ip("netns", "del", ns, check=False)
        self._namespaces.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _kill_namespace_pids(ns: str) -> None:
    """SIGKILL each process left in ``ns`` (all were started by us) and wait for it."""
    pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT
    for pid in pids:
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.01)


def _running(pid: int) -> bool:
    """False once ``pid`` is gone or a zombie (reaped here if it is our child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
    except ChildProcessError:  # not ours: whoever adopted it reaps it
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class Host:
    """One namespace on the bridge: ``.ns``, ``.addr``; runs processes inside it."""

    def __init__(self, net: Network, name: str, ns: str, addr: str, peer: str) -> None:
        self.net, self.name, self.ns, self.addr, self._peer = net, name, ns, addr, peer
        self.procs: list[subprocess.Popen[Any]] = []

    def run(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside this namespace (``ip netns exec`` execs it: same pid)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], **popen)
        self.procs.append(proc)
        return proc

    def python(self, args: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        """This interpreter running ``args`` inside the namespace."""
        return self.run([sys.executable, *args], **popen)

    def cut(self) -> None:
        """Take the link down on the bridge's side: peers see timeouts."""
        _ip("-n", self.net.bridge_ns, "link", "set", self._peer, "down")

    def heal(self) -> None:
        _ip("-n", self.net.bridge_ns, "link", "set", self._peer, "up")

    def start_server(self, kind: str, *, appendonly: bool = False) -> NsServer:
        """A Redis/Valkey server bound on this host's address."""
        server = NsServer(self, kind, appendonly=appendonly)
        self.net.servers.append(server)
        return server.start()

    def kill_all(self) -> None:
        """SIGKILL every process started here, by pid (a teardown, not a drain)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self.procs.clear()

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.ns} {self.addr}>"


class NsServer:
    """A server process inside a host namespace; restart keeps address and data dir."""

    def __init__(self, host: Host, kind: str, *, appendonly: bool) -> None:
        from redispool.server import server_binaries

        binary = server_binaries().get(kind)
        if binary is None:
            raise RuntimeError(f"no {kind} server binary here")
        self.host, self.kind, self.binary, self.appendonly = host, kind, binary, appendonly
        self.dir = host.net.dir / f"{kind}-{host.name}"
        self.dir.mkdir(exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host.addr}:{REDIS_PORT}/0"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> NsServer:
        """Start and return once it answers PING (asked from inside its namespace)."""
        args = [
            self.binary, "--port", str(REDIS_PORT), "--bind", self.host.addr,
            "--protected-mode", "no", "--save", "", "--dir", str(self.dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--notify-keyspace-events", "Ex", "--daemonize", "no",
        ]  # fmt: skip
        self._log = open(self.dir / "server.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = self.host.run(args, stdout=self._log, stderr=subprocess.STDOUT)
        ping = self.host.python(["-c", _PING, self.host.addr, str(REDIS_PORT), str(START_TIMEOUT)])
        if ping.wait() != 0:
            raise RuntimeError(f"{self.kind} in {self.host.ns} did not answer PING")
        return self

    def stop(self) -> None:
        """SIGTERM by pid (a clean shutdown: AOF is flushed), SIGKILL after 5 s."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()
