"""A worker process's jobs: take the next one, fence it, run it, write its end.

Each job costs the worker three calls to Redis: ``BLMOVE`` from its RQ queue
to RQ's intermediate queue, ``begin_job`` (the fence: token, nonce and
incarnation; RQ's "started" records; the id out of the intermediate queue, in
one script) and ``finish_job`` (RQ's result, status and
registries, written only after the lease is seen held once more, in the same
script: a return that came after the lease ended is recorded as failed with
the verdict ``NOT_HELD``, never as the holder's result). In between, the call
runs in the job process while its lease is watched (:mod:`redispool.job_process`).
A job is refused, and recorded as failed without running, if its lease is not
current, if it carries none, if its function is not registered, or if it has
callbacks, hooks or an instance; a job whose worker id another incarnation
took is given back at the head of the queue.
"""

from __future__ import annotations

import logging
import math
import time as mod_time
from typing import Any
from uuid import uuid4

from . import errors, job_records, liveness, observe
from .errors import PoolError, PoolUnavailable
from .job_process import JobProcess, Outcome
from .job_records import Call, call_of, end_of
from .pool import Pool
from .protocol import jobs as protocol_jobs
from .protocol.jobs import Begun
from .protocol.workers import Incarnation

__all__ = ["DEFAULT_JOB_TIMEOUT", "JobLoop"]

log = logging.getLogger("redispool.worker")

#: A job's timeout when it names none (RQ's default), seconds.
DEFAULT_JOB_TIMEOUT = 180.0
LEASE_LOST = "redispool.errors.LeaseLost"
NOT_REGISTERED = "redispool.jobs.FunctionNotRegistered"


class JobLoop:
    """The jobs of one worker process, one at a time."""

    def __init__(
        self, pool: Pool, watcher: Pool, me: Incarnation, jobs: JobProcess,
        functions: frozenset[str], rq_name: str,
    ) -> None:  # fmt: skip
        self.pool, self.watcher, self.me, self.jobs = pool, watcher, me, jobs
        self.functions, self.rq_name = functions, rq_name
        queue = pool.keys.rq_queue(me.worker_id)
        self.queue_key = protocol_jobs.rq_key(pool.keys, "queue", queue)
        self.taken_key = protocol_jobs.intermediate_key(pool.keys, queue)
        #: Whether a job id may wait in the intermediate queue: one this worker
        #: id's last process took and never started (it died), or one whose
        #: move's reply was lost with the connection. True until it is empty.
        self._left_over = True
        #: A give-back that could not be sent, (job id, execution): sent again
        #: at the next wait (a start that said OK left the job only in RQ's
        #: StartedJobRegistry, where no wait looks).
        self._give_back_due: tuple[str, str] | None = None

    def next_id(self, wait: float) -> str | None:
        """The next job id on this worker's queue, waiting up to ``wait`` seconds.

        The wait moves it to RQ's intermediate queue (as RQ's own workers do),
        which the job's start (``begin_job``) empties: a job taken but not
        started, whatever happened meanwhile, is taken up again from there.
        """
        if self._give_back_due is not None:
            self.give_back(*self._give_back_due)
        wire = self.pool.sender.wire
        where = f"dequeue ({self.queue_key} to {self.taken_key})"
        with self.pool.sender.errors(where, self.me.worker_id):
            if self._left_over:
                left = wire.call("LINDEX", self.taken_key, 0)
                if left is not None:
                    job_id = self._id_of(left)
                    if job_id is not None:
                        log.info("worker %s: job %s was taken and never started: taking it up",
                                 self.me.worker_id, job_id)  # fmt: skip
                    return job_id
                self._left_over = False
            try:
                block = f"{self.pool.sender.block_for(wait):.3f}"
                reply = wire.call("BLMOVE", self.queue_key, self.taken_key, "LEFT", "RIGHT", block)
            except BaseException:
                self._left_over = True  # the move may have happened, its reply lost
                raise
            return None if reply is None else self._id_of(reply)

    def _id_of(self, raw: Any) -> str | None:
        """The job id ``raw`` names; None for one that is not UTF-8 (never RQ's, and
        never a record's name), which leaves the intermediate queue as it came."""
        try:
            return raw.decode() if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            log.warning("worker %s: dropped a job id that is not UTF-8: %r",
                        self.me.worker_id, raw[:64])  # fmt: skip
            self.pool.sender.wire.call("LREM", self.taken_key, 1, raw)
            return None

    def give_back(self, job_id: str, execution: str) -> None:
        """Put a job whose start (of ``execution``) got no reply back at the head
        of the queue, if that start never ran or ran and said OK; not if it
        refused the job or gave it back itself (another process holds the
        worker id, and may already have started it: a second copy would run it
        twice), nor if its client withdrew it meanwhile.

        If the id is still in the intermediate queue, the start never ran. If
        not, the start ran: it said OK only if its own execution entry is in
        RQ's StartedJobRegistry, which only this process can have written; that
        entry and its count are taken back. One script (``give_back``) looks and
        pushes, so a client's withdrawal comes wholly before or after it. If
        Redis cannot be reached for this either, the next wait sends it again
        (a second give-back finds nothing to give back)."""
        self._left_over = True
        op = protocol_jobs.give_back(self.pool.keys, self.me.worker_id, job_id, execution)
        try:
            self.pool.sender.send(op)
        except PoolError as exc:
            self._give_back_due = (job_id, execution)
            log.warning("worker %s: job %s not given back (again at the next wait): %s",
                        self.me.worker_id, job_id, exc)  # fmt: skip
        else:
            self._give_back_due = None

    def drop(self, job_id: str) -> None:
        """Forget a job that cannot be handled (its start failed on junk)."""
        try:
            with self.pool.sender.errors("drop", self.me.worker_id):
                self.pool.sender.wire.call("LREM", self.taken_key, 1, job_id)
        except PoolError as exc:
            self._left_over = True  # still there: met again at the next wait
            log.warning("worker %s: job %s not dropped: %s", self.me.worker_id, job_id, exc)

    def handle(self, job_id: str) -> int:
        """Fence, then run job ``job_id`` (or refuse it). The fence's code:
        ``UNKNOWN_WORKER`` if this process no longer holds the worker id (the
        job was given back). A fence that cannot be sent gives the job back and
        raises :class:`PoolUnavailable`; once the fence has passed the job is
        never given back (a lost reply of its end must not run it again)."""
        execution = f"{job_id}:{uuid4().hex}"
        now = mod_time.time()
        fenced_at = mod_time.monotonic()  # the lease holds from here, if the code is OK
        op = protocol_jobs.begin_job(
            self.pool.keys, self.me, job_id, execution, job_records.timestamp(now), now,
            self.rq_name,
        )  # fmt: skip
        try:
            begun = self.pool.sender.send(op)
        except PoolUnavailable as exc:  # not started (or its reply lost): never called
            log.warning("worker %s: job %s not started: %s", self.me.worker_id, job_id, exc)
            self.give_back(job_id, execution)
            raise
        if begun.code == errors.NO_JOB:
            log.warning("worker %s: job %s was withdrawn or has no record: dropped",
                        self.me.worker_id, job_id)  # fmt: skip
        elif begun.code in (errors.NOT_HELD, errors.WORKER_DEAD):
            self._refuse_lease(job_id, begun)
        elif begun.code == errors.OK:
            self._run(job_id, begun, execution, fenced_at + begun.left)
        return begun.code

    def _refuse_lease(self, job_id: str, begun: Begun) -> None:
        token = begun.token
        if not token.isdigit():
            message = "job refused: it carries no lease token"
        elif not begun.nonce:
            message = "job refused: it carries no lease nonce"
        else:
            observe.refused(self.pool, self.me.worker_id, token, begun.code)
            why = "its worker died" if begun.code == errors.WORKER_DEAD else "it has ended"
            message = f"job refused: the lease of token {token} is not current ({why})"
        self._refuse(job_id, begun, "", LEASE_LOST, message, begun.code)

    def _refuse(
        self, job_id: str, begun: Begun, execution: str, remote_type: str, message: str,
        verdict: int | None,
    ) -> None:  # fmt: skip
        log.warning("worker %s refused job %s: %s: %s", self.me.worker_id, job_id,
                    remote_type, message)  # fmt: skip
        self._finish(job_id, begun, "failed", execution, exc_string=f"{remote_type}: {message}",
                     verdict=verdict)  # fmt: skip

    def _refusal(self, call: Call, begun: Begun) -> str | None:
        """Why a fenced job must not run, read without importing anything."""
        if call.func_name not in self.functions:
            return f"{call.func_name!r} is not registered"
        if begun.callbacks or begun.webhooks or call.instance is not None:
            return "jobs with callbacks or hooks are refused"
        return None

    def _run(self, job_id: str, begun: Begun, execution: str, held_until: float) -> None:
        try:
            call = call_of(begun.data)
        except ValueError as exc:
            self._refuse(job_id, begun, execution, NOT_REGISTERED, str(exc), None)
            return
        refusal = self._refusal(call, begun)
        if refusal is not None:
            self._refuse(job_id, begun, execution, NOT_REGISTERED, refusal, None)
            return
        wid, token, nonce = self.me.worker_id, begun.token, begun.nonce
        timeout = _timeout_of(begun.timeout)
        message = {
            "func": call.func_name, "args": call.args, "kwargs": call.kwargs,
            "pool": self.pool.name, "worker_id": wid, "token": int(token),
        }  # fmt: skip

        def held() -> float:
            return liveness.lease_left(self.watcher, wid, token, nonce)

        log.info("worker %s job %s token %s started", wid, job_id, token)
        try:
            outcome = self.jobs.run(message, timeout, held, held_until)
            self._ended(job_id, begun, execution, outcome, timeout)
        finally:
            log.info("worker %s job %s token %s ended", wid, job_id, token)

    def _ended(
        self, job_id: str, begun: Begun, execution: str, outcome: Outcome, timeout: float | None
    ) -> None:
        wid, token = self.me.worker_id, begun.token
        if outcome.kind == "returned":
            lost = f"{LEASE_LOST}: the lease of token {token} ended before its job's result"
            code = self._finish(job_id, begun, "returned", execution, value=outcome.value,
                                lost_message=lost)  # fmt: skip
            if code != errors.OK:
                observe.stopped(self.pool, wid, token, code, False)
                log.warning("worker %s job %s token %s: its lease ended; job returned "
                            "after it", wid, job_id, token)  # fmt: skip
            return
        if outcome.kind == "raised":
            self._finish(job_id, begun, "failed", execution, exc_string=outcome.exc_string)
            return
        if outcome.kind == "timeout":
            log.warning("worker %s job %s ran past its timeout (%s s): killed", wid, job_id,
                        timeout)  # fmt: skip
            text_ = f"rq.timeouts.JobTimeoutException: job {job_id} ran past its timeout of " \
                    f"{timeout} s: killed"  # fmt: skip
            self._finish(job_id, begun, "failed", execution, exc_string=text_,
                         verdict=errors.JOB_TIMEOUT)  # fmt: skip
            return
        _, state = liveness.bury(self.pool, wid, int(token))
        verdict = errors.WORKER_DEAD if state == errors.WORKER_DEAD else errors.NOT_HELD
        if not outcome.started:
            log.warning("worker %s job %s token %s: its lease ended before the job could "
                        "start; not started", wid, job_id, token)  # fmt: skip
        else:
            observe.stopped(self.pool, wid, token, verdict, outcome.killed)
            log.warning(
                "worker %s job %s token %s: its lease ended; job %s %.3f s later",
                wid, job_id, token, "killed" if outcome.killed else "returned", outcome.lost_after,
            )  # fmt: skip
        text_ = (f"{LEASE_LOST}: pool {self.pool.name!r}: the lease of token {token} ended "
                 f"{'while its job ran' if outcome.started else 'before its job started'}")
        self._finish(job_id, begun, "failed", execution, exc_string=text_, verdict=verdict)

    def _finish(
        self, job_id: str, begun: Begun, kind: str, execution: str, *, value: Any = None,
        exc_string: str = "", lost_message: str = "", verdict: int | None = None,
    ) -> int:  # fmt: skip
        ttl = _ttls_of(begun)
        end = end_of(
            kind, value=value, exc_string=exc_string, lost_message=lost_message,
            verdict=verdict, execution=execution, now=mod_time.time(), result_ttl=ttl[0],
            failure_ttl=ttl[1], worker_name=self.rq_name,
        )  # fmt: skip
        op = protocol_jobs.finish_job(
            self.pool.keys, self.me.worker_id, begun.token, begun.nonce, job_id, end
        )
        return self.pool.sender.send(op)


def _timeout_of(raw: str) -> float | None:
    """The job's timeout in seconds (None: none, RQ's -1); RQ's default for one
    that is no positive, finite number (``nan`` would never time out)."""
    try:
        value = float(raw) if raw else DEFAULT_JOB_TIMEOUT
    except ValueError:
        return DEFAULT_JOB_TIMEOUT
    if value == -1:
        return None
    return value if 0 < value < math.inf else DEFAULT_JOB_TIMEOUT


def _ttls_of(begun: Begun) -> tuple[int, int]:
    """The result and failure TTLs a job's record names (RQ's defaults otherwise)."""
    result_ttl = job_records.RQ_RESULT_TTL if begun.result_ttl is None else begun.result_ttl
    failure_ttl = job_records.RQ_FAILURE_TTL if begun.failure_ttl is None else begun.failure_ttl
    return result_ttl, failure_ttl
