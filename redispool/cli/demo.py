"""``redispool demo``: PoolToy's story, told by a real pool with real processes.

With no URL (neither ``--url`` nor ``REDISPOOL_URL``) it starts an embedded
server; with one, it uses a pool of its own there (``demo-<random>``) and
deletes that pool's keys at the end. Either way it starts ``worker_main.py``
with three workers and stops everything it started, by pid, before it exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time as mod_time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import click

from ..connect import Client
from ..errors import PoolFull, StaleToken
from ..fence import Fence
from ..keys import FenceKeys, PoolKeys
from ..lease import Lease
from ..pool import Pool
from ..status import WorkerInfo
from ..wire import text
from .app import EXIT_REFUSED, CliError, Connection, cli, redact

__all__ = ["demo"]

WORKER_MAIN = Path(__file__).resolve().parents[2] / "worker_main.py"
DEMO_LEASE_TTL = 1.5  # seconds: short, so an abandoned lease ends while you watch
PAUSED_LEASE_TTL = 0.3  # seconds: the paused client's lease, over before it comes back
WORKERS = 3
T = TypeVar("T")


class Story:
    """Prints each step with the seconds since the demo began."""

    def __init__(self) -> None:
        self.started = mod_time.monotonic()

    def say(self, line: str) -> None:
        click.echo(f"[{mod_time.monotonic() - self.started:5.2f}s] {line}")

    def wait(self, what: str, check: Callable[[], T | None], timeout: float) -> T:
        """Poll ``check`` until it returns a value; exit 1 naming ``what`` after ``timeout``."""
        deadline = mod_time.monotonic() + timeout
        while True:
            value = check()
            if value is not None and value is not False:
                return value
            if mod_time.monotonic() >= deadline:
                raise CliError(f"demo: {what} did not happen within {timeout:g}s", EXIT_REFUSED)
            mod_time.sleep(0.02)


class WorkerHost:
    """``worker_main.py`` as a child process in a session of its own; its log lines kept."""

    def __init__(self, url: str, pool: str, workers: int) -> None:
        if not WORKER_MAIN.exists():
            raise CliError(f"demo needs {WORKER_MAIN} (run it from a clone of redispool)")
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER_MAIN), "--url", url, "--pool", pool,
             "--workers", str(workers)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def line_with(self, needle: str, timeout: float) -> str | None:
        """The first log line containing ``needle``, waiting up to ``timeout`` seconds."""
        deadline = mod_time.monotonic() + timeout
        with self._cond:
            while True:
                found = next((line for line in self.lines if needle in line), None)
                left = deadline - mod_time.monotonic()
                if found is not None or left <= 0:
                    return found
                self._cond.wait(left)

    def stop(self) -> int | None:
        """SIGTERM (a graceful drain); SIGKILL its whole session if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # the session we created for it
                self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode


def _idle_workers(pool: Pool, count: int) -> list[WorkerInfo] | None:
    found = [w for w in pool.workers() if w.state == "idle" and not w.draining]
    return found if len(found) >= count and pool.status().size == count else None


def step_checkouts(story: Story, pool: Pool) -> list[Lease]:
    """Check out every worker, get 'full' on the next, check one in and out again."""
    leases = []
    for n in range(1, WORKERS + 1):
        lease = pool.checkout(block=False)
        leases.append(lease)
        story.say(f"w{n} = checkout()  -> worker {lease.worker_id}, fencing token {lease.token}")
    try:
        extra = pool.checkout(block=False)
    except PoolFull as exc:  # what PoolToy answers with :full
        story.say(f"w4 = checkout()  -> full ({type(exc).__name__}: {exc})")
    else:
        extra.checkin()
        raise CliError("demo: a fourth checkout of three workers succeeded", EXIT_REFUSED)
    first = leases.pop(0)
    first.checkin()
    story.say(f"checkin(w1)      -> worker {first.worker_id} is idle again")
    again = pool.checkout(block=False)
    story.say(f"w4 = checkout()  -> worker {again.worker_id}, token {again.token} "
              f"(it was {first.token})")
    return [again, *leases]


def step_double(story: Story, lease: Lease, host: WorkerHost) -> None:
    """``double 21`` answers 42 while the worker logs 'Doubling 21'."""
    from ..doubler import compute

    answer = compute(lease, 21, timeout=10)
    story.say(f"Doubler.compute(w4, 21) on worker {lease.worker_id} -> {answer}")
    logged = story.wait("the worker's 'Doubling 21' log line",
                        lambda: host.line_with("Doubling 21", 0.1), timeout=5)
    story.say(f"  worker log: {logged.strip()}")


def store_name(pool: str) -> str:
    """The fenced store the demo writes to, named after its pool."""
    return f"{pool}-orders"


def step_fenced_store(story: Story, pool: Pool, url: str) -> None:
    """A paused client's late write is refused by a fenced store; the new holder's lands."""
    store = Fence(pool.client, store_name(pool.name))
    with Pool(pool.name, url, lease_ttl=PAUSED_LEASE_TTL) as pausing:
        paused = pausing.checkout(block=False, auto_renew=False)
        store.write(paused.token, "order-17", "A: first")
        story.say(f"client A: checkout -> worker {paused.worker_id}, token {paused.token}; "
                  "writes order-17 through the fence, then pauses (stops renewing)")
        story.wait("client A's lease to end and its worker to return",
                   lambda: paused.worker_id in {w.id for w in pool.workers()
                                                if w.state == "idle"}, timeout=10)
        fresh = pool.checkout(timeout=5)
        try:
            store.write(fresh.token, "order-17", "B: fresh")
            story.say(f"client B: checkout -> worker {fresh.worker_id}, token {fresh.token}; "
                      "its write lands")
            try:
                store.write(paused.token, "order-17", "A: late")
            except StaleToken:
                story.say(f"client A comes back, writes with token {paused.token} -> refused "
                          f"by the store (StaleToken: token {fresh.token} has written)")
            else:
                raise CliError("demo: the store took a write from an ended lease", EXIT_REFUSED)
            value = text(store.read("order-17"))
            story.say(f"the store holds order-17 = {value!r}")
        finally:
            fresh.checkin()


def step_client_dies(story: Story, pool: Pool, url: str) -> None:
    """A client checks out and exits without checking in; the lease ends, the worker returns."""
    cmd = [sys.executable, "-m", "redispool.cli", "--url", url, "checkout", pool.name]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise CliError(f"demo: the client's checkout failed: {done.stderr.strip()}", EXIT_REFUSED)
    worker = done.stdout.split()[1]
    died = mod_time.monotonic()
    story.say(f"a client process checked out worker {worker} and exited without checkin")
    story.say(f"  pool: {pool.status().idle} idle, {pool.status().busy} busy; "
              f"nobody renews that lease ({DEMO_LEASE_TTL:g}s TTL)")
    story.wait(f"worker {worker} back idle", lambda: _idle_workers(pool, WORKERS), timeout=10)
    story.say(f"worker {worker} is idle again {mod_time.monotonic() - died:.2f}s after the "
              "client exited: its lease expired and the reaper returned it")


def step_worker_killed(story: Story, pool: Pool) -> None:
    """SIGKILL a worker process; the supervisor replaces it and the pool is whole again."""
    victim = next(w for w in pool.workers() if w.pid is not None)
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)  # a grandchild we started through worker_main
    killed = mod_time.monotonic()
    story.say(f"killed worker {victim.id} (pid {victim.pid}) with SIGKILL")

    def replaced() -> list[WorkerInfo] | None:
        idle = _idle_workers(pool, WORKERS)
        return idle if idle and victim.pid not in {w.pid for w in idle} else None

    fresh = story.wait("a replacement worker", replaced, timeout=15)
    new = next((w for w in fresh if w.id == victim.id), None) or fresh[-1]
    story.say(f"the pool replaced it {mod_time.monotonic() - killed:.2f}s later: worker "
              f"{new.id} pid {new.pid}; {len(fresh)} workers idle")


def run_story(story: Story, url: str, pool: Pool) -> None:
    """Every step, in order."""
    host = WorkerHost(url, pool.name, WORKERS)
    try:
        story.say(f"started worker_main.py (pid {host.proc.pid}) with {WORKERS} workers")
        ready = story.wait(f"{WORKERS} workers registered",
                           lambda: _idle_workers(pool, WORKERS), timeout=15)
        story.say("workers idle: " + ", ".join(f"{w.id} (pid {w.pid})" for w in ready))
        leases = step_checkouts(story, pool)
        step_double(story, leases[0], host)
        for lease in leases:
            lease.checkin()
        story.say(f"checked in all {len(leases)} workers")
        step_fenced_store(story, pool, url)
        step_client_dies(story, pool, url)
        step_worker_killed(story, pool)
    finally:
        code = host.stop()
        story.say(f"stopped worker_main.py (pid {host.proc.pid}, exit status {code})")


def delete_pool(client: Client, name: str) -> int:
    """Delete every key of pool ``name``, its jobs' RQ keys included; how many there were."""
    keys = [text(k) for k in client.scan_iter(match=PoolKeys(name).prefix + "*")]
    keys += [text(k) for k in client.scan_iter(match=FenceKeys(store_name(name)).prefix + "*")]
    return int(client.delete(*keys)) if keys else 0


@contextlib.contextmanager
def demo_redis(ctx: click.Context, story: Story) -> Iterator[tuple[str, str]]:
    """The (url, pool name) to use: a throwaway server, or a pool of its own at the given
    URL, deleted at the end (its jobs' RQ keys are the pool's keys)."""
    conn: Connection = ctx.obj
    given = ctx.parent is not None and ctx.parent.get_parameter_source("url") not in (
        click.core.ParameterSource.DEFAULT, None)
    if given:
        name = f"demo-{uuid.uuid4().hex[:8]}"
        conn.client.ping()
        story.say(f"using {redact(conn.url)}, pool {name}")
        try:
            yield conn.url, name
        finally:
            story.say(f"deleted the {delete_pool(conn.client, name)} keys of pool {name}")
        return
    from ..server import EmbeddedServer, ServerError

    try:
        server = EmbeddedServer().start()
    except ServerError as exc:
        raise CliError(f"demo: cannot start a local server: {exc}") from exc
    try:
        story.say(f"started {server.version} server (pid {server.pid}) on {server.url}")
        yield server.url, "doublers"
    finally:
        pid = server.pid
        server.stop()
        story.say(f"stopped the server (pid {pid}) and removed its data directory")


@cli.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """PoolToy's story in under 30 s: full pool, double 21, a fenced store refusing a
    paused client's late write, dead client, killed worker.

    Without --url it starts a throwaway server; with one it uses a pool of its own there.
    """
    story = Story()
    with demo_redis(ctx, story) as (url, name):
        pool = Pool(name, url)
        try:
            pool.configure(lease_ttl=DEMO_LEASE_TTL)
            run_story(story, url, pool)
        finally:
            pool.close()
    story.say("done")
