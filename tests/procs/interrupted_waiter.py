"""A waiter the interrupt test sends SIGINT to at random moments (a real KeyboardInterrupt).

    python interrupted_waiter.py URL POOL

For each line on stdin: a blocking ``checkout(timeout=10)`` then ``checkin``. It prints
one line per round: ``got`` (it was handed the worker and checked it in), or
``interrupted`` (the KeyboardInterrupt came out of checkout, or after it, in which case
the lease it returned is checked in here). Inside a round, SIGINT raises
KeyboardInterrupt wherever it lands, as Python's default handler does (once a round);
between rounds it is ignored: a late one would garble the line printed or hit the next
round before it queued.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from types import FrameType

from redispool import Lease, Pool

_in_round = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _in_round
    if _in_round:
        _in_round = False  # one interrupt a round
        raise KeyboardInterrupt


def one_round(pool: Pool) -> str:
    """One checkout and checkin, the only time SIGINT interrupts."""
    global _in_round
    lease: Lease | None = None
    outcome = "interrupted"
    try:
        try:
            _in_round = True
            lease = pool.checkout(timeout=10)
            lease.checkin()
            outcome = "got"
        finally:
            _in_round = False
    except KeyboardInterrupt:
        outcome = "interrupted"
    if lease is not None and outcome == "interrupted":  # after checkout returned
        lease.checkin()  # False if the interrupted checkin had run
    return outcome


def main() -> None:
    signal.signal(signal.SIGINT, _on_sigint)
    faulthandler.register(signal.SIGUSR1)  # its stacks on stderr, when a round hangs
    faulthandler.enable()  # and when it crashes
    url, name = sys.argv[1:3]
    pool = Pool(name, url=url)
    pool.status()  # connected and the library loaded before the first round
    print("ready", flush=True)
    while sys.stdin.readline():
        print(one_round(pool), flush=True)


if __name__ == "__main__":
    main()
