"""A small durable job queue in the database, and the in-process worker that drains it.

A job is written in the same request that decides on it, before the answer goes out; any
instance's worker may take it. Taking a job leases it (`locked_until`); a worker that dies
mid-job lets the lease lapse and the job runs again, so handlers must be idempotent. A handler
that outlives LEASE_SECONDS (indexing a 5 MB document takes minutes) renews its lease with each
write; one that was stalled past it and finds the job taken stops without writing more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from jean_memory import clock
from jean_memory.db.tables import jobs
from jean_memory.off_loop import run_db

logger = logging.getLogger("jean_memory.jobs")

LEASE_SECONDS = 300
MAX_ATTEMPTS = 5
IDLE_POLL_SECONDS = 1.0


class LeaseLost(Exception):
    """Another worker has claimed the job since this one's lease lapsed; that run owns it now."""


@dataclass(frozen=True)
class Lease:
    """One worker's claim on one job. Every claim raises the job's `attempts`, so the count this
    claim set tells whether the job is still ours, even after `locked_until` has passed."""

    job_id: str
    attempt: int

    def renew(self, conn: Connection) -> None:
        """Extend the lease, inside the transaction of the write it guards: the write then commits
        only while the job is still ours (on PostgreSQL a concurrent claim waits for it and then
        finds the job held). Raises LeaseLost, rolling that transaction back, when it is not."""
        held = conn.execute(
            jobs.update()
            .where(jobs.c.id == self.job_id, jobs.c.attempts == self.attempt)
            .values(locked_until=clock.now() + LEASE_SECONDS)
        )
        if not held.rowcount:
            raise LeaseLost(f"job {self.job_id} was taken by another worker after this one's lease lapsed")


# (user_id, payload, lease), run in a worker thread; a handler whose writes may outlast
# LEASE_SECONDS calls lease.renew(conn) in each write transaction.
Handler = Callable[[str, dict[str, Any], Lease], None]


def enqueue(conn: Connection, kind: str, user_id: str, payload: dict[str, Any]) -> str:
    job_id = clock.new_id()
    conn.execute(jobs.insert().values(id=job_id, kind=kind, user_id=user_id, payload=payload, created_at=clock.now()))
    return job_id


def users_with_queued(kind: str) -> sa.Select:
    """The user ids that have a job of `kind` waiting or running, as a subquery to filter by."""
    return sa.select(jobs.c.user_id).where(jobs.c.kind == kind)


def claim_next(engine: Engine) -> sa.Row | None:
    """Lease the oldest job nobody holds; None when there is nothing to do. The row is the job as
    it was before this claim (see `lease_of`)."""
    now = clock.now()
    free = sa.or_(jobs.c.locked_until.is_(None), jobs.c.locked_until < now)
    with engine.begin() as conn:
        candidates = conn.execute(sa.select(jobs).where(free).order_by(jobs.c.created_at).limit(5)).all()
        for job in candidates:
            taken = conn.execute(
                jobs.update()
                .where(jobs.c.id == job.id, free)
                .values(locked_until=now + LEASE_SECONDS, attempts=jobs.c.attempts + 1)
            )
            if taken.rowcount:
                return job
    return None


def lease_of(job: sa.Row) -> Lease:
    """The lease `claim_next` took on `job`: its claim raised attempts by one."""
    return Lease(job.id, job.attempts + 1)


def finish(engine: Engine, lease: Lease) -> None:
    """Done: drop the job, unless another worker holds it now (its run must not lose its row)."""
    with engine.begin() as conn:
        conn.execute(jobs.delete().where(jobs.c.id == lease.job_id, jobs.c.attempts == lease.attempt))


def retry_later(engine: Engine, job: sa.Row) -> None:
    """Back off exponentially; give up (and say so) after MAX_ATTEMPTS. A job another worker holds
    by now is left alone: shortening its lease would let a third worker take it."""
    lease = lease_of(job)
    ours = sa.and_(jobs.c.id == lease.job_id, jobs.c.attempts == lease.attempt)
    with engine.begin() as conn:
        if lease.attempt >= MAX_ATTEMPTS:
            if conn.execute(jobs.delete().where(ours)).rowcount:
                logger.error("job %s (%s) failed %d times; dropped", job.id, job.kind, lease.attempt)
        else:
            conn.execute(jobs.update().where(ours).values(locked_until=clock.now() + 2**lease.attempt))


def pending_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one()


class Worker:
    """Runs queued jobs one at a time in a worker thread; woken at once by local enqueues."""

    def __init__(self, engine: Engine, handlers: dict[str, Handler]) -> None:
        self._engine = engine
        self._handlers = handlers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def wake(self) -> None:
        """Callable from any thread (enqueues happen in worker threads)."""
        loop, event = self._loop, self._wake
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    async def run_once(self) -> bool:
        """Run one job if there is one; True when it did.

        Shielded: a shutdown that cancels the worker between claiming a job and finishing it
        would leave the job leased (invisible to every worker) for LEASE_SECONDS, so a save we
        acknowledged would be missing after the restart. A job is short: milliseconds, or an
        LLM call bounded by its timeout."""
        with anyio.CancelScope(shield=True):
            return await self._run_one_job()

    async def _run_one_job(self) -> bool:
        job = await run_db(claim_next, self._engine)
        if job is None:
            return False
        handler = self._handlers.get(job.kind)
        lease = lease_of(job)
        try:
            if handler is None:
                raise LookupError(f"no handler for job kind {job.kind!r}")
            await run_db(handler, job.user_id, dict(job.payload), lease)
        except LeaseLost:
            logger.warning("job %s (%s) outlived its lease and was taken over; left to that run", job.id, job.kind)
        except Exception:
            logger.exception("job %s (%s) failed; will retry", job.id, job.kind)
            await run_db(retry_later, self._engine, job)
        else:
            await run_db(finish, self._engine, lease)
        return True

    async def drain(self, deadline_seconds: float) -> int:
        """Run jobs until none are left or the deadline passes (graceful shutdown)."""
        done = 0
        with anyio.move_on_after(deadline_seconds):
            while True:
                # run_once is shielded, so the deadline can only fire here, between jobs.
                await anyio.lowlevel.checkpoint()
                if not await self.run_once():
                    break
                done += 1
        return done

    async def run_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            await anyio.lowlevel.checkpoint()  # where a cancel lands while jobs keep coming
            try:
                if await self.run_once():
                    continue
            except Exception:
                logger.exception("job worker error; continuing")
            with anyio.move_on_after(IDLE_POLL_SECONDS):
                await self._wake.wait()
            self._wake.clear()
