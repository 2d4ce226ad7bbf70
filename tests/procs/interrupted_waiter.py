"""A waiter the interrupt test sends SIGINT to at random moments (a real KeyboardInterrupt).

    python interrupted_waiter.py URL POOL

For each line on stdin: a blocking ``checkout(timeout=10)`` then ``checkin``. It prints
one line per round: ``got`` (it was handed the worker and checked it in), or
``interrupted`` (the KeyboardInterrupt came out of checkout, or after it, in which case
the lease it returned is checked in here). The default SIGINT handler stays: every
interrupt inside a round is a real one, wherever it lands; between rounds SIGINT is
held back (a late one would garble the line printed, or hit the next round).
"""

from __future__ import annotations

import signal
import sys

from redispool import Lease, Pool


def one_round(pool: Pool) -> str:
    """One checkout and checkin, the only time SIGINT is let through: a signal
    sent for the last round and still pending is dropped first."""
    if signal.SIGINT in signal.sigpending():
        signal.sigwait({signal.SIGINT})
    lease: Lease | None = None
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        lease = pool.checkout(timeout=10)
        lease.checkin()
        outcome = "got"
    except KeyboardInterrupt:
        outcome = "interrupted"
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    if lease is not None and outcome == "interrupted":  # after checkout returned
        lease.checkin()  # False if the interrupted checkin had run
    return outcome


def main() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # let through in rounds only
    url, name = sys.argv[1:3]
    pool = Pool(name, url=url)
    # Connected, the library loaded and the renewer thread started before the first
    # round, with SIGINT held back: threads keep the mask they start with, so only the
    # main thread, inside a round, ever takes the signal.
    pool.checkout(block=False).checkin()
    print("ready", flush=True)
    while sys.stdin.readline():
        print(one_round(pool), flush=True)


if __name__ == "__main__":
    main()
