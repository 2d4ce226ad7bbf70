"""Clients doing doubler jobs on pools of a cluster, and what worker_main's log says.

``JobLoad(url, {pool: clients})`` starts that many client threads per pool; each does
checkout, ``double(n)``, checkin as fast as it can and records every good cycle (its
start and end), every error (its time and type) and every token it held.
"""

from __future__ import annotations

import random
import re
import threading
import time
from dataclasses import dataclass, field

from redispool import Pool, PoolError

__all__ = ["JobLoad", "job_overlaps", "jobs_started"]

JOB = re.compile(r"worker (\S+) job (\S+) token (\d+) (started|ended)")


@dataclass
class JobLoad:
    url: str
    clients: dict[str, int]  # pool -> client threads
    began: dict[str, list[float]] = field(default_factory=dict)  # starts of good cycles
    ended: dict[str, list[float]] = field(default_factory=dict)  # ... and their ends
    errors: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    messages: set[str] = field(default_factory=set)  # the errors' texts, digits as N
    held: set[int] = field(default_factory=set)  # every token a client held
    wrong: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> JobLoad:
        for name, count in self.clients.items():
            self.began[name], self.ended[name], self.errors[name] = [], [], []
            for i in range(count):
                thread = threading.Thread(target=self._client, args=(name, i), daemon=True)
                thread.start()
                self.threads.append(thread)
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(t.is_alive() for t in self.threads), "a client hung"

    def ok_since(self, name: str, moment: float) -> int:
        """Good cycles of pool ``name`` begun after ``moment`` (monotonic)."""
        return sum(1 for t in self.began[name] if t > moment)

    def back_after(self, name: str, moment: float) -> float:
        """Seconds from ``moment`` to the end of the first good cycle begun after it."""
        pairs = zip(self.began[name], self.ended[name], strict=True)
        return min(end for start, end in pairs if start > moment) - moment

    def longest_outage(self, name: str, since: float) -> float:
        """The longest time from an error to the next good cycle's end, after ``since``."""
        longest = 0.0
        for at, _ in self.errors[name]:
            if at > since:
                after = [end for end in self.ended[name] if end > at]
                longest = max(longest, (min(after) if after else time.monotonic()) - at)
        return longest

    def _client(self, name: str, number: int) -> None:
        rng = random.Random(f"{name}-{number}")
        with Pool(name, url=self.url) as pool:
            while not self.stop.is_set():
                began = time.monotonic()
                try:
                    with pool.lease(timeout=2) as lease:
                        self.held.add(lease.token)
                        n = rng.randrange(1000)
                        result = lease.run("redispool.doubler.double", n, timeout=5)
                    if result != 2 * n:
                        self.wrong.append(f"{name}: double({n}) = {result}")
                    self.began[name].append(began)
                    self.ended[name].append(time.monotonic())
                except PoolError as exc:  # recorded: which errors a failure brings
                    self.errors[name].append((time.monotonic(), type(exc).__name__))
                    self.messages.add(re.sub(r"\d+", "N", str(exc)))
                    time.sleep(0.02)


def job_overlaps(log: str) -> list[str]:
    """Jobs of two tokens running at once on one worker, read from the log in order."""
    running: dict[str, tuple[str, str]] = {}
    found = []
    for worker, job, token, what in JOB.findall(log):
        if what == "started":
            if worker in running:
                found.append(f"{worker}: {job} (token {token}) while {running[worker]}")
            running[worker] = (job, token)
        elif running.get(worker) == (job, token):
            running.pop(worker)
    return found


def jobs_started(log: str) -> set[int]:
    """The tokens of every job the log says started."""
    return {int(token) for _, _, token, what in JOB.findall(log) if what == "started"}
