"""The one place that makes a Redis client from a URL.

Every part of redispool that is given a URL (a Pool, worker processes, their
supervisor and Reaper, the CLI, the metrics server) makes its client here, with
the same timeouts. Accepted URLs:

- ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS) and
  ``unix://[[user]:password@]/path/to/socket[?db=N]``, as redis-py reads them;
- ``redis+sentinel://[[user]:password@]host1:port1,host2:port2/<service>[/<db>]``:
  a master found through Redis Sentinel. redis-py has no URL for it, so it is
  read here into ``Sentinel(...).master_for(service, db=db)``. A port left out
  is Sentinel's 26379, the db 0. The user and password authenticate to the
  master (and its replicas), never to the sentinels: sentinels usually run
  without a password, or with one of their own, given as the query parameters
  ``sentinel_username`` and ``sentinel_password``. Every connection asks the
  sentinels where the master is, so a client follows a failover by itself.
- ``redis+cluster://[[user]:password@]host1:port1[,host2:port2...][/0]``: a Redis
  Cluster, any of its nodes given (port default 6379; a cluster has only db 0),
  read into a ``RedisCluster`` that learns the other nodes and follows the
  topology (see :mod:`redispool.cluster`).
- ``rediss+cluster://...``: the same over TLS. Its query parameters are the
  TLS options redis-py's ``rediss://`` takes: ``ssl_ca_certs``,
  ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``
  (``none``/``optional``/``required``) and ``ssl_check_hostname``
  (``true``/``false``).

A URL that is none of these raises :class:`ValueError` before anything
connects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis import Redis
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.exceptions import RedisClusterException
from redis.sentinel import Sentinel, SentinelConnectionPool

__all__ = [
    "CLUSTER_SCHEMES",
    "CONNECT_TIMEOUT",
    "SCHEMES",
    "SOCKET_TIMEOUT",
    "Client",
    "ClusterURL",
    "SentinelURL",
    "client_from_url",
    "close_client",
    "redact_url",
    "validate_url",
]

#: Seconds to wait for a TCP (or TLS, or Unix socket) connection.
CONNECT_TIMEOUT = 5.0
#: Seconds to wait for any reply; blocking reads ask for more themselves.
SOCKET_TIMEOUT = 10.0
#: Seconds a sentinel may take to answer where the master is.
SENTINEL_TIMEOUT = 2.0
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
TLS_CLUSTER_SCHEME = "rediss+cluster"
CLUSTER_SCHEMES = (CLUSTER_SCHEME, TLS_CLUSTER_SCHEME)
SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME, *CLUSTER_SCHEMES)
#: The TLS options of a ``rediss+cluster://`` URL: name -> the values it may take
#: (None: any path).
TLS_PARAMS: dict[str, tuple[str, ...] | None] = {
    "ssl_ca_certs": None, "ssl_certfile": None, "ssl_keyfile": None,
    "ssl_cert_reqs": ("none", "optional", "required"), "ssl_check_hostname": ("true", "false"),
}  # fmt: skip
CLUSTER_PORT = 6379

#: What :func:`client_from_url` makes: one server's client, or a cluster's.
Client = Redis | RedisCluster
SENTINEL_PORT = 26379
SENTINEL_PARAMS = frozenset({"sentinel_username", "sentinel_password"})

_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+")
_EXAMPLES = (
    "redis://host:6379/0, rediss://..., unix:///path/to/socket "
    "or redis+sentinel://[user:password@]host:26379,host2:26379/<service>/<db> "
    "or redis+cluster://[user:password@]host:6379,host2:6379 (rediss+cluster:// for TLS)"
)


@dataclass(frozen=True)
class SentinelURL:
    """A ``redis+sentinel://`` URL, read."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    def sentinel_kwargs(self, socket_timeout: float, connect_timeout: float) -> dict[str, Any]:
        """The options of the connections to the sentinels themselves: quick
        timeouts (a sentinel that does not answer soon is skipped) and their
        own credentials, if the URL gives them."""
        ask = min(SENTINEL_TIMEOUT, socket_timeout, connect_timeout)
        options: dict[str, Any] = {"socket_timeout": ask, "socket_connect_timeout": ask}
        if self.sentinel_password is not None:
            options["username"] = self.sentinel_username
            options["password"] = self.sentinel_password
        return options

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """Read ``url``; :class:`ValueError` says what is wrong with it."""
        rest = url[len(SENTINEL_SCHEME) + 3 :]
        rest, _, query = rest.partition("?")
        netloc, _, path = rest.partition("/")
        userinfo, at, hosts = netloc.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username, password = unquote(user) or None, unquote(secret) if colon else None
        service, db = _service_and_db(url, path)
        params = _sentinel_params(url, query)
        return cls(
            _sentinel_hosts(url, hosts), service, db, username, password,
            params.get("sentinel_username"), params.get("sentinel_password"),
        )  # fmt: skip


@dataclass(frozen=True)
class ClusterURL:
    """A ``redis+cluster://`` or ``rediss+cluster://`` URL, read."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False
    #: The TLS options given, as ``RedisCluster`` keywords.
    tls_options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, url: str) -> ClusterURL:
        """Read ``url``; :class:`ValueError` says what is wrong with it."""
        scheme, _, rest = url.partition("://")
        tls = scheme.lower() == TLS_CLUSTER_SCHEME
        rest, _, query = rest.partition("?")
        if query and not tls:
            raise ValueError(
                f"{redact_url(url)!r}: a redis+cluster URL takes no parameters "
                "(TLS options go on a rediss+cluster:// URL)"
            )
        options = _tls_options(url, query)
        netloc, _, path = rest.partition("/")
        if path.strip("/") not in ("", "0"):
            raise ValueError(f"{redact_url(url)!r}: a cluster has only database 0")
        userinfo, at, hosts = netloc.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username, password = unquote(user) or None, unquote(secret) if colon else None
        nodes = _hosts(url, hosts, CLUSTER_PORT, "cluster node")
        return cls(nodes, username, password, tls, options)


def _tls_options(url: str, query: str) -> tuple[tuple[str, Any], ...]:
    """The TLS options of a ``rediss+cluster://`` URL's query, checked."""
    options: list[tuple[str, Any]] = []
    for name, values in parse_qs(query, keep_blank_values=True).items():
        if name not in TLS_PARAMS:
            known = ", ".join(TLS_PARAMS)
            raise ValueError(f"{redact_url(url)!r}: unknown parameter {name!r} (known: {known})")
        allowed = TLS_PARAMS[name]
        if len(values) != 1 or not values[0] or (allowed and values[0].lower() not in allowed):
            want = "one of " + "/".join(allowed) if allowed else "one path"
            raise ValueError(f"{redact_url(url)!r}: {name} wants {want}, got {values!r}")
        value: Any = values[0]
        if name == "ssl_check_hostname":
            value = value.lower() == "true"
        elif allowed:
            value = value.lower()
        options.append((name, value))
    return tuple(options)


def _sentinel_hosts(url: str, hosts: str) -> tuple[tuple[str, int], ...]:
    return _hosts(url, hosts, SENTINEL_PORT, "sentinel")


def _hosts(url: str, hosts: str, default_port: int, what: str) -> tuple[tuple[str, int], ...]:
    found = []
    for item in hosts.split(","):
        host, port = item, str(default_port)
        if ":" in item and not item.endswith("]"):
            host, _, port = item.rpartition(":")
        if not _HOST.fullmatch(host) or not port.isdigit() or not 0 < int(port) < 65536:
            where = redact_url(url)
            raise ValueError(f"bad {what} address {item!r} in {where!r}: want host:port")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def _service_and_db(url: str, path: str) -> tuple[str, int]:
    parts = path.rstrip("/").split("/") if path else []
    if not 1 <= len(parts) <= 2 or not _SERVICE.fullmatch(parts[0]):
        raise ValueError(f"{redact_url(url)!r} must name the Sentinel service: .../<service>/<db>")
    db = parts[1] if len(parts) == 2 else "0"
    if not db.isdigit() or int(db) > 1_000_000:
        raise ValueError(f"bad database number {db!r} in {redact_url(url)!r}")
    return parts[0], int(db)


def _sentinel_params(url: str, query: str) -> dict[str, str]:
    params = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    unknown = set(params) - SENTINEL_PARAMS
    if unknown:
        raise ValueError(
            f"unknown parameter {sorted(unknown)[0]!r} in {redact_url(url)!r} "
            f"(known: {', '.join(sorted(SENTINEL_PARAMS))})"
        )
    return {key: values[-1] for key, values in params.items()}


def redact_url(url: str) -> str:
    """``url`` with anything between ``://`` and ``@`` hidden."""
    scheme, sep, rest = url.partition("://")
    _, at, hosts = rest.rpartition("@")
    return f"{scheme}{sep}***@{hosts}" if at else url


def validate_url(url: object) -> str:
    """``url`` if it is one redispool can connect to; else :class:`ValueError`
    (the message never shows the password)."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"url must look like {_EXAMPLES}, got {url!r}")
    scheme = url.partition("://")[0].lower()
    try:
        if scheme not in SCHEMES:
            raise ValueError(f"unknown URL scheme {scheme!r}: want one of {', '.join(SCHEMES)}")
        if scheme == SENTINEL_SCHEME:
            SentinelURL.parse(url)
        elif scheme in CLUSTER_SCHEMES:
            ClusterURL.parse(url)
        else:
            _check_plain(url, scheme)
    except ValueError as exc:
        raise ValueError(f"bad Redis URL {redact_url(url)!r}: {exc}") from None
    return url


def _check_plain(url: str, scheme: str) -> None:
    """Raise ValueError unless redis-py can read ``url`` (redis://, rediss://, unix://)."""
    parse_url(url)  # type: ignore[no-untyped-call]
    if scheme == "unix":
        return
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError("the URL names no host")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"database {db!r} is not a number")


def client_from_url(
    url: str,
    *,
    socket_timeout: float = SOCKET_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> Client:
    """A client of the Redis that ``url`` names (see the module's doc for URLs).

    Nothing connects yet (but a ``RedisCluster`` asks a node for the topology
    at once: :class:`redis.RedisError` if none answers). Close it with
    :func:`close_client`, which also closes a Sentinel client's sentinels.
    """
    validate_url(url)
    timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout}
    if url.partition("://")[0].lower() in CLUSTER_SCHEMES:
        cluster = ClusterURL.parse(url)
        nodes = [ClusterNode(h, p) for h, p in cluster.nodes]  # type: ignore[no-untyped-call]
        try:
            return RedisCluster(
                startup_nodes=nodes, username=cluster.username, password=cluster.password,
                socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
                ssl=cluster.tls, **dict(cluster.tls_options),
            )  # fmt: skip
        except RedisClusterException as exc:  # not a RedisError: say it as one
            raise redis.ConnectionError(
                f"no node of the cluster at {redact_url(url)} answered as a cluster: {exc}"
            ) from exc
    if not url.lower().startswith(SENTINEL_SCHEME + "://"):
        try:
            return Redis.from_url(url, **timeouts)
        except ValueError as exc:
            raise ValueError(f"bad Redis URL {redact_url(url)!r}: {exc}") from None
    parsed = SentinelURL.parse(url)
    sentinel_kwargs = parsed.sentinel_kwargs(socket_timeout, connect_timeout)
    sentinel = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    client: Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        parsed.service, db=parsed.db, username=parsed.username, password=parsed.password,
        **timeouts,
    )  # fmt: skip
    return client


def close_client(client: Client) -> None:
    """Close ``client``, and the sentinels' clients of a Sentinel-managed one."""
    client.close()
    if isinstance(client, RedisCluster):
        return
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            sentinel.close()
