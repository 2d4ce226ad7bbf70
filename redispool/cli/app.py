"""The ``redispool`` command group: one shared connection, one place for errors.

Every command gets the :class:`Connection` made from ``--url`` (or
``REDISPOOL_URL``); the Redis client is created on first use and closed when
the command ends. Errors leave through :meth:`RedispoolGroup.invoke`, which
turns them into one line on stderr and an exit code (see ``EXIT_CODES``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import click
import redis

from ..connect import client_from_url, close_client, redact_url
from ..discovery import find_pools
from ..errors import LeaseLost, PoolCorrupted, PoolError, PoolFull, PoolUnavailable
from ..pool import Pool
from . import options

__all__ = [
    "DEFAULT_URL",
    "EXIT_CODES",
    "CliError",
    "Connection",
    "RedispoolGroup",
    "cli",
    "emit_json",
    "list_pools",
]

DEFAULT_URL = "redis://localhost:6379/0"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_REFUSED: "pool full, checkout timed out, lease or worker lost, job failed",
    EXIT_USAGE: "usage error, bad input, unknown pool or worker, Redis unreachable",
}
#: Seconds to wait for a TCP connection before calling Redis unreachable.
CONNECT_TIMEOUT = 3.0


class CliError(click.ClickException):
    """A failure the user is told about in one line, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    try:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:  # several hosts (redis+sentinel://): hide all before the '@'
        return redact_url(url)
    return urlunsplit(parts._replace(netloc=netloc))


class Connection:
    """The Redis URL of this invocation; the client is made once, on first use."""

    def __init__(self, url: str, *, min_replicas: int = 0, replica_timeout: float = 1.0) -> None:
        self.url = url
        self.min_replicas, self.replica_timeout = min_replicas, replica_timeout
        self._client: redis.Redis | None = None
        self._pools: dict[str, Pool] = {}

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            try:
                self._client = client_from_url(self.url, connect_timeout=CONNECT_TIMEOUT)
            except ValueError as exc:
                raise CliError(f"bad Redis URL {redact(self.url)!r}: {exc}") from exc
        return self._client

    def pool(self, name: str, *, must_exist: bool = True) -> Pool:
        """The Pool ``name`` on this connection; exit 2 if it must exist and does not."""
        pool = self._pools.get(name)
        if pool is None:
            pool = Pool(
                name, redis=self.client, min_replicas=self.min_replicas,
                replica_timeout=self.replica_timeout,
            )  # fmt: skip
            if must_exist and not self.client.exists(pool.keys.config, pool.keys.workers):
                raise CliError(
                    f"no pool named {name!r} at {redact(self.url)} "
                    "('redispool pools' lists them, 'redispool init' creates one)"
                )
            self._pools[name] = pool
        return pool

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        if self._client is not None:
            close_client(self._client)
            self._client = None


def list_pools(client: redis.Redis) -> list[str]:
    """Every pool in this database that has workers or settings, sorted."""
    return find_pools(client, ("workers", "config"))


def emit_json(value: Any) -> None:
    """Print ``value`` as one line of JSON."""
    click.echo(json.dumps(value, separators=(", ", ": ")))


def _translate(exc: BaseException) -> CliError | None:
    """The CliError for a domain or connection failure; None for anything else."""
    if isinstance(exc, (PoolFull, LeaseLost)):
        return CliError(str(exc), EXIT_REFUSED)
    if isinstance(exc, (PoolUnavailable, PoolCorrupted)):
        return CliError(str(exc), EXIT_USAGE)
    if isinstance(exc, PoolError):
        return CliError(str(exc), EXIT_REFUSED)
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return CliError(f"Redis unreachable: {exc}", EXIT_USAGE)
    if isinstance(exc, redis.RedisError):
        return CliError(f"Redis error: {exc}", EXIT_USAGE)
    if isinstance(exc, ValueError):
        return CliError(str(exc), EXIT_USAGE)
    return None


class RedispoolGroup(click.Group):
    """A click group whose errors are one line on stderr with a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            error = _translate(exc)
            if error is None:
                raise
            url = ctx.obj.url if isinstance(ctx.obj, Connection) else None
            if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)) and url:
                error = CliError(f"Redis unreachable at {redact(url)}: {exc}", EXIT_USAGE)
            raise error from exc

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            hint = f" (try '{exc.ctx.command_path} --help')" if exc.ctx else ""
            _fail(f"{exc.format_message()}{hint}", EXIT_USAGE)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            _fail("interrupted", 130)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def _fail(message: str, code: int) -> NoReturn:
    one_line = " ".join(message.split())
    click.echo(f"redispool: error: {one_line}", err=True)
    sys.exit(code)


@click.group(cls=RedispoolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    "-u",
    envvar="REDISPOOL_URL",
    default=DEFAULT_URL,
    show_default=True,
    metavar="URL",
    callback=options.url,
    help="Redis to use (also REDISPOOL_URL): redis://, rediss://, unix:// or "
    "redis+sentinel://[user:password@]h1:p1,h2:p2/<service>/<db>.",
)
@options.replica_options
@click.pass_context
def cli(ctx: click.Context, url: str, min_replicas: int, replica_timeout: float) -> None:
    """Inspect and steer redispool pools shared through Redis.

    \b
    Exit codes:
      0  done
      1  pool full, checkout timed out, lease or worker lost, job failed
      2  usage error, bad input, unknown pool or worker, Redis unreachable
    Errors are one line on stderr.
    """
    conn = Connection(url, min_replicas=min_replicas, replica_timeout=replica_timeout)
    ctx.obj = conn
    ctx.call_on_close(conn.close)
