"""A small durable job queue in the database, and the in-process worker that drains it.

A job is written in the same request that decides on it, before the answer goes out; any
instance's worker may take it. Taking a job leases it (`locked_until`) for LEASE_SECONDS, and
the worker renews the lease of every job it runs every HEARTBEAT_SECONDS, however long the job
takes; a process killed mid-job stops renewing, so any instance takes the job again within
LEASE_SECONDS (a promised save is made seconds after a crash, not minutes). Handlers must be
idempotent, since a job may run twice. A handler also renews with each write (`Lease.renew`),
inside that write's transaction: a run that was stalled past its lease and finds the job taken
stops without writing more.

The worker runs up to `job_slots()` jobs at once, each in a thread of its own limiter, so the
threads requests run in (anyio's default limiter) are never taken by jobs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from jean_memory import clock
from jean_memory.db.tables import jobs

logger = logging.getLogger("jean_memory.jobs")

#: A dead process's jobs wait this long to be taken again: short, because the heartbeat
#: renews a live one's whatever the job's length (a 5 MB document indexes for minutes).
LEASE_SECONDS = 30
#: A lease is renewed this often, so a few missed beats (a busy event loop, a slow commit)
#: never let a live job's lease lapse.
HEARTBEAT_SECONDS = 5
MAX_ATTEMPTS = 5
IDLE_POLL_SECONDS = 1.0
#: Queued jobs beyond which a request that queues one more runs a queued quick job (a save)
#: itself before it answers: under more saves than the cores can make, the requester pays, so
#: the queue stays this short instead of growing for as long as the load lasts.
BACKLOG_LIMIT = 20

_in_job = threading.local()  # set in threads running a job: their own enqueues never help


def job_slots() -> int:
    """Jobs run at once: one per core, at most four. Embedding (the bulk of a job's CPU) runs
    outside the GIL, so cores are what concurrent jobs share; a fifth would only wait."""
    return max(1, min(4, os.cpu_count() or 1))


class LeaseLost(Exception):
    """The job is no longer this run's: another worker claimed it after this one's lease lapsed,
    or this worker released it at shutdown. The run that holds it now owns it."""


@dataclass(frozen=True)
class Lease:
    """One worker's claim on one job. Every claim raises the job's `attempts`, so the count this
    claim set tells whether the job is still ours, even after `locked_until` has passed."""

    job_id: str
    attempt: int
    # Set when the worker gave the job up (shutdown): the handler's next renewal stops it.
    released: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def renew(self, conn: Connection) -> None:
        """Extend the lease, inside the transaction of the write it guards: the write then commits
        only while the job is still ours (on PostgreSQL a concurrent claim waits for it and then
        finds the job held). Raises LeaseLost, rolling that transaction back, when it is not."""
        if self.released.is_set():
            raise LeaseLost(f"job {self.job_id} was released at shutdown; the next run does the rest")
        held = conn.execute(jobs.update().where(*self._held()).values(locked_until=clock.now() + LEASE_SECONDS))
        if not held.rowcount:
            raise LeaseLost(f"job {self.job_id} was taken by another worker after this one's lease lapsed")

    def _ours(self) -> tuple[sa.ColumnElement[bool], ...]:
        return jobs.c.id == self.job_id, jobs.c.attempts == self.attempt

    def _held(self) -> tuple[sa.ColumnElement[bool], ...]:
        """Ours and not released: a renewal queued behind `release` (it checked `released` just
        before it was set) must not lease the job again, or the next start waits LEASE_SECONDS."""
        return *self._ours(), jobs.c.locked_until.is_not(None)


# (user_id, payload, lease), run in a worker thread; a handler whose writes must not land after
# another worker took the job over calls lease.renew(conn) in each write transaction.
Handler = Callable[[str, dict[str, Any], Lease], None]


def enqueue(conn: Connection, kind: str, user_id: str, payload: dict[str, Any]) -> str:
    job_id = clock.new_id()
    conn.execute(jobs.insert().values(id=job_id, kind=kind, user_id=user_id, payload=payload, created_at=clock.now()))
    return job_id


def users_with_queued(kind: str) -> sa.Select:
    """The user ids that have a job of `kind` waiting or running, as a subquery to filter by."""
    return sa.select(jobs.c.user_id).where(jobs.c.kind == kind)


def claim_next(engine: Engine, kinds: Collection[str] | None = None, running: Collection[str] = ()) -> sa.Row | None:
    """Lease the oldest job nobody holds (of `kinds`, if given); None when there is nothing to do.
    The row is the job as it was before this claim (see `lease_of`). `running`: the ids of the
    jobs the caller runs, never taken again by it even when their leases look lapsed.

    Safe with any number of claimers: on PostgreSQL the candidates are locked with SKIP LOCKED,
    so concurrent claimers take different jobs instead of queueing on the same rows; SQLite
    serialises writers, and the UPDATE checks again that the job is free."""
    now = clock.now()
    free = sa.or_(jobs.c.locked_until.is_(None), jobs.c.locked_until < now)
    wanted = sa.and_(
        jobs.c.kind.in_(kinds) if kinds is not None else sa.true(),
        jobs.c.id.not_in(list(running)) if running else sa.true(),
    )
    with engine.begin() as conn:
        candidates = conn.execute(
            sa.select(jobs).where(free, wanted).order_by(jobs.c.created_at).limit(5).with_for_update(skip_locked=True)
        ).all()
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


def renew_all(engine: Engine, leases: list[Lease]) -> None:
    """The heartbeat: extend every lease still ours, in one transaction. A lease another worker
    took is left to that worker (its handler finds out at its next write)."""
    until = clock.now() + LEASE_SECONDS
    with engine.begin() as conn:
        for lease in leases:
            conn.execute(jobs.update().where(*lease._held()).values(locked_until=until))


def release(engine: Engine, leases: list[Lease]) -> None:
    """Give jobs back at shutdown: their leases cleared, any instance (this one after a restart)
    takes them at once instead of after LEASE_SECONDS. Handlers stop at their next renewal."""
    for lease in leases:
        lease.released.set()
    with engine.begin() as conn:
        for lease in leases:
            conn.execute(jobs.update().where(*lease._ours()).values(locked_until=None))


def finish(engine: Engine, lease: Lease) -> None:
    """Done: drop the job, unless another worker holds it now (its run must not lose its row)."""
    with engine.begin() as conn:
        conn.execute(jobs.delete().where(*lease._ours()))


def retry_later(engine: Engine, job: sa.Row) -> None:
    """Back off exponentially; give up (and say so) after MAX_ATTEMPTS. A job another worker holds
    by now is left alone: shortening its lease would let a third worker take it."""
    lease = lease_of(job)
    with engine.begin() as conn:
        if lease.attempt >= MAX_ATTEMPTS:
            if conn.execute(jobs.delete().where(*lease._ours())).rowcount:
                logger.error("job %s (%s) failed %d times; dropped", job.id, job.kind, lease.attempt)
        else:
            conn.execute(jobs.update().where(*lease._ours()).values(locked_until=clock.now() + 2**lease.attempt))


def run_claimed(engine: Engine, handler: Handler, job: sa.Row) -> None:
    """Run a claimed job in this thread and finish it, or schedule its retry. The lease is
    renewed every HEARTBEAT_SECONDS while it runs, as the worker's heartbeat does for its own
    jobs: a request running a save (back-pressure) past LEASE_SECONDS must not see a worker
    take the same job and run it beside it."""
    lease = lease_of(job)
    done = threading.Event()
    beat = threading.Thread(target=_beat, args=(engine, lease, done), name=f"job-heartbeat-{job.id}", daemon=True)
    beat.start()
    try:
        try:
            as_job(handler, job.user_id, dict(job.payload), lease)
        finally:  # stopped before the retry's backoff is written: a late beat would lengthen it
            done.set()
            beat.join()
    except LeaseLost:
        logger.warning("job %s (%s) was taken over or released; left to the next run", job.id, job.kind)
    except Exception:
        logger.exception("job %s (%s) failed; will retry", job.id, job.kind)
        retry_later(engine, job)
    else:
        finish(engine, lease)


def _beat(engine: Engine, lease: Lease, done: threading.Event) -> None:
    while not done.wait(HEARTBEAT_SECONDS):
        try:
            renew_all(engine, [lease])
        except Exception:
            logger.exception("renewing the lease of job %s failed; will retry", lease.job_id)


def as_job(handler: Handler, user_id: str, payload: dict[str, Any], lease: Lease) -> None:
    """Run `handler` marked as a job, so the jobs it queues never make it help (see `enqueued`)."""
    _in_job.active = True
    try:
        handler(user_id, payload, lease)
    finally:
        _in_job.active = False


def pending_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one()


class Worker:
    """Runs queued jobs, up to `slots` at once, each in a thread of the worker's own limiter;
    woken at once by local enqueues and by each job's end."""

    def __init__(
        self,
        engine: Engine,
        handlers: dict[str, Handler],
        slots: int | None = None,
        quick: Collection[str] = (),
    ) -> None:
        self._engine = engine
        self._handlers = handlers
        self._quick = frozenset(quick)  # kinds short enough for a request to run (see `enqueued`)
        self._slots = slots or job_slots()
        # Job threads come from here, never from the default limiter that requests use.
        self._threads = anyio.CapacityLimiter(self._slots + 1)  # + the claim/heartbeat queries
        self._running: dict[str, tuple[Lease, anyio.CancelScope]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def wake(self) -> None:
        """Callable from any thread (enqueues happen in worker threads)."""
        loop, event = self._loop, self._wake
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    def enqueued(self) -> None:
        """The enqueue hook, called in the thread that queued a job: wakes the worker, and while
        more than BACKLOG_LIMIT jobs wait, runs the oldest quick one right here (back-pressure:
        the request answers a job's time later, and saves cannot outrun the cores)."""
        self.wake()
        if not self._quick or getattr(_in_job, "active", False):
            return
        if pending_count(self._engine) <= BACKLOG_LIMIT:
            return
        job = claim_next(self._engine, self._quick)
        if job is not None:
            run_claimed(self._engine, self._handlers[job.kind], job)

    async def _db(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: fn(*args), limiter=self._threads)

    async def run_once(self) -> bool:
        """Claim and run one job, if there is one; True when it did. No heartbeat: for tests
        that move the clock by hand."""
        job = await self._db(claim_next, self._engine)
        if job is None:
            return False
        lease = lease_of(job)
        scope = anyio.CancelScope(shield=True)
        self._running[job.id] = (lease, scope)
        await self._run(job, lease, scope)
        return True

    async def _run(self, job: sa.Row, lease: Lease, scope: anyio.CancelScope) -> None:
        """Run one claimed job to its end, then finish it or schedule its retry.

        `scope` is shielded: a shutdown that cancels the worker lets the job finish (a save we
        acknowledged should be made before we exit). Only `release_running` cancels it: the
        thread is then abandoned, its lease cleared, and the handler stops at its next renewal."""
        handler = self._handlers.get(job.kind)
        with scope:
            try:
                if handler is None:
                    raise LookupError(f"no handler for job kind {job.kind!r}")
                await anyio.to_thread.run_sync(
                    as_job,
                    handler,
                    job.user_id,
                    dict(job.payload),
                    lease,
                    limiter=self._threads,
                    abandon_on_cancel=True,
                )
            except LeaseLost:
                logger.warning("job %s (%s) was taken over or released; left to the next run", job.id, job.kind)
            except Exception:
                logger.exception("job %s (%s) failed; will retry", job.id, job.kind)
                await self._db(retry_later, self._engine, job)
            else:
                await self._db(finish, self._engine, lease)
            finally:
                self._running.pop(job.id, None)
                self.wake()  # a slot is free
        if scope.cancelled_caught:
            logger.info(
                "job %s (%s) released unfinished: the next start, or another instance, runs it", job.id, job.kind
            )

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(HEARTBEAT_SECONDS)
            leases = [lease for lease, _ in self._running.values()]
            if leases:
                try:
                    await self._db(renew_all, self._engine, leases)
                except Exception:
                    logger.exception("renewing job leases failed; will retry")

    async def _serve(self, until_idle: bool, deadline: float = math.inf) -> int:
        """Claim jobs while slots are free, until cancelled, or with `until_idle` until nothing is
        queued or running, or until `deadline` (anyio time), when the jobs still running are
        released. Returns how many jobs this loop started."""
        self._loop = asyncio.get_running_loop()
        if self._wake is None:
            self._wake = asyncio.Event()
        started = 0
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._heartbeat)
            while anyio.current_time() < deadline:
                self._wake.clear()
                job = None
                if len(self._running) < self._slots:
                    try:
                        job = await self._db(claim_next, self._engine, None, list(self._running))
                    except Exception:
                        logger.exception("claiming a job failed; will retry")
                if job is not None:
                    lease, scope = lease_of(job), anyio.CancelScope(shield=True)
                    self._running[job.id] = (lease, scope)  # the slot is taken from now on
                    tasks.start_soon(self._run, job, lease, scope)
                    started += 1
                    await anyio.lowlevel.checkpoint()  # where a cancel lands while jobs keep coming
                    continue
                if until_idle and not self._running:
                    break
                with anyio.move_on_after(min(IDLE_POLL_SECONDS, deadline - anyio.current_time())):
                    await self._wake.wait()
            await self.release_running()  # past the deadline; nothing runs when idle
            tasks.cancel_scope.cancel()
        return started

    async def run_forever(self) -> None:
        """Until cancelled; the jobs running then go on (see `_run`) until they end or `drain`
        releases them."""
        await self._serve(until_idle=False)

    async def drain(self, deadline_seconds: float) -> int:
        """Run jobs until none are left or the deadline passes (graceful shutdown, `import`). At
        the deadline the jobs still running, this loop's and a cancelled `run_forever`'s, are
        released for the next start. Returns how many jobs this loop started."""
        return await self._serve(until_idle=True, deadline=anyio.current_time() + deadline_seconds)

    async def release_running(self) -> None:
        """Clear the leases of the jobs still running and stop waiting for them."""
        held = list(self._running.values())
        if not held:
            return
        with anyio.CancelScope(shield=True):
            await self._db(release, self._engine, [lease for lease, _ in held])
        for _, scope in held:
            scope.cancel()
