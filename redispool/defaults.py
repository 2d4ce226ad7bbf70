"""The pool's defaults and bounds, in one place.

Every module that checks a lease TTL, a strategy, a timeout or a worker's
host and pid takes the rule from here; the Lua side writes and checks the
same bounds (``includes/pool.lua``), and a test holds the two together.
"""

from __future__ import annotations

import math

__all__ = [
    "BURY_BATCH",
    "DEFAULT_LEASE_TTL",
    "DEFAULT_LEASE_TTL_MS",
    "DEFAULT_STRATEGY",
    "MAX_TTL",
    "MAX_TTL_MS",
    "MIN_TTL",
    "MIN_TTL_MS",
    "STRATEGIES",
    "SWEEP_BATCH",
    "check_strategy",
    "check_timeout",
    "ttl_ms",
    "worker_meta",
]

#: Seconds a lease lasts when neither the client nor the pool's settings say.
DEFAULT_LEASE_TTL = 10.0
DEFAULT_LEASE_TTL_MS = round(DEFAULT_LEASE_TTL * 1000)
#: Which idle worker a checkout takes: the last checked in, or the longest idle.
STRATEGIES = ("lifo", "fifo")
DEFAULT_STRATEGY = STRATEGIES[0]
#: Lease TTLs accepted, seconds (whole ms from 10 ms to 7 days in Redis).
MIN_TTL, MAX_TTL = 0.01, 7 * 24 * 3600.0
MIN_TTL_MS, MAX_TTL_MS = round(MIN_TTL * 1000), round(MAX_TTL * 1000)
#: Most expired leases one reclaim call returns; the caller repeats while it is full.
SWEEP_BATCH = 1000
#: Most dead workers one burial call buries; the caller repeats while it is full.
BURY_BATCH = 1000


def ttl_ms(value: float, what: str = "lease_ttl") -> int:
    """``value`` seconds as whole ms, or ``ValueError`` outside the bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}")
    if not MIN_TTL <= value <= MAX_TTL:
        raise ValueError(f"{what} must be between {MIN_TTL} and {MAX_TTL:.0f} seconds, got {value}")
    return round(value * 1000)


def check_strategy(strategy: str | None) -> str:
    """``strategy`` ('' for None), or ``ValueError`` if it is not one of :data:`STRATEGIES`."""
    if strategy is not None and strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    return strategy or ""


def check_timeout(timeout: float | None) -> None:
    """``ValueError`` unless ``timeout`` is None or a number of seconds >= 0."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ValueError(f"timeout must be a number of seconds or None, got {timeout!r}")
    if not timeout >= 0:
        raise ValueError(f"timeout must not be negative, got {timeout}")


def worker_meta(host: str | None, pid: int | None) -> str:
    """``host|pid`` as the pool stores it (either may be empty), or ``ValueError``."""
    if host is not None and (not isinstance(host, str) or "|" in host or not host.isprintable()):
        raise ValueError(f"host must be printable text without '|', got {host!r}")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0):
        raise ValueError(f"pid must be a positive integer, got {pid!r}")
    return f"{host or ''}|{pid or ''}"
