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
import math
import time as mod_time
from collections.abc import Callable, Iterable
from typing import Any

from . import errors, protocol, rqkeys
from .errors import JobFailed, JobTimeout, LeaseLost, WorkerLost
from .lease import Lease
from .wire import text

__all__ = [
    "DEFAULT_FUNCTIONS",
    "NONCE_META",
    "TOKEN_META",
    "VERDICT_META",
    "FunctionNotRegistered",
    "function_name",
    "run",
]

#: Functions a worker runs unless configured otherwise.
DEFAULT_FUNCTIONS = frozenset({"redispool.doubler.double"})
#: Key of ``job.meta`` that carries the lease's fencing token.
TOKEN_META = "redispool_token"
#: Key of ``job.meta`` that carries the lease's nonce (the fence compares both).
NONCE_META = "redispool_nonce"
#: Key of ``job.meta`` where the worker puts its verdict on a job it refused or
#: stopped: a result code of :mod:`redispool.errors` (``NOT_HELD``,
#: ``WORKER_DEAD``, ``JOB_TIMEOUT``). A job's own exception never sets it.
VERDICT_META = "redispool_verdict"
#: How often a client waiting for a result checks that its lease still holds.
CHECK_INTERVAL = 0.25
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
    """
    name = function_name(func)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    try:
        json.dumps(args, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"job arguments must be JSON: {exc}") from None
    _check_active(lease, "run")
    pool = lease.pool
    queue = rqkeys.classes(pool.name).queue_for(lease.worker_id, pool.client)
    seconds = max(1, math.ceil(timeout))
    with pool.sender.errors("run", lease.worker_id):
        job = queue.enqueue_call(
            name,
            args=list(args),
            timeout=seconds,
            ttl=seconds,
            result_ttl=RESULT_TTL,
            failure_ttl=RESULT_TTL,
            meta={TOKEN_META: str(lease.token), NONCE_META: lease.nonce},
        )
        try:
            entry = _wait(lease, job.id, mod_time.monotonic() + timeout + RESULT_GRACE)
        except BaseException:
            queue.remove(job.id)  # not started yet: never runs
            raise
    return _outcome(lease, name, job.id, entry)


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


def _wait(lease: Lease, job_id: str, deadline: float) -> tuple[str, dict[bytes, bytes]]:
    """The result entry of ``job_id``; checks the lease between short waits."""
    key = lease.pool.keys.rq_result(job_id)
    client = lease.pool.client
    while True:
        left = deadline - mod_time.monotonic()
        if left <= 0:
            raise JobTimeout(
                f"pool {lease.pool.name!r}: no result from worker {lease.worker_id!r} in time",
                pool=lease.pool.name,
                worker_id=lease.worker_id,
                operation="run",
            )
        block = max(1, round(min(left, CHECK_INTERVAL) * 1000))
        reply: Any = client.xread({key: "0-0"}, block=block)
        if reply:
            streams = reply.items() if isinstance(reply, dict) else reply  # RESP3 | RESP2
            for _stream, entries in streams:
                entry_id, fields = entries[-1]
                return text(entry_id), dict(fields)
        state = _bury_and_ask(lease)
        if state != errors.OK:
            _ended(lease, state)


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


def _outcome(lease: Lease, name: str, job_id: str, entry: tuple[str, dict[bytes, bytes]]) -> Any:
    from rq.results import Result
    from rq.serializers import JSONSerializer

    result = Result.restore(
        "", entry[0], entry[1], connection=lease.pool.client, serializer=JSONSerializer
    )
    if result.type == Result.Type.SUCCESSFUL:
        return result.return_value
    remote_type, remote_message = _remote_error(result.exc_string or "")
    where = {"pool": lease.pool.name, "worker_id": lease.worker_id, "operation": "run"}
    verdict = _verdict(lease, job_id)
    if verdict in (errors.NOT_HELD, errors.WORKER_DEAD):
        _ended(lease, verdict)
    kind = JobTimeout if verdict == errors.JOB_TIMEOUT else JobFailed
    raise kind(
        f"pool {lease.pool.name!r}: job {name} on worker {lease.worker_id!r} failed: "
        f"{remote_type}: {remote_message}",
        remote_type=remote_type,
        remote_message=remote_message,
        **where,
    )


def _verdict(lease: Lease, job_id: str) -> int | None:
    """The worker's verdict on a failed job (VERDICT_META), None if it has none."""
    job_class = rqkeys.classes(lease.pool.name).job
    raw = lease.pool.client.hget(job_class.key_for(job_id), "meta")
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        return None
    code = meta.get(VERDICT_META) if isinstance(meta, dict) else None
    return code if isinstance(code, int) and code in errors.CODES else None


def _remote_error(exc_string: str) -> tuple[str, str]:
    """``(type, message)`` from the last line of a formatted traceback."""
    lines = [line for line in exc_string.strip().splitlines() if line and not line.startswith(" ")]
    last = lines[-1] if lines else exc_string
    remote_type, sep, message = last.partition(": ")
    if not sep and " " in remote_type:
        return "", last
    return remote_type, message
