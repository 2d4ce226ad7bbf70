"""Tenants: two pools on one server, each with its own users; pool A attacks pool B.

Pool A ("alpha") and pool B ("beta") each run worker_main.py as their own ACL
user and a job client as another, every user made by ``redispool.acl``. While
B's clients double numbers on B's workers, A's users try every attack of
issue 9; each must be refused with a permission error (NOPERM) and B's work
must go on undisturbed (every result correct, counted). RQ's own tools still
read a pool's records, given the pool's prefix.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import FAST, StartWorkerMain, WorkerMain, wait_for
from redis.exceptions import NoPermissionError, ResponseError
from rq.serializers import JSONSerializer

from redispool import Pool, install
from redispool.acl import acl_rules
from redispool.doubler import compute
from redispool.jobs import TOKEN_META
from redispool.keys import PoolKeys
from redispool.rqkeys import classes, environment
from redispool.scripts import library

A, B = "alpha", "beta"


def tenant_rules(pool: str, *, jobs: bool) -> list[str]:
    """The rules redispool.acl makes for a pool user: no right over other clients."""
    rules = acl_rules([pool], jobs=jobs)
    assert not {"+client|unblock", "+client|kill", "+client|id"} & set(rules)
    return rules


def make_user(admin: redis.Redis, url: str, user: str, rules: list[str]) -> str:
    admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{user}-pw", *rules)
    return url.replace("redis://", f"redis://{user}:{user}-pw@")


@dataclass
class Doubling:
    """B's clients: each doubles numbers on B's workers until stopped."""

    url: str
    stop: threading.Event = field(default_factory=threading.Event)
    results: list[tuple[int, Any]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, clients: int) -> Doubling:
        for i in range(clients):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _run(self, index: int) -> None:
        n = (index + 1) * 1_000_000  # the attacker's job doubles 1337: never run here
        try:
            with Pool(B, url=self.url, lease_ttl=2) as pool:
                while not self.stop.is_set():
                    with pool.lease(timeout=10) as lease:
                        for _ in range(3):
                            n += 1
                            self.results.append((n, compute(lease, n, timeout=10)))
        except BaseException as exc:  # the test reports it
            self.errors.append(exc)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


@dataclass
class Attacks:
    """Each attack tried and the permission error that refused it."""

    refusals: dict[str, str] = field(default_factory=dict)
    allowed: list[str] = field(default_factory=list)

    def attempt(self, name: str, action: Callable[[], Any]) -> None:
        try:
            action()
        except NoPermissionError as exc:
            self.refusals[name] = f"NOPERM {exc}"
            return
        except ResponseError as exc:  # a script's command refused: NOPERM inside the text
            if "NOPERM" in str(exc) or "no permissions" in str(exc):
                self.refusals[name] = str(exc)
                return
            self.allowed.append(f"{name}: not a permission error: {exc!r}")
            return
        self.allowed.append(f"{name}: it worked")


@pytest.fixture
def tenants(r: redis.Redis, redis_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Both pools running: worker_main per pool as its host user; the users' URLs."""
    install(r)
    urls = {
        "a_host": make_user(r, redis_url, "a_host", tenant_rules(A, jobs=True)),
        "a_app": make_user(r, redis_url, "a_app", tenant_rules(A, jobs=True)),
        "b_host": make_user(r, redis_url, "b_host", acl_rules([B], jobs=True)),
        "b_app": make_user(r, redis_url, "b_app", acl_rules([B], jobs=True)),
    }
    mains = [
        WorkerMain(urls["a_host"], A, tmp_path / "a.log", ("--workers", "1", *FAST)),
        WorkerMain(urls["b_host"], B, tmp_path / "b.log", ("--workers", "1", *FAST)),
    ]
    try:
        for name in (A, B):
            with Pool(name, url=redis_url) as admin:
                wait_for(lambda a=admin: a.status().idle == 1, timeout=20,  # type: ignore[misc]
                         message=f"pool {name}'s worker to register")  # fmt: skip
        yield {"urls": urls, "mains": mains}
    finally:
        for main in mains:
            main.kill_everything()
        for user in urls:
            r.execute_command("ACL", "DELUSER", user)


def _found(r: redis.Redis, pattern: str, read: Callable[[str], Any]) -> tuple[str, Any]:
    """A key matching ``pattern`` and ``read(key)``, once one exists with a value."""
    seen: list[tuple[str, Any]] = []

    def look() -> bool:
        for key in r.scan_iter(match=pattern):
            value = read(key.decode())
            if value:
                seen.append((key.decode(), value))
                return True
        return False

    wait_for(look, timeout=10, message=f"a key {pattern}")
    return seen[0]


def _b_job_and_token(r: redis.Redis) -> tuple[str, str, str]:
    """(worker id, live token, a job id) of pool B, read as the admin."""
    keys = PoolKeys(B)
    lease, value = _found(r, keys.prefix + "lease:*", r.get)
    job, _ = _found(r, keys.rq_prefix + ":job:*", r.exists)
    return keys.lease_worker(lease) or "", value.decode().split("|")[0], job.rsplit(":", 1)[1]


def _evil_library() -> str:
    """The library under its real name, with the fence always saying yes."""
    name = library().name
    return (
        f"#!lua name={name}\n"
        f"redis.register_function('{name}_begin_job', function() return {{0}} end)\n"
    )


def _read_any(client: redis.Redis, key: str, kind: str) -> Any:
    readers: dict[str, Callable[[], Any]] = {
        "string": lambda: client.get(key), "hash": lambda: client.hgetall(key),
        "list": lambda: client.lrange(key, 0, -1), "set": lambda: client.smembers(key),
        "zset": lambda: client.zrange(key, 0, -1), "stream": lambda: client.xread({key: "0-0"}),
    }  # fmt: skip
    return readers[kind]()


Attack = tuple[str, Callable[[redis.Redis], Any]]


def attacks_on_b(r: redis.Redis, wid: str, token: str, job_id: str) -> list[Attack]:
    """Every attack on pool B, given B's worker, its live token and a job of B's."""
    b, b_rq, lib = PoolKeys(B), classes(B), library().name
    lease_keys = (b.prefix, b.config, b.workers, b.idle, b.deadlines, b.token, b.draining,
                  b.waitq, b.waiters, b.lease(wid))  # fmt: skip
    attacks: list[Attack] = [
        ("FUNCTION LOAD REPLACE, fence says yes",
         lambda c: c.function_load(_evil_library(), replace=True)),
        ("FUNCTION DELETE", lambda c: c.function_delete(lib)),
        ("FUNCTION FLUSH", lambda c: c.function_flush()),
        ("SCRIPT FLUSH", lambda c: c.script_flush()),
        ("EVAL", lambda c: c.eval("return 1", 0)),
        ("read B's job hash", lambda c: c.hgetall(b_rq.job.key_for(job_id))),
        ("read B's job meta (token)", lambda c: b_rq.job.fetch(job_id, connection=c).meta),
        ("read B's lease (token)", lambda c: c.get(b.lease(wid))),
        ("read B's RQ queues set", lambda c: c.smembers(b_rq.queue.redis_queues_keys)),
        ("enqueue onto B's worker queue with B's live token",
         lambda c: b_rq.queue_for(wid, c).enqueue_call(
             "redispool.doubler.double", args=[1337], meta={TOKEN_META: token})),
        ("RPUSH onto B's worker queue", lambda c: c.rpush(b_rq.queue_for(wid, c).key, job_id)),
        ("XADD into B's results stream", lambda c: c.xadd(b.rq_result(job_id), {"type": "1"})),
        ("FCALL checkin of B's lease",
         lambda c: c.fcall(f"{lib}_checkin", len(lease_keys), *lease_keys, token)),
        ("CLIENT LIST", lambda c: c.client_list()),
        ("CLIENT KILL", lambda c: c.client_kill_filter(user="b_app")),
        ("CONFIG SET", lambda c: c.config_set("notify-keyspace-events", "")),
        ("CONFIG GET requirepass (the server's password)",
         lambda c: c.config_get("requirepass")),
        ("FLUSHALL", lambda c: c.flushall()),
        ("FLUSHDB", lambda c: c.flushdb()),
        ("KEYS", lambda c: c.keys("*")),
        ("SCAN", lambda c: c.scan(0, match=b.prefix + "*")),
        ("RANDOMKEY", lambda c: c.randomkey()),
        ("write the old shared RQ queue", lambda c: c.rpush(f"rq:queue:{wid}", job_id)),
    ]  # fmt: skip
    for entry in r.client_list():  # every connection on the server, B's waiters among them
        attacks.append((f"CLIENT UNBLOCK {entry['id']} ({entry.get('user')})",
                        lambda c, i=int(entry["id"]): c.client_unblock(i, error=True)))  # fmt: skip
    for key in sorted(k.decode() for k in r.scan_iter(match=f"*{{{B}}}*")):  # an admin's SCAN
        kind = r.type(key).decode()
        if kind != "none":
            attacks.append((f"read {key}", lambda c, k=key, t=kind: _read_any(c, k, t)))
    return attacks


def test_pool_a_users_are_refused_every_attack_while_pool_b_doubles_undisturbed(
    r: redis.Redis, redis_url: str, tenants: dict[str, Any]
) -> None:
    urls = tenants["urls"]
    app = redis.Redis.from_url(urls["a_app"])
    host = redis.Redis.from_url(urls["a_host"])
    bystander = redis.Redis.from_url(redis_url, socket_timeout=60)
    blocked: list[Any] = []
    other_app = threading.Thread(
        target=lambda: blocked.append(bystander.blpop(["app:inbox"], timeout=60)), daemon=True
    )
    other_app.start()
    doubling = Doubling(urls["b_app"]).start(clients=2)  # one holds B's worker, one waits
    attacks = Attacks()
    try:
        wid, token, job_id = _b_job_and_token(r)
        for name, attack in attacks_on_b(r, wid, token, job_id):
            for who, client in (("a_app", app), ("a_host", host)):
                attacks.attempt(f"{who}: {name}", lambda c=client, a=attack: a(c))  # type: ignore[misc]
        served_during = len(doubling.results)
        wait_for(lambda: len(doubling.results) >= served_during + 6, timeout=20,
                 message="B's clients to go on doubling after the attacks")  # fmt: skip
    finally:
        doubling.finish()
        r.lpush("app:inbox", "hello")
        other_app.join(timeout=10)
        for client in (app, host, bystander):
            client.close()
    report = "\n".join(f"  {name}: {why}" for name, why in attacks.refusals.items())
    print(f"{len(attacks.refusals)} attacks refused:\n{report}")
    assert attacks.allowed == [], attacks.allowed
    assert len(attacks.refusals) > 60
    assert doubling.errors == [], doubling.errors
    assert len(doubling.results) >= 12
    assert all(result == 2 * n for n, result in doubling.results), "a wrong result"
    assert [v.decode() if isinstance(v, bytes) else v for v in blocked[0]] == [
        "app:inbox", "hello"], "an unrelated client's BLPOP was disturbed"  # fmt: skip
    functions = r.function_list(library="redispool_*", withcode=True)
    assert len(functions) == 1 and "return {0} end" not in str(functions)
    assert "Doubling 1337" not in tenants["mains"][1].log(), "A's job ran on B's worker"
    done = len({n for n, _ in doubling.results})
    assert tenants["mains"][1].log().count("Doubling ") == done, "B ran a job no client sent"
    for main in tenants["mains"]:
        assert "NOPERM" not in main.log() and "no permissions" not in main.log()
        assert main.stop() == 0


def test_rq_tools_read_a_pools_records_with_its_prefix(
    r: redis.Redis, redis_url: str, start_worker_main: StartWorkerMain
) -> None:
    start_worker_main(workers=1)
    with Pool("doublers", url=redis_url) as pool, pool.lease(timeout=5) as lease:
        assert compute(lease, 21) == 42
        worker_id = lease.worker_id
    rq = classes("doublers")
    (key,) = r.scan_iter(match=rq.keys.rq_prefix + ":job:*")
    job = rq.job.fetch(key.decode().rsplit(":", 1)[1], connection=r, serializer=JSONSerializer)
    assert job.get_status() == "finished" and job.return_value() == 42
    assert job.meta[TOKEN_META] == str(lease.token) and len(job.results()) == 1
    env = dict(os.environ, **environment("doublers"))
    info = subprocess.run([str(Path(sys.executable).parent / "rq"), "info", "-u", redis_url],
                          env=env, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert info.returncode == 0, info.stderr
    assert f"{worker_id} " in info.stdout and "1 finished" in info.stdout
