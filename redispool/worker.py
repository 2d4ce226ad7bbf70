"""A worker process: holds one worker id of a pool and runs the jobs sent to it.

It registers as a new *incarnation* of its id, keeps a heartbeat (and RQ's
worker record, :mod:`redispool.rq_records`), and runs the RQ jobs of its own
queue one after another (:mod:`redispool.job_loop`): it keeps RQ's records of
each job (registries, results) in one script at the start and one at the end,
and the function call itself runs in one long-lived job process
(:mod:`redispool.job_process`), reused between jobs. Before each job it
checks, in the first script, that the job's token is the current lease of
this worker and that this process still holds the id; a job from an ended
lease is refused and never runs. While a
job runs its lease is watched: when it ends the job is told
(``current_lease().lost``) and, if it has not returned within
``stop_grace`` seconds, killed; so is a job past its own timeout. Such a job
is recorded as failed with its verdict (an :mod:`redispool.errors` code) in
``job.meta[VERDICT_META]``, never as a success. Only registered functions
run; anything else is refused before it is imported.

A worker taken out of service (``Pool.remove_worker``, ``redispool drain``)
leaves for good: an idle one at once, a leased one when its lease ends; its
process then exits 0 and its supervisor does not replace it.

SIGTERM or SIGINT drains: an idle worker leaves the pool at once, a leased
one keeps serving its lease and leaves at checkin; then the process exits 0.
The supervisor (:mod:`redispool.supervisor`) starts worker processes with
``python -m redispool.worker`` and their settings in the environment.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
import time as mod_time
from types import FrameType

import redis

from . import errors, liveness, observe, rqkeys
from .connect import client_from_url, close_client
from .errors import PoolError, PoolUnavailable, WorkerIdTaken
from .job_loop import JobLoop
from .job_process import JobProcess, JobProcessError
from .pool import Pool
from .rq_records import RQRecords
from .worker_settings import SETTINGS_ENV, WorkerSettings

__all__ = ["EXIT_ID_TAKEN", "SETTINGS_ENV", "Worker", "WorkerSettings", "main"]

log = logging.getLogger("redispool.worker")

EXIT_OK, EXIT_ERROR, EXIT_ID_TAKEN = 0, 1, 3
#: Seconds between two tries to register while Redis cannot be reached.
REGISTER_RETRY = 0.5
#: Seconds a look at a running job's lease may take to connect, and to be answered.
LOOK_CONNECT_TIMEOUT, LOOK_TIMEOUT = 1.0, 0.5
#: Seconds one dequeue blocks; also how soon the loop notices it should stop.
DEQUEUE_WAIT = 1
RQ_BEAT_INTERVAL = 15.0
LOG_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"


class Worker:
    """One worker process. :meth:`run` works until drained; returns an exit code."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        rqkeys.check_process(settings.pool)  # RQ's keys of this process are the pool's
        self._jobs = JobProcess(settings.functions, stop_grace=settings.stop_grace)
        self._jobs.start()  # it imports the functions while this process connects
        self.pool = Pool(
            settings.pool, settings.url, lease_ttl=settings.lease_ttl,
            min_replicas=settings.min_replicas, replica_timeout=settings.replica_timeout,
        )  # fmt: skip
        # Looks at a running job's lease go through a client of their own with short
        # timeouts: a look that cannot be answered soon says nothing (job_process).
        self._watcher = Pool(
            settings.pool,
            redis=client_from_url(
                settings.url, socket_timeout=LOOK_TIMEOUT, connect_timeout=LOOK_CONNECT_TIMEOUT
            ),
        )
        self.me = liveness.Incarnation(
            worker_id=settings.worker_id,
            incarnation=settings.incarnation,
            host=socket.gethostname(),
            pid=os.getpid(),
            heartbeat_ms=round(settings.heartbeat_ttl * 1000),
            overflow=settings.overflow_idle is not None,
        )
        self.functions = frozenset(settings.functions)
        self._rq = RQRecords(settings.url, self.pool.keys, settings.worker_id, settings.incarnation)
        self._loop_of_jobs = JobLoop(
            self.pool, self._watcher, self.me, self._jobs, self.functions, self._rq.name
        )
        self._draining = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._exit_code = EXIT_OK
        self._last_job = mod_time.monotonic()
        self._rq_beat = mod_time.monotonic()

    # -- lifecycle ---------------------------------------------------------------

    def run(self) -> int:
        """Register, serve jobs until drained or displaced, leave. The exit code."""
        try:
            self._jobs.ensure_ready()  # no worker joins without a working job process
        except JobProcessError as exc:
            log.error("worker %s: %s", self.me.worker_id, exc)
            self.pool.close()
            self._rq.close()
            return EXIT_ERROR
        observe.replacing(self.pool, self.me.worker_id, self.settings.replaces)
        while True:  # Redis down or loading its data (a crash, a restart): ask again
            try:
                liveness.register(self.pool, self.me, self.settings.replaces)
                break
            except WorkerIdTaken:
                log.warning("worker id %s is held by a live worker; not taking it",
                            self.me.worker_id)  # fmt: skip
                self._jobs.close()
                self.pool.close()
                return EXIT_ID_TAKEN
            except liveness.OutOfService:  # drained, then its process died: not replaced
                log.info("worker %s is out of service: not joining", self.me.worker_id)
                self._jobs.close()
                self.pool.close()
                self._rq.close()
                return EXIT_OK
            except PoolUnavailable as exc:
                log.warning("worker %s: cannot register yet: %s", self.me.worker_id, exc)
                if self._stop.wait(REGISTER_RETRY) or self._draining.is_set():
                    self._jobs.close()
                    self.pool.close()
                    return EXIT_OK
        log.info(
            "worker %s joined pool %s (incarnation %s)",
            self.me.worker_id,
            self.pool.name,
            self.me.incarnation,
        )
        beats = threading.Thread(
            target=self._heartbeat_loop, name="redispool-heartbeat", daemon=True
        )
        beats.start()
        try:
            self._rq.register_birth()
            self._loop()
        finally:
            self._stop.set()
            self._wake.set()
            beats.join(timeout=5)
            self._leave()
        return self._exit_code

    def drain(self) -> None:
        """Leave the pool: now if idle, else when the current lease ends."""
        self._draining.set()
        self._wake.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("worker %s: got signal %d, draining", self.me.worker_id, signum)
        self.drain()

    def _leave(self) -> None:
        if self._exit_code != EXIT_ID_TAKEN:
            try:
                liveness.leave(self.pool, self.me, "exit")
                observe.left(self.pool, self.me.worker_id, "the process exited")
            except PoolError as exc:
                log.warning("worker %s could not leave the pool: %s", self.me.worker_id, exc)
        # No RQ register_death: leaving (or a later burial) deletes RQ's worker record.
        log.info("worker %s left pool %s", self.me.worker_id, self.pool.name)
        self._jobs.close()
        self.pool.close()
        self._rq.close()
        self._watcher.close()
        close_client(self._watcher.client)

    # -- heartbeat and draining (a thread) -------------------------------------

    def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_ttl / 3
        drain_asked = False
        while not self._stop.is_set():
            try:
                if self._draining.is_set() and not drain_asked:
                    # asked again at the next beat if Redis could not be reached
                    left = liveness.leave(self.pool, self.me, "drain")
                    drain_asked = True
                    if left != 2:
                        self._stop.set()  # idle: it has left
                        return
                    log.info("worker %s is leased: leaves at checkin", self.me.worker_id)
                self._beat()
            except WorkerIdTaken:
                log.error(
                    "worker %s: another live process took this id; exiting", self.me.worker_id
                )
                self._exit_code = EXIT_ID_TAKEN
                self._stop.set()
                return
            except PoolError as exc:
                log.warning("worker %s: heartbeat failed: %s", self.me.worker_id, exc)
            self._wake.wait(interval)
            self._wake.clear()

    def _beat(self) -> None:
        state = liveness.beat(self.pool, self.me, reregister=not self._draining.is_set())
        if state == "registered":
            log.warning("worker %s: registration had vanished; registered again", self.me.worker_id)
        elif state == "gone":  # removed or drained: out of service for good
            log.info("worker %s is out of service: leaving", self.me.worker_id)
            self._stop.set()

    # -- jobs --------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._next_job()
            except (redis.ConnectionError, redis.TimeoutError, errors.PoolUnavailable) as exc:
                # Redis restarting or cut off, mid-job or idle: wait, never crash.
                log.warning("worker %s: Redis unreachable: %s", self.me.worker_id, exc)
                self._stop.wait(0.5)
            except errors.PoolCorrupted as exc:  # junk in its queue's keys: say so, live on
                log.error("worker %s: cannot take jobs: %s", self.me.worker_id, exc)
                self._stop.wait(1.0)
            except JobProcessError as exc:  # a job process that cannot start: not healthy
                log.error("worker %s: %s; leaving", self.me.worker_id, exc)
                self._exit_code = EXIT_ERROR
                self._stop.set()

    def _next_job(self) -> None:
        """Wait up to DEQUEUE_WAIT for a job and handle it."""
        self._rq_tick()
        job_id = self._loop_of_jobs.next_id(DEQUEUE_WAIT)
        if job_id is None:
            self._jobs.ensure_ready()  # a job process replaced after a kill must work
            self._idle_tick()
            return
        self._last_job = mod_time.monotonic()
        try:
            code = self._loop_of_jobs.handle(job_id)
        except (redis.ConnectionError, redis.TimeoutError, JobProcessError):
            raise
        except PoolUnavailable:  # logged; given back if it had not started
            self._check_id()
            self._stop.wait(0.5)
            return
        except Exception:  # a malformed job must not stop the worker
            log.exception("worker %s: job %s dropped", self.me.worker_id, job_id)
            self._loop_of_jobs.drop(job_id)
            return
        if code == errors.UNKNOWN_WORKER:  # given back: this process no longer holds the id
            self._check_id()
        self._last_job = mod_time.monotonic()

    def _rq_tick(self) -> None:
        """RQ's heartbeat of its worker record, busy or idle."""
        now = mod_time.monotonic()
        if now - self._rq_beat >= RQ_BEAT_INTERVAL:
            self._rq_beat = now
            try:
                self._rq.heartbeat()
            except redis.RedisError as exc:
                log.warning("worker %s: RQ heartbeat failed: %s", self.me.worker_id, exc)

    def _idle_tick(self) -> None:
        idle = self.settings.overflow_idle
        now = mod_time.monotonic()
        if idle is None or self._draining.is_set() or now - self._last_job < idle:
            return
        if liveness.leave(self.pool, self.me, "idle") == 1:
            log.info("overflow worker %s idle for %.1f s: leaving", self.me.worker_id, idle)
            self._stop.set()
        else:
            self._last_job = now  # leased: stays

    def _check_id(self) -> None:
        """Beat now: exit if another live process took this worker id."""
        self._wake.set()
        try:
            self._beat()
        except WorkerIdTaken:
            self._exit_code = EXIT_ID_TAKEN
            self._stop.set()
        except PoolError as exc:
            log.warning("worker %s: heartbeat failed: %s", self.me.worker_id, exc)


def main() -> int:
    """Entry point of ``python -m redispool.worker`` (settings in the environment)."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)
    for name in ("rq", "rq.worker", "rq.job", "rq.queue"):
        logging.getLogger(name).setLevel(logging.WARNING)
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        print(
            f"error: {SETTINGS_ENV} is not set; start workers with worker_main.py", file=sys.stderr
        )
        return 2
    try:
        worker = Worker(WorkerSettings.from_json(raw))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, worker._on_signal)
    signal.signal(signal.SIGINT, worker._on_signal)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: every stack
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
