"""Installing the server-side library: an operator's step that also removes old versions.

Two versions of the library on one server: ``redispool install`` loads this
version's and removes the other, while clients of this version go on working
without noticing; libraries of other names are never touched.
"""

from __future__ import annotations

import json
import threading

import redis
from click.testing import CliRunner, Result
from helpers import wait_for

from redispool import Pool, install
from redispool.acl import acl_setuser
from redispool.cli import cli
from redispool.scripts import installed_versions, library

OLD = "redispool_0123456789ab"
OTHER_APP = "#!lua name=otherapp\nredis.register_function('otherapp_hi', function() return 1 end)\n"


def invoke(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", url, *args])


def old_version() -> str:
    """A previous version of the library: same operations, another name."""
    return library().source.replace(library().name, OLD)


def test_install_removes_the_old_version_while_clients_of_this_one_never_notice(
    r: redis.Redis, redis_url: str
) -> None:
    r.function_load(old_version(), replace=True)
    r.function_load(OTHER_APP, replace=True)
    install(r, remove_old=False)
    assert installed_versions(r) == sorted([OLD, library().name])
    r.execute_command(*acl_setuser("app", "pw", ["jobs"]).split())  # may not load code
    url = redis_url.replace("redis://", "redis://app:pw@")
    stop, cycles, failures = threading.Event(), [0], []

    def client() -> None:
        try:
            with Pool("jobs", url=url, lease_ttl=5) as pool:
                pool.add_worker("w1")
                while not stop.is_set():
                    assert pool.checkout(block=False, auto_renew=False).checkin()
                    cycles[0] += 1
        except BaseException as exc:  # the test reports it
            failures.append(exc)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        wait_for(lambda: cycles[0] > 0 or failures, timeout=5, message="the client to cycle")
        for _ in range(20):
            result = invoke(redis_url, "install")
            assert result.exit_code == 0, result.output
        assert result.output == f"installed {library().name}\n"
        after = cycles[0]
        wait_for(lambda: cycles[0] > after + 10 or failures, timeout=5, message="more cycles")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert failures == [], failures
    assert installed_versions(r) == [library().name]
    assert len(r.function_list(library="otherapp")) == 1, "another app's library was touched"


def test_install_says_what_it_removed_and_keeps_old_versions_when_asked(
    r: redis.Redis, redis_url: str
) -> None:
    r.function_flush()
    r.function_load(old_version())
    kept = invoke(redis_url, "install", "--keep-old", "--json")
    assert json.loads(kept.output) == {"library": library().name, "removed": []}
    assert installed_versions(r) == sorted([OLD, library().name])
    removed = invoke(redis_url, "install")
    assert removed.output == f"installed {library().name}\nremoved {OLD}\n"
    assert installed_versions(r) == [library().name]


def test_install_as_a_pool_user_exits_2_with_a_clear_error(r: redis.Redis, redis_url: str) -> None:
    r.function_flush()
    r.execute_command(*acl_setuser("app", "pw", ["jobs"]).split())
    result = CliRunner().invoke(
        cli, ["--url", redis_url.replace("redis://", "redis://app:pw@"), "install"]
    )
    assert result.exit_code == 2
    assert "may not load or delete server-side code" in result.output
    assert installed_versions(r) == []
