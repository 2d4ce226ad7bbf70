"""The chaos run: clients and workers killed and paused, Redis restarted, nothing lost or doubled.

Two worker_main.py "hosts" (prefixes ``ha`` and ``hb``, two workers each) and
five client processes (tests/procs/chaos_client.py) doubling numbers in a
loop run against one loopback server. A driver injects a fault every 0.3-1 s
at random: SIGKILL a client (a new one takes its place), SIGSTOP a client
past its lease TTL and SIGCONT it later, SIGKILL a worker process (its
supervisor replaces it). Redis goes down twice: a third of the way through it
is restarted cleanly (SIGTERM), two thirds through it crashes (SIGKILL) and is
started again; with AOF off each loses the pool's data, with AOF (everysec) on
the crash may lose the last writes. Then it stops the clients (SIGTERM), waits
for the pool to settle, and checks from the logs:

- no two jobs with different tokens overlapped on one worker (a job of a
  killed worker process counts as running until the kill);
- every job a client saw succeed ran exactly once, on the worker and under
  the token the client held; no job ran twice; a token's jobs all came from
  one client and ran on one worker;
- every worker is registered once, idle, and held by a live process; none
  was lost, and no job is left in a worker's queue; no worker process died
  but those the driver killed.

It prints the figures: jobs done, faults of each kind, errors the clients
saw by type, and violations (which must be 0).

CI runs the short form: 30 s on Redis 7 without persistence and 30 s on
Valkey 8 with AOF (the 60 s of the whole suite's time budget, split). The long
form, every kind with AOF off and on:

    REDISPOOL_CHAOS_SECONDS=600 \\
        REDISPOOL_CHAOS_CASES=redis:off,redis:aof,valkey:off,valkey:aof \\
        pytest tests/test_chaos.py -s

(``REDISPOOL_CHAOS_SEED`` replays one run's choice of faults.)
"""

from __future__ import annotations

import bisect
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from helpers import StartServer, pid_alive, wait_for

from redispool import Pool
from redispool.rqkeys import classes
from redispool.server import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent
WORKER_MAIN = ROOT / "worker_main.py"
CLIENT = Path(__file__).resolve().parent / "procs" / "chaos_client.py"
POOL = "chaos"
SECONDS = float(os.environ.get("REDISPOOL_CHAOS_SECONDS", "30"))
#: ``kind:persistence`` runs, persistence ``off`` or ``aof``.
CASES = [
    tuple(case.split(":"))
    for case in os.environ.get("REDISPOOL_CHAOS_CASES", "redis:off,valkey:aof").split(",")
]
SEED = int(os.environ.get("REDISPOOL_CHAOS_SEED", str(random.randrange(1 << 30))))
CLIENTS = 5
HOSTS = ("ha", "hb")
WORKERS_PER_HOST = 2
TTL = 1.0
HEARTBEAT_TTL = 1.0

LINE = re.compile(r"^(\S+ \S+) redispool\.(\w+)\[(\d+)\] \w+ (.*)$")
STARTED = re.compile(r"worker (\S+) job (\S+) token (\d+) started$")
ENDED = re.compile(r"worker (\S+) job (\S+) token (\d+) ended$")
DOUBLING = re.compile(r"Doubling (\d+)$")
CHILD = re.compile(r"started worker (\S+) \(pid (\d+)\)")
CRASHED = re.compile(r"worker (\S+) \(pid (\d+)\) died \(exit (-?\d+)\)")


@dataclass
class Run:
    """One job a worker process started, from its log lines."""

    worker: str
    job: str
    token: int
    pid: int
    start: float
    end: float | None = None
    numbers: list[int] = field(default_factory=list)


@dataclass
class Chaos:
    """The processes of one run and what was done to them."""

    server: EmbeddedServer
    dir: Path
    mains: list[subprocess.Popen[bytes]] = field(default_factory=list)
    clients: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    paused: dict[int, float] = field(default_factory=dict)  # client number -> resume at
    killed_workers: dict[int, float] = field(default_factory=dict)  # pid -> wall time
    faults: Counter[str] = field(default_factory=Counter)
    next_client: int = 1
    restarting: float = float("inf")  # monotonic: when the Redis restart began
    restarted: float = float("inf")  # and ended
    crashing: float = float("inf")  # monotonic: when the Redis crash (SIGKILL) began
    crashed: float = float("inf")  # and the server was up again

    @property
    def url(self) -> str:
        return self.server.url

    def start_main(self, prefix: str) -> None:
        with open(self.dir / f"worker_main-{prefix}.log", "ab") as out:
            main = subprocess.Popen(
                [sys.executable, str(WORKER_MAIN), "--url", self.url, "--pool", POOL,
                 "--workers", str(WORKERS_PER_HOST), "--worker-id-prefix", prefix,
                 "--heartbeat-ttl", str(HEARTBEAT_TTL), "--sweep-interval", "0.2"],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip
        self.mains.append(main)

    def start_client(self) -> None:
        number, self.next_client = self.next_client, self.next_client + 1
        log = self.dir / f"client-{number}.log"
        self.clients[number] = subprocess.Popen(
            [sys.executable, str(CLIENT), self.url, POOL, str(TTL), str(log), str(number)],
            cwd=ROOT,
        )

    def worker_pids(self) -> list[int]:
        """Live worker processes of our supervisors."""
        mains = {p.pid for p in self.mains}
        found = []
        for path in self.dir.glob("worker_main-*.log"):
            for _, pid in CHILD.findall(path.read_text(errors="replace")):
                if pid_alive(int(pid)) and _parent(int(pid)) in mains:
                    found.append(int(pid))
        return found

    def stop_everything(self) -> None:
        """Every process started here, by pid: clients, then worker_mains."""
        for proc in self.clients.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for main in self.mains:
            children = [pid for pid in self.worker_pids() if _parent(pid) == main.pid]
            if main.poll() is None:
                main.send_signal(signal.SIGTERM)
                try:
                    main.wait(10)
                except subprocess.TimeoutExpired:
                    main.kill()
                    main.wait()
            for pid in children:
                if pid_alive(pid) and _parent(pid) in (main.pid, 1):
                    os.kill(pid, signal.SIGKILL)


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rpartition(")")[2].split()[1])


@pytest.fixture
def chaos(
    server_kind: str, persistence: str, fresh_server: StartServer, tmp_path: Path
) -> Iterator[Chaos]:
    run = Chaos(fresh_server(appendonly=persistence == "aof"), tmp_path)
    try:
        yield run
    finally:
        run.stop_everything()


FAULTS = {"kill client": "clients killed", "pause client": "clients paused",
          "kill worker": "workers killed"}  # fmt: skip


def inject(run: Chaos, rng: random.Random, restart_at: float, crash_at: float) -> None:
    """One fault, chosen at random (Redis restarts cleanly once, at ``restart_at``,
    and crashes once, at ``crash_at``)."""
    now = time.monotonic()
    for number, resume_at in list(run.paused.items()):
        if now >= resume_at:
            run.clients[number].send_signal(signal.SIGCONT)
            del run.paused[number]
    if now >= restart_at and not run.faults["redis restarted"]:
        run.restarting = time.monotonic()
        run.server.restart()
        run.restarted = time.monotonic()
        run.faults["redis restarted"] += 1
        return
    if now >= crash_at and not run.faults["redis crashed (SIGKILL)"]:
        run.crashing = time.monotonic()
        run.server.kill()
        run.server.start()
        run.crashed = time.monotonic()
        run.faults["redis crashed (SIGKILL)"] += 1
        return
    kind = rng.choice(sorted(FAULTS))
    running = [n for n, p in run.clients.items() if p.poll() is None and n not in run.paused]
    if kind == "kill client" and running:
        victim = rng.choice(running)
        run.clients[victim].kill()
        run.clients[victim].wait()
        run.start_client()
    elif kind == "pause client" and running:
        victim = rng.choice(running)
        run.clients[victim].send_signal(signal.SIGSTOP)
        run.paused[victim] = now + TTL + rng.uniform(0.2, 1.5)
    elif kind == "kill worker" and (pids := run.worker_pids()):
        victim = rng.choice(pids)
        os.kill(victim, signal.SIGKILL)
        run.killed_workers[victim] = time.time()
    else:
        return
    run.faults[FAULTS[kind]] += 1


@pytest.mark.parametrize(
    ("server_kind", "persistence"),
    CASES,
    indirect=["server_kind"],
    ids=[":".join(c) for c in CASES],
)
@pytest.mark.timeout(SECONDS + 120)
def test_chaos_loses_and_doubles_nothing(chaos: Chaos, server_kind: str, persistence: str) -> None:
    run = chaos
    rng = random.Random(SEED)
    for prefix in HOSTS:
        run.start_main(prefix)
    total = len(HOSTS) * WORKERS_PER_HOST
    with Pool(POOL, run.url) as pool:
        wait_for(lambda: pool.status().idle == total, timeout=30, message="workers idle")
        for _ in range(CLIENTS):
            run.start_client()
        began = time.monotonic()
        restart_at, crash_at = began + SECONDS / 3, began + 2 * SECONDS / 3
        while time.monotonic() - began < SECONDS:
            inject(run, rng, restart_at, crash_at)
            time.sleep(rng.uniform(0.3, 1.0))
        settle(run, pool, total)
        violations, figures = check(run, pool)
    print(f"\n[chaos] {server_kind}, AOF {persistence}, {SECONDS:.0f} s, seed {SEED}: {figures}")
    print(f"[chaos] violations: {len(violations)}")
    for violation in violations[:20]:
        print(f"[chaos]   {violation}")
    assert violations == []


def settle(run: Chaos, pool: Pool, total: int) -> None:
    """Resume and stop the clients, then wait until every worker is back and idle."""
    for number in run.paused:
        run.clients[number].send_signal(signal.SIGCONT)
    run.paused.clear()
    for proc in run.clients.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in run.clients.values():
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            run.faults["client stuck at the end"] += 1

    def quiet() -> bool:
        s = pool.status()
        return s.size == s.idle == total and s.busy == s.waiting == 0

    wait_for(quiet, timeout=TTL + HEARTBEAT_TTL + 15, interval=0.1, message="a quiet pool")


def worker_runs(run: Chaos) -> list[Run]:
    """Every job a worker process started, from the worker_main logs."""
    runs: list[Run] = []
    current: dict[int, Run] = {}  # pid -> its job in hand
    for path in sorted(run.dir.glob("worker_main-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            m = LINE.match(line)
            if not m:
                continue
            stamp, _, pid, message = m.group(1), m.group(2), int(m.group(3)), m.group(4)
            at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if s := STARTED.match(message):
                current[pid] = Run(s.group(1), s.group(2), int(s.group(3)), pid, at)
                runs.append(current[pid])
            elif (e := ENDED.match(message)) and pid in current:
                assert current[pid].job == e.group(2)
                current.pop(pid).end = at
            elif (d := DOUBLING.match(message)) and pid in current:
                current[pid].numbers.append(int(d.group(1)))
    return runs


def client_successes(run: Chaos) -> tuple[list[tuple[int, int, str, int]], Counter[str]]:
    """``(client, token, worker, n)`` of every job a client saw succeed; errors by type."""
    seen, errors = [], Counter[str]()
    for path in run.dir.glob("client-*.log"):
        number = int(path.stem.split("-")[1])
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if parts and parts[0] == "OK":
                seen.append((number, int(parts[1]), parts[2], int(parts[3])))
            elif parts and parts[0] in ("ERR", "WRONG"):
                errors[parts[1] if parts[0] == "ERR" else "wrong result"] += 1
    return seen, errors


def check(run: Chaos, pool: Pool) -> tuple[list[str], dict[str, object]]:
    """The violations found in the logs and the pool, and the run's figures."""
    violations: list[str] = []
    runs = worker_runs(run)
    for r in runs:
        if r.end is None:
            if r.pid not in run.killed_workers:
                violations.append(f"job {r.job} on {r.worker} never ended, its process lives")
            r.end = run.killed_workers.get(r.pid, float("inf"))
    seen, errors = client_successes(run)
    violations += overlaps(runs) + runs_once(runs, seen) + one_holder_per_token(runs, seen)
    violations += check_pool(run, pool) + crashes(run)
    writes, refused = fenced_writes(run)
    violations += stale_writes(writes, (run.restarting, run.restarted), (run.crashing, run.crashed))
    figures = {
        "jobs done": len(seen),
        "fenced writes landed": len(writes),
        "stale writes refused": refused,
        "jobs run by workers": len(runs),
        "faults": dict(run.faults),
        "client errors": dict(errors),
    }
    return violations, figures


Write = tuple[str, int, float, float]  # a fenced write: worker (its store), token, start, end


def fenced_writes(run: Chaos) -> tuple[list[Write], int]:
    """Every fenced write that landed; how many were refused."""
    landed: list[Write] = []
    refused = 0
    for path in run.dir.glob("client-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split()
            if parts and parts[0] == "FENCED":
                landed.append((parts[2], int(parts[1]), float(parts[3]), float(parts[4])))
            elif parts and parts[0] == "STALE":
                refused += 1
    return landed, refused


def stale_writes(writes: list[Write], *outages: tuple[float, float]) -> list[str]:
    """Writes that landed in a worker's store although a newer token's write
    had landed there before they began.

    Redis restarts and crashes (``outages``: when each began and ended), and
    without persistence the stores forget their newest token then (with AOF
    everysec a crash may lose the last writes too): writes are compared only
    with writes between the same two outages, and one overlapping an outage
    with none.
    """
    found = []
    epochs: dict[tuple[str, int], list[Write]] = defaultdict(list)
    for w in writes:
        if all(w[3] < begin or w[2] > end for begin, end in outages):
            epochs[(w[0], sum(w[2] > end for _, end in outages))].append(w)
    for (worker, _), epoch in epochs.items():
        done = sorted(epoch, key=lambda w: w[3])
        newest, highest = [], 0
        for w in done:
            highest = max(highest, w[1])
            newest.append(highest)
        ends = [w[3] for w in done]
        for _, token, start, _ in epoch:
            i = bisect.bisect_left(ends, start)
            if i and newest[i - 1] > token:
                found.append(f"on {worker}: token {token} wrote after token {newest[i - 1]}")
    return found


def overlaps(runs: list[Run]) -> list[str]:
    """Pairs of jobs with different tokens that ran at once on one worker."""
    found = []
    by_worker: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_worker[r.worker].append(r)
    for worker, its in by_worker.items():
        its.sort(key=lambda r: r.start)
        running: list[Run] = []
        for b in its:
            running = [a for a in running if (a.end or 0) > b.start]
            found += [
                f"on {worker}: token {b.token} began inside token {a.token}"
                for a in running
                if a.token != b.token
            ]
            running.append(b)
    return found


def runs_once(runs: list[Run], seen: list[tuple[int, int, str, int]]) -> list[str]:
    """Each number ran at most once; each a client saw succeed ran under its lease."""
    ran = Counter(n for r in runs for n in r.numbers)
    found = [f"number {n} ran {k} times" for n, k in ran.items() if k > 1]
    where = {n: r for r in runs for n in r.numbers}
    for client, token, worker, n in seen:
        r = where.get(n)
        if r is None:
            found.append(f"client {client} saw {n} succeed but no worker ran it")
        elif (r.token, r.worker) != (token, worker):
            found.append(f"{n} ran on {r.worker}/{r.token}, client held {worker}/{token}")
    return found


def one_holder_per_token(runs: list[Run], seen: list[tuple[int, int, str, int]]) -> list[str]:
    """A token's successes came from one client, its jobs ran on one worker."""
    holders: dict[int, set[int]] = defaultdict(set)
    for client, token, _, _ in seen:
        holders[token].add(client)
    workers: dict[int, set[str]] = defaultdict(set)
    for r in runs:
        workers[r.token].add(r.worker)
    return [f"token {t} held by clients {sorted(c)}" for t, c in holders.items() if len(c) > 1] + [
        f"token {t} ran on {sorted(w)}" for t, w in workers.items() if len(w) > 1
    ]


def crashes(run: Chaos) -> list[str]:
    """Worker processes that died without being killed by the driver."""
    found = []
    for path in sorted(run.dir.glob("worker_main-*.log")):
        for worker, pid, code in CRASHED.findall(path.read_text(errors="replace")):
            if int(pid) not in run.killed_workers:
                found.append(f"worker {worker} (pid {pid}) crashed with exit {code}")
    return found


def check_pool(run: Chaos, pool: Pool) -> list[str]:
    """Every worker registered once, idle, alive; no job left in a queue."""
    violations = []
    workers = pool.workers()
    expected = {f"{h}-{i}" for h in HOSTS for i in range(1, WORKERS_PER_HOST + 1)}
    if sorted(w.id for w in workers) != sorted(expected):
        violations.append(f"workers {sorted(w.id for w in workers)}, expected {sorted(expected)}")
    live = set(run.worker_pids())
    for w in workers:
        if w.state != "idle" or w.pid not in live:
            violations.append(f"worker {w.id} is {w.state}, pid {w.pid} live: {w.pid in live}")
        left = pool.client.llen(classes(pool.name).queue_for(w.id, pool.client).key)
        if left:
            violations.append(f"{left} jobs left in the queue of {w.id}")
    return violations


def test_the_chaos_checks_find_overlaps_double_runs_and_foreign_tokens() -> None:
    a = Run("w1", "j1", 7, 100, start=1.0, end=3.0, numbers=[1])
    b = Run("w1", "j2", 8, 101, start=2.0, end=2.5, numbers=[2])  # inside a, other token
    c = Run("w1", "j3", 7, 100, start=2.6, end=2.8, numbers=[1])  # same token, 1 again
    assert overlaps([a, b, c]) == ["on w1: token 8 began inside token 7"]
    assert overlaps([a, c]) == []
    seen = [(1, 7, "w1", 1), (2, 8, "w1", 2), (3, 9, "w2", 3), (4, 7, "w1", 1)]
    assert runs_once([a, b, c], seen) == [
        "number 1 ran 2 times",
        "client 3 saw 3 succeed but no worker ran it",
    ]
    assert one_holder_per_token([a, b], seen) == ["token 7 held by clients [1, 4]"]
    writes = [("w1", 5, 0.0, 1.0), ("w1", 6, 1.5, 2.0), ("w1", 5, 2.5, 3.0),
              ("w2", 4, 2.6, 2.7), ("w1", 9, 3.5, 4.0), ("w1", 3, 10.0, 11.0)]  # fmt: skip
    assert stale_writes(writes, (5.0, 6.0)) == ["on w1: token 5 wrote after token 6"]
    # a crash at 3.2-3.4 makes the store forget token 6: token 5 after it is no stale write
    assert stale_writes([*writes, ("w1", 5, 3.5, 3.6)], (5.0, 6.0), (3.2, 3.4)) == [
        "on w1: token 5 wrote after token 6"
    ]
    assert stale_writes([("w1", 6, 1.5, 2.0), ("w1", 5, 3.5, 3.6)], (3.2, 3.4)) == []
