"""pgqueuer no-op throughput: JOBS jobs queued up front, then one QueueManager in
drain mode with the entrypoint's concurrency limit at CONCURRENCY takes them all;
prints jobs/s from the manager's start to its exit (queue empty, completions
flushed). Run by bench/peers/run with the venv it installs pgqueuer into.
Env: DATABASE_URL, JOBS (default 20000), CONCURRENCY (default 16)."""

import asyncio
import os
import time

import asyncpg
from pgqueuer import AsyncpgDriver, QueueManager, Queries
from pgqueuer.domain.types import QueueExecutionMode


async def main() -> None:
    dsn = os.environ["DATABASE_URL"]
    jobs = int(os.environ.get("JOBS", "20000"))
    concurrency = int(os.environ.get("CONCURRENCY", "16"))

    setup = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(setup))
    await queries.install()
    for start in range(0, jobs, 1000):
        n = min(jobs, start + 1000) - start
        await queries.enqueue(["noop"] * n, [None] * n, [0] * n)

    conn = await asyncpg.connect(dsn)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    done = 0

    @qm.entrypoint("noop", concurrency_limit=concurrency)
    async def noop(job) -> None:  # noqa: ANN001 - pgqueuer's Job
        nonlocal done
        done += 1

    started = time.perf_counter()
    await qm.run(mode=QueueExecutionMode.drain)
    secs = time.perf_counter() - started

    left = await setup.fetchval("select count(*) from pgqueuer")
    await conn.close()
    await setup.close()
    if done != jobs or left != 0:
        raise SystemExit(f"pgqueuer_bench: ran {done} of {jobs} jobs, {left} left in the queue table")
    print(f"RESULT pgqueuer jobs={jobs} concurrency={concurrency} secs={secs:.3f} jobs_per_s={jobs / secs:.0f}")


asyncio.run(main())
