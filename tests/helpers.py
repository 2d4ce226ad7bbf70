"""Helpers for redispool's tests: waiting with a deadline, free ports, worker_main processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from redispool import rqkeys
from redispool.server import EmbeddedServer, free_port
from redispool.worker_settings import SETTINGS_ENV, WorkerSettings

__all__ = [
    "FAST",
    "StartServer",
    "StartWorkerMain",
    "WorkerMain",
    "free_port",
    "pid_alive",
    "wait_for",
]

# What the `fresh_server` fixture yields: call it (appendonly=..., extra_args=...).
StartServer = Callable[..., EmbeddedServer]


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 5.0,
    interval: float = 0.01,
    message: str = "",
) -> object:
    """Poll `predicate` until it returns something truthy, and return that.

    Raise AssertionError naming `message` if `timeout` seconds (monotonic) pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True while a process (not yet reaped) with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


ROOT = Path(__file__).resolve().parent.parent
WORKER_MAIN = ROOT / "worker_main.py"
FAST = ("--heartbeat-ttl", "1", "--sweep-interval", "0.2")
STARTED = re.compile(r"started worker (\S+) \(pid (\d+)\)")


class DidNotStop(subprocess.TimeoutExpired):
    """A worker_main that did not exit in time; its message ends with its log,
    which holds the stacks of it and its workers."""

    def __init__(self, cmd: object, timeout: float, log: str) -> None:
        super().__init__(cmd, timeout)
        self.log = log

    def __str__(self) -> str:
        return f"{super().__str__()}; the end of its log:\n{self.log}"


class WorkerMain:
    """One worker_main.py process and the log it writes to stderr."""

    def __init__(self, url: str, pool: str, log_path: Path, args: tuple[str, ...]) -> None:
        self.log_path = log_path
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER_MAIN), "--url", url, "--pool", pool, *args],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        return {int(pid) for _, pid in STARTED.findall(self.log())}

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM (a drain), and its exit code; if it does not exit in ``timeout``,
        :class:`DidNotStop` with every thread's stack of it and its workers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise DidNotStop(exc.cmd, timeout, self.stacks()) from None

    def stacks(self) -> str:
        """The end of the log after SIGUSR1 to it and its live workers (their stacks)."""
        before = self.log().count("most recent call first")
        pids = [self.proc.pid, *(p for p in self.worker_pids() if pid_alive(p) and _is_worker(p))]
        for pid in pids:
            os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.log().count("most recent call first") >= before + len(pids):
                break
            time.sleep(0.05)
        return self.log()[-20000:]

    def kill_everything(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.worker_pids():
            if pid_alive(pid) and _is_worker(pid):
                os.kill(pid, signal.SIGKILL)


def _is_worker(pid: int) -> bool:
    try:
        return b"redispool.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def worker_process(
    settings: WorkerSettings, log: Path, script: Path | None = None, **env: str
) -> subprocess.Popen[bytes]:
    """One worker process as a supervisor starts it (``python -m redispool.worker``,
    or ``script`` in its place): ``settings`` and its pool's RQ keys in its
    environment, and ``env`` besides; what it writes in ``log``. The caller
    stops it by its pid."""
    environ = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT),
                   **{SETTINGS_ENV: settings.to_json()}, **rqkeys.environment(settings.pool),
                   **env)  # fmt: skip
    argv = [sys.executable, *(["-m", "redispool.worker"] if script is None else [str(script)])]
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=environ, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def key_part(key: str, pool: str) -> str:
    """The name a script's header gives pool ``pool``'s key ``key``:
    ``redispool:{p}:lease:w1`` -> ``lease``, the bare prefix -> ``prefix``, RQ's
    keys by their kind (``redispool:{p}:rq:job:j1`` -> ``job``) or RQ's suffix
    (``redispool:{p}:rq:queue:w1:intermediate`` -> ``intermediate``)."""
    prefix = f"redispool:{{{pool}}}:"
    assert key.startswith(prefix), key
    part = key[len(prefix) :].split(":")
    if part[0] == "rq" and len(part) > 1:
        return part[-1] if part[-1] == "intermediate" else part[1]
    return part[0] or "prefix"


def in_thread(fn: Callable[[], object], results: list[object]) -> threading.Thread:
    """``fn()`` in a started daemon thread; its result, or the exception it raised,
    appended to ``results`` (for the test to assert)."""

    def run() -> None:
        try:
            results.append(fn())
        except Exception as exc:  # collected and asserted by the test
            results.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def self_signed_certificate(openssl: str, where: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made in ``where`` with ``openssl``
    (valid for a day): ``(cert.pem, key.pem)``."""
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


# What the `start_worker_main` fixture yields: start(*args, pool=, workers=, wait=).
StartWorkerMain = Callable[..., WorkerMain]
