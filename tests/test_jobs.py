"""The durable job queue on a real database: a worker stopped at shutdown neither loses nor
strands the job it was running, and a job outliving its lease is neither taken over while it
progresses nor run twice over once it was."""

import threading
import time

import anyio
import numpy as np
import sqlalchemy as sa

from jean_memory import clock
from jean_memory.db.tables import documents, memories
from jean_memory.memory.chunking import chunk_text
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.indexing import EMBED_BATCH, Indexer
from jean_memory.memory.jobs import LEASE_SECONDS, Lease, Worker, enqueue, pending_count
from jean_memory.memory.service import MemoryService


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
                enqueue(conn, "step", user_id, {"n": payload["n"] + 1})

    with engine.begin() as conn:
        enqueue(conn, "step", "u1", {"n": 1})
    worker = Worker(engine, {"step": step})
    done = anyio.run(worker.drain, 0.3)
    assert done == len(ran) < 40
    assert pending_count(engine) == 1  # the rest of the chain waits for the next start
