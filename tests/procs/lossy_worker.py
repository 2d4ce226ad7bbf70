"""A worker process whose first ``finish_job`` reply is lost: the script runs on
the server (the job's end is written), then the worker's call raises
``PoolUnavailable`` as if the connection had dropped before the reply came.

Run as ``python tests/procs/lossy_worker.py`` with the worker's settings in the
environment (as the supervisor gives them).
"""

from __future__ import annotations

import sys
from typing import Any

from redispool import sender, worker
from redispool.errors import PoolUnavailable

_real_send = sender.Sender.send
_lost: list[str] = []


def _lossy_send(self: sender.Sender, op: Any) -> Any:
    reply = _real_send(self, op)
    if op.name == "finish_job" and not _lost:
        _lost.append(op.name)
        raise PoolUnavailable(f"pool {self.pool!r}: finish_job: reply lost", pool=self.pool)
    return reply


sender.Sender.send = _lossy_send  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(worker.main())
