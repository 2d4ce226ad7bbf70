"""Attacks on the web view with junk a hand (or another tenant) wrote into Redis.

``str.isdigit()`` is True for digits ``int()`` refuses ("²", "①"): a parse guarded
only by it raises ``ValueError``, which no handler of the app turns into a clear
reply. Each test writes such junk where the page reads and asks the page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from webserver import WebServer

from redispool import Pool
from redispool.web import create_app

JUNK_DIGIT = "\u00b2"  # SUPERSCRIPT TWO: "²".isdigit() is True, int("²") raises


@pytest.fixture
def web(r: redis.Redis) -> Iterator[WebServer]:
    server = WebServer(create_app(r))
    try:
        yield server
    finally:
        server.stop()


def test_a_superscript_digit_in_a_query_is_a_clear_400_not_a_crash(
    make_pool: Callable[..., Pool], web: WebServer
) -> None:
    make_pool("toy", workers=1)
    status, body = web.json("api/pools/toy/history?minutes=%C2%B2")
    assert status == 400 and "minutes" in body["error"]
    status, body = web.json("api/pools/toy/events?count=%C2%B2")
    assert status == 400 and "count" in body["error"]


def test_an_event_written_by_hand_with_a_superscript_count_still_reads(
    make_pool: Callable[..., Pool], r: redis.Redis, web: WebServer
) -> None:
    pool = make_pool("toy", workers=1)
    r.xadd(pool.keys.events, {"kind": "action", "count": JUNK_DIGIT, "detail": "x"})
    status, entries = web.json("api/pools/toy/events")
    assert status == 200
    assert entries[-1]["count"] == 0 and entries[-1]["detail"] == "x"


def test_a_worker_whose_pid_and_job_count_are_superscripts_still_shows(
    make_pool: Callable[..., Pool], r: redis.Redis, web: WebServer
) -> None:
    pool = make_pool("toy")
    pool.add_worker("w1", host="h", pid=1)
    r.hset(pool.keys.workers, "w1", f"h|{JUNK_DIGIT}")
    r.hset(pool.keys.jobs, "w1", JUNK_DIGIT)
    status, snap = web.json("api/pools/toy")
    assert status == 200
    (worker,) = snap["workers"]
    assert (worker["pid"], worker["jobs"]) == (None, 0)


def test_a_lease_key_with_a_superscript_token_shows_the_lease_without_a_token(
    make_pool: Callable[..., Pool], r: redis.Redis, web: WebServer
) -> None:
    pool = make_pool("toy", workers=1)
    lease = pool.checkout(auto_renew=False)
    r.set(pool.keys.lease(lease.worker_id), f"{JUNK_DIGIT}|abc|holder", keepttl=True)
    status, snap = web.json("api/pools/toy")
    assert status == 200
    (shown,) = snap["leases"]
    assert shown["worker"] == lease.worker_id and shown["token"] is None


def test_one_corrupted_pool_does_not_take_the_list_of_every_pool_down(
    make_pool: Callable[..., Pool], r: redis.Redis, web: WebServer
) -> None:
    make_pool("alpha", workers=2)
    broken = make_pool("beta", workers=1)
    r.delete(broken.keys.deadlines)
    r.set(broken.keys.deadlines, "junk")  # a string where the status script reads a zset
    assert web.json("api/pools/beta")[0] == 503  # that pool's own page: a clear error
    status, pools = web.json("api/pools")
    assert status == 200
    by_name = {p["pool"]: p for p in pools}
    assert by_name["alpha"]["size"] == 2
    assert "error" in by_name["beta"]


@pytest.mark.parametrize("token", ["é" * 16, "operator-token-01\n23", "operator token ü 0123"])
def test_a_token_no_http_header_can_carry_is_refused_at_start(r: redis.Redis, token: str) -> None:
    """Headers arrive as latin-1 text: a non-ASCII or control character in the
    token would make every action a 401 whatever the operator sends."""
    with pytest.raises(ValueError, match="token"):
        create_app(r, allow_actions=True, token=token)

