"""RQ's side of a worker process: its queue, and RQ's records of its jobs.

The worker process keeps every record the RQ way (registries, results,
``rq:worker:*``; ``Job.fetch`` and ``rq info`` read them), JSON only, while
the function call itself runs in the job process (:mod:`redispool.job_process`).
This is the one place that builds the worker's RQ ``Queue`` and worker.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now as rq_now

from . import rqkeys
from .connect import client_from_url, close_client
from .jobs import NONCE_META, TOKEN_META, VERDICT_META
from .keys import PoolKeys
from .slot_client import pool_client

__all__ = ["JobRaised", "RQRecords"]

log = logging.getLogger("redispool.worker")

#: RQ's own worker record (``<rq prefix>:worker:<name>``) lives this long without a beat.
RQ_WORKER_TTL = 60
#: Seconds a Redis read of RQ may take: a silent partition must not block forever.
SOCKET_TIMEOUT = 11.0
#: Seconds between two tries to reach a Redis that is not answering.
RETRY_AFTER = 0.5


class JobRaised(Exception):
    """The job raised in the job process; RQ records the job's own traceback."""

    def __init__(self, exc_string: str) -> None:
        lines = exc_string.strip().splitlines()
        super().__init__(lines[-1] if lines else "")
        self.exc_string = exc_string


class _RQWorker(SimpleWorker):
    """RQ's in-process worker: RQ's bookkeeping of a job, its call sent to ``runner``."""

    on_failure: Callable[[], None] | None = None
    runner: Callable[[Job], Any] | None = None
    _remote_exc: str = ""

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """RQ's ``perform_job``, with ``runner(job)`` instead of ``job.perform()``
        (the runner, not SIGALRM, keeps the job's timeout)."""
        assert self.runner is not None
        try:
            self.prepare_job_execution(job, len(self.queues) == 1)
            job.started_at = rq_now()
            return_value = self.runner(job)
            self._finalize_success(job, queue, execution, return_value)
        except JobRaised as exc:
            self._remote_exc = exc.exc_string
            self._finalize_failure(job, queue, execution, sys.exc_info())
            return False
        except BaseException:
            self._finalize_failure(job, queue, execution, sys.exc_info())
            return False
        return True

    def handle_job_failure(self, *args: Any, **kwargs: Any) -> None:
        if self._remote_exc:  # the job's own traceback, not the worker's
            kwargs["exc_string"], self._remote_exc = self._remote_exc, ""
        super().handle_job_failure(*args, **kwargs)
        if self.on_failure is not None:
            self.on_failure()


class RQRecords:
    """The RQ queue of one worker id and RQ's records of the jobs run from it."""

    def __init__(self, url: str, keys: PoolKeys, worker_id: str, incarnation: str) -> None:
        self.keys, self.worker_id = keys, worker_id
        self._given = client_from_url(url, socket_timeout=SOCKET_TIMEOUT)
        # RQ has no Cluster support: on a cluster it talks to the pool's master.
        self.client = pool_client(self._given, keys.prefix)
        self._classes = rqkeys.classes(keys.pool)
        self.queue = self._classes.queue_for(worker_id, self.client)
        self._rq = self._rq_worker(f"{worker_id}.{incarnation[:12]}")
        self._rq.on_failure = self.count_failure

    def _rq_worker(self, name: str) -> _RQWorker:
        """RQ's worker (it names its connection in Redis at once): a Redis that is
        restarting is waited for, never a crash."""
        while True:
            try:
                return _RQWorker(
                    [self.queue],
                    connection=self.client,
                    serializer=JSONSerializer,
                    job_class=self._classes.job,
                    queue_class=self._classes.queue,
                    name=name,
                    worker_ttl=RQ_WORKER_TTL,
                    log_job_description=False,
                )
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("worker %s: Redis unreachable: %s", self.worker_id, exc)
                time.sleep(RETRY_AFTER)

    def register_birth(self) -> None:
        self._rq.register_birth()  # type: ignore[no-untyped-call]

    def heartbeat(self) -> None:
        self._rq.heartbeat()

    def close(self) -> None:
        if self.client is not self._given:
            self.client.close()
        close_client(self._given)

    def dequeue(self, timeout: int) -> Job | None:
        """The next job, waiting up to ``timeout`` s; raises RQ's DequeueTimeout."""
        found = self._classes.queue.dequeue_any(
            [self.queue], timeout, connection=self.client, serializer=JSONSerializer
        )
        return None if found is None else found[0]

    def execute(self, job: Job, runner: Callable[[Job], Any]) -> None:
        """Record ``job`` the RQ way while ``runner(job)`` runs it: its return
        value is the result; what it raises (JobRaised: the job's own
        traceback) is the failure."""
        self._rq.runner = runner
        self._rq.execute_job(job, self.queue)

    def refusal(self, job: Job, functions: frozenset[str]) -> tuple[str, str, bool] | None:
        """Why ``job`` must not run, read without importing anything:
        ``(remote type, message, whether it is about the lease)``."""
        name = job.func_name
        if name not in functions:
            return "redispool.jobs.FunctionNotRegistered", f"{name!r} is not registered", False
        if (
            job._success_callback_name
            or job._failure_callback_name
            or job._stopped_callback_name
            or job.webhooks
            or job.instance is not None
        ):
            why = "jobs with callbacks or hooks are refused"
            return "redispool.jobs.FunctionNotRegistered", why, False
        if not str(job.meta.get(TOKEN_META, "")).isdigit():
            return "redispool.errors.LeaseLost", "job refused: it carries no lease token", True
        if not str(job.meta.get(NONCE_META, "")):
            return "redispool.errors.LeaseLost", "job refused: it carries no lease nonce", True
        return None

    def set_verdict(self, job: Job, code: int) -> None:
        """The worker's verdict on ``job``, a code of :mod:`redispool.errors`,
        where the client reads it (before the job's result is written)."""
        job.meta[VERDICT_META] = code
        job.save_meta()  # type: ignore[no-untyped-call]

    def refuse(self, job: Job, remote_type: str, message: str, verdict: int | None) -> None:
        """Record ``job`` as failed without running it."""
        wid = self.worker_id
        log.warning("worker %s refused job %s: %s: %s", wid, job.id, remote_type, message)
        if verdict is not None:
            self.set_verdict(job, verdict)
        with self.client.pipeline() as pipe:
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            job._handle_failure(
                f"{remote_type}: {message}", pipeline=pipe, worker_name=self._rq.name
            )
            pipe.lrem(self.queue.intermediate_queue_key, 1, job.id)
            pipe.hincrby(self.keys.jobs_failed, self.worker_id, 1)
            pipe.execute()

    def give_back(self, job: Job) -> None:
        """Put ``job`` back at the head of the queue (it was not run)."""
        with self.client.pipeline() as pipe:
            pipe.lrem(self.queue.intermediate_queue_key, 1, job.id)
            pipe.lpush(self.queue.key, job.id)
            pipe.execute()

    def drop(self, job_id: str) -> None:
        """Forget a dequeued job that cannot be handled."""
        self.client.lrem(self.queue.intermediate_queue_key, 1, job_id)

    def drop_unreadable(self, exc: Exception) -> None:
        """Drop the dequeued job records RQ cannot read (junk written by hand)."""
        key = self.queue.intermediate_queue_key
        for raw in self.client.lrange(key, 0, -1):
            job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            try:
                self._classes.job.fetch(job_id, connection=self.client, serializer=JSONSerializer)
            except Exception:
                self.client.lrem(key, 0, job_id)
                log.warning("worker %s: unreadable job %s dropped: %r", self.worker_id, job_id, exc)

    def count_failure(self) -> None:
        """One more failed (or refused) job on this worker, for the metrics."""
        try:
            self.client.hincrby(self.keys.jobs_failed, self.worker_id, 1)
        except redis.RedisError as exc:
            log.warning("worker %s: could not count a failed job: %s", self.worker_id, exc)
