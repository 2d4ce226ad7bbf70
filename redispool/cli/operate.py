"""Commands that change a pool or the server: install, init, checkout, checkin, drain, reaper."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import signal
import threading
import time as mod_time
from collections.abc import Iterator
from typing import Any

import click
from redis.exceptions import NoPermissionError

from ..defaults import STRATEGIES
from ..keys import validate_pool_name, validate_worker_id
from ..lease import Lease
from ..reaper import Reaper
from ..scripts import install as install_library
from .app import EXIT_REFUSED, CliError, Connection, cli, emit_json
from .options import Seconds, pool_name, pool_names, worker_id

__all__ = [
    "checkin", "checkout", "double", "drain", "init", "install", "reaper", "sigterm_interrupts",
]  # fmt: skip

seconds_type = Seconds(min=0)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM acts like Ctrl-C (KeyboardInterrupt) on the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def setup_logging() -> None:
    """Log lines of the redispool loggers to stderr, for the long-running commands."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )


@cli.command()
@click.option("--keep-old", is_flag=True,
              help="Keep the other versions (a rolling upgrade: run again without it later).")
@click.option("--json", "as_json", is_flag=True, help='Print {"library", "removed"}.')
@click.pass_obj
def install(conn: Connection, keep_old: bool, as_json: bool) -> None:
    """Load this version's server-side library; remove the versions no client uses.

    An operator's step (pool users may not load code): run it once per
    server before clients of a new version start. Every other redispool_<hash>
    library is removed unless --keep-old.
    """
    try:
        done = install_library(conn.client, remove_old=not keep_old)
    except NoPermissionError as exc:
        raise CliError(
            f"install: this user may not load or delete server-side code ({exc}); "
            "run it as an operator's user"
        ) from exc
    if as_json:
        emit_json({"library": done.library, "removed": list(done.removed)})
        return
    click.echo(f"installed {done.library}")
    for name in done.removed:
        click.echo(f"removed {name}")


@cli.command()
@click.argument("pool", callback=pool_name)
@click.option("--lease-ttl", type=Seconds(), default=None, metavar="S",
              help="Lease TTL in seconds for clients that give none.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
              help="Which idle worker checkout takes: lifo (the most recently returned) or fifo.")
@click.option("--json", "as_json", is_flag=True, help='Print {"pool", "lease_ttl", "strategy"}.')
@click.pass_obj
def init(
    conn: Connection, pool: str, lease_ttl: float | None, strategy: str | None, as_json: bool
) -> None:
    """Create POOL, or change its settings (every host reads them from Redis)."""
    settings = conn.pool(pool, must_exist=False).configure(lease_ttl=lease_ttl, strategy=strategy)
    if as_json:
        emit_json({"pool": pool, "lease_ttl": settings.lease_ttl, "strategy": settings.strategy})
    else:
        click.echo(f"pool {pool}: lease_ttl {settings.lease_ttl:g}s, strategy {settings.strategy}")


def _lease_line(lease: Lease, as_json: bool) -> str:
    if as_json:
        import json

        return json.dumps({"pool": lease.pool.name, "worker": lease.worker_id,
                           "token": lease.token, "ttl": lease.ttl, "nonce": lease.nonce})
    return f"worker {lease.worker_id} token {lease.token} ttl {lease.ttl:g}s nonce {lease.nonce}"


@cli.command()
@click.argument("pool", callback=pool_name)
@click.option("--timeout", "-t", type=seconds_type, default=None, metavar="S",
              help="Wait up to S seconds for a worker (default: answer at once).")
@click.option("--hold", type=seconds_type, default=None, metavar="S",
              help="Keep the lease renewed for S seconds (or until Ctrl-C), then check it in.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"pool", "worker", "token", "ttl", "nonce"}.')
@click.pass_obj
def checkout(
    conn: Connection, pool: str, timeout: float | None, hold: float | None, as_json: bool
) -> None:
    """Check out a worker of POOL and print it with its fencing token.

    Without --hold nothing renews the lease: it lasts its TTL unless
    'redispool checkin POOL WORKER TOKEN' returns it first. A full pool (or
    no worker within --timeout) exits 1.
    """
    handle = conn.pool(pool)
    waits = timeout is not None and timeout > 0
    if hold is None:
        lease = handle.checkout(block=waits, timeout=timeout, auto_renew=False)
        click.echo(_lease_line(lease, as_json))
        return
    with sigterm_interrupts():  # from before the checkout: no signal may strand the lease
        lease = handle.checkout(block=waits, timeout=timeout, auto_renew=True)
        started = mod_time.monotonic()
        try:
            click.echo(_lease_line(lease, as_json))
            lease.lost.wait(hold)
        except KeyboardInterrupt:
            pass
    if not handle.checkin(lease):
        raise CliError(
            f"pool {pool!r}: lease of worker {lease.worker_id!r} (token {lease.token}) "
            "was lost while held", EXIT_REFUSED,
        )
    if not as_json:
        held = mod_time.monotonic() - started
        click.echo(f"checked in worker {lease.worker_id} after {held:.1f}s")


@cli.command()
@click.argument("pool", callback=pool_name)
@click.argument("worker", callback=worker_id)
@click.argument("token", type=click.IntRange(min=0))
@click.argument("nonce", required=False, default=None)
@click.pass_obj
def checkin(conn: Connection, pool: str, worker: str, token: int, nonce: str | None) -> None:
    """Return WORKER of POOL, leased under TOKEN (and NONCE, as checkout printed it).
    Exits 1 if that lease has ended.

    Without NONCE this is an operator's override: it checks in the live lease
    of WORKER if its token is TOKEN, whoever holds it.
    """
    handle = conn.pool(pool)
    validate_worker_id(worker)
    if nonce is not None and not re.fullmatch(r"[0-9a-f]{1,64}", nonce):
        raise click.BadParameter(f"{nonce!r} is not a lease nonce (hex)", param_hint="NONCE")
    if nonce is None:
        found = next((info for info in handle.leases() if info.worker_id == worker), None)
        nonce = found.nonce if found is not None and found.token == token else ""
    lease = Lease(handle, worker, token, handle.settings().lease_ttl, auto_renew=False,
                  deadline=mod_time.monotonic(), nonce=nonce)
    if not handle.checkin(lease):
        raise CliError(
            f"pool {pool!r}: no live lease of worker {worker!r} with token {token} "
            "(it expired, was reclaimed or was checked in already)", EXIT_REFUSED,
        )
    click.echo(f"checked in worker {worker} (token {token})")


@cli.command()
@click.argument("pool", callback=pool_name)
@click.argument("worker", callback=worker_id)
@click.pass_obj
def drain(conn: Connection, pool: str, worker: str) -> None:
    """Take WORKER of POOL out of service: now if idle, else when its lease ends."""
    handle = conn.pool(pool)
    if not handle.remove_worker(validate_worker_id(worker)):
        raise CliError(f"pool {pool!r} has no worker {worker!r} ('redispool workers {pool}')")
    if conn.client.hexists(handle.keys.workers, worker):
        click.echo(f"worker {worker} leaves pool {pool} when its current lease ends")
    else:
        click.echo(f"worker {worker} left pool {pool}")


@cli.command()
@click.argument("pools", nargs=-1, metavar="[POOL]...", callback=pool_names)
@click.option("--sweep-interval", type=Seconds(0.01, 3600), default=1.0,
              show_default=True, metavar="S", help="Seconds between sweeps.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
              help="Serve Prometheus metrics on this port.")
@click.option("--metrics-addr", default="0.0.0.0", show_default=True, metavar="ADDR",
              help="Address the metrics server binds.")
@click.pass_obj
def reaper(
    conn: Connection,
    pools: tuple[str, ...],
    sweep_interval: float,
    metrics_port: int | None,
    metrics_addr: str,
) -> None:
    """Return the workers of expired leases of POOLs (default: every pool), until Ctrl-C."""
    for name in pools:
        validate_pool_name(name)
    conn.client.ping()  # fail fast (exit 2) if Redis is unreachable
    setup_logging()
    worker = Reaper(conn.client, pools or None, sweep_interval=sweep_interval)
    metrics = None
    if metrics_port is not None:
        from ..metrics import start_metrics

        metrics = start_metrics(metrics_port, *pools, client=conn.client, reaper=worker,
                                addr=metrics_addr)
        click.echo(f"metrics on http://{metrics_addr}:{metrics.port}/metrics", err=True)
    click.echo(f"reaper watching {', '.join(pools) or 'every pool'}; Ctrl-C stops", err=True)
    # SIGTERM and Ctrl-C ask the loop to stop between two pieces of work, so a
    # worker being returned at that instant is still counted.
    stopping = {sig: signal.signal(sig, lambda *_: worker.request_stop())
                for sig in (signal.SIGTERM, signal.SIGINT)}  # fmt: skip
    try:
        worker.run()
    finally:
        for sig, previous in stopping.items():
            signal.signal(sig, previous)
        worker.stop()
        if metrics is not None:
            metrics.stop()
    click.echo(
        f"reaper stopped: returned {worker.by_event} by event, {worker.by_sweep} by sweep",
        err=True,
    )


def _number(ctx: click.Context, param: click.Parameter, value: str) -> int | float:
    """An int, or a float when it has a point or an exponent."""
    for kind in (int, float):
        try:
            number = kind(value)
        except ValueError:
            continue
        if math.isfinite(number):
            return number
    raise click.BadParameter(f"{value!r} is not a finite number", ctx, param)


@cli.command()
@click.argument("pool", callback=pool_name)
@click.argument("n", callback=_number)
@click.option("--timeout", "-t", type=seconds_type, default=5.0, show_default=True, metavar="S",
              help="Seconds to wait for a worker.")
@click.option("--job-timeout", type=Seconds(0.1, 86400), default=30.0, show_default=True,
              metavar="S", help="Seconds the job may take.")
@click.pass_obj
def double(conn: Connection, pool: str, n: int | float, timeout: float, job_timeout: float) -> None:
    """Double N on a worker of POOL (the worker logs 'Doubling N') and print the answer."""
    from ..doubler import compute

    with conn.pool(pool).lease(timeout=timeout) as lease:
        click.echo(compute(lease, n, timeout=job_timeout))
