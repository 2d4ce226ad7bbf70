"""The ``redispool`` command line.

``redispool --url redis://host:6379/0 COMMAND ...`` (or ``REDISPOOL_URL``).
Exit codes: 0 done; 1 pool full, checkout timed out, lease or worker lost,
job failed; 2 usage error, bad input, unknown pool or worker, Redis
unreachable. Errors are one line on stderr, never a traceback. The ``--json``
shapes are documented in :mod:`redispool.cli.views`.
"""

from __future__ import annotations

from . import demo, operate, views, web
from .app import EXIT_CODES, cli

__all__ = ["EXIT_CODES", "cli", "main"]

del demo, operate, views, web  # imported for the commands they register


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="redispool")
