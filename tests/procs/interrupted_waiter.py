"""A waiter the interrupt test sends SIGINT to at random moments (a real KeyboardInterrupt).

    python interrupted_waiter.py URL POOL

For each line on stdin: a blocking ``checkout(timeout=10)`` then ``checkin``. It prints
one line per round: ``got`` (it was handed the worker and checked it in), or
``interrupted`` (the KeyboardInterrupt came out of checkout, or after it, in which case
the lease it returned is checked in here). The default SIGINT handler stays: every
interrupt is a real one, wherever it lands.
"""

from __future__ import annotations

import contextlib
import signal
import sys

from redispool import Lease, Pool


def _line() -> str:
    while True:
        try:
            return sys.stdin.readline()
        except KeyboardInterrupt:  # a late signal of the previous round
            continue


def _say(word: str) -> None:
    """Print the round's outcome whole: SIGINT waits while the line is written
    (a signal between "got" and its newline would garble it). A SIGINT that
    came meanwhile is raised once the mask is lifted; the round is over, so it
    changes nothing."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        print(word, flush=True)
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def one_round(pool: Pool) -> str:
    lease: Lease | None = None
    try:
        lease = pool.checkout(timeout=10)
        lease.checkin()
        return "got"
    except KeyboardInterrupt:
        if lease is not None:  # the interrupt came after checkout returned
            lease.checkin()
        return "interrupted"


def main() -> None:
    url, name = sys.argv[1:3]
    pool = Pool(name, url=url)
    pool.status()  # connected and the library loaded before the first round
    _say("ready")
    while _line():
        _say(one_round(pool))


if __name__ == "__main__":
    main()
