"""Exceptions, and the one table that turns a script's result code into one.

Every Lua script answers with a status code as the first element of its reply.
``raise_for`` is the only place that maps a code to an exception; the
exception names the pool, the worker and the operation that failed.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "CODES",
    "OK",
    "CheckoutTimeout",
    "Code",
    "JobFailed",
    "JobTimeout",
    "LeaseLost",
    "OutOfService",
    "PoolAccessDenied",
    "PoolCorrupted",
    "PoolError",
    "PoolFull",
    "PoolUnavailable",
    "StaleToken",
    "WorkerIdTaken",
    "WorkerLost",
    "raise_for",
]


class PoolError(Exception):
    """Base class of every redispool error."""

    def __init__(
        self,
        message: str,
        *,
        pool: str | None = None,
        worker_id: str | None = None,
        operation: str | None = None,
    ) -> None:
        super().__init__(message)
        self.pool = pool
        self.worker_id = worker_id
        self.operation = operation


class PoolFull(PoolError):
    """No worker is idle (poolboy's ``:full``)."""


class CheckoutTimeout(PoolFull, TimeoutError):
    """A blocking checkout waited its whole timeout and got no worker."""


class LeaseLost(PoolError):
    """The lease has ended (expired, reclaimed, or the worker went to another holder)."""


class WorkerLost(LeaseLost):
    """The lease ended because its worker process died."""


class StaleToken(LeaseLost):
    """A fenced store refused a write: a newer lease's token has written there
    (see :mod:`redispool.fence`)."""


class WorkerIdTaken(PoolError):
    """A worker process tried to register an id that a live worker (or a worker
    added by hand) holds."""


class JobFailed(PoolError):
    """A job sent with ``lease.run`` raised on the worker, or was refused there.

    ``remote_type`` is the qualified name of the remote exception type,
    ``remote_message`` its message.
    """

    def __init__(
        self, message: str, *, remote_type: str = "", remote_message: str = "", **where: str | None
    ) -> None:
        super().__init__(message, **where)
        self.remote_type = remote_type
        self.remote_message = remote_message


class JobTimeout(JobFailed, TimeoutError):
    """A job did not finish in its timeout (on the worker, or while the client waited)."""


class PoolUnavailable(PoolError):
    """Redis could not be reached or did not answer in time."""


class PoolAccessDenied(PoolError):
    """Redis refused the credentials, or the user lacks a command or key the pool needs."""


class PoolCorrupted(PoolError):
    """A key of the pool holds something redispool did not write."""


class OutOfService(PoolError):
    """The worker id was taken out of service (removed, drained): not registered again."""


class Code(IntEnum):
    """Result codes of the Lua scripts (first element of every reply).

    This enum is the one table: the scripts' Lua constants are generated from
    it (:func:`redispool.scripts.code_constants`), never written by hand.
    """

    OK = 0
    FULL = 1
    QUEUED = 2
    NOT_HELD = 3
    UNKNOWN_WORKER = 4
    WORKER_DEAD = 5
    ID_TAKEN = 6
    #: A fenced store has seen a newer token (fence_write.lua).
    STALE_TOKEN = 7
    #: A job's verdict (never a script's): it ran past its own timeout and was ended.
    JOB_TIMEOUT = 8
    #: A job id whose RQ record is gone (expired, deleted): begin_job.lua.
    NO_JOB = 9


OK, FULL, QUEUED, NOT_HELD = Code.OK, Code.FULL, Code.QUEUED, Code.NOT_HELD
UNKNOWN_WORKER, WORKER_DEAD, ID_TAKEN = Code.UNKNOWN_WORKER, Code.WORKER_DEAD, Code.ID_TAKEN
STALE_TOKEN, JOB_TIMEOUT, NO_JOB = Code.STALE_TOKEN, Code.JOB_TIMEOUT, Code.NO_JOB

CODES: dict[int, tuple[type[PoolError] | None, str]] = {
    OK: (None, "ok"),
    FULL: (PoolFull, "no worker is idle"),
    QUEUED: (None, "queued as a waiter"),
    NOT_HELD: (LeaseLost, "the lease has ended"),
    UNKNOWN_WORKER: (PoolError, "no such worker in the pool"),
    WORKER_DEAD: (WorkerLost, "the worker process died"),
    ID_TAKEN: (WorkerIdTaken, "a live worker holds this id"),
    STALE_TOKEN: (StaleToken, "a newer token has written here"),
    JOB_TIMEOUT: (JobTimeout, "the job ran past its timeout and was ended"),
    NO_JOB: (None, "no such job record"),
}


def raise_for(code: int, *, pool: str, operation: str, worker_id: str | None = None) -> None:
    """Raise the exception for a script result ``code``; return for a success code."""
    try:
        exc_type, text = CODES[Code(code)]
    except ValueError:
        raise PoolCorrupted(
            f"pool {pool!r}: {operation} got unknown result code {code!r}",
            pool=pool,
            operation=operation,
            worker_id=worker_id,
        ) from None
    if exc_type is None:
        return
    about = f" (worker {worker_id!r})" if worker_id else ""
    raise exc_type(
        f"pool {pool!r}: {operation}{about}: {text}",
        pool=pool,
        worker_id=worker_id,
        operation=operation,
    )
