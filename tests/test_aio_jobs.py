"""``await lease.run`` cancelled: its job is withdrawn, and one not yet started never starts.

The asyncio lease runs the sync job path in a thread; cancelling the ``await``
tells that thread to give up, which withdraws the job from its worker's queue
and intermediate queue, as an interrupt of the sync ``lease.run`` does.
Before, the thread waited on and the job ran once its worker got to it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis
from helpers import StartWorkerMain, wait_for

from redispool import aio
from redispool.keys import PoolKeys
from redispool.protocol.jobs import rq_key

SLOW = "tests.procs.jobfuncs.say_begun_sleep_then_mark"
KEYS = PoolKeys("doublers")


def test_a_cancelled_run_whose_job_had_not_started_never_starts(
    redis_url: str, r: redis.Redis, start_worker_main: StartWorkerMain, tmp_path: Path
) -> None:
    main = start_worker_main(f"--function={SLOW}", workers=1)
    begun, marker = tmp_path / "begun", tmp_path / "finished"

    async def scenario() -> tuple[str, int]:
        async with aio.Pool("doublers", url=redis_url) as pool:
            lease = await pool.checkout(timeout=5)
            try:
                slow = asyncio.create_task(
                    lease.run(SLOW, str(begun), 1.5, str(marker), timeout=10)
                )
                await asyncio.to_thread(
                    wait_for, begun.exists, timeout=10, message="the slow job to begin"
                )
                queued = asyncio.create_task(lease.run("redispool.doubler.double", 77, timeout=10))
                queue = rq_key(KEYS, "queue", KEYS.rq_queue(lease.worker_id))
                await asyncio.to_thread(  # queued behind the slow job on the same worker
                    wait_for, lambda: r.llen(queue) == 1, timeout=10, message="the job queued"
                )
                queued.cancel()
                await asyncio.gather(queued, return_exceptions=True)
                first = await slow
                after = await lease.run("redispool.doubler.double", 5, timeout=10)
                return first, after  # a job still queued would have run before this one
            finally:
                await lease.checkin()

    assert asyncio.run(scenario()) == ("finished", 10)
    log = main.log()
    assert "Doubling 5" in log
    assert "Doubling 77" not in log, "the cancelled run's job ran"
