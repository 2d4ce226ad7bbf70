"""The asyncio twin of client.py: same arguments, same lines, on redispool.aio.

    python aio_client.py URL POOL TTL hold       check out, print LEASE, keep it (renewed)
    python aio_client.py URL POOL TTL wait T     blocking checkout (timeout T), print GOT, check in
    python aio_client.py URL POOL TTL paused     check out, print LEASE, then after SIGCONT
                                                 (a line on stdin) try renew and checkin
"""

from __future__ import annotations

import asyncio
import sys

from redispool import LeaseLost
from redispool.aio import Pool


def say(*words: object) -> None:
    print(*words, flush=True)


async def main() -> None:
    url, name, ttl, mode = sys.argv[1:5]
    pool = Pool(name, url=url, lease_ttl=float(ttl))
    if mode == "hold":
        lease = await pool.checkout(timeout=10)
        say("LEASE", lease.worker_id, lease.token)
        while True:
            await asyncio.sleep(60)
    elif mode == "wait":
        lease = await pool.checkout(timeout=float(sys.argv[5]))
        say("GOT", lease.worker_id, lease.token)
        await lease.checkin()
    elif mode == "paused":
        lease = await pool.checkout(timeout=10, auto_renew=False)
        say("LEASE", lease.worker_id, lease.token)
        await asyncio.to_thread(sys.stdin.readline)  # stopped here, resumed later
        try:
            await lease.renew()
            say("RENEWED")
        except LeaseLost:
            say("LOST")
        say("CHECKIN", await lease.checkin())
    await pool.aclose()


if __name__ == "__main__":
    asyncio.run(main())
