"""A pool's history: per-minute buckets in Redis, bounded in number and size.

Each minute of pool ``P`` is one small hash, ``redispool:{P}:history:<minute>``
(``minute`` = unix seconds // 60), of integer fields only:

* counts: ``checkouts``, ``timeouts``, ``reclaims``, ``burials``, ``refused``,
  ``stopped``, ``deaths``;
* the checkout wait time as a histogram, ``w0`` .. ``w13`` (the upper edges are
  :data:`WAIT_BUCKETS`, the last one open), so several processes' waits merge
  exactly and p50/p99 come out as a bucket's upper edge;
* samples of the pool's numbers: ``n`` samples, sums ``busy``, ``idle``,
  ``waiting`` (averages on reading).

Bounds: only the fields above are ever written (:data:`FIELDS`), each bucket
lives at most :data:`RETENTION_S` (a TTL, refreshed by each write), and every
writer deletes the buckets older than :data:`WINDOW` minutes as its clock
passes them, so a pool holds at most ``WINDOW`` buckets (plus the minutes a
writer's clock runs ahead of the others'). The clock is the writer's (hosts on
NTP agree within a minute's resolution); tests pass their own.

Every write is one ``MULTI`` of ``HINCRBY`` + ``EXPIRE``; nothing here runs on
the checkout/checkin path. A bucket written by hand with junk reads as zeros
for the junk fields, never an error.
"""

from __future__ import annotations

import logging
import math
import time as mod_time
from bisect import bisect_left
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from .keys import PoolKeys, validate_pool_name
from .wire import number, text

__all__ = [
    "COUNTS", "FIELDS", "RETENTION_S", "WAIT_BUCKETS", "WINDOW", "History", "Minute", "wait_field",
]  # fmt: skip

log = logging.getLogger("redispool.history")

#: Upper edges (seconds) of the checkout wait histogram; a last bucket is open.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Minutes of history kept: a day.
WINDOW = 24 * 60
#: The TTL of a bucket, seconds: a day and an hour, so buckets nobody trims still go.
RETENTION_S = WINDOW * 60 + 3600
#: Minutes before the trim point a writer that just started deletes (a restart's gap);
#: buckets further back go by their TTL.
FIRST_TRIM = 60

COUNTS = ("checkouts", "timeouts", "reclaims", "burials", "refused", "stopped", "deaths")
WAITS = tuple(f"w{i}" for i in range(len(WAIT_BUCKETS) + 1))
SAMPLES = ("n", "busy", "idle", "waiting")
FIELDS = frozenset(COUNTS + WAITS + SAMPLES)


def wait_field(seconds: float) -> str:
    """The histogram field of a wait of ``seconds``."""
    return WAITS[bisect_left(WAIT_BUCKETS, max(0.0, seconds))]


@dataclass(frozen=True)
class Minute:
    """One minute of a pool's history, as read back."""

    minute: int  # unix minutes
    counts: dict[str, int]
    waits: int  # checkouts whose wait was recorded
    wait_p50: float | None  # seconds: the upper edge of the bucket; None without waits
    wait_p99: float | None
    busy: float | None  # the minute's average; None without samples
    idle: float | None
    waiting: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "minute": self.minute, **self.counts, "waits": self.waits,
            "wait_p50": self.wait_p50, "wait_p99": self.wait_p99,
            "busy": self.busy, "idle": self.idle, "waiting": self.waiting,
        }  # fmt: skip


def _quantile(histogram: list[int], q: float) -> float | None:
    total = sum(histogram)
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, n in enumerate(histogram):
        seen += n
        if seen >= rank:
            return WAIT_BUCKETS[min(i, len(WAIT_BUCKETS) - 1)]
    return WAIT_BUCKETS[-1]


def _minute_of(minute: int, raw: Mapping[Any, Any]) -> Minute:
    values: dict[str, int] = {}
    for field, value in raw.items():
        name, count = text(field), number(value, signed=True)
        if name in FIELDS and count is not None:
            values[name] = max(0, count)
    histogram = [values.get(w, 0) for w in WAITS]
    n = values.get("n", 0)

    def average(name: str) -> float | None:
        return round(values.get(name, 0) / n, 2) if n else None

    return Minute(
        minute=minute,
        counts={c: values.get(c, 0) for c in COUNTS},
        waits=sum(histogram),
        wait_p50=_quantile(histogram, 0.5),
        wait_p99=_quantile(histogram, 0.99),
        busy=average("busy"),
        idle=average("idle"),
        waiting=average("waiting"),
    )


class History:
    """Writes and reads the history of one pool through ``client``.

    ``clock`` gives unix seconds (default ``time.time``); one History per
    process and pool keeps track of what it has trimmed.
    """

    def __init__(
        self, client: redis.Redis, pool: str, *, clock: Callable[[], float] = mod_time.time
    ) -> None:
        self.client = client
        self.pool = validate_pool_name(pool)
        self.keys = PoolKeys(pool)
        self.clock = clock
        self._trimmed_to: int | None = None  # buckets below this minute are deleted

    def now(self) -> int:
        """The current minute by this History's clock."""
        return int(self.clock() // 60)

    def add(self, counts: Mapping[str, int], minute: int | None = None) -> None:
        """Add ``counts`` (fields of :data:`FIELDS`) to a minute's bucket (default: now).

        Raises ``ValueError`` for an unknown field or a negative count, and
        redis-py's errors when Redis does not answer.
        """
        unknown = set(counts) - FIELDS
        if unknown:
            raise ValueError(f"unknown history fields {sorted(unknown)}: use {sorted(FIELDS)}")
        if any(n < 0 for n in counts.values()):
            raise ValueError(f"history counts must not be negative: {dict(counts)}")
        now = self.now()
        minute = now if minute is None else minute
        if minute <= now - WINDOW:
            return  # older than what is kept
        key = self.keys.history_bucket(minute)
        with self.client.pipeline(transaction=True) as pipe:
            for field, n in counts.items():
                if n:
                    pipe.hincrby(key, field, n)
            pipe.expire(key, RETENTION_S)
            pipe.execute()
        self._trim(now)

    def _trim(self, now: int) -> None:
        """Delete the buckets that fell out of the window since the last trim."""
        cutoff = now - WINDOW + 1  # buckets before this minute go: WINDOW minutes stay
        start = cutoff - FIRST_TRIM if self._trimmed_to is None else self._trimmed_to
        if start >= cutoff:
            return
        start = max(start, cutoff - WINDOW)  # a long gap: the TTL takes the rest
        doomed = [self.keys.history_bucket(m) for m in range(start, cutoff)]
        for i in range(0, len(doomed), 500):
            self.client.delete(*doomed[i : i + 500])
        self._trimmed_to = cutoff

    def sample(self, busy: int, idle: int, waiting: int) -> None:
        """Add one sample of the pool's numbers to the current minute."""
        self.add({"n": 1, "busy": busy, "idle": idle, "waiting": waiting})

    def read(self, minutes: int = 60) -> list[Minute]:
        """The last ``minutes`` minutes (1 to :data:`WINDOW`), oldest first, one
        :class:`Minute` each (zeros where nothing was written)."""
        if not isinstance(minutes, int) or not 1 <= minutes <= WINDOW:
            raise ValueError(f"minutes must be an integer from 1 to {WINDOW}, got {minutes!r}")
        now = self.now()
        span = range(now - minutes + 1, now + 1)
        with self.client.pipeline(transaction=False) as pipe:
            for m in span:
                pipe.hgetall(self.keys.history_bucket(m))
            replies = pipe.execute(raise_on_error=False)
        result = []
        for m, raw in zip(span, replies, strict=True):
            if isinstance(raw, Exception):  # junk of another type under the key
                log.warning("history bucket %s of pool %s is unreadable: %s", m, self.pool, raw)
                raw = {}
            result.append(_minute_of(m, raw))
        return result
