"""The durable job queue on a real database: a worker stopped at shutdown neither loses nor
strands the job it was running, a job outliving its lease is neither taken over while it
progresses nor run twice over once it was, and jobs run side by side, each once."""

import threading
import time

import anyio
import numpy as np
import pytest
import sqlalchemy as sa
from bench.people import ensure_people

from jean_memory import clock
from jean_memory.db.tables import documents, jobs, memories
from jean_memory.memory import jobs as job_queue
from jean_memory.memory.chunking import chunk_text
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.indexing import EMBED_BATCH, Indexer
from jean_memory.memory.jobs import (
    BACKLOG_LIMIT,
    HEARTBEAT_SECONDS,
    LEASE_SECONDS,
    Lease,
    LeaseLost,
    Worker,
    enqueue,
    pending_count,
)
from jean_memory.memory.service import MemoryService


@pytest.fixture
def engine(engine):
    """The shared fixture's database, with accounts for the people these tests save for."""
    ensure_people(engine, "u1")
    return engine


def test_a_job_running_when_the_worker_is_cancelled_still_finishes(engine):
    """Found by the SIGTERM burst test: cancelling the worker between claiming a job and
    finishing it left the job leased for five minutes, so the save it promised was missing
    after a restart."""
    started, release = threading.Event(), threading.Event()
    ran: list[dict] = []

    def slow_save(user_id: str, payload: dict, lease: Lease) -> None:
        started.set()
        release.wait(10)
        ran.append(payload)

    with engine.begin() as conn:
        enqueue(conn, "save", "u1", {"text": "I live in Porto"})
    worker = Worker(engine, {"save": slow_save})

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.run_forever)
            await anyio.to_thread.run_sync(started.wait, 10)
            tasks.cancel_scope.cancel()  # shutdown arrives while the job runs
            release.set()

    anyio.run(main)
    assert ran == [{"text": "I live in Porto"}]
    assert pending_count(engine) == 0  # finished, not left leased


class PausingEmbedder(LocalOnnxEmbedder):
    """The real local model, made to stop at its first `pauses` calls until the test lets it go:
    it stands for a worker that is slow on a large document (5 MB took ~670 s on a busy host)."""

    def __init__(self, pauses: int) -> None:
        super().__init__()
        self._pauses = pauses
        self.entered = threading.Semaphore(0)
        self.proceed = threading.Semaphore(0)

    def embed(self, texts: list[str]) -> np.ndarray:
        if self._pauses > 0:
            self._pauses -= 1
            self.entered.release()
            self.proceed.acquire(timeout=30)
        return super().embed(texts)


def document(days: int) -> str:
    """One chunk a day (each heading starts a chunk), cheap to embed."""
    return "\n\n".join(f"# Day {i}\n\nWatered the tomatoes on day {i}." for i in range(days))


def stored_chunks(engine, document_id: str) -> tuple[int, int, int]:
    """(chunk rows, distinct chunk texts, the document's chunk_count)."""
    with engine.connect() as conn:
        rows, distinct = conn.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(memories.c.text))).where(
                memories.c.document_id == document_id
            )
        ).one()
        count = conn.execute(sa.select(documents.c.chunk_count).where(documents.c.id == document_id)).scalar_one()
    return rows, distinct, count


async def wait(semaphore: threading.Semaphore) -> None:
    assert await anyio.to_thread.run_sync(semaphore.acquire, True, 30)


def test_a_worker_whose_lease_was_taken_over_writes_nothing_more(engine):
    """Found by review: indexing a large document outlasted the 300 s lease, a second worker took
    the same job, and both inserted every chunk (40 stored, 20 distinct)."""
    embedder = PausingEmbedder(pauses=1)
    service = MemoryService(engine, embedder)
    document_id = service.store_document("u1", "Garden", document(5))
    first, second = Worker(engine, Indexer(service).job_handlers()), Worker(engine, Indexer(service).job_handlers())

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first.run_once)
            await wait(embedder.entered)  # the first worker is embedding its first batch ...
            clock.advance(LEASE_SECONDS + 1)  # ... for longer than its lease
            assert await second.run_once()  # so the second takes the job and indexes it all
            embedder.proceed.release()

    anyio.run(main)
    assert stored_chunks(engine, document_id) == (5, 5, 5)
    assert pending_count(engine) == 0


def test_a_long_job_renews_its_lease_between_batches(engine):
    """Each batch renews the lease, so a job longer than LEASE_SECONDS (in total, not per batch)
    is never taken by another worker while its worker is making progress."""
    text = document(EMBED_BATCH + 6)
    assert len(chunk_text(text)) > EMBED_BATCH  # two batches, or this test proves nothing
    embedder = PausingEmbedder(pauses=2)
    service = MemoryService(engine, embedder)
    document_id = service.store_document("u1", "Garden", text)
    first, second = Worker(engine, Indexer(service).job_handlers()), Worker(engine, Indexer(service).job_handlers())
    taken_over: list[bool] = []

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first.run_once)
            await wait(embedder.entered)  # first batch
            clock.advance(LEASE_SECONDS * 2 / 3)
            embedder.proceed.release()
            await wait(embedder.entered)  # second batch: the first batch's write renewed the lease
            clock.advance(LEASE_SECONDS * 2 / 3)  # past the original lease, within the renewed one
            taken_over.append(await second.run_once())
            embedder.proceed.release()

    anyio.run(main)
    assert taken_over == [False]
    rows, distinct, count = stored_chunks(engine, document_id)
    assert rows == distinct == count == EMBED_BATCH + 6
    assert pending_count(engine) == 0


def test_drain_stops_at_its_deadline_while_jobs_keep_coming(engine):
    """Found in review: `run_once` is shielded, and drain looped on it with no point where its
    deadline could fire, so a chain of jobs (a re-embedding backlog queues its own
    continuation) ran to the end however long it was, past the shutdown grace period."""
    ran: list[int] = []

    def step(user_id: str, payload: dict, lease: Lease) -> None:
        ran.append(payload["n"])
        time.sleep(0.05)
        if payload["n"] < 40:
            with engine.begin() as conn:
                lease.renew(conn)
                enqueue(conn, "step", user_id, {"n": payload["n"] + 1})

    with engine.begin() as conn:
        enqueue(conn, "step", "u1", {"n": 1})
    worker = Worker(engine, {"step": step})
    started = time.monotonic()
    done = anyio.run(worker.drain, 0.3)
    assert time.monotonic() - started < 2
    assert done == len(ran) < 40
    assert leases(engine) == [None]  # the rest of the chain waits for the next start, free to take


def leases(engine) -> list[float | None]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(jobs.c.locked_until).order_by(jobs.c.created_at)).scalars())


def test_a_running_job_is_released_at_the_drain_deadline(engine):
    """Issue 18: a job still running when the shutdown grace period ended stayed leased, so the
    next start (or another instance) could not take it for LEASE_SECONDS. Now its lease is
    cleared and its handler stops at its next renewal."""
    started, stop = threading.Event(), threading.Event()
    outcome: list[str] = []

    def stuck(user_id: str, payload: dict, lease: Lease) -> None:
        started.set()
        stop.wait(10)
        try:
            with engine.begin() as conn:
                lease.renew(conn)
            outcome.append("renewed")
        except LeaseLost:
            outcome.append("lease lost")

    with engine.begin() as conn:
        enqueue(conn, "stuck", "u1", {})
    worker = Worker(engine, {"stuck": stuck})
    began = time.monotonic()
    assert anyio.run(worker.drain, 0.5) == 1
    assert started.is_set() and time.monotonic() - began < 3
    assert leases(engine) == [None]
    stop.set()
    assert anyio.run(Worker(engine, {"stuck": lambda *_: None}).run_once)  # taken again at once
    deadline = time.monotonic() + 10
    while not outcome:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert outcome == ["lease lost"]
    assert pending_count(engine) == 0


def test_the_heartbeat_keeps_a_long_job_leased(engine, monkeypatch):
    """Issue 18: with LEASE_SECONDS at 300 a crashed process's jobs waited five minutes. A short
    lease needs renewing while a job runs, however long it runs and whether or not its handler
    writes: a second worker must not take a job the first is still running."""
    assert HEARTBEAT_SECONDS * 3 <= LEASE_SECONDS  # a few missed beats never let a live lease lapse
    # Beats a fifth of a second apart: the test waits for one in real time (5 s otherwise).
    monkeypatch.setattr(job_queue, "HEARTBEAT_SECONDS", 0.2)
    started, stop = threading.Event(), threading.Event()

    def quiet(user_id: str, payload: dict, lease: Lease) -> None:
        started.set()
        stop.wait(30)

    with engine.begin() as conn:
        enqueue(conn, "quiet", "u1", {})
    first, second = Worker(engine, {"quiet": quiet}), Worker(engine, {"quiet": quiet})
    taken_over: list[bool] = []

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first.run_forever)
            assert await anyio.to_thread.run_sync(started.wait, 10)
            clock.advance(LEASE_SECONDS + 1)  # the claim's lease has lapsed ...
            deadline = time.monotonic() + 10
            while not leases(engine)[0] > clock.now():  # ... until the next beat renews it
                assert time.monotonic() < deadline, "no heartbeat renewed the lease"
                await anyio.sleep(0.05)
            taken_over.append(await second.run_once())
            with engine.connect() as conn:  # nor taken again by its own worker as a lapsed job
                taken_over.append(conn.execute(sa.select(jobs.c.attempts)).scalar_one() != 1)
            stop.set()
            tasks.cancel_scope.cancel()

    anyio.run(main)
    assert taken_over == [False, False]
    assert pending_count(engine) == 0


def test_jobs_run_side_by_side_without_taking_request_threads(engine):
    """Issue 18: one job at a time left 486 saves queued after 3 s of five clients. Jobs now run
    `slots` at once, in threads of the worker's own limiter: requests' threads stay free."""
    slots = 3
    together = threading.Barrier(slots, timeout=10)  # breaks unless all three run at once
    borrowed: list[float] = []

    def meet(user_id: str, payload: dict, lease: Lease) -> None:
        together.wait()

    async def main() -> int:
        async def watch() -> None:
            while True:
                borrowed.append(anyio.to_thread.current_default_thread_limiter().borrowed_tokens)
                await anyio.sleep(0.01)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch)
            done = await Worker(engine, {"meet": meet}, slots=slots).drain(30)
            tasks.cancel_scope.cancel()
        return done

    with engine.begin() as conn:
        for n in range(slots):
            enqueue(conn, "meet", "u1", {"n": n})
    assert anyio.run(main) == slots
    assert pending_count(engine) == 0  # no barrier broke, so no job failed and waits to retry
    assert borrowed and max(borrowed) == 0


def test_several_workers_run_each_job_once(engine):
    """Claims are leased through the database: two instances' workers, two slots each, draining
    one queue at once run every job exactly once (SKIP LOCKED on PostgreSQL, SQLite's single
    writer and the UPDATE's own check on SQLite)."""
    ran: list[int] = []
    lock = threading.Lock()

    def count(user_id: str, payload: dict, lease: Lease) -> None:
        with lock:
            ran.append(payload["n"])

    with engine.begin() as conn:
        for n in range(60):
            enqueue(conn, "count", f"u{n % 3}", {"n": n})

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            for _ in range(2):
                tasks.start_soon(Worker(engine, {"count": count}, slots=2).drain, 60)

    anyio.run(main)
    assert sorted(ran) == list(range(60))
    assert pending_count(engine) == 0


def test_a_request_queueing_onto_a_deep_backlog_runs_a_quick_job_itself(engine):
    """Issue 18: 200 clients saving left thousands of jobs queued and facts appearing 30 s after
    the load ended. Past BACKLOG_LIMIT the thread that queues one more runs the oldest quick job
    (a save) before answering, so saves cannot outrun the cores; slow kinds are never run there,
    and a job's own enqueues never help."""
    ran: list[tuple[str, bool]] = []
    worker: Worker

    def save(user_id: str, payload: dict, lease: Lease) -> None:
        ran.append((payload["n"], threading.current_thread() is threading.main_thread()))
        with engine.begin() as conn:
            enqueue(conn, "index", user_id, {"n": "from a job"})
        worker.enqueued()  # as the service's hook does after an enqueue

    worker = Worker(engine, {"save": save, "index": lambda *_: None}, quick={"save"})
    with engine.begin() as conn:
        enqueue(conn, "index", "u1", {"n": "slow"})
        for n in range(BACKLOG_LIMIT - 1):
            enqueue(conn, "save", "u1", {"n": n})
    worker.enqueued()  # at the limit: nothing to help with
    assert ran == []
    with engine.begin() as conn:
        enqueue(conn, "save", "u1", {"n": "one too many"})
    worker.enqueued()
    assert ran == [(0, True)]  # the oldest save, here, and only one (not the older slow job)
    assert pending_count(engine) == BACKLOG_LIMIT + 1  # one save done, one job queued by it
