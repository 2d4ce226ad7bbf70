"""RQ's classes for one pool: every key of the pool's jobs under the pool's prefix.

RQ 3.0 names its keys from ``RQ_KEY_PREFIX`` (read from the environment at
import, process-wide) and from templates kept on its classes. A pool's jobs
use the prefix :attr:`~redispool.keys.PoolKeys.rq_prefix`
(``redispool:{<pool>}:rq``), so their queues, job records, results,
registries, executions and worker records are keys of the pool: a user
limited to the pool's keys reaches them, and nothing of another pool's jobs;
they share the pool's Cluster slot.

Two parts make that true:

- :func:`classes` gives a pool's own ``Job``, ``Queue`` and ``Worker``
  subclasses, whose key templates carry the pool's prefix. A client process
  may use several pools at once: it enqueues and reads through these classes
  (and :meth:`~redispool.keys.PoolKeys.rq_result`), never through RQ's
  defaults. ``classes(pool).job.fetch(id, connection=r,
  serializer=JSONSerializer)`` reads a job record, and its
  ``latest_result()``, ``return_value()`` and ``results()`` the pool's
  results.
- A worker process serves one pool. RQ also builds some keys from module
  constants no class can change (results, executions, per-queue worker
  sets), so the process runs with ``RQ_KEY_PREFIX`` set to the pool's prefix
  (:func:`environment`, set by the supervisor before the process starts);
  :func:`check_process` refuses to serve a pool otherwise.

RQ's own tools read a pool's records with the same prefix:
``RQ_KEY_PREFIX='redispool:{doublers}:rq' rq info -u redis://...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from .keys import PoolKeys, validate_pool_name

__all__ = ["PoolRQ", "check_process", "classes", "environment"]

#: The environment variable RQ reads its key prefix from, at import.
PREFIX_ENV = "RQ_KEY_PREFIX"


@dataclass(frozen=True)
class PoolRQ:
    """A pool's RQ classes; each keeps its keys under ``keys.rq_prefix``."""

    keys: PoolKeys
    job: type[Any]
    queue: type[Any]
    worker: type[Any]
    result: type[Any]

    def queue_for(self, worker_id: str, connection: Any) -> Any:
        """The JSON queue of ``worker_id`` (nothing is written until a job is enqueued)."""
        from rq.serializers import JSONSerializer

        return self.queue(
            self.keys.rq_queue(worker_id), connection=connection, serializer=JSONSerializer
        )


@cache
def classes(pool: str) -> PoolRQ:
    """``pool``'s RQ ``Job``, ``Queue``, ``SimpleWorker`` and ``Result`` subclasses (made once)."""
    from rq import Queue, SimpleWorker
    from rq.job import Job
    from rq.results import Result

    keys = PoolKeys(validate_pool_name(pool))
    prefix = keys.rq_prefix
    tag = "".join(ch if ch.isalnum() else "_" for ch in pool)
    result: Any = type(f"Result_{tag}", (Result,), {"get_key": classmethod(_result_key(keys))})

    def latest_result(self: Job, timeout: int = 0) -> Any:
        return result.fetch_latest(self, serializer=self.serializer, timeout=timeout)

    def results(self: Job) -> Any:
        return result.all(self, serializer=self.serializer)

    job = type(
        f"Job_{tag}",
        (Job,),
        {
            "redis_job_namespace_prefix": f"{prefix}:job:",
            "latest_result": latest_result,  # RQ's own name the results key from the env
            "results": results,
        },
    )
    queue = type(
        f"Queue_{tag}",
        (Queue,),
        {
            "job_class": job,
            "redis_queue_namespace_prefix": f"{prefix}:queue:",
            "redis_queues_keys": f"{prefix}:queues",
            "registry_cleaning_key": property(lambda q: f"{prefix}:clean_registries:{q.name}"),
            **_registries(prefix, tag),
        },
    )
    worker = type(
        f"Worker_{tag}",
        (SimpleWorker,),
        {
            "job_class": job,
            "queue_class": queue,
            "redis_worker_namespace_prefix": f"{prefix}:worker:",
            "redis_workers_keys": f"{prefix}:workers",
        },
    )
    return PoolRQ(keys, job, queue, worker, result)


#: The queue's registry properties, RQ's registry class of each and its key's kind.
_REGISTRIES = {
    "started_job_registry": ("StartedJobRegistry", "wip"),
    "finished_job_registry": ("FinishedJobRegistry", "finished"),
    "failed_job_registry": ("FailedJobRegistry", "failed"),
    "deferred_job_registry": ("DeferredJobRegistry", "deferred"),
    "ready_job_registry": ("ReadyJobRegistry", "ready"),
    "scheduled_job_registry": ("ScheduledJobRegistry", "scheduled"),
    "canceled_job_registry": ("CanceledJobRegistry", "canceled"),
}


def _registries(prefix: str, tag: str) -> dict[str, property]:
    """The queue's registries, keyed under ``prefix`` (RQ's own build their
    keys from the process's RQ_KEY_PREFIX, ``rq`` in a client process)."""
    from rq import registry

    def registry_of(cls: type[Any]) -> property:
        return property(lambda q: cls(queue=q, job_class=q.job_class, serializer=q.serializer))

    found = {}
    for name, (base, kind) in _REGISTRIES.items():
        rq_class = getattr(registry, base)
        literal = prefix.replace("{", "{{").replace("}", "}}")  # the hash tag, for str.format
        template = {"key_template": f"{literal}:{kind}:{{0}}"}
        found[name] = registry_of(type(f"{base}_{tag}", (rq_class,), template))
    return found


def _result_key(keys: PoolKeys) -> Any:
    def get_key(cls: type, job_id: str) -> str:
        return keys.rq_result(job_id)

    return get_key


def environment(pool: str) -> dict[str, str]:
    """What a worker process of ``pool`` needs in its environment before RQ is imported."""
    return {PREFIX_ENV: PoolKeys(validate_pool_name(pool)).rq_prefix}


def check_process(pool: str) -> None:
    """Raise ``ValueError`` unless this process's RQ keys are ``pool``'s.

    A worker process calls it before serving: RQ's module-level key names
    (results, executions) follow ``RQ_KEY_PREFIX`` only.
    """
    from rq.defaults import RQ_KEY_PREFIX

    wanted = PoolKeys(validate_pool_name(pool)).rq_prefix
    if wanted != RQ_KEY_PREFIX:
        raise ValueError(
            f"this process keeps RQ keys under {RQ_KEY_PREFIX!r}, pool {pool!r} needs "
            f"{wanted!r}: start it with {PREFIX_ENV}={wanted} (the supervisor does)"
        )
