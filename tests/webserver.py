"""A real uvicorn server of the web view in a thread of the test process, stopped at the end."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import uvicorn
from helpers import free_port, wait_for
from starlette.applications import Starlette

__all__ = ["WebServer"]


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
