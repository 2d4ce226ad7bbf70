"""The web view served for tests: uvicorn in a thread of the test process (WebServer), or
``redispool web`` as a process of its own (WebProcess); each stopped at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import uvicorn
from helpers import free_port, wait_for
from starlette.applications import Starlette

__all__ = ["WebProcess", "WebServer"]


class WebServer:
    """Serves ``app`` on 127.0.0.1 at a free port until :meth:`stop`."""

    def __init__(self, app: Starlette) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="off")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=10, message="uvicorn to start")
        self.url = f"http://127.0.0.1:{self.port}/"

    def request(
        self, path: str, *, method: str = "GET", body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        data = None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(req, timeout=10) as reply:
                return reply.status, dict(reply.headers), reply.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def json(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        status, _headers, body = self.request(path, **kwargs)
        return status, json.loads(body)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class WebProcess:
    """``redispool -u URL web --port <free> ARGS`` as its own process; :meth:`stop` by pid."""

    def __init__(self, url: str, log_path: Path, *args: str,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = log_path
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "redispool.cli", "-u", url, "web", "--port",
                 str(self.port), *args],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            )  # fmt: skip
        wait_for(lambda: self._answers() or self.proc.poll() is not None, timeout=20,
                 message="redispool web to answer")  # fmt: skip
        assert self.proc.poll() is None, log_path.read_text()

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "api/config", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
