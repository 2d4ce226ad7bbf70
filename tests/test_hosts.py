"""Several hosts on one machine: clients, workers and Redis in namespaces of their own.

Each test builds a private network (tests/netns.py): Redis in one namespace,
worker_main.py in one or two, pool clients (tests/procs/pool_agent.py, driven
over stdin/stdout) in others. Every connection to Redis is made from inside a
namespace. A host is cut off by taking its link down on the bridge's side.
Each test prints what it measured (run pytest with -s to see it); times are
``time.monotonic()``, one clock for every process here.

Timing settings: client lease TTL 1.5 s, worker heartbeat TTL 1 s, Reaper
sweep 0.2 s. Needs root and ``ip``; skipped otherwise, a failure under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for
from netns import Host, Network, NsServer, unavailable

ROOT = Path(__file__).resolve().parent.parent
WORKER_MAIN = ROOT / "worker_main.py"
AGENT = Path(__file__).resolve().parent / "procs" / "pool_agent.py"
POOL = "doublers"
TTL = 1.5
HEARTBEAT_TTL = 1.0
SWEEP = 0.2


@pytest.fixture(scope="session")
def netns_ok() -> None:
    reason = unavailable()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires network namespaces: {reason}")
    pytest.skip(reason)


@pytest.fixture
def net(netns_ok: None, server_kind: str) -> Iterator[Network]:
    with Network(server_kind[0]) as network:
        yield network


class Agent:
    """A pool client process inside a host namespace, driven by JSON lines."""

    def __init__(self, host: Host, url: str) -> None:
        self.host = host
        self.proc = host.python(
            [str(AGENT), url, POOL, str(TTL)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, cwd=ROOT,
        )  # fmt: skip
        self._replies: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._ids = iter(range(1, 1 << 30))
        threading.Thread(target=self._read, daemon=True).start()
        self.wait("ready", timeout=20)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            reply = json.loads(line)
            with self._cond:
                self._replies[str(reply["id"])] = reply
                self._cond.notify_all()

    def send(self, op: str, **args: Any) -> str:
        rid = f"{self.host.name}-{next(self._ids)}"
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": rid, "op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return rid

    def wait(self, rid: str, timeout: float = 30) -> dict[str, Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: rid in self._replies, timeout):
                raise AssertionError(f"{self.host.name}: no reply to {rid} in {timeout} s")
            return self._replies.pop(rid)

    def done(self, rid: str) -> bool:
        with self._cond:
            return rid in self._replies

    def call(self, op: str, timeout: float = 30, **args: Any) -> dict[str, Any]:
        return self.wait(self.send(op, **args), timeout)

    def ok(self, op: str, **args: Any) -> dict[str, Any]:
        reply = self.call(op, **args)
        assert reply["ok"], f"{self.host.name} {op}: {reply}"
        return reply

    def status(self) -> dict[str, int]:
        """size, idle, busy and waiting, read by this host."""
        reply = self.ok("status")
        return {k: reply[k] for k in ("size", "idle", "busy", "waiting")}


class WorkerHost:
    """worker_main.py inside a host namespace; its log (with its workers') in a file."""

    def __init__(self, host: Host, url: str, workers: int, *extra: str) -> None:
        self.host = host
        self.log_path = host.net.dir / f"worker_main-{host.name}.log"
        with open(self.log_path, "ab") as out:
            self.proc = host.python(
                [str(WORKER_MAIN), "--url", url, "--pool", POOL, "--workers", str(workers),
                 "--worker-id-prefix", host.name, "--heartbeat-ttl", str(HEARTBEAT_TTL),
                 "--sweep-interval", str(SWEEP), *extra],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Timings:
    """Named durations of one scenario, printed at the end."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.values: dict[str, float] = {}

    def __setitem__(self, name: str, seconds: float) -> None:
        self.values[name] = seconds

    def show(self) -> None:
        parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.values.items())
        print(f"\n[timings] {self.title}: {parts}")


def took(reply: dict[str, Any]) -> float:
    return float(reply["t1"] - reply["t0"])


def until(predicate: Callable[[], object], timeout: float, message: str) -> float:
    """Wait for ``predicate`` with a deadline; the monotonic time it first held."""
    wait_for(predicate, timeout=timeout, interval=0.02, message=message)
    return time.monotonic()


def size_is(agent: Agent, size: int, idle: int | None = None) -> Callable[[], bool]:
    def check() -> bool:
        s = agent.status()
        return bool(s["size"] == size and (idle is None or s["idle"] == idle))

    return check


def setup(
    net: Network, kind: str, worker_hosts: dict[str, int], clients: tuple[str, ...],
    appendonly: bool = False,
) -> tuple[NsServer, dict[str, WorkerHost], dict[str, Agent]]:  # fmt: skip
    """Redis on host ``srv``, worker_main on each worker host, an agent per client host."""
    server = net.host("srv").start_server(kind, appendonly=appendonly)
    workers = {name: WorkerHost(net.host(name), server.url, n) for name, n in worker_hosts.items()}
    agents = {name: Agent(net.host(name), server.url) for name in clients}
    first = agents[clients[0]]
    total = sum(worker_hosts.values())
    until(size_is(first, total, idle=total), 30, f"{total} idle workers")
    return server, workers, agents


def test_clients_on_two_hosts_share_a_third_hosts_workers_first_come_first_served(
    net: Network, server_kind: str
) -> None:
    t = Timings(f"1 two client hosts share workers [{server_kind}]")
    _, hosts, agents = setup(net, server_kind, {"wk": 2}, ("c1", "c2"))
    c1, c2 = agents["c1"], agents["c2"]
    first = c1.ok("checkout", timeout=5)
    second = c2.ok("checkout", timeout=5)
    t["checkout c1"], t["checkout c2"] = took(first), took(second)
    t["job c1"] = took(c1.ok("run", token=first["token"], n=21))
    t["job c2"] = took(c2.ok("run", token=second["token"], n=22))
    assert {first["worker"], second["worker"]} == {"wk-1", "wk-2"}

    # The pool is full: waiters from both hosts queue in this order.
    order = [(c2, "A"), (c1, "B"), (c2, "C")]
    waits = {}
    for n, (agent, name) in enumerate(order, start=1):
        waits[name] = (agent, agent.send("checkout", timeout=30))
        until(lambda n=n: c1.status()["waiting"] == n, 10, f"{n} waiters")

    served: list[str] = []

    def hand_over(giver: Agent, token: int, expect: str) -> dict[str, Any]:
        checkin = giver.ok("checkin", token=token)
        agent, rid = waits[expect]
        got = agent.wait(rid, timeout=10)
        assert got["ok"], got
        served.append(expect)
        t[f"handoff to waiter {expect}"] = got["t1"] - checkin["t0"]
        early = [name for name, (a, r) in waits.items() if name not in served and a.done(r)]
        assert not early, f"{early} served before {expect}"
        assert agent.ok("run", token=got["token"], n=100 + "ABC".index(expect))["result"]
        return got

    a = hand_over(c1, first["token"], "A")
    b = hand_over(c2, second["token"], "B")
    c = hand_over(c2, a["token"], "C")
    c1.ok("checkin", token=b["token"])
    c2.ok("checkin", token=c["token"])
    assert c1.status()["idle"] == 2
    log = hosts["wk"].log()
    assert all(f"Doubling {n}" in log for n in (21, 22, 100, 101, 102))
    t.show()


def test_a_cut_off_client_loses_its_worker_to_the_other_host_and_its_stale_job_never_runs(
    net: Network, server_kind: str
) -> None:
    t = Timings(f"2 client host cut off [{server_kind}]")
    _, hosts, agents = setup(net, server_kind, {"wk": 1}, ("c1", "c2"))
    c1, c2 = agents["c1"], agents["c2"]
    held = c1.ok("checkout", timeout=5)
    c1.ok("run", token=held["token"], n=31)
    waiting = c2.send("checkout", timeout=30)
    until(lambda: c1.status()["waiting"] == 1, 10, "c2 waiting")

    c1.host.cut()
    cut_at = time.monotonic()
    got = c2.wait(waiting, timeout=TTL + 10)
    assert got["ok"], got
    t["cut to worker at other host"] = got["t1"] - cut_at
    assert got["t1"] - cut_at <= TTL + 1.0
    assert got["worker"] == held["worker"] and got["token"] > held["token"]
    t["job at other host"] = took(c2.ok("run", token=got["token"], n=32))

    c1.host.heal()
    renew = c1.call("renew", token=held["token"])
    assert (renew["ok"], renew.get("error")) == (False, "LeaseLost"), renew
    t["renew after heal -> LeaseLost"] = took(renew)
    stale = c1.call("run_stale", worker=held["worker"], token=held["token"], n=33)
    assert (stale["ok"], stale.get("error")) == (False, "LeaseLost"), stale
    t["stale job refused"] = took(stale)
    checkin = c1.ok("checkin", token=held["token"])
    assert checkin["returned"] is False
    # The other host's lease is untouched by all that.
    assert c2.ok("run", token=got["token"], n=34)["result"] == 68
    assert c2.ok("checkin", token=got["token"])["returned"] is True
    log = hosts["wk"].log()
    # The stale job was refused at its enqueue (enqueue_job checks the lease): it was
    # never written, so the worker never saw it.
    assert "Doubling 33" not in log and f"token {held['token']} started" in log
    assert all(f"Doubling {n}" in log for n in (31, 32, 34))
    t.show()


def test_a_cut_off_worker_host_is_buried_its_holder_gets_worker_lost_and_it_comes_back(
    net: Network, server_kind: str
) -> None:
    t = Timings(f"3 worker host cut off [{server_kind}]")
    _, _, agents = setup(net, server_kind, {"wka": 1, "wkb": 1}, ("c1",))
    c1 = agents["c1"]
    leases = [c1.ok("checkout", timeout=5), c1.ok("checkout", timeout=5)]
    doomed = next(lease for lease in leases if lease["worker"] == "wka-1")
    other = next(lease for lease in leases if lease["worker"] == "wkb-1")
    c1.ok("checkin", token=other["token"])
    c1.ok("run", token=doomed["token"], n=41)

    net.hosts[1].cut()  # wka
    cut_at = time.monotonic()
    buried = until(size_is(c1, 1), HEARTBEAT_TTL + 10, "wka's worker buried")
    t["cut to worker buried"] = buried - cut_at
    renew = c1.call("renew", token=doomed["token"])
    assert (renew["ok"], renew.get("error")) == (False, "WorkerLost"), renew
    t["renew -> WorkerLost"] = took(renew)
    for _ in range(3):  # only wkb's worker is handed out now
        lease = c1.ok("checkout", timeout=5)
        assert lease["worker"] == "wkb-1"
        c1.ok("run", token=lease["token"], n=42)
        c1.ok("checkin", token=lease["token"])

    net.hosts[1].heal()
    heal_at = time.monotonic()
    back = until(size_is(c1, 2, idle=2), 30, "wka's worker registered again")
    t["heal to worker registered again"] = back - heal_at
    leases = [c1.ok("checkout", timeout=5), c1.ok("checkout", timeout=5)]
    again = next(lease for lease in leases if lease["worker"] == "wka-1")
    first_job = c1.ok("run", token=again["token"], n=43)
    t["first job on it"] = took(first_job)
    assert first_job["result"] == 86
    t.show()


@pytest.mark.parametrize("appendonly", [False, True], ids=["no-persistence", "aof"])
def test_a_redis_restart_ends_leases_or_keeps_them_with_aof_and_counts_each_worker_once(
    net: Network, server_kind: str, appendonly: bool
) -> None:
    how = "AOF" if appendonly else "no persistence"
    t = Timings(f"4 Redis restart, {how} [{server_kind}]")
    server, _, agents = setup(net, server_kind, {"wk": 2}, ("c1",), appendonly=appendonly)
    c1 = agents["c1"]
    held = c1.ok("checkout", timeout=5)
    c1.ok("run", token=held["token"], n=51)

    began = time.monotonic()
    server.restart()
    restarted = time.monotonic()
    t["restart"] = restarted - began
    if appendonly:
        wait_for(lambda: c1.status()["size"] == 2, timeout=10, message="the pool still there")
        t["restart to renewal"] = took(c1.ok("renew", token=held["token"])) + (
            time.monotonic() - restarted
        )
        assert c1.ok("run", token=held["token"], n=52)["result"] == 104
        assert c1.ok("lost", token=held["token"])["lost"] is False
        assert c1.status() | {"waiting": 0} == {"size": 2, "idle": 1, "busy": 1, "waiting": 0}
        assert c1.ok("checkin", token=held["token"])["returned"] is True
    else:
        back = until(size_is(c1, 2, idle=2), 15, "both workers registered again")
        t["restart to workers registered"] = back - restarted
        renew = c1.call("renew", token=held["token"])
        assert (renew["ok"], renew.get("error")) == (False, "LeaseLost"), renew
        t["renew -> LeaseLost"] = took(renew)
        assert took(renew) < 5
    workers = c1.ok("workers")["workers"]
    assert sorted(w[0] for w in workers) == ["wk-1", "wk-2"]
    assert c1.status() == {"size": 2, "idle": 2, "busy": 0, "waiting": 0}
    lease = c1.ok("checkout", timeout=5)
    assert lease["token"] > held["token"]
    assert c1.ok("run", token=lease["token"], n=53)["result"] == 106
    t.show()


def test_a_cut_off_worker_hosts_job_does_not_outlive_its_lease_beyond_the_grace(
    net: Network, server_kind: str, tmp_path: Path
) -> None:
    server = net.host("srv").start_server(server_kind)
    func = "tests.procs.jobfuncs.sleep_then_mark"
    wka = WorkerHost(net.host("wka"), server.url, 1, f"--function={func}")
    c1 = Agent(net.host("c1"), server.url)
    until(size_is(c1, 1, idle=1), 30, "1 idle worker")
    lease = c1.ok("checkout", timeout=5)  # renewed by c1 throughout
    marker = tmp_path / "cut-off-job-finished"
    job = c1.send("run_func", token=lease["token"], func=func, args=[5, str(marker)], timeout=10)
    until(lambda: re.search(r"job \S+ token \d+ started", wka.log()), 10, "the job started")
    net.hosts[1].cut()  # wka
    cut_at = time.monotonic()
    buried = until(size_is(c1, 0), HEARTBEAT_TTL + 10, "wka's worker buried")  # lease ends here
    reply = c1.wait(job, timeout=15)
    assert (reply["ok"], reply.get("error")) == (False, "WorkerLost"), reply
    grace = 1.0  # worker_main's default --stop-grace
    while time.monotonic() < cut_at + 5 + 0.5:  # it would write 5 s after it started
        assert not marker.exists(), (
            f"the job finished {time.monotonic() - buried:.1f} s after its lease ended "
            f"(grace {grace} s)"
        )
        time.sleep(0.05)
