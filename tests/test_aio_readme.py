"""The README's asyncio web service runs, under concurrent load, against real workers."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from helpers import StartWorkerMain

from redispool import Pool, aio

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
SERVICE = re.findall(r"```python asyncio\n(.*?)```", README, re.DOTALL)
REQUESTS = 80


def _service() -> dict[str, Any]:
    assert len(SERVICE) == 1, "the README has one asyncio service example"
    namespace: dict[str, Any] = {"__name__": "readme_service"}
    exec(compile(SERVICE[0], "README.md", "exec"), namespace)
    return namespace


async def _get(port: int, path: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    head, _, body = response.partition("\r\n\r\n")
    return head.split("\r\n")[0], body


def test_the_readme_web_service_checks_out_per_request_under_load(
    redis_url: str, start_worker_main: StartWorkerMain
) -> None:
    start_worker_main(pool="doublers", workers=2)
    service = _service()

    async def scenario() -> tuple[list[tuple[str, str]], tuple[str, str], int]:
        async with aio.Pool("doublers", url=redis_url) as pool:
            server = await service["start"](pool, 0)
            port = server.sockets[0].getsockname()[1]
            async with server:
                answers = await asyncio.gather(
                    *(_get(port, f"/double/{n}") for n in range(REQUESTS))
                )
                bad = await _get(port, "/double/x")
            return answers, bad, pool.connections_opened

    answers, bad, opened = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert answers == [("HTTP/1.1 200 OK", str(2 * n)) for n in range(REQUESTS)]
    assert bad[0] == "HTTP/1.1 400 Bad Request"
    assert opened <= 3  # 80 concurrent requests, a few connections
    with Pool("doublers", redis_url) as pool:
        status = pool.status()
        assert (status.idle, status.busy, status.waiting) == (2, 0, 0)
