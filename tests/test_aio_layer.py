"""The layer's pieces the asyncio Pool added, shared with the sync one (pure, no server)."""

from __future__ import annotations

import threading

from redispool import LeaseLost, WorkerLost
from redispool.protocol import LeaseLife, renewal_batch, renewal_done, renewal_failed


class _Lease(LeaseLife[threading.Event]):
    def _new_event(self) -> threading.Event:
        return threading.Event()


def _lease(worker: str, deadline: float, renewed_at: float = 0.0) -> _Lease:
    return _Lease(worker, 7, 0.3, auto_renew=True, deadline=deadline, nonce="ab",
                  renewed_at=renewed_at)  # fmt: skip


def test_a_renewal_extends_the_held_leases_and_names_the_ended_ones() -> None:
    held, gone = _lease("w1", 1.0), _lease("w2", 1.0)
    assert renewal_batch([held, gone]) == [("w1", 7, "ab", 300), ("w2", 7, "ab", 300)]
    assert renewal_done([held, gone], (True, False), sent=5.0) == [gone]
    assert (held.deadline, held.renewed_at) == (5.3, 5.0)
    assert gone.deadline == 1.0


def test_a_failed_renewal_retries_soon_and_ends_only_leases_past_their_deadline() -> None:
    past, alive = _lease("w1", 9.0, renewed_at=8.7), _lease("w2", 11.0, renewed_at=8.7)
    assert renewal_failed([past, alive], now=10.0, delay=0.2) == [past]
    assert max(alive.renew_due(), past.renew_due()) <= 10.2 + 1e-9  # retried within the delay
    assert not alive.lost.is_set() and not past.lost.is_set()  # marking is the caller's


def test_ended_error_says_whether_the_worker_died() -> None:
    lease = _lease("w1", 1.0)
    error = lease.ended_error("p", "renew")
    assert type(error) is LeaseLost and "has ended" in str(error) and error.worker_id == "w1"
    lease.end(worker_died=True)
    assert isinstance(lease.ended_error("p", "run"), WorkerLost)
