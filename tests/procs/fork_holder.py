"""Lease a worker, fork, and let the parent die holding it; the child leases another.

    python fork_holder.py URL POOL TTL

Prints ``PARENT <worker>`` and ``CHILD <worker>``, then the child holds its own
lease (renewed) until killed. The parent's lease must end with the parent: a
forked child must not renew leases it did not take.
"""

from __future__ import annotations

import os
import sys
import time

from redispool import Pool


def main() -> None:
    url, name, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
    pool = Pool(name, url=url, lease_ttl=ttl)
    parent = pool.checkout(timeout=5)
    print("PARENT", parent.worker_id, flush=True)
    if os.fork() != 0:
        os._exit(0)  # the parent dies holding its lease
    child = pool.checkout(timeout=5)
    print("CHILD", child.worker_id, flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
