"""redispool: a worker pool that many hosts share through Redis.

Check a worker out for exclusive use, run jobs on it, check it in. Leases
expire when their holder dies, and every lease carries a fencing token that
the worker itself checks.
"""

from . import doubler
from .errors import (
    CheckoutTimeout,
    JobFailed,
    JobTimeout,
    LeaseLost,
    PoolAccessDenied,
    PoolCorrupted,
    PoolError,
    PoolFull,
    PoolUnavailable,
    WorkerLost,
)
from .lease import Lease
from .pool import DEFAULT_LEASE_TTL, STRATEGIES, Pool
from .reaper import Reaper
from .scripts import Installed, install
from .status import LeaseInfo, PoolSettings, PoolStatus, WorkerInfo

__all__ = [
    "DEFAULT_LEASE_TTL",
    "STRATEGIES",
    "CheckoutTimeout",
    "Installed",
    "JobFailed",
    "JobTimeout",
    "Lease",
    "LeaseInfo",
    "LeaseLost",
    "Pool",
    "PoolAccessDenied",
    "PoolCorrupted",
    "PoolError",
    "PoolFull",
    "PoolSettings",
    "PoolStatus",
    "PoolUnavailable",
    "Reaper",
    "WorkerInfo",
    "WorkerLost",
    "doubler",
    "install",
]
