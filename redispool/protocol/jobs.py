"""The operations of a job's life, without I/O: enqueue (the client), begin and
finish (the worker). Each is one script; what it writes is RQ's own record
of the job (see :mod:`redispool.job_records` for the fields' format).

API (``keys`` is the pool's :class:`~redispool.keys.PoolKeys`)::

    enqueue_job(keys, worker_id, token, nonce, job_id, ttl, fields) -> Op[int]  # a code
    begin_job(keys, me, job_id, execution, started_at, now, worker_name) -> Op[Begun]
    finish_job(keys, worker_id, token, nonce, job_id, end)          -> Op[int]  # a code
    give_back(keys, worker_id, job_id, execution)                   -> Op[bool]  # pushed
    withdraw_job(keys, worker_id, job_id)                           -> Op[int]  # copies out
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import NO_JOB, NOT_HELD, OK, UNKNOWN_WORKER, WORKER_DEAD
from ..keys import PoolKeys
from ..wire import text
from .op import Op, code_of, unexpected
from .workers import Incarnation

__all__ = [
    "NONCE_FIELD", "TOKEN_FIELD", "VERDICT_FIELD", "Begun", "End", "begin_job", "enqueue_job",
    "finish_job", "give_back", "intermediate_key", "rq_key", "withdraw_job",
]  # fmt: skip

#: The keys of ``job.meta`` that carry a job's lease (its token and nonce) and
#: the worker's verdict on a job it refused or stopped (also a field of its
#: results entry): the scripts take them as arguments.
TOKEN_FIELD, NONCE_FIELD, VERDICT_FIELD = "redispool_token", "redispool_nonce", "redispool_verdict"


def rq_key(keys: PoolKeys, kind: str, name: str) -> str:
    """RQ's key of kind ``kind`` (``job``, ``queue``, ``wip``, ``finished``,
    ``failed``, ``results``) for ``name`` (a job id or a queue name), under the
    pool's RQ prefix: the keys RQ's classes of :func:`redispool.rqkeys.classes` use."""
    return f"{keys.rq_prefix}:{kind}:{name}"


def intermediate_key(keys: PoolKeys, queue: str) -> str:
    """RQ's intermediate queue of queue ``queue``: a worker's wait moves a job id
    there (``BLMOVE``), and the job's start takes it out (RQ 1.16 and later)."""
    return rq_key(keys, "queue", queue) + ":intermediate"


def enqueue_job(
    keys: PoolKeys, worker_id: str, token: int, nonce: str, job_id: str, ttl: int,
    fields: Sequence[str],
) -> Op[int]:  # fmt: skip
    """Write job ``job_id`` (RQ's hash ``fields``, name, value, ...) and queue it on
    ``worker_id``'s queue if the lease of ``token`` and ``nonce`` is current.
    Result: OK, NOT_HELD or WORKER_DEAD."""

    def parse(reply: Any) -> int:
        code = code_of(reply)
        if code not in (OK, NOT_HELD, WORKER_DEAD):
            unexpected(code, pool=keys.pool, operation="run", worker_id=worker_id)
        return code

    op_keys = (
        keys.lease(worker_id), keys.dead_leases, rq_key(keys, "job", job_id),
        rq_key(keys, "queue", keys.rq_queue(worker_id)), f"{keys.rq_prefix}:queues",
    )  # fmt: skip
    args: tuple[str | int, ...] = (str(token), nonce, job_id, ttl, *fields)
    return Op("enqueue_job", op_keys, args, parse, keys.pool, worker_id, "run")


@dataclass(slots=True)
class Begun:
    """What ``begin_job`` found: its ``code``; for OK, NOT_HELD and WORKER_DEAD the
    job's ``token`` and ``nonce``; for OK also the seconds the lease surely holds
    (``left``) and RQ's fields the worker needs."""

    code: int
    left: float = 0.0
    token: str = ""
    nonce: str = ""
    result_ttl: int | None = None
    failure_ttl: int | None = None
    data: bytes = b""
    timeout: str = ""
    callbacks: str = ""
    webhooks: str = ""


def begin_job(
    keys: PoolKeys, me: Incarnation, job_id: str, execution: str, started_at: str, now: float,
    worker_name: str,
) -> Op[Begun]:  # fmt: skip
    """The fence at a job's start and RQ's "started" records (``begin_job``)."""

    def parse(reply: Any) -> Begun:
        code = code_of(reply)
        if code in (UNKNOWN_WORKER, NO_JOB):
            return Begun(code)
        ttls = _ttl(reply[4]), _ttl(reply[5])
        if code in (NOT_HELD, WORKER_DEAD):
            return Begun(code, 0.0, text(reply[2]), text(reply[3]), *ttls)
        if code != OK:
            unexpected(code, pool=keys.pool, operation="begin_job", worker_id=me.worker_id)
        data = reply[6] if isinstance(reply[6], bytes) else str(reply[6]).encode()
        return Begun(
            code, max(0, int(reply[1])) / 1000, text(reply[2]), text(reply[3]), *ttls, data,
            text(reply[7]), text(reply[8]), text(reply[9]),
        )  # fmt: skip

    queue = keys.rq_queue(me.worker_id)
    op_keys = (
        keys.lease(me.worker_id), keys.incarnations, keys.dead_leases, keys.jobs,
        rq_key(keys, "job", job_id), rq_key(keys, "queue", queue), rq_key(keys, "wip", queue),
        intermediate_key(keys, queue),
    )  # fmt: skip
    args = (
        me.worker_id, me.incarnation, job_id, execution, started_at, repr(now), worker_name,
        TOKEN_FIELD, NONCE_FIELD,
    )  # fmt: skip
    return Op("begin_job", op_keys, args, parse, keys.pool, me.worker_id)


def _ttl(raw: Any) -> int | None:
    """A TTL field of RQ's record (None where absent or not a whole number)."""
    value = text(raw)
    return int(value) if value.lstrip("-").isdigit() else None


@dataclass(frozen=True)
class End:
    """How a job ended, in RQ's fields (see :func:`redispool.job_records.end_of`)."""

    kind: str  # "returned" or "failed"
    value: str  # RQ's return_value field, for "returned"
    exc: str  # RQ's exc_string field, for "failed"
    lost_exc: str  # the exc_string written if a return came after the lease ended
    verdict: int | None
    execution: str
    ended_at: str
    now: float
    result_ttl: int
    failure_ttl: int
    worker_name: str


def finish_job(
    keys: PoolKeys, worker_id: str, token: str, nonce: str, job_id: str, end: End
) -> Op[int]:
    """Write the end of job ``job_id`` (``finish_job``). Result: OK, or NOT_HELD /
    WORKER_DEAD when a return came after the lease ended (written as failed)."""

    def parse(reply: Any) -> int:
        code = code_of(reply)
        if code not in (OK, NOT_HELD, WORKER_DEAD):
            unexpected(code, pool=keys.pool, operation="finish_job", worker_id=worker_id)
        return code

    queue = keys.rq_queue(worker_id)
    op_keys = (
        keys.lease(worker_id), keys.dead_leases, rq_key(keys, "job", job_id),
        rq_key(keys, "wip", queue), rq_key(keys, "finished", queue),
        rq_key(keys, "failed", queue), keys.rq_result(job_id), keys.jobs_failed,
    )  # fmt: skip
    args = (
        worker_id, token, nonce, job_id, end.execution, end.kind, end.value, end.exc,
        end.lost_exc, "" if end.verdict is None else str(end.verdict), end.ended_at,
        repr(end.now), end.result_ttl, end.failure_ttl, end.worker_name, VERDICT_FIELD,
    )  # fmt: skip
    return Op("finish_job", op_keys, args, parse, keys.pool, worker_id)


def give_back(keys: PoolKeys, worker_id: str, job_id: str, execution: str) -> Op[bool]:
    """Put job ``job_id`` back at the head of ``worker_id``'s queue if its start
    (of ``execution``), whose reply was lost, never ran or said OK (``give_back``).
    Result: whether it was pushed."""
    queue = keys.rq_queue(worker_id)
    op_keys = (
        intermediate_key(keys, queue), rq_key(keys, "wip", queue), keys.jobs,
        rq_key(keys, "queue", queue),
    )  # fmt: skip
    return Op("give_back", op_keys, (job_id, execution, worker_id), _pushed, keys.pool, worker_id)


def withdraw_job(keys: PoolKeys, worker_id: str, job_id: str) -> Op[int]:
    """Take job ``job_id`` off ``worker_id``'s queue and intermediate queue in one
    step (``withdraw_job``): it then never starts, if it had not. Result: the
    copies taken out."""
    queue = keys.rq_queue(worker_id)
    op_keys = (rq_key(keys, "queue", queue), intermediate_key(keys, queue))
    return Op("withdraw_job", op_keys, (job_id,), _count, keys.pool, worker_id, "run")


def _pushed(reply: Any) -> bool:
    return _count(reply) == 1


def _count(reply: Any) -> int:
    if not isinstance(reply, int):
        raise TypeError("not an integer")  # Op.read names the pool and the operation
    return reply
