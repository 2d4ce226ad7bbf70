"""The supervisor of one host's worker processes (what worker_main.py runs).

It starts N worker processes (``python -m redispool.worker``), one Reaper
for the pool, and replaces a worker process that exits unexpectedly: the
replacement is a new incarnation of the same id and buries the dead one at
once (the supervisor reaped it, so it knows it is dead). A worker that keeps
crashing is restarted with exponential backoff. A worker that exits 0 has
left the pool on purpose (``redispool drain``, ``Pool.remove_worker``, an
overflow worker done waiting): it is not replaced, the rest keep running. With ``max_overflow`` it
starts up to that many extra workers while clients wait and nothing is idle;
they leave after ``overflow_idle`` seconds idle. SIGTERM/SIGINT drains every
worker, then :meth:`Supervisor.run` returns 0.

Worker ids are ``<prefix>-<n>``, the prefix ``<host>-<supervisor pid>`` by
default, so several supervisors on one host never collide; an id held by a
live worker elsewhere is never taken (the worker exits and gets a new id).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time as mod_time
import uuid
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING

from . import observe, rqkeys
from .connect import client_from_url, close_client, validate_url
from .errors import PoolError
from .jobs import DEFAULT_FUNCTIONS
from .keys import validate_pool_name, validate_worker_id_prefix
from .pool import Pool
from .reaper import Reaper
from .worker import EXIT_ID_TAKEN, EXIT_OK, SETTINGS_ENV, WorkerSettings

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["Supervisor", "SupervisorSettings"]

log = logging.getLogger("redispool.supervisor")

TICK = 0.05
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 30.0
#: A worker that ran this long before it died starts its backoff afresh.
STABLE_AFTER = 10.0
OVERFLOW_POLL, OVERFLOW_COOLDOWN = 0.2, 0.5


@dataclass(frozen=True)
class SupervisorSettings:
    url: str
    pool: str
    workers: int = 4
    max_overflow: int = 0
    overflow_idle: float = 10.0
    worker_id_prefix: str | None = None
    lease_ttl: float | None = None
    heartbeat_ttl: float = 5.0
    sweep_interval: float = 1.0
    functions: tuple[str, ...] = tuple(sorted(DEFAULT_FUNCTIONS))
    min_replicas: int = 0
    replica_timeout: float = 1.0
    stop_grace: float = 1.0


@dataclass
class _Slot:
    """One worker id this supervisor keeps running."""

    worker_id: str
    overflow: bool
    proc: subprocess.Popen[bytes] | None = None
    incarnation: str = ""
    dead_incarnation: str = ""
    started: float = 0.0
    failures: int = 0
    restart_at: float = field(default=0.0)


class Supervisor:
    """Runs and replaces this host's worker processes until drained."""

    def __init__(self, settings: SupervisorSettings, metrics: Metrics | None = None) -> None:
        validate_url(settings.url)
        validate_pool_name(settings.pool)
        if settings.worker_id_prefix is not None:
            validate_worker_id_prefix(settings.worker_id_prefix)
        self.settings = settings
        self.metrics = metrics
        self.prefix = settings.worker_id_prefix or f"{socket.gethostname()}-{os.getpid()}"
        self._numbers = itertools.count(1)
        self._slots: list[_Slot] = []
        self._pool: Pool | None = None  # while running: for the event log
        self._drain_signal: int | None = None  # set by request_drain
        self._next_overflow_check = 0.0
        self._last_overflow_start = -OVERFLOW_COOLDOWN

    def request_drain(self, signum: int = 0, frame: FrameType | None = None) -> None:
        """Drain every worker and stop (the SIGTERM/SIGINT handler).

        It takes no lock, and logs nothing: a handler runs in the main thread
        between two of its bytecodes, and one that waits for a lock the main
        thread holds (an Event's, logging's) hangs it for good (seen: SIGTERM
        landing in the supervisor's ``Event.wait``). The loop logs it."""
        del frame
        if self._drain_signal is None:
            self._drain_signal = signum

    def run(self) -> int:
        """Supervise until drained; the exit code."""
        s = self.settings
        client = client_from_url(s.url)
        pool = Pool(
            s.pool, redis=client, lease_ttl=s.lease_ttl,
            min_replicas=s.min_replicas, replica_timeout=s.replica_timeout,
        )  # fmt: skip
        reaper = Reaper(client, [pool.name], sweep_interval=self.settings.sweep_interval).start()
        self._pool = pool  # for the event log
        if self.metrics is not None:
            self.metrics.watch_reaper(reaper)
        try:
            for _ in range(self.settings.workers):
                self._slots.append(self._start(_Slot(self._new_id(), overflow=False)))
            while self._drain_signal is None:
                self._check_children()
                self._maybe_overflow(pool)
                mod_time.sleep(TICK)  # a signal's handler runs, and the sleep goes on (PEP 475)
            log.info("supervisor got signal %d: draining the workers", self._drain_signal)
            self._stop_all()
        finally:
            reaper.stop()
            pool.close()
            close_client(client)
        log.info("supervisor of pool %s: every worker has left", pool.name)
        return 0

    # -- children ---------------------------------------------------------------

    def _new_id(self) -> str:
        return f"{self.prefix}-{next(self._numbers)}"

    def _start(self, slot: _Slot) -> _Slot:
        s = self.settings
        slot.incarnation = uuid.uuid4().hex
        settings = WorkerSettings(
            url=s.url, pool=s.pool, worker_id=slot.worker_id, incarnation=slot.incarnation,
            heartbeat_ttl=s.heartbeat_ttl, functions=s.functions,
            replaces=slot.dead_incarnation, lease_ttl=s.lease_ttl, stop_grace=s.stop_grace,
            overflow_idle=s.overflow_idle if slot.overflow else None,
            min_replicas=s.min_replicas, replica_timeout=s.replica_timeout,
        )  # fmt: skip
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{SETTINGS_ENV: settings.to_json()})
        env.update(rqkeys.environment(s.pool))  # RQ's keys of the process are the pool's
        slot.proc = subprocess.Popen([sys.executable, "-m", "redispool.worker"], env=env)
        slot.started = mod_time.monotonic()
        log.info("started worker %s (pid %d)", slot.worker_id, slot.proc.pid)
        return slot

    def _check_children(self) -> None:
        now = mod_time.monotonic()
        for slot in list(self._slots):
            if slot.proc is not None and slot.proc.poll() is not None:
                self._exited(slot, slot.proc.returncode, now)
            if slot.proc is None and slot in self._slots and now >= slot.restart_at:
                self._start(slot)

    def _exited(self, slot: _Slot, code: int, now: float) -> None:
        assert slot.proc is not None
        pid, slot.proc = slot.proc.pid, None
        slot.dead_incarnation = slot.incarnation
        if slot.overflow or code == EXIT_OK:
            log.info(
                "worker %s (pid %d) left the pool (exit %d): not replacing it",
                slot.worker_id, pid, code,
            )  # fmt: skip
            self._slots.remove(slot)
            return
        if code == EXIT_ID_TAKEN:
            slot.worker_id, slot.dead_incarnation = self._new_id(), ""
            log.warning("worker id taken elsewhere: the next worker is %s", slot.worker_id)
            slot.restart_at = now
            return
        if self.metrics is not None:
            self.metrics.worker_restarts.labels(self.settings.pool).inc()
        if self._pool is not None:
            observe.died(self._pool, slot.worker_id, pid, code)
        slot.failures = 1 if now - slot.started >= STABLE_AFTER else slot.failures + 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (slot.failures - 1))
        slot.restart_at = now + delay
        log.warning(
            "worker %s (pid %d) died (exit %d); replacing it in %.1f s",
            slot.worker_id, pid, code, delay,
        )  # fmt: skip

    def _maybe_overflow(self, pool: Pool) -> None:
        s, now = self.settings, mod_time.monotonic()
        if s.max_overflow <= 0 or now < self._next_overflow_check:
            return
        self._next_overflow_check = now + OVERFLOW_POLL
        running = sum(1 for slot in self._slots if slot.overflow)
        if running >= s.max_overflow or now - self._last_overflow_start < OVERFLOW_COOLDOWN:
            return
        try:
            status = pool.status()
        except PoolError as exc:
            log.debug("overflow check failed: %s", exc)
            return
        if status.waiting > 0 and status.idle == 0:
            self._last_overflow_start = now
            log.info("%d clients wait and no worker is idle: starting overflow", status.waiting)
            self._slots.append(self._start(_Slot(self._new_id(), overflow=True)))

    def _stop_all(self) -> None:
        """Drain every worker (SIGTERM), wait for them all, restart none."""
        for slot in self._slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)
        for slot in self._slots:
            if slot.proc is not None:
                code = slot.proc.wait()
                log.info("worker %s (pid %d) exited with %d", slot.worker_id, slot.proc.pid, code)
