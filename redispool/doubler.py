"""The doubler: the job every worker runs by default (PoolToy's ``Doubler``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lease import Lease

__all__ = ["compute", "double"]

log = logging.getLogger("redispool.doubler")


def double(n: int | float) -> int | float:
    """Log ``Doubling n`` and return ``2 * n``. Runs on a worker."""
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        raise ValueError(f"double needs a number, got {n!r}")
    log.info("Doubling %s", n)
    return 2 * n


def compute(lease: Lease, n: int | float, timeout: float = 30.0) -> int | float:
    """Double ``n`` on ``lease``'s worker (it logs ``Doubling n``)."""
    result: int | float = lease.run(double, n, timeout=timeout)
    return result
