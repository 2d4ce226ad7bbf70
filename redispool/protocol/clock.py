"""Deadline arithmetic shared by the sync and asyncio clients: pure functions of times.

Local times are ``time.monotonic()`` seconds; server times are Redis ms
(``TIME`` inside the scripts). A reply that carries the server's ``now_ms``,
read at local time ``sent`` (taken just *before* the request went out), maps
server instants to local ones conservatively: a server deadline comes no
later locally than ``sent + (deadline_ms - now_ms) / 1000``.
"""

from __future__ import annotations

__all__ = [
    "DEADLINE_MARGIN",
    "HANDOFF_GRACE_MS",
    "RENEW_FRACTION",
    "alive_ms",
    "local_time",
    "remaining",
    "renew_due",
    "retry_due",
    "waiter_wake_at",
]

#: Grace after a waiter's own timeout during which a handoff is still taken (ms).
HANDOFF_GRACE_MS = 100
#: A waiter wakes this long after the lease deadline it waits for (seconds).
DEADLINE_MARGIN = 0.002
#: A lease is renewed when this fraction of its TTL has passed since its last renewal.
RENEW_FRACTION = 1 / 3


def alive_ms(keepalive_ms: int, timeout: float | None) -> int:
    """How long the pool counts a waiter as alive without hearing from it:
    ``keepalive_ms``, shortened to a ``timeout`` (seconds) plus the handoff grace."""
    if timeout is None:
        return keepalive_ms
    return min(keepalive_ms, round(timeout * 1000) + HANDOFF_GRACE_MS)


def local_time(sent: float, server_now_ms: int, server_ms: int) -> float:
    """The local monotonic time of server instant ``server_ms``, from a reply
    whose server time was ``server_now_ms`` and whose request left at ``sent``."""
    return sent + (server_ms - server_now_ms) / 1000


def waiter_wake_at(
    now: float,
    ttl_ms: int,
    next_lease_end_ms: int,
    clock: tuple[float, int],
    deadline: float | None,
) -> float:
    """When a waiter stops blocking to tick: a third of its TTL from ``now``
    (keep-alive), just after the earliest lease deadline (``-1``: none; mapped
    through ``clock`` = ``(sent, server_now_ms)``), or its own ``deadline``,
    whichever is first; never before ``now``."""
    wake_at = now + ttl_ms / 1000 * RENEW_FRACTION
    if next_lease_end_ms >= 0:
        lease_end = local_time(*clock, next_lease_end_ms) + DEADLINE_MARGIN
        wake_at = min(wake_at, max(lease_end, now + 0.001))
    if deadline is not None:
        wake_at = min(wake_at, deadline)
    return max(wake_at, now)


def renew_due(renewed_at: float, ttl: float) -> float:
    """When a lease renewed at ``renewed_at`` with ``ttl`` seconds is due again."""
    return renewed_at + ttl * RENEW_FRACTION


def retry_due(renewed_at: float, now: float, ttl: float, delay: float) -> float:
    """The ``renewed_at`` that makes a failed renewal due again ``delay`` seconds
    after ``now`` (never later than it already was)."""
    return min(renewed_at, now + delay - ttl * RENEW_FRACTION)


def remaining(deadline: float, now: float) -> float:
    """Seconds from ``now`` to ``deadline``, at least 0."""
    return max(0.0, deadline - now)
