"""How fast a job whose lease ended is stopped, and how long the next holder waits.

worker_main.py with one worker (default --stop-grace 1 s). Each trial: a
holder with a 0.5 s lease that never renews runs a long job
(tests/procs/jobfuncs.py); a second client's blocking checkout gets the
worker when the lease ends and runs double(21) on it. Two kinds of job: one
that ignores ``lost`` (blocked in ``time.sleep``: killed after the grace) and
one that waits on ``current_lease().lost`` and stops itself. Reported, p50
and max over the trials:

- stop: the lease's end (its key's expiry, server clock) -> the job ended
  (the worker's log line, same machine's clock);
- next: the lease's end -> the next holder's double(21) answered.

    python bench/bench_stop.py [--kind valkey|redis] [--trials 10]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redispool import LeaseLost, Pool  # noqa: E402
from redispool.doubler import compute  # noqa: E402
from redispool.server import EmbeddedServer  # noqa: E402

JOBS = "tests.procs.jobfuncs"
ENDED = re.compile(
    r"^(\S+ \S+) redispool\.worker\[\d+\] WARNING worker \S+ job \S+ token (\d+): "
    r"its lease ended; job (killed|returned) ([\d.]+) s later",
    re.MULTILINE,
)


def stamp(asctime: str) -> float:
    return datetime.strptime(asctime, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def trial(url: str, func: str, marker: Path) -> tuple[int, float, float]:
    """One stale job: (token, lease end as epoch seconds, next holder answered at)."""
    with Pool("stop", url, lease_ttl=0.5) as holder, Pool("stop", url) as other:
        lease = holder.checkout(timeout=10, auto_renew=False)
        pttl = int(holder.client.pttl(holder.keys.lease(lease.worker_id)))
        lease_end = time.time() + pttl / 1000

        def stale() -> None:
            with contextlib.suppress(LeaseLost):
                lease.run(f"{JOBS}.{func}", 5, str(marker), timeout=30)

        runner = threading.Thread(target=stale)
        runner.start()
        with other.lease(timeout=10) as fresh:
            assert compute(fresh, 21) == 42
            answered = time.time()
        runner.join()
    return lease.token, lease_end, answered


def pct(values: list[float]) -> str:
    ordered = sorted(values)
    return f"p50 {ordered[len(ordered) // 2] * 1000:6.0f} ms  max {ordered[-1] * 1000:6.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("valkey", "redis"), default="valkey")
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    functions = [f"--function={JOBS}.{f}" for f in ("sleep_then_mark", "watch_lost")]
    with EmbeddedServer(args.kind) as server, tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "worker_main.log"
        with open(log_path, "wb") as log:
            main_proc = subprocess.Popen(
                [sys.executable, str(ROOT / "worker_main.py"), "--url", server.url,
                 "--pool", "stop", "--workers", "1", *functions],
                stderr=log, cwd=ROOT,
            )  # fmt: skip
        try:
            with Pool("stop", server.url) as pool:
                while pool.status().idle < 1:
                    time.sleep(0.05)
            print(f"server: {server.version}; {args.trials} trials per kind, stop grace 1 s")
            for func in ("sleep_then_mark", "watch_lost"):
                runs = [trial(server.url, func, Path(tmp) / f"m{i}") for i in range(args.trials)]
                time.sleep(0.3)  # the last log line
                ended = {int(m[1]): stamp(m[0]) for m in ENDED.findall(log_path.read_text())}
                stops = [ended[token] - end for token, end, _ in runs]
                waits = [answered - end for _, end, answered in runs]
                print(f"{func:16} stop {pct(stops)}   next holder answered {pct(waits)}")
        finally:
            main_proc.send_signal(signal.SIGTERM)
            main_proc.wait(timeout=30)


if __name__ == "__main__":
    main()
