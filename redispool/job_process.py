"""The job process: a worker runs its jobs in one long-lived child, which it can kill.

A worker process keeps RQ's bookkeeping itself and sends each job's function
call to its job process over a pipe (JSON lines); the child imports only the
registered functions and runs one call at a time, so no job pays for a fork.
While a job runs, the worker watches the job's lease (:meth:`JobProcess.run`
polls it every :data:`WATCH_INTERVAL`). When the lease ends the child is told
at once (the job's ``current_lease().lost`` is set); a job that has not
returned within the stop grace, or that runs past its own timeout, is ended
for good: the child is killed (SIGKILL, by pid) and a new one started.

Messages, one JSON object a line, on three pipes:
  calls    worker -> child  {"op": "run", "func", "args", "kwargs", "pool", "worker_id",
                            "token"}, read by the child's main thread, which runs it
  notices  worker -> child  {"op": "lost", "token"}, read by a thread of the child that
                            sets that job's ``lost`` while the job runs
  answers  child -> worker  {"op": "ready"} once, then one {"op": "returned", "value"}
                            or {"op": "raised", "exc_string"} per call
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time as mod_time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from . import job_lease
from .errors import PoolUnavailable

__all__ = ["JobProcess", "JobProcessError", "Outcome", "main"]

log = logging.getLogger("redispool.worker")

#: Seconds between two looks at a running job's lease.
WATCH_INTERVAL = 0.05
#: Seconds a new job process may take to import the registered functions and say so.
READY_TIMEOUT = 30.0
FUNCTIONS_ENV = "REDISPOOL_JOB_FUNCTIONS"
LOG_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"


class JobProcessError(Exception):
    """The job process could not be started, or broke the protocol."""


@dataclass(frozen=True)
class Outcome:
    """How one call ended.

    ``kind``: ``returned`` (``value``), ``raised`` (``exc_string``, the job's
    traceback), ``lost`` (the lease ended first; ``killed`` if the job had
    to be killed) or ``timeout`` (killed at its timeout).
    ``lost_after``: seconds from the worker learning of the lease's end to
    the job being over (returned or killed), for ``lost``. ``started``: False
    for a call never sent, its lease having ended before it could start.
    """

    kind: str
    value: Any = None
    exc_string: str = ""
    killed: bool = False
    lost_after: float = 0.0
    started: bool = True


class JobProcess:
    """The worker side of one job process at a time (replaced when killed)."""

    def __init__(self, functions: Iterable[str], *, stop_grace: float) -> None:
        self.functions = tuple(sorted(functions))
        self.stop_grace = stop_grace
        self._proc: subprocess.Popen[bytes] | None = None
        self._to: BinaryIO | None = None
        self._notices: BinaryIO | None = None
        self._from_fd = -1
        self._buffer = b""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start a job process (it announces itself ready before its first call)."""
        down_r, down_w = os.pipe()
        note_r, note_w = os.pipe()
        up_r, up_w = os.pipe()
        env = dict(os.environ, **{FUNCTIONS_ENV: json.dumps(self.functions)})
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "redispool.job_process", str(down_r), str(note_r),
             str(up_w), str(os.getpid())],
            env=env, stdin=subprocess.DEVNULL, pass_fds=(down_r, note_r, up_w),
        )  # fmt: skip
        for fd in (down_r, note_r, up_w):
            os.close(fd)
        self._to = os.fdopen(down_w, "wb", buffering=0)
        self._notices = os.fdopen(note_w, "wb", buffering=0)
        log.info("job process %d started", self._proc.pid)
        self._from_fd, self._buffer = up_r, b""
        self._ready = False

    def ensure_ready(self) -> None:
        """Wait until the job process has imported its functions; raise if it cannot."""
        if self._proc is None:
            self.start()
        if not self._ready:
            message = self._receive(READY_TIMEOUT)
            if message is None or message.get("op") != "ready":
                self.kill()
                raise JobProcessError(f"the job process did not start: {message!r}")
            self._ready = True

    def run(
        self,
        call: dict[str, Any],
        timeout: float | None,
        held: Callable[[], float],
        held_until: float,
    ) -> Outcome:
        """Run ``call`` in the job process while ``held()`` says its lease holds.

        ``held()`` answers how many seconds the lease surely still holds (0
        once it has ended; :class:`~redispool.PoolUnavailable` when Redis
        cannot say); the caller knows it surely holds until ``held_until``
        (monotonic). If that moment has passed before the call is sent (the
        worker was held up between its fence and here), ``held`` is asked
        first, and a lease that has ended, or that Redis cannot vouch for,
        gives ``lost`` with ``started`` False: the call is never sent.
        ``held`` is asked every WATCH_INTERVAL while the job runs. A
        ``returned`` outcome says the lease was seen held at the last look
        before the answer came, not after it: the caller confirms the lease
        in the same step as it records the result (``finish_job.lua``).
        While Redis cannot be asked, the lease counts as held only until the
        TTL it had at the last look runs out (an early checkin meanwhile is
        not seen): a worker cut off from Redis stops its job as if the lease
        had ended then. If this raises while the job runs, the job process is
        killed: a call left running is never answered later.
        """
        self.ensure_ready()
        seen = _Seen(held_until)
        if mod_time.monotonic() >= held_until and not seen.look(held, mod_time.monotonic()):
            return Outcome("lost", started=False)
        self._send({"op": "run", **call})
        try:
            return self._watch(call, timeout, held, seen)
        except BaseException:
            if self._proc is not None and self._ready:
                self.kill()
            raise

    def _watch(
        self,
        call: dict[str, Any],
        timeout: float | None,
        held: Callable[[], float],
        seen: _Seen,
    ) -> Outcome:
        deadline = None if timeout is None else mod_time.monotonic() + timeout
        lost_at: float | None = None
        while True:
            now = mod_time.monotonic()
            until = now + WATCH_INTERVAL if lost_at is None else lost_at + self.stop_grace
            message = self._receive(max(0.0, min(until, deadline or until) - now))
            now = mod_time.monotonic()
            if message is not None:
                return _answered(message, now, lost_at)
            if deadline is not None and now >= deadline:
                self.replace()
                return Outcome("timeout", killed=True)
            if lost_at is None:
                if not seen.look(held, now):
                    lost_at = now
                    self._send({"op": "lost", "token": call["token"]}, self._notices)
            elif now >= lost_at + self.stop_grace:
                self.replace()
                return Outcome("lost", killed=True, lost_after=mod_time.monotonic() - lost_at)

    def replace(self) -> None:
        """Kill the job process (SIGKILL) and start a new one."""
        self.kill()
        self.start()

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            log.info("job process %d ended", proc.pid)
        self._close_pipes()

    def close(self, timeout: float = 2.0) -> None:
        """Ask the job process to exit (end of its input); kill it if it lingers."""
        proc = self._proc
        self._close_pipes()
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc = None

    def _close_pipes(self) -> None:
        for pipe in (self._to, self._notices):
            if pipe is not None:
                pipe.close()
        self._to = self._notices = None
        if self._from_fd >= 0:
            os.close(self._from_fd)
            self._from_fd = -1
        self._ready = False

    def _send(self, message: dict[str, Any], pipe: BinaryIO | None = None) -> None:
        pipe = pipe or self._to
        if pipe is None:
            raise JobProcessError("no job process")
        try:
            pipe.write(json.dumps(message).encode() + b"\n")
        except OSError as exc:  # the child died: the next run starts a new one
            self.kill()
            raise JobProcessError(f"the job process is gone: {exc}") from exc

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        """One message, or None if none came within ``timeout`` seconds."""
        end = mod_time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = end - mod_time.monotonic()
            if left < 0 or self._from_fd < 0:
                return None
            readable, _, _ = select.select([self._from_fd], [], [], left)
            if not readable:
                return None
            chunk = os.read(self._from_fd, 65536)
            if not chunk:  # the child died mid-job
                self.kill()
                raise JobProcessError("the job process died")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message


def _answered(message: dict[str, Any], now: float, lost_at: float | None) -> Outcome:
    """The outcome of a call the job process answered at ``now``: ``lost`` if the
    lease was seen ended before (the caller confirms it held for any other)."""
    if lost_at is not None:
        return Outcome("lost", lost_after=now - lost_at)
    return _outcome_of(message)


@dataclass
class _Seen:
    """Until when (monotonic) a running job's lease surely holds, as last seen."""

    until: float

    def look(self, held: Callable[[], float], now: float) -> bool:
        """Look at the lease again: True while it holds. When Redis cannot
        say, it holds until the TTL of the last look runs out."""
        try:
            left = held()
        except PoolUnavailable as exc:
            log.warning("could not look at a running job's lease: %s", exc)
            return now < self.until
        if left <= 0:
            return False
        self.until = now + left
        return True


def _outcome_of(message: dict[str, Any]) -> Outcome:
    if message.get("op") == "returned":
        return Outcome("returned", value=message.get("value"))
    if message.get("op") == "raised":
        return Outcome("raised", exc_string=str(message.get("exc_string", "")))
    raise JobProcessError(f"the job process said {message!r}")


# -- the child ------------------------------------------------------------------


def _resolve(name: str) -> Callable[..., Any]:
    """The function ``name`` (``pkg.module.func`` or ``pkg.module.Class.method``)."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            target: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            target = getattr(target, attr)
        if not callable(target):
            raise TypeError(f"{name} is not callable")
        return target  # type: ignore[no-any-return]
    raise ImportError(f"cannot import {name}")


class _Child:
    """The job process: one call at a time from the worker, lost notices at any time."""

    def __init__(
        self, calls: BinaryIO, notices: BinaryIO, up: BinaryIO, functions: frozenset[str]
    ) -> None:
        self.calls, self.notices, self.up, self.functions = calls, notices, up, functions
        self.resolved: dict[str, Callable[..., Any]] = {}

    def listen(self) -> None:
        """(A thread.) A lost notice is acted on at once, whatever the job is doing."""
        for line in self.notices:
            job_lease.mark_lost(int(json.loads(line)["token"]))

    def serve(self) -> None:
        for name in self.functions:  # import up front, so the first job is quick
            try:
                self.resolved[name] = _resolve(name)
            except Exception as exc:  # the job that calls it gets the error
                log.warning("job process: cannot import %s: %r", name, exc)
        self._send({"op": "ready"})
        for line in self.calls:  # until the worker closes the pipe
            self._send(self._run(json.loads(line)))

    def _run(self, call: dict[str, Any]) -> dict[str, Any]:
        name = str(call["func"])
        lease = job_lease.JobLease(str(call["pool"]), str(call["worker_id"]), int(call["token"]))
        job_lease.set_current(lease)
        try:
            if name not in self.functions:
                raise ImportError(f"{name} is not registered")
            func = self.resolved.get(name) or _resolve(name)
            value = func(*call.get("args", ()), **call.get("kwargs", {}))
            json.dumps(value, allow_nan=False)  # a result that is not JSON is the job's failure
            return {"op": "returned", "value": value}
        except BaseException:  # the job's own failure, whatever it is, goes back as text
            return {"op": "raised", "exc_string": traceback.format_exc()}
        finally:
            job_lease.set_current(None)

    def _send(self, message: dict[str, Any]) -> None:
        self.up.write(json.dumps(message).encode() + b"\n")
        self.up.flush()


def _die_with_parent(parent: int) -> None:
    """On Linux, the kernel kills this process when its worker dies (even by SIGKILL),
    so a job never outlives the worker that would have recorded it."""
    if not sys.platform.startswith("linux"):
        return  # elsewhere it ends at the end of its input, after its current job
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the worker died before the line above
        os._exit(0)


def main(argv: list[str]) -> int:
    """Entry point of the job process: ``python -m redispool.job_process CALLS NOTICES
    ANSWERS WORKER_PID`` (the pipes' file descriptors and the worker's pid)."""
    worker_pid = int(argv[3])
    _die_with_parent(worker_pid)
    # The job's log lines are the worker's: they carry its pid, as when it ran jobs itself.
    job_format = LOG_FORMAT.replace("%(process)d", str(worker_pid))
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=job_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when the child ends
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    functions = frozenset(json.loads(os.environ.get(FUNCTIONS_ENV, "[]")))
    calls, notices = os.fdopen(int(argv[0]), "rb"), os.fdopen(int(argv[1]), "rb")
    child = _Child(calls, notices, os.fdopen(int(argv[2]), "wb"), functions)
    threading.Thread(target=child.listen, name="redispool-job-lease", daemon=True).start()
    child.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
