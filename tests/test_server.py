"""The throwaway server that the other tests run against: start, stop, restart, crash."""

from __future__ import annotations

import os
import socket

import pytest
import redis
from helpers import StartServer, free_port, pid_alive, wait_for

from redispool.server import EmbeddedServer, ServerError, server_binaries


def test_server_answers_ping_and_reports_its_kind(server: EmbeddedServer) -> None:
    client = redis.Redis.from_url(server.url)
    try:
        assert client.ping()
    finally:
        client.close()
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert server.version.startswith(f"{server.kind} ")
    assert server.kind in server_binaries()


def test_expired_key_events_are_on(r: redis.Redis) -> None:
    flags = r.config_get("notify-keyspace-events")["notify-keyspace-events"]
    assert "E" in flags
    assert "x" in flags or "A" in flags


def test_stop_leaves_no_process_and_no_directory(fresh_server: StartServer) -> None:
    srv = fresh_server()
    pid, data_dir = srv.pid, srv._dir
    assert pid_alive(pid)
    srv.stop()
    wait_for(lambda: not pid_alive(pid), message=f"pid {pid} to exit")
    assert not os.path.exists(f"/proc/{pid}")
    assert data_dir is not None and not data_dir.exists()
    assert not srv.running


def test_restart_with_appendonly_keeps_keys_on_the_same_port(
    fresh_server: StartServer,
) -> None:
    srv = fresh_server(appendonly=True)
    port, old_pid = srv.port, srv.pid
    with redis.Redis.from_url(srv.url) as client:
        client.set("kept", "yes")
    srv.restart()
    assert srv.port == port
    assert srv.pid != old_pid and not pid_alive(old_pid)
    with redis.Redis.from_url(srv.url) as client:
        assert client.get("kept") == b"yes"


def test_restart_without_appendonly_loses_keys(fresh_server: StartServer) -> None:
    srv = fresh_server()
    with redis.Redis.from_url(srv.url) as client:
        client.set("lost", "yes")
    srv.restart()
    with redis.Redis.from_url(srv.url) as client:
        assert client.get("lost") is None


def test_killed_server_is_gone_and_restarts_on_its_port(fresh_server: StartServer) -> None:
    srv = fresh_server()
    pid, port = srv.pid, srv.port
    srv.kill()
    assert not pid_alive(pid)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    srv.restart()
    assert srv.port == port
    with redis.Redis.from_url(srv.url) as client:
        assert client.ping()


def test_a_server_that_cannot_start_raises_with_its_log(server_kind: str) -> None:
    srv = EmbeddedServer(server_kind, extra_args=["--no-such-directive", "1"])
    with pytest.raises(ServerError, match="no-such-directive"):
        srv.start()
    assert not srv.running


def test_a_taken_port_is_reported_not_silently_shared(server: EmbeddedServer) -> None:
    srv = EmbeddedServer(server.kind, port=server.port)
    with pytest.raises(ServerError, match="in use"):
        srv.start()
    assert not srv.running


def test_unknown_kind_or_port_is_refused_before_starting() -> None:
    with pytest.raises(ValueError, match="kind"):
        EmbeddedServer("memcached")
    with pytest.raises(ValueError, match="port"):
        EmbeddedServer(port=70000)
    assert 0 < free_port() < 65536
