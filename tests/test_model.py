"""A model of the pool, checked against a real server after every step.

Hypothesis drives random sequences of checkout(block=False), checkin, renew,
expire, remove_worker, add_worker and reclaim_expired on a real Valkey or Redis,
while a plain Python model predicts every answer. After each step the pool's
keys must agree with the model: every registered worker idle or leased to
exactly one live token, the idle list in the model's order without duplicates,
status() numbers equal, check_pool() finding nothing; tokens strictly increase,
and a lease the model says ended can neither renew nor check in.

"Expire" makes a lease pass its deadline without sleeping: its deadline in the
pool's sorted set is moved into the past and its lease key PEXPIREd to 1 ms,
then the test waits (with a deadline) until PTTL says the key is gone. That is
exactly the state a lease reaches when its holder stops renewing.

Budget: REDISPOOL_MODEL_EXAMPLES examples (default 120) of up to
REDISPOOL_MODEL_STEPS steps (default 30) per server kind, about 17 s each
here. A longer hunt: ``REDISPOOL_MODEL_EXAMPLES=2000 pytest tests/test_model.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest
import redis
from helpers import wait_for
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from redispool import LeaseLost, Pool, PoolFull
from redispool.check import check_pool
from redispool.lease import Lease
from redispool.wire import text

EXAMPLES = int(os.environ.get("REDISPOOL_MODEL_EXAMPLES", "120"))
STEPS = int(os.environ.get("REDISPOOL_MODEL_STEPS", "30"))
WORKER_IDS = ("w1", "w2", "w3", "w4")
LEASE_TTL = 30.0  # long: leases end only when the test expires them


@dataclass
class Model:
    """What the pool should hold. ``idle`` is in list order (head first, lifo)."""

    registered: set[str] = field(default_factory=set)
    idle: list[str] = field(default_factory=list)
    live: dict[str, Lease] = field(default_factory=dict)  # worker id -> its live lease
    expired: dict[str, int] = field(default_factory=dict)  # worker id -> deadline score
    draining: set[str] = field(default_factory=set)
    ended: list[Lease] = field(default_factory=list)  # checked in, or expired

    def sweep(self, limit: int) -> int:
        """The pool's sweep: expired leases in deadline order go back (or leave)."""
        due = sorted(self.expired, key=self.expired.__getitem__)[:limit]
        for wid in due:
            del self.expired[wid]
            self.release(wid)
        return len(due)

    def release(self, wid: str) -> None:
        if wid in self.draining:
            self.draining.discard(wid)
            self.registered.discard(wid)
        elif wid in self.registered:
            self.idle.insert(0, wid)  # lifo: LPUSH


class PoolMachine(RuleBasedStateMachine):
    url = ""  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        self.r = redis.Redis.from_url(self.url)
        self.r.flushall()
        self.pool = Pool("model", url=self.url, lease_ttl=LEASE_TTL)
        self.model = Model()
        self.last_token = 0
        self.past = 1  # deadline scores given to expired leases, increasing

    def teardown(self) -> None:
        self.pool.close()
        self.r.flushall()
        self.r.close()

    # -- rules ----------------------------------------------------------------

    @rule(wid=st.sampled_from(WORKER_IDS))
    def add_worker(self, wid: str) -> None:
        m = self.model
        new = wid not in m.registered
        assert self.pool.add_worker(wid) is new
        if new:
            m.registered.add(wid)
            m.release(wid)
        m.draining.discard(wid)

    @rule(wid=st.sampled_from(WORKER_IDS))
    def remove_worker(self, wid: str) -> None:
        m = self.model
        known = wid in m.registered
        assert self.pool.remove_worker(wid) is known
        if not known:
            return
        if wid in m.live or wid in m.expired:
            m.draining.add(wid)
        else:
            m.idle.remove(wid)
            m.registered.discard(wid)

    @rule()
    def checkout(self) -> None:
        m = self.model
        if not m.idle:
            m.sweep(16)
        if not m.idle:
            with pytest.raises(PoolFull):
                self.pool.checkout(block=False, auto_renew=False)
            return
        lease = self.pool.checkout(block=False, auto_renew=False)
        assert lease.worker_id == m.idle.pop(0)
        assert lease.token > self.last_token, "tokens must strictly increase"
        self.last_token = lease.token
        m.live[lease.worker_id] = lease

    @precondition(lambda self: self.model.live)
    @rule(data=st.data())
    def checkin(self, data: st.DataObject) -> None:
        m = self.model
        wid = data.draw(st.sampled_from(sorted(m.live)))
        lease = m.live.pop(wid)
        assert lease.checkin() is True
        m.ended.append(lease)
        m.release(wid)

    @precondition(lambda self: self.model.live)
    @rule(data=st.data())
    def renew(self, data: st.DataObject) -> None:
        lease = self.model.live[data.draw(st.sampled_from(sorted(self.model.live)))]
        lease.renew()
        assert lease.active

    @precondition(lambda self: self.model.live)
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        m = self.model
        wid = data.draw(st.sampled_from(sorted(m.live)))
        key = self.pool.keys.lease(wid)
        self.r.zadd(self.pool.keys.deadlines, {wid: self.past})
        self.r.pexpire(key, 1)
        wait_for(lambda: self.r.pttl(key) == -2, timeout=2.0, message=f"{key} to expire")
        m.expired[wid] = self.past
        self.past += 1
        m.ended.append(m.live.pop(wid))

    @precondition(lambda self: self.model.ended)
    @rule(data=st.data())
    def ended_lease_cannot_renew(self, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from(self.model.ended))
        with pytest.raises(LeaseLost):
            lease.renew()
        assert lease.lost.is_set()

    @precondition(lambda self: self.model.ended)
    @rule(data=st.data())
    def ended_lease_cannot_check_in(self, data: st.DataObject) -> None:
        lease = data.draw(st.sampled_from(self.model.ended))
        reached_redis = not lease.closed  # an expired lease not yet checked in
        assert lease.checkin() is False
        if reached_redis:
            self.model.sweep(16)  # a refused checkin sweeps on the way

    @rule()
    def reclaim_expired(self) -> None:
        assert self.pool.reclaim_expired() == self.model.sweep(1000)

    # -- invariants -------------------------------------------------------------

    @invariant()
    def keys_agree_with_the_model(self) -> None:
        m, k = self.model, self.pool.keys
        workers = {text(w) for w in self.r.hkeys(k.workers)}
        idle = [text(w) for w in self.r.lrange(k.idle, 0, -1)]
        leased = {text(w) for w in self.r.zrange(k.deadlines, 0, -1)}
        assert workers == m.registered
        assert idle == m.idle
        assert len(set(idle)) == len(idle), "the idle list has a duplicate"
        assert leased == set(m.live) | set(m.expired)
        assert not set(idle) & leased, "a worker is both idle and leased"
        assert workers == set(idle) | leased, "a registered worker is neither idle nor leased"
        assert {text(w) for w in self.r.smembers(k.draining)} == m.draining

    @invariant()
    def each_live_lease_holds_its_worker_with_its_token(self) -> None:
        for wid, lease in self.model.live.items():
            value = self.r.get(self.pool.keys.lease(wid))
            assert value is not None and text(value).split("|")[0] == str(lease.token)
        for wid in self.model.expired:
            assert self.r.exists(self.pool.keys.lease(wid)) == 0

    @invariant()
    def status_agrees_with_the_model(self) -> None:
        m = self.model
        status = self.pool.status()
        assert (status.size, status.idle, status.busy, status.waiting) == (
            len(m.registered),
            len(m.idle),
            len(m.live) + len(m.expired),
            0,
        )
        assert (status.draining, status.expired) == (len(m.draining), len(m.expired))

    @invariant()
    def check_pool_finds_nothing(self) -> None:
        assert check_pool(self.pool) == []


@pytest.mark.timeout(900)  # shrinking a failure takes a minute or more
def test_pool_agrees_with_its_model_through_random_steps(redis_url: str) -> None:
    PoolMachine.url = redis_url
    run_state_machine_as_test(
        PoolMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
