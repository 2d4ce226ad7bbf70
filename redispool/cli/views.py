"""Read-only commands: pools, status, check, workers, leases, watch.

Each has ``--json``; the shapes below are stable (new keys may be added,
none removed or renamed):

* ``pools --json``: a list of ``{"pool", "size", "idle", "busy", "waiting"}``
  (on a Redis Cluster also ``"master"``: ``host:port`` of the master holding it).
* ``status --json``: one flat object ``{"pool", "size", "idle", "busy",
  "waiting", "draining", "expired", "lease_ttl", "strategy", "problems"}``
  plus any number the pool reports beyond those; seconds are floats;
  ``problems`` counts the keys holding junk (then exit 2); on a Redis
  Cluster also ``"master"``.
* ``check --json``: a list of ``{"key", "problem"}``, empty for a sound pool.
* ``workers --json``: a list of ``{"id", "state", "host", "pid", "token",
  "draining", "jobs"}``; ``null`` where unknown.
* ``leases --json``: a list of ``{"worker", "token", "holder", "host",
  "pid", "ttl_left"}``.
* ``watch --json``: one ``status`` object per line, with ``"workers"``.
"""

from __future__ import annotations

import dataclasses
import sys
import time as mod_time
from typing import Any

import click

from .. import tables
from ..check import Problem, check_pool
from ..errors import PoolCorrupted
from ..pool import Pool
from ..slot_client import master_name
from ..status import LeaseInfo, WorkerInfo
from ..wire import number
from .app import EXIT_USAGE, CliError, Connection, cli, emit_json, list_pools
from .options import Seconds, pool_name

__all__ = ["check", "leases", "pools", "status", "watch", "workers"]

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (shape above).")
pool_argument = click.argument("pool", callback=pool_name)


def status_record(pool: Pool) -> dict[str, Any]:
    """The ``status --json`` object of ``pool``."""
    record: dict[str, Any] = {"pool": pool.name}
    record.update(dataclasses.asdict(pool.status()))
    settings = pool.settings()
    record["lease_ttl"] = settings.lease_ttl
    record["strategy"] = settings.strategy
    if pool.on_cluster:
        record["master"] = master_name(pool.client)
    return record


def worker_record(info: WorkerInfo) -> dict[str, Any]:
    """One element of ``workers --json``."""
    record = dataclasses.asdict(info)
    record.setdefault("jobs", None)
    return record


def _split_holder(holder: str) -> tuple[str | None, int | None]:
    host, sep, pid = holder.rpartition(":")
    if not sep:
        return holder or None, None
    return host or None, number(pid)


def lease_record(info: LeaseInfo) -> dict[str, Any]:
    """One element of ``leases --json``."""
    host, pid = _split_holder(info.holder)
    return {
        "worker": info.worker_id,
        "token": info.token,
        "holder": info.holder,
        "host": host,
        "pid": pid,
        "ttl_left": info.ttl_left,
    }


def workers_table(rows: list[dict[str, Any]]) -> str:
    headers = ["WORKER", "STATE", "HOST", "PID", "TOKEN", "JOBS", "DRAINING"]
    keys = ["id", "state", "host", "pid", "token", "jobs", "draining"]
    return tables.render(headers, [[row[k] for k in keys] for row in rows])


def status_table(record: dict[str, Any]) -> str:
    record = {k: v for k, v in record.items() if k != "problems"}  # listed below the table
    numbers = [k for k, v in record.items() if isinstance(v, int) and not isinstance(v, bool)]
    headers = ["POOL", *(k.upper() for k in numbers), "LEASE_TTL", "STRATEGY"]
    row = [record["pool"], *(record[k] for k in numbers), tables.seconds(record["lease_ttl"])]
    row.append(record["strategy"])
    if "master" in record:
        headers.append("MASTER")
        row.append(record["master"])
    return tables.render(headers, [row])


@cli.command()
@json_option
@click.pass_obj
def pools(conn: Connection, as_json: bool) -> None:
    """Every pool in this Redis database with its numbers.

    \b
    --json: [{"pool", "size", "idle", "busy", "waiting"}, ...]
    """
    records = []
    for name in list_pools(conn.client):
        handle = conn.pool(name, must_exist=False)
        numbers = handle.status()
        records.append(
            {"pool": name, "size": numbers.size, "idle": numbers.idle,
             "busy": numbers.busy, "waiting": numbers.waiting}
        )
        if handle.on_cluster:
            records[-1]["master"] = master_name(handle.client)
    if as_json:
        emit_json(records)
        return
    headers = ["POOL", "SIZE", "IDLE", "BUSY", "WAITING"]
    keys = ["pool", "size", "idle", "busy", "waiting"]
    if records and "master" in records[0]:
        headers.append("MASTER")
        keys.append("master")
    click.echo(tables.render(headers, [[r[k] for k in keys] for r in records]))


@cli.command()
@pool_argument
@json_option
@click.pass_obj
def status(conn: Connection, pool: str, as_json: bool) -> None:
    """The numbers of POOL: size, idle, busy, waiting, draining, expired.

    Also checks every key of the pool (changing nothing) and lists what holds
    data redispool never writes; then it exits 2.

    \b
    --json: one flat object {"pool", "size", "idle", "busy", "waiting",
            "draining", "expired", "lease_ttl", "strategy", ..., "problems"}
            ("problems": how many keys hold junk; `check` lists them)
    """
    handle = conn.pool(pool)
    problems = check_pool(handle)
    try:
        record = status_record(handle)
    except PoolCorrupted:
        if not problems:
            raise
        record = {"pool": handle.name}  # the numbers cannot be read: the problems say why
    record["problems"] = len(problems)
    if as_json:
        emit_json(record)
    else:
        if len(record) > 2:
            click.echo(status_table(record))
        for problem in problems:
            click.echo(f"problem: {problem}")
    _fail_if_corrupted(handle.name, problems)


def _fail_if_corrupted(pool: str, problems: list[Problem]) -> None:
    if problems:
        raise CliError(
            f"pool {pool!r} is corrupted: {len(problems)} problems "
            f"(redispool check {pool} lists them)",
            EXIT_USAGE,
        )


@cli.command()
@pool_argument
@json_option
@click.pass_obj
def check(conn: Connection, pool: str, as_json: bool) -> None:
    """Check every key of POOL, changing nothing; exit 2 if any holds junk.

    \b
    --json: [{"key", "problem"}, ...] (empty when the pool is sound)
    """
    handle = conn.pool(pool)
    problems = check_pool(handle)
    if as_json:
        emit_json([{"key": p.key, "problem": p.problem} for p in problems])
    else:
        click.echo("\n".join(str(p) for p in problems) or f"pool {handle.name!r}: no problems")
    _fail_if_corrupted(handle.name, problems)


@cli.command()
@pool_argument
@json_option
@click.pass_obj
def workers(conn: Connection, pool: str, as_json: bool) -> None:
    """Each worker of POOL with its state, host, pid, lease token and jobs run.

    \b
    --json: [{"id", "state", "host", "pid", "token", "draining", "jobs"}, ...]
            (null where unknown)
    """
    rows = [worker_record(w) for w in conn.pool(pool).workers()]
    if as_json:
        emit_json(rows)
    else:
        click.echo(workers_table(rows))


@cli.command()
@pool_argument
@json_option
@click.pass_obj
def leases(conn: Connection, pool: str, as_json: bool) -> None:
    """Each live lease of POOL: worker, token, holder (host:pid) and time left.

    \b
    --json: [{"worker", "token", "holder", "host", "pid", "ttl_left"}, ...]
    """
    rows = [lease_record(info) for info in conn.pool(pool).leases()]
    if as_json:
        emit_json(rows)
        return
    headers = ["WORKER", "TOKEN", "HOST", "PID", "TTL_LEFT"]
    table = [[r["worker"], r["token"], r["host"], r["pid"], tables.seconds(r["ttl_left"])]
             for r in rows]
    click.echo(tables.render(headers, table))


@cli.command()
@pool_argument
@click.option("--interval", "-n", type=Seconds(0.1, 3600), default=1.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--count", "-c", type=click.IntRange(min=1), default=None,
              help="Stop after this many refreshes (default: until Ctrl-C).")
@json_option
@click.pass_obj
def watch(conn: Connection, pool: str, interval: float, count: int | None, as_json: bool) -> None:
    """A live view of POOL, refreshed until Ctrl-C (what top is to processes).

    \b
    --json: one status object per line, with "workers" (as workers --json)
    """
    handle = conn.pool(pool)
    clear = not as_json and sys.stdout.isatty()
    shown = 0
    try:
        while count is None or shown < count:
            started = mod_time.monotonic()
            record = status_record(handle)
            rows = [worker_record(w) for w in handle.workers()]
            if as_json:
                emit_json({**record, "workers": rows})
            else:
                if clear:
                    click.clear()
                stamp = mod_time.strftime("%H:%M:%S")
                click.echo(f"{stamp}  pool {pool}  (every {interval:g}s, Ctrl-C to stop)")
                click.echo(status_table(record) + "\n\n" + workers_table(rows) + "\n")
            shown += 1
            if count is None or shown < count:
                mod_time.sleep(max(0.0, interval - (mod_time.monotonic() - started)))
    except KeyboardInterrupt:
        return
