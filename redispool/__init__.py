"""redispool: a worker pool that many hosts share through Redis.

Check a worker out for exclusive use, run jobs on it, check it in. Leases
expire when their holder dies, and every lease carries a fencing token that
the worker itself checks for the whole of each job (``current_lease()`` inside
a job); a downstream store can check it too (:class:`Fence`).
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
    StaleToken,
    WorkerLost,
)
from .fence import Fence
from .job_lease import JobLease, current_lease
from .lease import Lease
from .pool import DEFAULT_LEASE_TTL, STRATEGIES, Pool
from .reaper import Reaper
from .scripts import Installed, install
from .status import LeaseInfo, PoolSettings, PoolStatus, WorkerInfo

__all__ = [
    "DEFAULT_LEASE_TTL",
    "STRATEGIES",
    "CheckoutTimeout",
    "Fence",
    "Installed",
    "JobFailed",
    "JobLease",
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
    "StaleToken",
    "WorkerInfo",
    "WorkerLost",
    "current_lease",
    "doubler",
    "install",
]
