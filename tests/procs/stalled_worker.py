"""A worker process held up between its fence and its call, as if Redis had
stopped answering during its bookkeeping: ``JobProcess.run`` first writes the
file named by ``REDISPOOL_TEST_STALLED`` (so a test can act at that moment),
then sleeps ``REDISPOOL_TEST_STALL`` seconds, then goes on as usual.

Run as ``python tests/procs/stalled_worker.py`` with the worker's settings in the
environment (as the supervisor gives them).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from redispool import job_process, worker

_real_run = job_process.JobProcess.run


def _stalled_run(self: job_process.JobProcess, *args: Any, **kwargs: Any) -> Any:
    Path(os.environ["REDISPOOL_TEST_STALLED"]).write_text("stalled")
    time.sleep(float(os.environ["REDISPOOL_TEST_STALL"]))
    return _real_run(self, *args, **kwargs)


job_process.JobProcess.run = _stalled_run  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(worker.main())
