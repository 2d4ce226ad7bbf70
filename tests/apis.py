"""Both client APIs behind one face, so a contract test is written once and run on each.

``SyncApi`` calls :class:`redispool.Pool` directly; ``AioApi`` runs a
:class:`redispool.aio.Pool` on an event loop of its own thread and waits for
each call there. Either way a test says ``api.checkout(pool, timeout=1)``;
the pools, leases and errors are the API's own.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from redispool import Pool, aio

T = TypeVar("T")
AnyPool = Pool | aio.Pool
AnyLease = Any  # redispool.Lease | redispool.aio.Lease


class SyncApi:
    kind = "sync"

    def __init__(self, url: str) -> None:
        self.url = url
        self._pools: list[Pool] = []

    def pool(self, name: str = "p", lease_ttl: float | None = None) -> Pool:
        pool = Pool(name, url=self.url, lease_ttl=lease_ttl)
        self._pools.append(pool)
        return pool

    def checkout(self, pool: Any, **kwargs: Any) -> AnyLease:
        return pool.checkout(**kwargs)

    def checkin(self, lease: AnyLease) -> bool:
        result: bool = lease.checkin()
        return result

    def renew(self, lease: AnyLease) -> None:
        lease.renew()

    def status(self, pool: Any) -> Any:
        return pool.status()

    def in_background(self, call: Callable[[], T]) -> Future[T]:
        """``call()`` (a checkout that may wait) running while the test goes on."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the test through the future
                future.set_exception(exc)

        threading.Thread(target=run, daemon=True).start()
        return future

    def close(self) -> None:
        for pool in self._pools:
            pool.close()


class AioApi:
    kind = "aio"

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._pools: list[aio.Pool] = []

    def run(self, work: Awaitable[T], timeout: float = 60) -> T:
        """Run ``work`` on the API's loop and wait for its result."""

        async def wrapped() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)

    def pool(self, name: str = "p", lease_ttl: float | None = None) -> aio.Pool:
        async def make() -> aio.Pool:
            return aio.Pool(name, url=self.url, lease_ttl=lease_ttl)

        pool = self.run(make())
        self._pools.append(pool)
        return pool

    def checkout(self, pool: Any, **kwargs: Any) -> AnyLease:
        return self.run(pool.checkout(**kwargs))

    def checkin(self, lease: AnyLease) -> bool:
        result: bool = self.run(lease.checkin())
        return result

    def renew(self, lease: AnyLease) -> None:
        self.run(lease.renew())

    def status(self, pool: Any) -> Any:
        return self.run(pool.status())

    def in_background(self, call: Callable[[], Awaitable[T]]) -> Future[T]:
        async def wrapped() -> T:
            return await call()

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop)

    def close(self) -> None:
        for pool in self._pools:
            self.run(pool.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


Api = SyncApi | AioApi
APIS = {"sync": SyncApi, "aio": AioApi}


PROCS = Path(__file__).parent / "procs"
#: The client process of each API (same arguments, same lines).
CLIENT_SCRIPTS = {"sync": PROCS / "client.py", "aio": PROCS / "aio_client.py"}


class ClientProcess:
    """A client process (``procs/client.py`` or its asyncio twin) whose lines the test reads."""

    def __init__(self, kind: str, *args: str) -> None:
        self.kind = kind
        self.proc = subprocess.Popen(
            [sys.executable, str(CLIENT_SCRIPTS[kind]), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def line(self, timeout: float = 10) -> list[str]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"{self.kind} client {self.proc.pid} said nothing in {timeout} s"
        return self.proc.stdout.readline().split()

    def tell(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
