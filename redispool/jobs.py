"""Jobs on a leased worker: ``lease.run(func, *args)`` through RQ, JSON only.

A job is an RQ job on the leased worker's own queue, serialized with RQ's
JSONSerializer and carrying the lease's fencing token. The worker runs it
only if the token is still its current lease and the function is registered
(:data:`DEFAULT_FUNCTIONS`, more by configuration): nothing else is imported,
and nothing is unpickled, so whoever can write to Redis cannot run code on
the workers.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time as mod_time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from . import errors, job_records, protocol
from .errors import JobFailed, JobTimeout, LeaseLost, PoolCorrupted, PoolError, WorkerLost
from .lease import Lease
from .protocol import jobs as protocol_jobs
from .protocol.op import Op

__all__ = [
    "DEFAULT_FUNCTIONS",
    "NONCE_META",
    "TOKEN_META",
    "VERDICT_META",
    "FunctionNotRegistered",
    "function_name",
    "run",
]

log = logging.getLogger("redispool.jobs")

#: Functions a worker runs unless configured otherwise.
DEFAULT_FUNCTIONS = frozenset({"redispool.doubler.double"})
#: Key of ``job.meta`` that carries the lease's fencing token.
TOKEN_META = protocol_jobs.TOKEN_FIELD
#: Key of ``job.meta`` that carries the lease's nonce (the fence compares both).
NONCE_META = protocol_jobs.NONCE_FIELD
#: Key of ``job.meta`` where the worker puts its verdict on a job it refused or
#: stopped: a result code of :mod:`redispool.errors` (``NOT_HELD``,
#: ``WORKER_DEAD``, ``JOB_TIMEOUT``). A job's own exception never sets it.
VERDICT_META = job_records.VERDICT_FIELD
#: How often a client waiting for a result checks that its lease still holds.
CHECK_INTERVAL = 0.25
#: The first wait for a result, ms: it goes out with the enqueue, and bounds how
#: long a refused enqueue (the lease had ended) keeps the client.
FIRST_WAIT_MS = 50
#: How long results and failures stay in Redis, seconds.
RESULT_TTL = 300
#: Extra seconds the client waits beyond the job's timeout for its result.
RESULT_GRACE = 2.0


class FunctionNotRegistered(Exception):
    """Raised on a worker for a job whose function is not registered."""


def function_name(func: Callable[..., Any] | str) -> str:
    """The dotted name a job carries for ``func`` (a function or its name)."""
    if isinstance(func, str):
        name = func
    else:
        module = getattr(func, "__module__", None)
        qualname = getattr(func, "__qualname__", None)
        if not module or not qualname or "<" in qualname:
            raise ValueError(
                f"cannot send {func!r}: give a module-level function or its dotted name"
            )
        name = f"{module}.{qualname}"
    parts = name.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise ValueError(
            f"function name must be a dotted path like 'pkg.module.func', got {name!r}"
        )
    return name


def parse_functions(names: Iterable[str]) -> frozenset[str]:
    """Validate a configured list of dotted function names."""
    return frozenset(function_name(n.strip()) for n in names if n.strip())


def run(lease: Lease, func: Callable[..., Any] | str, *args: Any, timeout: float = 30.0) -> Any:
    """Run ``func(*args)`` on ``lease``'s worker and return its result.

    Arguments and result are JSON. Raises :class:`JobFailed` if the job
    raised or was refused (``remote_type``/``remote_message`` say why),
    :class:`JobTimeout` if it did not finish in ``timeout`` seconds,
    :class:`WorkerLost` if the worker process died, :class:`LeaseLost` if the
    lease had ended (the job then never runs) or ended while the job ran (it
    was told, then stopped; its result is never returned),
    :class:`PoolUnavailable` if Redis could not be reached (the job may or
    may not have run). Whatever the job itself raises is a JobFailed.

    The job is an RQ job (``Job.fetch`` and RQ's tools read it). It is written
    and queued in one script that first checks the lease (a job of an ended
    lease is never written), and the wait for its result goes out in the same
    round trip.
    """
    return run_until(lease, func, args, timeout=timeout, given_up=None)


class GivenUp(Exception):
    """The caller of :func:`run_until` gave up waiting (its job was withdrawn)."""


def run_until(
    lease: Lease, func: Callable[..., Any] | str, args: tuple[Any, ...], *, timeout: float,
    given_up: threading.Event | None,
) -> Any:  # fmt: skip
    """:func:`run`, which also stops waiting, and withdraws the job (which then
    never starts, if it has not), raising :class:`GivenUp`, once ``given_up``
    is set: checked between waits, every :data:`CHECK_INTERVAL` seconds."""
    name = function_name(func)
    if (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float))
        or not 0 < timeout < math.inf
    ):  # fmt: skip
        raise ValueError(f"timeout must be a positive, finite number of seconds, got {timeout!r}")
    try:
        json.dumps(args, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"job arguments must be JSON: {exc}") from None
    _check_active(lease, "run")
    if given_up is not None and given_up.is_set():  # nothing written yet: nothing to withdraw
        raise GivenUp(f"pool {lease.pool.name!r}: gave up before job {name} was sent")
    pool = lease.pool
    seconds = max(1, math.ceil(timeout))
    meta = {TOKEN_META: str(lease.token), NONCE_META: lease.nonce}
    job_id, fields = job_records.job_fields(
        name, args, pool.keys.rq_queue(lease.worker_id), meta, timeout=seconds,
        result_ttl=RESULT_TTL, failure_ttl=RESULT_TTL, ttl=seconds, now=mod_time.time(),
    )  # fmt: skip
    op = protocol_jobs.enqueue_job(
        pool.keys, lease.worker_id, lease.token, lease.nonce, job_id, seconds, fields
    )
    deadline = mod_time.monotonic() + timeout + RESULT_GRACE
    try:
        entry = _enqueue_and_wait(lease, op, job_id)
        if entry is None:
            entry = _wait(lease, job_id, deadline, given_up)
    except BaseException:
        _withdraw(lease, job_id)  # if queued and not started yet: it never runs
        raise
    return _outcome(lease, name, entry)


def _enqueue_and_wait(lease: Lease, op: Op[int], job_id: str) -> dict[bytes, bytes] | None:
    """Send ``op`` (enqueue_job) and, in the same round trip, a first short wait
    for the job's result; the result entry if it came, else None (wait on)."""
    pool = lease.pool
    key = pool.keys.rq_result(job_id)
    if pool.sender.on_cluster:  # the guard key of a cluster call goes through the sender
        code = pool.sender.send(op)
        entry = None
    else:
        wait = ("XREAD", "BLOCK", _block_ms(lease, FIRST_WAIT_MS / 1000), "STREAMS", key, "0-0")
        with pool.sender.errors("run", lease.worker_id):
            try:
                reply, waited = pool.sender.wire.call_reads(op.command(), wait)
            except redis.ResponseError as exc:  # the library missing: the sender loads it
                if "function not found" not in str(exc).lower():
                    raise
                reply, waited = None, None
        code = pool.sender.send(op) if reply is None else op.read(reply)
        entry = _entry_of(waited)
    if code != errors.OK:
        _ended(lease, code)
    return entry


def _block_ms(lease: Lease, seconds: float) -> int:
    """Milliseconds an XREAD may block for ``seconds`` (:meth:`Sender.block_for`)."""
    return max(1, round(lease.pool.sender.block_for(seconds) * 1000))


def _withdraw(lease: Lease, job_id: str) -> None:
    """Take a job that has not started off its worker's queue and out of the
    intermediate queue its worker's wait moves it to, in one script
    (``withdraw_job``): it then never runs (``begin_job`` starts only a job
    still there). Best effort: a Redis out of reach leaves it queued."""
    op = protocol_jobs.withdraw_job(lease.pool.keys, lease.worker_id, job_id)
    try:
        lease.pool.sender.send(op)
    except (PoolError, redis.RedisError) as exc:  # the error that brought us here goes on
        log.warning("pool %s: job %s not withdrawn: %s", lease.pool.name, job_id, exc)


def _check_active(lease: Lease, operation: str) -> None:
    if lease.active:
        return
    died = lease.worker_died
    kind = WorkerLost if died else LeaseLost
    raise kind(
        f"pool {lease.pool.name!r}: lease of worker {lease.worker_id!r} (token {lease.token}) "
        f"has ended{' (worker dead)' if died else ''}",
        pool=lease.pool.name,
        worker_id=lease.worker_id,
        operation=operation,
    )


def _wait(
    lease: Lease, job_id: str, deadline: float, given_up: threading.Event | None = None
) -> dict[bytes, bytes]:
    """The result entry of ``job_id``; checks the lease (and ``given_up``)
    between short waits."""
    key = lease.pool.keys.rq_result(job_id)
    sender = lease.pool.sender
    while True:
        if given_up is not None and given_up.is_set():
            raise GivenUp(f"pool {lease.pool.name!r}: gave up waiting for job {job_id}")
        state = _bury_and_ask(lease)
        if state != errors.OK:
            _ended(lease, state)
        left = deadline - mod_time.monotonic()
        if left <= 0:
            raise JobTimeout(
                f"pool {lease.pool.name!r}: no result from worker {lease.worker_id!r} in time",
                pool=lease.pool.name,
                worker_id=lease.worker_id,
                operation="run",
            )
        block = _block_ms(lease, min(left, CHECK_INTERVAL))
        with sender.errors("run", lease.worker_id):
            (reply,) = sender.wire.call_reads(("XREAD", "BLOCK", block, "STREAMS", key, "0-0"))
        entry = _entry_of(reply)
        if entry is not None:
            return entry


def _entry_of(reply: Any) -> dict[bytes, bytes] | None:
    """The last entry's fields in a raw XREAD reply of one stream (RESP2 or RESP3)."""
    if not reply:
        return None
    streams = list(reply.values()) if isinstance(reply, dict) else [s[1] for s in reply]
    entries = streams[0]
    if not entries:
        return None
    flat = entries[-1][1]
    if isinstance(flat, dict):
        return flat
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _bury_and_ask(lease: Lease) -> int:
    """Bury dead workers (the one of this lease too, if its heartbeat lapsed);
    how this lease stands (``OK``, ``WORKER_DEAD`` or ``NOT_HELD``)."""
    op = protocol.bury(lease.pool.keys, lease.worker_id, lease.token, lease.nonce)
    while True:
        outcome = lease.pool.sender.send(op)
        if not outcome.more:
            return outcome.state


def _ended(lease: Lease, state: int) -> None:
    lease.end(worker_died=state == errors.WORKER_DEAD)
    _check_active(lease, "run")


def _outcome(lease: Lease, name: str, entry: dict[bytes, bytes]) -> Any:
    try:
        result = job_records.read_result(entry)
    except (KeyError, ValueError, TypeError) as exc:
        raise PoolCorrupted(
            f"pool {lease.pool.name!r}: a job result redispool does not write: {exc}",
            pool=lease.pool.name, worker_id=lease.worker_id, operation="run",
        ) from None  # fmt: skip
    if result.ok:
        return result.value
    remote_type, remote_message = _remote_error(result.exc_string)
    where = {"pool": lease.pool.name, "worker_id": lease.worker_id, "operation": "run"}
    verdict = result.verdict
    if verdict in (errors.NOT_HELD, errors.WORKER_DEAD):
        # the worker's word from when it looked; the lease ends on Redis's word now
        state = _bury_and_ask(lease)
        if state != errors.OK:
            _ended(lease, state)
    kind = JobTimeout if verdict == errors.JOB_TIMEOUT else JobFailed
    raise kind(
        f"pool {lease.pool.name!r}: job {name} on worker {lease.worker_id!r} failed: "
        f"{remote_type}: {remote_message}",
        remote_type=remote_type,
        remote_message=remote_message,
        **where,
    )


def _remote_error(exc_string: str) -> tuple[str, str]:
    """``(type, message)`` from the last line of a formatted traceback."""
    lines = [line for line in exc_string.strip().splitlines() if line and not line.startswith(" ")]
    last = lines[-1] if lines else exc_string
    remote_type, sep, message = last.partition(": ")
    if not sep and " " in remote_type:
        return "", last
    return remote_type, message
