"""Helpers for redispool's tests: waiting on a condition with a deadline, free ports."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from redispool.server import EmbeddedServer, free_port

__all__ = ["StartServer", "free_port", "pid_alive", "wait_for"]

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
