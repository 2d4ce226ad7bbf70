"""A worker process: holds one worker id of a pool and runs the jobs sent to it.

It registers as a new *incarnation* of its id, keeps a heartbeat, and runs
the RQ jobs of its own queue itself, one after another, without forking
(RQ's ``SimpleWorker`` does the running and records results the RQ way).
Before each job it checks, in one script, that the job's token is the
current lease of this worker and that this process still holds the id; a job
from an ended lease is refused with ``LeaseLost`` (``WorkerLost`` if that
lease ended because a previous incarnation died) and never runs. Only
registered functions run; anything else is refused before it is imported.

SIGTERM or SIGINT drains: an idle worker leaves the pool at once, a leased
one keeps serving its lease and leaves at checkin; then the process exits 0.
The supervisor (:mod:`redispool.supervisor`) starts worker processes with
``python -m redispool.worker`` and their settings in the environment.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time as mod_time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.exceptions import DequeueTimeout
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from . import errors, liveness, rqkeys
from .connect import client_from_url, close_client
from .errors import PoolError, PoolUnavailable, WorkerIdTaken
from .jobs import DEFAULT_FUNCTIONS, NONCE_META, TOKEN_META
from .pool import Pool

__all__ = ["EXIT_ID_TAKEN", "SETTINGS_ENV", "Worker", "WorkerSettings", "main"]

log = logging.getLogger("redispool.worker")

EXIT_OK, EXIT_ERROR, EXIT_ID_TAKEN = 0, 1, 3
#: Seconds between attempts to register while Redis cannot be reached.
REGISTER_RETRY = 0.5
#: Environment variable that carries a worker process's settings (JSON).
SETTINGS_ENV = "REDISPOOL_WORKER_SETTINGS"
#: Seconds one dequeue blocks; also how soon the loop notices it should stop.
DEQUEUE_WAIT = 1
#: RQ's own worker record (``<rq prefix>:worker:<name>``) lives this long without a beat.
RQ_WORKER_TTL = 60
RQ_BEAT_INTERVAL = 15.0
LOG_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"


@dataclass(frozen=True)
class WorkerSettings:
    """What one worker process needs to know."""

    url: str
    pool: str
    worker_id: str
    incarnation: str
    heartbeat_ttl: float = 5.0
    functions: tuple[str, ...] = tuple(sorted(DEFAULT_FUNCTIONS))
    replaces: str = ""
    #: Seconds an overflow worker stays idle before it leaves; None: not overflow.
    overflow_idle: float | None = None
    lease_ttl: float | None = None
    min_replicas: int = 0
    replica_timeout: float = 1.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> WorkerSettings:
        values = json.loads(raw)
        values["functions"] = tuple(values.get("functions", ()))
        return cls(**values)


class _RQWorker(SimpleWorker):
    """RQ's in-process worker, used only to run a job and record its result."""

    on_failure: Callable[[], None] | None = None

    def handle_job_failure(self, *args: Any, **kwargs: Any) -> None:
        super().handle_job_failure(*args, **kwargs)
        if self.on_failure is not None:
            self.on_failure()


class Worker:
    """One worker process. :meth:`run` works until drained; returns an exit code."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.pool = Pool(
            settings.pool, settings.url, lease_ttl=settings.lease_ttl,
            min_replicas=settings.min_replicas, replica_timeout=settings.replica_timeout,
        )  # fmt: skip
        self.me = liveness.Incarnation(
            worker_id=settings.worker_id,
            incarnation=settings.incarnation,
            host=socket.gethostname(),
            pid=os.getpid(),
            heartbeat_ms=round(settings.heartbeat_ttl * 1000),
            overflow=settings.overflow_idle is not None,
        )
        self.functions = frozenset(settings.functions)
        self._rq_client = client_from_url(
            settings.url,
            socket_timeout=DEQUEUE_WAIT + 10.0,  # a silent partition must not block forever
        )
        rqkeys.check_process(settings.pool)  # RQ's keys of this process are the pool's
        pool_rq = rqkeys.classes(settings.pool)
        self._queue = pool_rq.queue_for(settings.worker_id, self._rq_client)
        self._rq = _RQWorker(
            [self._queue],
            connection=self._rq_client,
            serializer=JSONSerializer,
            job_class=pool_rq.job,
            queue_class=pool_rq.queue,
            name=f"{settings.worker_id}.{settings.incarnation[:12]}",
            worker_ttl=RQ_WORKER_TTL,
            log_job_description=False,
        )
        self._rq.on_failure = self._count_failure
        self._draining = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._exit_code = EXIT_OK
        self._last_job = mod_time.monotonic()
        self._rq_beat = mod_time.monotonic()

    # -- lifecycle ---------------------------------------------------------------

    def run(self) -> int:
        """Register, serve jobs until drained or displaced, leave. The exit code."""
        while True:  # Redis down or loading its data (a crash, a restart): ask again
            try:
                liveness.register(self.pool, self.me, self.settings.replaces)
                break
            except WorkerIdTaken:
                log.warning("worker id %s is held by a live worker; not taking it",
                            self.me.worker_id)  # fmt: skip
                self.pool.close()
                return EXIT_ID_TAKEN
            except PoolUnavailable as exc:
                log.warning("worker %s: cannot register yet: %s", self.me.worker_id, exc)
                if self._stop.wait(REGISTER_RETRY) or self._draining.is_set():
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
            self._rq.register_birth()  # type: ignore[no-untyped-call]
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
            except PoolError as exc:
                log.warning("worker %s could not leave the pool: %s", self.me.worker_id, exc)
        # No RQ register_death: leaving (or a later burial) deletes RQ's worker record.
        log.info("worker %s left pool %s", self.me.worker_id, self.pool.name)
        self.pool.close()
        close_client(self._rq_client)

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
        elif state == "gone":
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

    def _next_job(self) -> None:
        """Wait up to DEQUEUE_WAIT for a job and handle it."""
        try:
            found = type(self._queue).dequeue_any(
                [self._queue], DEQUEUE_WAIT, connection=self._rq_client, serializer=JSONSerializer
            )
        except DequeueTimeout:
            self._idle_tick()
            return
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception as exc:  # a job record RQ cannot even read: drop it, live on
            self._drop_unreadable(exc)
            return
        if found is None:
            return
        job, queue = found
        try:
            self._handle(job, queue)
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception:  # a malformed job must not stop the worker
            log.exception("worker %s: job %s dropped", self.me.worker_id, job.id)
            self._rq_client.lrem(queue.intermediate_queue_key, 1, job.id)

    def _drop_unreadable(self, exc: Exception) -> None:
        """Drop the dequeued job records RQ cannot read (junk written by hand)."""
        key = self._queue.intermediate_queue_key
        for raw in self._rq_client.lrange(key, 0, -1):
            job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                self._queue.job_class.fetch(
                    job_id, connection=self._rq_client, serializer=JSONSerializer
                )
            except Exception:
                self._rq_client.lrem(key, 0, job_id)
                log.warning(
                    "worker %s: unreadable job %s dropped: %r", self.me.worker_id, job_id, exc
                )

    def _idle_tick(self) -> None:
        now = mod_time.monotonic()
        if now - self._rq_beat >= RQ_BEAT_INTERVAL:
            self._rq_beat = now
            self._rq.heartbeat()
        idle = self.settings.overflow_idle
        if idle is None or self._draining.is_set() or now - self._last_job < idle:
            return
        if liveness.leave(self.pool, self.me, "idle") == 1:
            log.info("overflow worker %s idle for %.1f s: leaving", self.me.worker_id, idle)
            self._stop.set()
        else:
            self._last_job = now  # leased: stays

    def _handle(self, job: Job, queue: Queue) -> None:
        """Fence, then run ``job`` (or refuse it)."""
        try:
            refusal = self._refusal(job)
            if refusal is not None:
                self._refuse(job, queue, *refusal)
                return
            token = str(job.meta.get(TOKEN_META, ""))
            nonce = str(job.meta.get(NONCE_META, ""))
            code = liveness.start_job(self.pool, self.me, token, nonce)
            if code == errors.UNKNOWN_WORKER:  # this process no longer holds the id
                self._give_back(job, queue)
                return
            if code != errors.OK:
                exc = "WorkerLost" if code == errors.WORKER_DEAD else "LeaseLost"
                why = "its worker died" if code == errors.WORKER_DEAD else "it has ended"
                self._refuse(
                    job,
                    queue,
                    f"redispool.errors.{exc}",
                    f"job refused: the lease of token {token} is not current ({why})",
                )
                return
            self._last_job = mod_time.monotonic()
            log.info("worker %s job %s token %s started", self.me.worker_id, job.id, token)
            try:
                self._rq.execute_job(job, queue)
            finally:
                log.info("worker %s job %s token %s ended", self.me.worker_id, job.id, token)
        except PoolError as exc:
            log.warning("worker %s: job %s not run: %s", self.me.worker_id, job.id, exc)
            self._give_back(job, queue)
            self._stop.wait(0.5)

    def _refusal(self, job: Job) -> tuple[str, str] | None:
        """Why ``job`` must not run, read without importing anything."""
        name = job.func_name
        if name not in self.functions:
            return (
                "redispool.jobs.FunctionNotRegistered",
                f"{name!r} is not registered on this worker",
            )
        if (
            job._success_callback_name
            or job._failure_callback_name
            or job._stopped_callback_name
            or job.webhooks
            or job.instance is not None
        ):
            return (
                "redispool.jobs.FunctionNotRegistered",
                "jobs with callbacks or hooks are refused",
            )
        if not str(job.meta.get(TOKEN_META, "")).isdigit():
            return "redispool.errors.LeaseLost", "job refused: it carries no lease token"
        if not str(job.meta.get(NONCE_META, "")):
            return "redispool.errors.LeaseLost", "job refused: it carries no lease nonce"
        return None

    def _count_failure(self) -> None:
        """One more failed (or refused) job on this worker, for the metrics."""
        try:
            self._rq_client.hincrby(self.pool.keys.jobs_failed, self.me.worker_id, 1)
        except redis.RedisError as exc:
            log.warning("worker %s: could not count a failed job: %s", self.me.worker_id, exc)

    def _refuse(self, job: Job, queue: Queue, remote_type: str, message: str) -> None:
        log.warning(
            "worker %s refused job %s: %s: %s", self.me.worker_id, job.id, remote_type, message
        )
        with self._rq_client.pipeline() as pipe:
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            job._handle_failure(
                f"{remote_type}: {message}", pipeline=pipe, worker_name=self._rq.name
            )
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            pipe.hincrby(self.pool.keys.jobs_failed, self.me.worker_id, 1)
            pipe.execute()

    def _give_back(self, job: Job, queue: Queue) -> None:
        """Put ``job`` back at the head of the queue, then check the id is still ours."""
        with self._rq_client.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            pipe.lpush(queue.key, job.id)
            pipe.execute()
        self._wake.set()
        try:
            self._beat()
        except WorkerIdTaken:
            self._exit_code = EXIT_ID_TAKEN
            self._stop.set()


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
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
