"""``redispool web`` (the page, an optional extra) and ``redispool events``.

* ``events POOL --json``: one object per line, ``{"id", "at", "kind",
  "worker", "detail", "count", "by"}`` (``at``: server ms).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re

import click

from .. import events as event_log
from .app import CliError, Connection, cli, emit_json
from .operate import sigterm_interrupts
from .options import pool_name, pool_names

__all__ = ["events", "web"]

TOKEN_ENV = "REDISPOOL_WEB_TOKEN"
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _line(event: event_log.Event) -> str:
    at = datetime.datetime.fromtimestamp(event.at / 1000).strftime("%Y-%m-%d %H:%M:%S")
    parts = [at, event.kind, event.worker or "-", event.detail, f"({event.by})"]
    return _UNPRINTABLE.sub("?", "  ".join(parts))  # no terminal escapes from the stream


@cli.command()
@click.argument("pool", callback=pool_name)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option("--count", "-n", type=click.IntRange(1, event_log.MAX_EVENTS), default=20,
              show_default=True, help="How many of the newest events to print first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (shape above).")
@click.pass_obj
def events(conn: Connection, pool: str, follow: bool, count: int, as_json: bool) -> None:
    """Print POOL's event log: reclaims, burials, refused and stopped jobs, drains, failovers."""
    handle = conn.pool(pool)
    last = "$"
    for event in event_log.read(handle.client, handle.name, count):
        emit_json(event.to_json()) if as_json else click.echo(_line(event))
        last = event.id
    if not follow:
        return
    with sigterm_interrupts(), contextlib.suppress(KeyboardInterrupt):
        for event in event_log.follow(handle.client, handle.name, after=last):
            emit_json(event.to_json()) if as_json else click.echo(_line(event))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (loopback unless told otherwise).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--pool", "pools", multiple=True, callback=pool_names,
              help="Show only this pool (repeat); default every pool.")
@click.option("--allow-actions", is_flag=True,
              help=f"Allow drain and reap from the page, with the operator token in ${TOKEN_ENV}.")
@click.pass_obj
def web(
    conn: Connection, host: str, port: int, pools: tuple[str, ...], allow_actions: bool
) -> None:
    """Serve a live page of every pool, with history and events (needs redispool[web])."""
    try:
        from ..web import serve
    except ImportError as exc:
        hint = "the web view needs its extra: pip install 'redispool[web]'"
        raise CliError(f"{hint} ({exc})") from exc
    token = os.environ.get(TOKEN_ENV) or None
    if allow_actions and (token is None or len(token) < 16):
        raise CliError(f"--allow-actions needs an operator token of 16 or more characters in "
                       f"${TOKEN_ENV}")
    conn.client.ping()  # unreachable Redis: exit 2 now, not on the first page
    click.echo(f"serving the web view on http://{host}:{port}/ "
               f"({'actions allowed' if allow_actions else 'read-only'})", err=True)
    with sigterm_interrupts(), contextlib.suppress(KeyboardInterrupt):
        serve(conn.client, host=host, port=port, pools=pools or None,
              allow_actions=allow_actions, token=token)
