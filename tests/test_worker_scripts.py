"""The worker-process scripts' logic on fakeredis: registration, burial, leaving.

Expiry is simulated by deleting the alive key and backdating the heartbeat;
real expiry and real processes are in test_worker.py. The fence at a job's
start (begin_job), dead workers' and retired workers' jobs included, is in
test_jobs_scripts.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from redispool import Pool, WorkerLost, errors, liveness
from redispool.errors import WorkerIdTaken
from redispool.liveness import Incarnation
from redispool.supervisor import BACKOFF_FIRST, Supervisor, SupervisorSettings, _Slot

WORKER_SCRIPTS = ("leave_worker", "reap_workers", "register_worker")


@pytest.fixture
def pool() -> Iterator[Pool]:
    p = Pool("unit", redis=fakeredis.FakeRedis(), lease_ttl=5)
    yield p
    p.close()


def me(worker_id: str = "w1", incarnation: str = "inc-a", overflow: bool = False) -> Incarnation:
    return Incarnation(worker_id, incarnation, "host", 123, 1000, overflow)


def die(pool: Pool, worker_id: str) -> None:
    """What a lapsed heartbeat leaves behind: no alive key, a deadline in the past."""
    pool.client.delete(pool.keys.alive(worker_id))
    pool.client.zadd(pool.keys.heartbeats, {worker_id: 1})


def test_a_dead_worker_is_buried_and_its_lease_ends_as_worker_lost(pool: Pool) -> None:
    liveness.register(pool, me())
    lease = pool.checkout(block=False, auto_renew=False)
    assert liveness.bury(pool, "w1", lease.token, lease.nonce) == (0, errors.OK)
    die(pool, "w1")
    assert pool.status().dead == 1
    assert liveness.bury(pool, "w1", lease.token, lease.nonce) == (1, errors.WORKER_DEAD)
    assert pool.workers() == [] and pool.status().dead == 0
    with pytest.raises(WorkerLost):
        lease.renew()
    assert lease.checkin() is False and lease.worker_died


def test_a_live_or_hand_added_id_is_never_taken(pool: Pool) -> None:
    liveness.register(pool, me())
    with pytest.raises(WorkerIdTaken):
        liveness.register(pool, me(incarnation="inc-b"))
    pool.add_worker("manual")
    with pytest.raises(WorkerIdTaken):
        liveness.register(pool, me("manual"))
    assert pool.client.zscore(pool.keys.heartbeats, "manual") is None  # no heartbeat to lapse
    assert liveness.bury(pool) == (0, -1)
    assert {w.id for w in pool.workers()} == {"w1", "manual"}


def test_a_replacement_buries_the_incarnation_it_replaces_at_once(pool: Pool) -> None:
    liveness.register(pool, me())
    lease = pool.checkout(block=False, auto_renew=False)
    liveness.register(pool, me(incarnation="inc-b"), replaces="inc-a")
    assert pool.client.zscore(pool.keys.dead_leases, lease.token) is not None
    assert pool.status().idle == 1


def test_registration_comes_back_after_flushdb_but_not_after_leaving(pool: Pool) -> None:
    liveness.register(pool, me())
    assert liveness.beat(pool, me()) == "beat"
    pool.client.flushdb()
    assert liveness.beat(pool, me()) == "registered"
    assert pool.status().idle == 1
    assert liveness.leave(pool, me(), "drain") == 1
    assert liveness.beat(pool, me(), reregister=False) == "gone"


def test_a_leased_worker_drains_at_checkin_and_overflow_leaves_only_when_idle(
    pool: Pool,
) -> None:
    extra = me("o1", "inc-o", overflow=True)
    liveness.register(pool, me())
    liveness.register(pool, extra)
    assert pool.status().overflow == 1
    first = pool.checkout(block=False, auto_renew=False)
    second = pool.checkout(block=False, auto_renew=False)
    busy = {first.worker_id: first, second.worker_id: second}
    assert liveness.leave(pool, extra, "idle") == 0  # leased: stays
    assert liveness.leave(pool, me(), "drain") == 2
    busy["w1"].checkin()
    assert liveness.beat(pool, me(), reregister=False) == "gone"
    busy["o1"].checkin()
    assert liveness.leave(pool, extra, "idle") == 1
    assert pool.status().size == 0 and pool.status().overflow == 0


def test_a_crashing_worker_is_restarted_with_growing_backoff() -> None:
    supervisor = Supervisor(SupervisorSettings(url="redis://unused", pool="p"))
    slot = _Slot("p-1", overflow=False)
    delays = []
    for _ in range(4):
        slot.started, slot.proc = 100.0, _Exited()  # type: ignore[assignment]
        supervisor._exited(slot, 1, now=100.5)
        delays.append(round(slot.restart_at - 100.5, 3))
    assert delays == [BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST, 8 * BACKOFF_FIRST]
    slot.started, slot.proc = 0.0, _Exited()  # type: ignore[assignment]
    supervisor._exited(slot, 1, now=100.0)  # ran long enough: backoff starts afresh
    assert slot.restart_at == pytest.approx(100.0 + BACKOFF_FIRST)


class _Exited:
    pid = 4242


def test_a_removed_idle_worker_is_not_registered_again_by_its_heartbeat(pool: Pool) -> None:
    liveness.register(pool, me())
    assert pool.remove_worker("w1") is True
    assert liveness.beat(pool, me()) == "gone"
    assert pool.workers() == []
    assert liveness.leave(pool, me(), "exit") == 1  # its process exits: nothing is left
    assert pool.client.hgetall(pool.keys.removed) == {}


def test_a_removed_busy_worker_serves_its_lease_then_is_gone_for_good(pool: Pool) -> None:
    liveness.register(pool, me())
    lease = pool.checkout(block=False, auto_renew=False)
    assert pool.remove_worker("w1") is True
    assert liveness.beat(pool, me()) == "beat"  # still serving its lease
    assert lease.checkin() is True
    assert liveness.beat(pool, me()) == "gone"
    assert pool.workers() == []


def test_an_overflow_worker_that_left_idle_cannot_be_registered_by_a_late_beat(
    pool: Pool,
) -> None:
    liveness.register(pool, me(overflow=True))
    assert liveness.leave(pool, me(overflow=True), "idle") == 1
    assert liveness.beat(pool, me(overflow=True)) == "gone"  # the race: no re-registration
    assert pool.status().size == 0


def test_a_worker_whose_registration_was_lost_with_the_data_registers_again(
    pool: Pool,
) -> None:
    liveness.register(pool, me())
    pool.client.flushdb()
    assert liveness.beat(pool, me()) == "registered"
    assert [w.id for w in pool.workers()] == ["w1"]


def test_the_replacement_of_a_drained_worker_buried_first_is_not_let_in(pool: Pool) -> None:
    liveness.register(pool, me())
    lease = pool.checkout(block=False, auto_renew=False)
    assert pool.remove_worker("w1") is True  # busy: retired, leaves at the lease's end
    die(pool, "w1")
    assert liveness.bury(pool)[0] == 1  # the Reaper buries it before the supervisor restarts
    assert lease.checkin() is False
    with pytest.raises(liveness.OutOfService):
        liveness.register(pool, me(incarnation="inc-b"), replaces="inc-a")
    assert pool.workers() == [] and pool.client.hgetall(pool.keys.removed) == {}


def test_a_new_incarnation_of_a_removed_id_may_register(pool: Pool) -> None:
    liveness.register(pool, me())
    pool.remove_worker("w1")
    # a supervisor's replacement of the removed one (its process died first) is not
    # let in: the dead one is buried with its mark, and the id is free again
    with pytest.raises(liveness.OutOfService):
        liveness.register(pool, me(incarnation="inc-b"), replaces="inc-a")
    assert pool.client.hgetall(pool.keys.removed) == {}
    assert [w.id for w in pool.workers()] == []
    assert liveness.register(pool, me(incarnation="inc-c")) is True
    assert liveness.beat(pool, me(incarnation="inc-c")) == "beat"
