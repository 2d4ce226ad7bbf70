"""Run this host's workers of a pool: ``python worker_main.py --url redis://... --pool doublers``.

Starts a supervisor, one Reaper for the pool and ``--workers`` worker
processes that run the jobs sent to them (the doubler by default). SIGTERM or
Ctrl-C drains: idle workers leave at once, busy ones when their lease ends;
then it exits 0. SIGUSR1 writes every thread's stack to stderr (the
supervisor's; send it to a worker's pid for that worker's). Every option can
also come from the environment variable named in ``--help``
(``REDISPOOL_URL``, ``REDISPOOL_POOL``, ...).
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys

import click

from redispool.cli.options import Seconds, checked, replica_options
from redispool.connect import validate_url
from redispool.jobs import DEFAULT_FUNCTIONS, parse_functions
from redispool.keys import validate_pool_name, validate_worker_id_prefix
from redispool.metrics import start_metrics
from redispool.supervisor import Supervisor, SupervisorSettings
from redispool.worker import LOG_FORMAT


def _functions(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> frozenset[str]:
    try:
        return parse_functions(value) | DEFAULT_FUNCTIONS
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(context_settings={"show_default": True})
@click.option(
    "--url",
    "-u",
    envvar="REDISPOOL_URL",
    required=True,
    callback=checked(validate_url),
    help="Redis URL: redis://, rediss://, unix:// or redis+sentinel://h1:p1,h2:p2/<service>/<db>.",
)
@click.option(
    "--pool",
    "-p",
    envvar="REDISPOOL_POOL",
    required=True,
    callback=checked(validate_pool_name),
    help="Pool name.",
)
@click.option(
    "--workers",
    "-w",
    envvar="REDISPOOL_WORKERS",
    default=4,
    type=click.IntRange(0, 1000),
    help="Worker processes on this host.",
)
@click.option(
    "--max-overflow",
    envvar="REDISPOOL_MAX_OVERFLOW",
    default=0,
    type=click.IntRange(0, 1000),
    help="Extra workers started while clients wait and none is idle.",
)
@click.option(
    "--overflow-idle",
    envvar="REDISPOOL_OVERFLOW_IDLE",
    default=10.0,
    type=Seconds(0.1, 86400),
    help="Seconds an overflow worker stays idle.",
)
@click.option(
    "--worker-id-prefix",
    envvar="REDISPOOL_WORKER_ID_PREFIX",
    default=None,
    callback=checked(validate_worker_id_prefix),
    help="Worker ids are <prefix>-<n>; default <host>-<pid>.",
)
@click.option(
    "--lease-ttl",
    envvar="REDISPOOL_LEASE_TTL",
    default=None,
    type=Seconds(0.01, 7 * 86400),
    help="Lease TTL of a new pool, seconds.",
)
@click.option(
    "--heartbeat-ttl",
    envvar="REDISPOOL_HEARTBEAT_TTL",
    default=5.0,
    type=Seconds(0.1, 3600),
    help="A worker whose heartbeat is this old counts as dead, seconds.",
)
@click.option(
    "--sweep-interval",
    envvar="REDISPOOL_SWEEP_INTERVAL",
    default=1.0,
    type=Seconds(0.01, 3600),
    help="Reaper sweep interval, seconds.",
)
@click.option(
    "--stop-grace",
    envvar="REDISPOOL_STOP_GRACE",
    default=1.0,
    type=Seconds(0, 3600),
    help="Seconds a job whose lease ended may take to return before it is killed.",
)
@click.option(
    "--function",
    "functions",
    envvar="REDISPOOL_FUNCTIONS",
    multiple=True,
    callback=_functions,
    help="Dotted name of a function workers may run, besides the doubler (repeat).",
)
@replica_options
@click.option(
    "--log-level",
    envvar="REDISPOOL_LOG_LEVEL",
    default="INFO",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--metrics-port",
    envvar="REDISPOOL_METRICS_PORT",
    default=None,
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port (0: any free port, logged).",
)
def main(
    url: str,
    pool: str,
    workers: int,
    max_overflow: int,
    overflow_idle: float,
    worker_id_prefix: str | None,
    lease_ttl: float | None,
    heartbeat_ttl: float,
    sweep_interval: float,
    stop_grace: float,
    functions: frozenset[str],
    min_replicas: int,
    replica_timeout: float,
    log_level: str,
    metrics_port: int | None,
) -> None:
    """Run this host's worker processes of POOL, supervised, until SIGTERM or Ctrl-C."""
    logging.basicConfig(stream=sys.stderr, level=log_level.upper(), format=LOG_FORMAT)
    settings = SupervisorSettings(
        url=url, pool=pool, workers=workers, max_overflow=max_overflow,
        overflow_idle=overflow_idle, worker_id_prefix=worker_id_prefix, lease_ttl=lease_ttl,
        heartbeat_ttl=heartbeat_ttl, sweep_interval=sweep_interval,
        functions=tuple(sorted(functions)), min_replicas=min_replicas,
        replica_timeout=replica_timeout, stop_grace=stop_grace,
    )  # fmt: skip
    metrics = None if metrics_port is None else start_metrics(metrics_port, pool, url=url)
    supervisor = Supervisor(settings, metrics)
    signal.signal(signal.SIGTERM, supervisor.request_drain)
    signal.signal(signal.SIGINT, supervisor.request_drain)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: every stack
    sys.exit(supervisor.run())


if __name__ == "__main__":
    main()
