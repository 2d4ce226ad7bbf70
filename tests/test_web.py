"""The web view over real HTTP (uvicorn) and a real server: reads, safety, actions."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from wsgiref.util import setup_testing_defaults

import pytest
import redis
from webserver import WebServer

from redispool import Pool, events
from redispool.web import CSP, create_app, wsgi_app

HOSTILE = "<img/src=x/onerror=alert(1)>"
TOKEN = "operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def serve(r: redis.Redis) -> Iterator[Callable[..., WebServer]]:
    started: list[WebServer] = []

    def start(**options: object) -> WebServer:
        server = WebServer(create_app(r, **options))  # type: ignore[arg-type]
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def test_every_pool_is_listed_with_its_numbers(make_pool: Callable[..., Pool],
                                               serve: Callable[..., WebServer]) -> None:
    a, b = make_pool("alpha", workers=3), make_pool("beta", workers=1)
    a.checkout(auto_renew=False)
    status, pools = serve().json("api/pools")
    assert status == 200
    by_name = {p["pool"]: p for p in pools}
    alpha = by_name["alpha"]
    assert (alpha["size"], alpha["busy"], alpha["idle"]) == (3, 1, 2)
    assert (by_name["beta"]["size"], by_name["beta"]["busy"]) == (1, 0)
    del b


def test_a_pool_shows_each_worker_and_lease(make_pool: Callable[..., Pool],
                                            serve: Callable[..., WebServer]) -> None:
    pool = make_pool("toy")
    pool.add_worker("w1", host="alpha", pid=11)
    pool.add_worker("w2", host="beta", pid=22)
    lease = pool.checkout(auto_renew=False)
    status, snap = serve().json("api/pools/toy")
    assert status == 200
    workers = {w["id"]: w for w in snap["workers"]}
    held = workers[lease.worker_id]
    assert (held["state"], held["token"]) == ("busy", lease.token)
    other = workers["w1" if lease.worker_id == "w2" else "w2"]
    assert (other["state"], other["token"]) == ("idle", None)
    assert {w["host"] for w in snap["workers"]} == {"alpha", "beta"}
    (shown,) = snap["leases"]
    assert shown["worker"] == lease.worker_id and shown["token"] == lease.token
    assert 0 < shown["ttl_left"] <= 10


def test_unknown_pool_and_bad_queries_are_clear_errors(make_pool: Callable[..., Pool],
                                                       serve: Callable[..., WebServer]) -> None:
    make_pool("toy", workers=1)
    web = serve()
    assert web.json("api/pools/nothere")[0] == 404
    assert web.json("api/pools/bad%20name")[0] == 404
    status, body = web.json("api/pools/toy/history?minutes=0")
    assert status == 400 and "minutes" in body["error"]
    assert web.json("api/pools/toy/events?count=x")[0] == 400


def test_a_pool_deleted_while_the_view_runs_is_a_404_and_leaves_the_list(
    make_pool: Callable[..., Pool], serve: Callable[..., WebServer], r: redis.Redis
) -> None:
    from redispool.cli.demo import delete_pool

    make_pool("gone", workers=2)
    make_pool("stays", workers=1)
    web = serve()
    assert web.json("api/pools/gone")[0] == 200
    assert delete_pool(r, "gone") > 0
    assert web.json("api/pools/gone")[0] == 404
    assert web.json("api/pools/gone/history")[0] == 404
    status, pools = web.json("api/pools")
    assert status == 200 and [p["pool"] for p in pools] == ["stays"]
    make_pool("gone", workers=1)  # made again: shown again, with its new numbers
    status, snap = web.json("api/pools/gone")
    assert status == 200 and len(snap["workers"]) == 1


def test_every_response_carries_the_content_security_policy(
    make_pool: Callable[..., Pool], serve: Callable[..., WebServer]
) -> None:
    make_pool("toy", workers=1)
    web = serve()
    for path in ("", "static/app.js", "api/pools", "api/pools/toy", "api/pools/nothere"):
        _status, headers, _body = web.request(path)
        assert headers["content-security-policy"] == CSP, path
        assert headers["x-content-type-options"] == "nosniff"
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP


def test_hostile_worker_ids_travel_as_json_text_and_the_page_never_parses_markup(
    make_pool: Callable[..., Pool], serve: Callable[..., WebServer]
) -> None:
    pool = make_pool("toy")
    pool.add_worker(HOSTILE, host="<script>alert(2)</script>", pid=1)
    _status, headers, body = serve().request("api/pools/toy")
    assert headers["content-type"].startswith("application/json")
    assert HOSTILE.encode() in body  # data, escaped by nothing but JSON, shown with textContent
    _status, _headers, script = serve().request("static/app.js")
    for sink in (b"innerHTML", b"outerHTML", b"insertAdjacentHTML", b"document.write", b"eval("):
        assert sink not in script, sink


def test_it_answers_only_to_loopback_host_names(make_pool: Callable[..., Pool],
                                                serve: Callable[..., WebServer]) -> None:
    make_pool("toy", workers=1)
    web = serve()
    status, _headers, _body = web.request("api/pools", headers={"Host": "evil.example"})
    assert status == 400  # a rebound DNS name cannot read the pools


def test_actions_are_refused_when_off_even_with_the_token(make_pool: Callable[..., Pool],
                                                          serve: Callable[..., WebServer]) -> None:
    pool = make_pool("toy", workers=1)
    status, body = serve().json("api/pools/toy/drain", method="POST", body={"worker": "w1"},
                                headers=AUTH)  # fmt: skip
    assert status == 403 and "allow-actions" in body["error"]
    assert pool.status().size == 1


def test_actions_are_refused_without_the_token_and_done_and_logged_with_it(
    make_pool: Callable[..., Pool], serve: Callable[..., WebServer], r: redis.Redis
) -> None:
    pool = make_pool("toy")
    pool.add_worker(HOSTILE)
    pool.add_worker("w2")
    web = serve(allow_actions=True, token=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, _ = web.json("api/pools/toy/drain", method="POST", body={"worker": HOSTILE},
                             headers=headers)  # fmt: skip
        assert status == 401
    assert pool.status().size == 2 and events.read(r, "toy") == []
    status, body = web.json("api/pools/toy/drain", method="POST", body={"worker": HOSTILE},
                            headers=AUTH)  # fmt: skip
    assert status == 200 and body == {"drained": HOSTILE}
    assert [w.id for w in pool.workers()] == ["w2"]
    (logged,) = events.read(r, "toy")
    assert (logged.kind, logged.worker) == ("action", HOSTILE)
    assert "drain" in logged.detail
    status, _ = web.json("api/pools/toy/drain", method="POST", body={"worker": "gone"},
                         headers=AUTH)  # fmt: skip
    assert status == 404
    assert web.json("api/pools/toy/drain", method="POST", body=["x"], headers=AUTH)[0] == 400


def test_actions_need_a_real_token(r: redis.Redis) -> None:
    with pytest.raises(ValueError, match="token"):
        create_app(r, allow_actions=True, token="short")
    with pytest.raises(ValueError, match="token"):
        create_app(r, allow_actions=True)


def test_the_same_app_mounts_in_a_wsgi_service(make_pool: Callable[..., Pool],
                                               r: redis.Redis) -> None:
    make_pool("toy", workers=2)
    app = wsgi_app(r)
    environ: dict[str, object] = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO="/api/pools", HTTP_HOST="localhost", SERVER_NAME="localhost",
                   REQUEST_METHOD="GET", **{"wsgi.input": io.BytesIO(b""),
                                            "wsgi.errors": sys.stderr})  # fmt: skip
    got: dict[str, object] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc: object = None) -> None:
        got["status"], got["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    assert got["status"] == "200 OK"
    assert b'"pool":"toy"' in body and b'"size":2' in body


def test_a_pool_of_ten_thousand_workers_is_read_in_under_a_second(
    make_pool: Callable[..., Pool], serve: Callable[..., WebServer]
) -> None:
    import time

    pool = make_pool("big")
    for n in range(10_000):
        pool.add_worker(f"w{n:05d}", host=f"host-{n % 50}", pid=1000 + n)
    pool.configure(lease_ttl=600)
    for _ in range(3_000):
        pool.checkout(block=False, auto_renew=False)
    web = serve()
    took = []
    for _ in range(3):
        started = time.perf_counter()
        status, snap = web.json("api/pools/big")
        took.append(time.perf_counter() - started)
    assert status == 200 and snap["size"] == 10_000 and snap["busy"] == 3_000
    assert snap["workers_total"] == 10_000 and len(snap["leases"]) == 2_000  # the first 2000 listed
    print(f"GET api/pools/big: {sorted(took)[1] * 1000:.0f} ms (median of 3)")
    assert sorted(took)[1] < 1.0, took


def test_history_of_the_last_hour_and_day_comes_one_entry_a_minute(
    make_pool: Callable[..., Pool], serve: Callable[..., WebServer], r: redis.Redis
) -> None:
    from redispool.history import History

    make_pool("toy", workers=1)
    history = History(r, "toy")
    history.add({"burials": 2}, minute=history.now() - 90)  # an hour and a half ago
    history.add({"checkouts": 5})
    web = serve()
    status, hour = web.json("api/pools/toy/history?minutes=60")
    assert status == 200 and len(hour) == 60
    assert hour[-1]["checkouts"] == 5 and sum(m["burials"] for m in hour) == 0
    status, day = web.json("api/pools/toy/history?minutes=1440")
    assert status == 200 and len(day) == 1440
    assert [m["minute"] for m in day] == list(range(history.now() - 1439, history.now() + 1))
    assert day[-91]["burials"] == 2
