"""Re-embedding after a model change, with no manual step: the server finds memories lacking a
vector of its model (an upgrade changed the model, or a remote embedding service was down when
they were saved) and embeds them again in the background, a slice per job."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import numpy as np
import pytest
import sqlalchemy as sa
from bench.people import ensure_people

from jean_memory.db.tables import memories, memory_vectors
from jean_memory.memory import indexing
from jean_memory.memory.embeddings import LOCAL_MODEL_NAME, LocalOnnxEmbedder
from jean_memory.memory.indexing import Indexer
from jean_memory.memory.jobs import Worker, pending_count
from jean_memory.memory.retrieval import Retriever
from jean_memory.memory.service import MemoryService, write_vectors
from tests.support.locks import signal_statements, wait_until_blocked
from tests.support.servers import threaded_server

OLD_MODEL = "local:all-MiniLM-L6-v2-int8"  # the name vectors had before the int8 model was derived
ALICE = ["I live in Porto", "My dog is called Biscuit", "I work as a nurse at Santo António"]
BOB = ["I play the cello", "I am allergic to peanuts"]


@pytest.fixture
def engine(engine):
    """The shared fixture's database, with accounts for the people these tests save for."""
    ensure_people(engine, "alice", "bob")
    return engine


def saved_under_old_model(engine: sa.Engine) -> None:
    """Memories as a server of the previous version left them (its own process and cache)."""
    service = MemoryService(engine, LocalOnnxEmbedder())
    for text in ALICE:
        service.add("alice", text)
    for text in BOB:
        service.add("bob", text)
    with engine.begin() as conn:
        conn.execute(memory_vectors.update().values(model=OLD_MODEL))


def run_jobs(engine: sa.Engine, service: MemoryService) -> int:
    return anyio.run(Worker(engine, Indexer(service).job_handlers()).drain, 60)


def vectors_by_text(engine: sa.Engine) -> dict[str, tuple[str, np.ndarray]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(memories.c.text, memory_vectors.c.model, memory_vectors.c.vector).join(
                memory_vectors, memory_vectors.c.memory_pk == memories.c.pk
            )
        ).all()
    return {row.text: (row.model, np.asarray(row.vector, dtype=np.float32)) for row in rows}


def test_vectors_of_another_model_are_replaced_by_background_jobs(engine: sa.Engine) -> None:
    embedder = LocalOnnxEmbedder()
    service = MemoryService(engine, embedder)
    saved_under_old_model(engine)
    assert Retriever(engine, embedder).rank("alice", "where does she live", 10, mode="vector") == []

    assert Indexer(service).queue_reembedding() == len(ALICE) + len(BOB)
    assert Indexer(service).queue_reembedding() == 0  # already queued: no second job per person
    assert run_jobs(engine, service) == 2  # one job per person

    stored = vectors_by_text(engine)
    assert sorted(stored) == sorted(ALICE + BOB)
    for text, (model, vector) in stored.items():
        assert model == LOCAL_MODEL_NAME
        np.testing.assert_allclose(vector, embedder.embed_query(text), atol=1e-5)
    nearest = Retriever(engine, embedder).rank("alice", "which city does she live in", 10, mode="vector")
    assert len(nearest) == len(ALICE)
    assert Indexer(service).queue_reembedding() == 0
    assert pending_count(engine) == 0


def test_a_large_backlog_goes_in_slices(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(indexing, "REEMBED_SLICE", 2)
    service = MemoryService(engine, LocalOnnxEmbedder())
    saved_under_old_model(engine)
    Indexer(service).queue_reembedding()
    # Alice: 2 + 1 (the second slice finds one left); Bob: 2 + 0 (his full slice queues a
    # continuation, which finds nothing).
    assert run_jobs(engine, service) == 4
    assert {model for model, _ in vectors_by_text(engine).values()} == {LOCAL_MODEL_NAME}


class RewordingEmbedder(LocalOnnxEmbedder):
    """The real model; while it embeds a slice, the memory `pk` is reworded by another request."""

    def __init__(self, engine: sa.Engine, text: str) -> None:
        super().__init__()
        self.engine, self.text = engine, text
        self.armed = False

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.armed and self.text in texts:
            self.armed = False
            with self.engine.begin() as conn:
                conn.execute(memories.update().where(memories.c.text == self.text).values(text=self.text + " now"))
        return super().embed(texts)


def test_a_memory_reworded_meanwhile_is_not_given_the_old_texts_vector(engine: sa.Engine) -> None:
    embedder = RewordingEmbedder(engine, ALICE[0])
    service = MemoryService(engine, embedder)
    saved_under_old_model(engine)
    embedder.armed = True
    Indexer(service).queue_reembedding()
    run_jobs(engine, service)
    stored = vectors_by_text(engine)
    assert stored[ALICE[0] + " now"][0] == OLD_MODEL  # skipped: its vector would be of the old text
    # The next pass embeds the new text.
    assert Indexer(service).queue_reembedding() == 1
    run_jobs(engine, service)
    model, vector = vectors_by_text(engine)[ALICE[0] + " now"]
    assert model == LOCAL_MODEL_NAME
    np.testing.assert_allclose(vector, embedder.embed_query(ALICE[0] + " now"), atol=1e-5)


def test_a_started_server_re_embeds_without_being_asked(database_url: str, engine: sa.Engine, tmp_path: Path) -> None:
    saved_under_old_model(engine)
    with threaded_server(database_url, tmp_path / "data"):
        deadline = time.monotonic() + 60
        while {model for model, _ in vectors_by_text(engine).values()} != {LOCAL_MODEL_NAME}:
            assert time.monotonic() < deadline, "the server did not re-embed within 60 s"
            time.sleep(0.2)


def test_a_job_embeds_for_a_bounded_time_then_hands_over(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slice of 512 long chunks took 23 s, all of it shielded from shutdown: a job now stops
    embedding after REEMBED_SECONDS and queues the rest after the last key it reached."""
    monkeypatch.setattr(indexing, "REEMBED_SECONDS", 0.0)
    monkeypatch.setattr(indexing, "REEMBED_CALL", 1)
    saved_under_old_model(engine)
    service = MemoryService(engine, LocalOnnxEmbedder())
    Indexer(service).queue_reembedding()
    assert run_jobs(engine, service) == len(ALICE) + len(BOB)  # one memory per job
    assert {model for model, _ in vectors_by_text(engine).values()} == {LOCAL_MODEL_NAME}


def test_two_writers_of_one_memorys_vector_both_succeed(engine: sa.Engine) -> None:
    """Found in review: on PostgreSQL, `jean-memory reindex` beside the background job failed
    with a duplicate key: each wrote a vector by delete-then-insert, and the second insert
    collided with the first's once it committed. Vectors are upserted now."""
    service = MemoryService(engine, LocalOnnxEmbedder())
    service.add("alice", ALICE[0])
    with engine.connect() as conn:
        pk = conn.execute(sa.select(memories.c.pk)).scalar_one()
    first_vector, second_vector = np.full(384, 0.05, dtype=np.float32), np.full(384, -0.05, dtype=np.float32)
    errors: list[BaseException] = []
    second_started = threading.Event()

    def second_writer() -> None:
        try:
            with engine.begin() as conn:
                signal_statements(conn, second_started)
                write_vectors(conn, service.embedder, "alice", [(pk, second_vector)])
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    with engine.connect() as first:
        with first.begin():
            write_vectors(first, service.embedder, "alice", [(pk, first_vector)])
            writer = threading.Thread(target=second_writer)
            writer.start()
            wait_until_blocked(engine, second_started)  # on the first's row lock
        writer.join(30)
    assert errors == []
    np.testing.assert_allclose(vectors_by_text(engine)[ALICE[0]][1], second_vector)
