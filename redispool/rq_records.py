"""RQ's record of a worker process: ``<rq prefix>:worker:<name>`` and its heartbeat.

RQ's ``SimpleWorker`` writes it (``rq info`` and RQ's ``Worker.all`` read
it); the records of the jobs themselves are written by redispool's job
scripts in RQ's format (:mod:`redispool.job_loop`, :mod:`redispool.job_records`).
This is the one place that builds the worker's RQ ``Queue`` and worker.
"""

from __future__ import annotations

import logging
import time

import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from . import rqkeys
from .connect import client_from_url, close_client
from .keys import PoolKeys
from .slot_client import pool_client

__all__ = ["RQRecords"]

log = logging.getLogger("redispool.worker")

#: RQ's own worker record (``<rq prefix>:worker:<name>``) lives this long without a beat.
RQ_WORKER_TTL = 60
#: Seconds a Redis read of RQ may take: a silent partition must not block forever.
SOCKET_TIMEOUT = 11.0
#: Seconds between two tries to reach a Redis that is not answering.
RETRY_AFTER = 0.5


class RQRecords:
    """RQ's queue and worker record of one worker process."""

    def __init__(self, url: str, keys: PoolKeys, worker_id: str, incarnation: str) -> None:
        self.keys, self.worker_id = keys, worker_id
        self._given = client_from_url(url, socket_timeout=SOCKET_TIMEOUT)
        # RQ has no Cluster support: on a cluster it talks to the pool's master.
        self.client = pool_client(self._given, keys.prefix)
        self._classes = rqkeys.classes(keys.pool)
        self.queue = self._classes.queue_for(worker_id, self.client)
        #: RQ's name of this worker process (its record is ``<rq prefix>:worker:<name>``).
        self.name = f"{worker_id}.{incarnation[:12]}"
        self._rq = self._rq_worker(self.name)

    def _rq_worker(self, name: str) -> SimpleWorker:
        """RQ's worker (it names its connection in Redis at once): a Redis that is
        restarting is waited for, never a crash."""
        while True:
            try:
                return SimpleWorker(
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
