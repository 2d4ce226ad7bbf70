"""Option types and checks shared by ``redispool`` and ``worker_main.py``.

Each turns bad input into a click error (exit 2) before anything starts:
no connection is made, no process started.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import click

from ..connect import validate_url
from ..jobs import function_name
from ..keys import validate_pool_name, validate_worker_id, validate_worker_id_prefix
from ..replicas import DEFAULT_REPLICA_TIMEOUT, MAX_REPLICA_TIMEOUT, MAX_REPLICAS

__all__ = [
    "Seconds", "checked", "function", "pool_name", "pool_names", "replica_options", "url",
    "worker_id", "worker_id_prefix",
]  # fmt: skip


class Seconds(click.FloatRange):
    """A finite number of seconds within a range (click's FloatRange lets ``nan`` by)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return number


def checked(check: Callable[[Any], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that runs ``check`` on the value (None passes) and turns its
    ``ValueError`` into a click error."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


url = checked(validate_url)
pool_name = checked(validate_pool_name)
worker_id = checked(validate_worker_id)
worker_id_prefix = checked(validate_worker_id_prefix)
function = checked(function_name)


def pool_names(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    """A click callback for several pool names."""
    return tuple(pool_name(ctx, param, name) for name in value)


def replica_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--min-replicas`` and ``--replica-timeout`` (see :mod:`redispool.replicas`)."""
    timeout = click.option(
        "--replica-timeout",
        envvar="REDISPOOL_REPLICA_TIMEOUT",
        default=DEFAULT_REPLICA_TIMEOUT,
        show_default=True,
        type=Seconds(0.001, MAX_REPLICA_TIMEOUT),
        metavar="S",
        help="Seconds to wait for the replicas (--min-replicas).",
    )
    replicas = click.option(
        "--min-replicas",
        envvar="REDISPOOL_MIN_REPLICAS",
        default=0,
        show_default=True,
        type=click.IntRange(0, MAX_REPLICAS),
        help="Checkout, renew and checkin wait until this many replicas have their write.",
    )
    return replicas(timeout(command))
