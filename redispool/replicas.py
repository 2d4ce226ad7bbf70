"""Replica acknowledgement: how many replicas must have a write, and for how long to wait.

Redis replicates asynchronously, so a failover can drop writes the old master
acknowledged. A Pool with ``min_replicas=N`` sends ``WAIT N ms`` after each
checkout, renew and checkin, on the same connection and in the same round trip,
and treats fewer acknowledgements as a failure (Redisson's
``checkLockSyncedSlaves``). It is not consensus: N replicas that all fail still
lose the write.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import PoolUnavailable

__all__ = ["DEFAULT_REPLICA_TIMEOUT", "MAX_REPLICA_TIMEOUT", "Replicas"]

DEFAULT_REPLICA_TIMEOUT = 1.0
#: A WAIT must end well within the connection's reply timeout (10 s).
MAX_REPLICA_TIMEOUT = 5.0
MAX_REPLICAS = 100


@dataclass(frozen=True)
class Replicas:
    """``need`` replicas (0: no WAIT at all) within ``timeout_ms``."""

    need: int
    timeout_ms: int

    @classmethod
    def of(cls, min_replicas: int, replica_timeout: float) -> Replicas:
        """Checked settings; :class:`ValueError` says what is wrong."""
        if isinstance(min_replicas, bool) or not isinstance(min_replicas, int):
            raise ValueError(f"min_replicas must be a whole number, got {min_replicas!r}")
        if not 0 <= min_replicas <= MAX_REPLICAS:
            raise ValueError(
                f"min_replicas must be between 0 and {MAX_REPLICAS}, got {min_replicas}"
            )
        if (
            isinstance(replica_timeout, bool)
            or not isinstance(replica_timeout, (int, float))
            or not 0.001 <= replica_timeout <= MAX_REPLICA_TIMEOUT
        ):
            raise ValueError(
                f"replica_timeout must be between 0.001 and {MAX_REPLICA_TIMEOUT} seconds, "
                f"got {replica_timeout!r}"
            )
        return cls(min_replicas, round(replica_timeout * 1000))

    def unacked(
        self, pool: str, operation: str, acks: int, worker_id: str, done: str
    ) -> PoolUnavailable:
        """The error for ``operation`` that only ``acks`` replicas acknowledged."""
        return PoolUnavailable(
            f"pool {pool!r}: {operation}: {acks} of {self.need} replicas "
            f"acknowledged within {self.timeout_ms / 1000} s; {done}",
            pool=pool,
            operation=operation,
            worker_id=worker_id,
        )
