"""A pool client run as its own process by the multi-process tests.

    python client.py URL POOL TTL hold       check out, print LEASE, keep it (renewed)
    python client.py URL POOL TTL wait T     blocking checkout (timeout T), print GOT, check in
    python client.py URL POOL TTL paused     check out, print LEASE, then after SIGCONT
                                             (a line on stdin) try renew and checkin

Each line it prints is flushed at once so the test can read it.
"""

from __future__ import annotations

import sys
import time

from redispool import LeaseLost, Pool


def say(*words: object) -> None:
    print(*words, flush=True)


def main() -> None:
    url, name, ttl, mode = sys.argv[1:5]
    pool = Pool(name, url=url, lease_ttl=float(ttl))
    if mode == "hold":
        lease = pool.checkout(timeout=10)
        say("LEASE", lease.worker_id, lease.token)
        while True:
            time.sleep(60)
    elif mode == "wait":
        lease = pool.checkout(timeout=float(sys.argv[5]))
        say("GOT", lease.worker_id, lease.token)
        lease.checkin()
    elif mode == "paused":
        lease = pool.checkout(timeout=10, auto_renew=False)
        say("LEASE", lease.worker_id, lease.token)
        sys.stdin.readline()  # the test stops us here and resumes us later
        try:
            lease.renew()
            say("RENEWED")
        except LeaseLost:
            say("LOST")
        say("CHECKIN", lease.checkin())
    pool.close()


if __name__ == "__main__":
    main()
