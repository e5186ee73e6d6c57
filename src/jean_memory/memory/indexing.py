"""The work that outlives a request, done by the job worker: saving what `jean_memory` decided to
keep, chunking and embedding stored documents, and embedding memories that lack a vector of the
current model (after a model change, or saved while a remote embedding service was down).

The service (service.py) queues the first two in the request's own transaction; the maintenance
task queues re-embedding (`queue_reembedding`), and `jean-memory reindex` does it in one go.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from jean_memory.db.tables import documents, memories, memory_vectors
from jean_memory.memory import jobs, llm_decisions
from jean_memory.memory.chunking import chunk_text
from jean_memory.memory.owner import owned_by
from jean_memory.memory.pg_vectors import PgVectorIndex
from jean_memory.memory.records import MemoryInputError
from jean_memory.memory.service import INDEX_JOB, SAVE_JOB, MemoryService, insert_memory, write_vectors
from jean_memory.memory.trash import LIVE
from jean_memory.memory.vectors import bump_version

REEMBED_JOB = "reembed"
EMBED_BATCH = 64
#: A re-embedding job looks at this many of a person's memories (by key) and embeds for at most
#: REEMBED_SECONDS, then queues its continuation: a job stays short (shutdown waits for the one
#: running; a 256-wordpiece chunk takes 45 ms) and saves queued meanwhile go first.
REEMBED_SLICE = 512
REEMBED_SECONDS = 2.0
#: Texts per embedding call inside a re-embedding job, between two looks at the clock.
REEMBED_CALL = 16


class Indexer:
    """Runs the jobs for one memory service, with its engine, embedder and extractor."""

    def __init__(self, memory: MemoryService) -> None:
        self._memory = memory
        self._engine = memory.engine
        self._embedder = memory.embedder
        self._extractor = memory.extractor
        self._vectors = memory.vectors

    def _on_enqueue(self) -> None:
        self._memory.job_queued()

    def _write_vectors(self, conn: Connection, user_id: str, pairs: Iterable[tuple[int, np.ndarray]]) -> None:
        write_vectors(conn, self._embedder, user_id, pairs)

    def job_handlers(self) -> dict[str, jobs.Handler]:
        return {SAVE_JOB: self.save_facts_job, INDEX_JOB: self.index_document_job, REEMBED_JOB: self.reembed_job}

    def save_facts_job(self, user_id: str, payload: dict[str, Any], lease: jobs.Lease | None = None) -> None:
        """Short (two LLM calls bounded by their timeout), so it never renews `lease`. With a
        model, it picks the facts and decides what each does to what is stored (llm_decisions.py);
        when it fails, the heuristic's facts are saved with the local detector."""
        facts = payload.get("facts", [])
        if self._extractor is not None and payload.get("message"):
            extracted = self._extractor.facts_or_none(payload["message"])
            if extracted is not None:  # the model answered: it also decides against what is stored
                llm_decisions.save_facts(self._memory, self._extractor, user_id, extracted, payload.get("client"))
                return
        for fact in facts:
            try:
                self._memory.add(user_id, fact, ["auto"], payload.get("client"))
            except MemoryInputError:
                continue

    def index_document_job(self, user_id: str, payload: dict[str, Any], lease: jobs.Lease | None = None) -> None:
        """Chunk and embed a stored document; safe to run again after a crash (idempotent).

        A large document takes longer than the job's lease, so every write renews `lease` in its
        own transaction: no other worker takes the job while this one progresses, and if this
        one stalled past the lease and another took over, the renewal raises LeaseLost before
        anything is written beside that run's chunks. Without a lease (a direct call) it just runs.
        """
        document_id = payload["document_id"]
        hold: Callable[[Connection], None] = lease.renew if lease is not None else lambda conn: None
        with self._engine.connect() as conn:
            document = conn.execute(
                sa.select(documents).where(documents.c.id == document_id, documents.c.user_id == user_id)
            ).first()
        if document is None:
            return
        chunks = chunk_text(document.content)
        with self._engine.begin() as conn:
            hold(conn)
            conn.execute(
                memories.delete().where(memories.c.document_id == document_id, owned_by(memories.c.user_id, user_id))
            )
        try:
            for start in range(0, len(chunks), EMBED_BATCH):
                batch = chunks[start : start + EMBED_BATCH]
                vectors = self._embedder.embed(batch) if self._embedder else [None] * len(batch)
                with self._engine.begin() as conn:
                    hold(conn)
                    pairs = []
                    for text, vector in zip(batch, vectors, strict=True):
                        pk, _ = insert_memory(conn, user_id, text, [], document.client, "chunk", document_id)
                        if vector is not None:
                            pairs.append((pk, vector))
                    self._write_vectors(conn, user_id, pairs)
                    bump_version(conn, user_id)
        except MemoryInputError:
            return  # the account was deleted meanwhile, and the document with it: nothing to index
        with self._engine.begin() as conn:
            hold(conn)
            conn.execute(
                documents.update()
                .where(documents.c.id == document_id, documents.c.user_id == user_id)
                .values(status="ready", chunk_count=len(chunks))
            )

    def build_vector_index(self) -> bool:
        """PostgreSQL: build the HNSW index once some user has outgrown exact search, outside any
        request (see pg_vectors). True when it was built now; SQLite has nothing to build."""
        if not isinstance(self._vectors, PgVectorIndex) or self._embedder is None:
            return False
        return self._vectors.build_index_if_needed(self._embedder.model_name, self._embedder.dimensions)

    # --- re-embedding -------------------------------------------------------------------------------

    def _without_vector(self, model: str) -> sa.Select:
        """Memories (and chunks) with no vector from `model`: all of them after a model change,
        and any saved while a remote embedding service was down."""
        has_vector = sa.and_(memory_vectors.c.memory_pk == memories.c.pk, memory_vectors.c.model == model)
        return (
            sa.select(memories.c.pk, memories.c.user_id, memories.c.text)
            .outerjoin(memory_vectors, has_vector)
            .where(memory_vectors.c.memory_pk.is_(None), LIVE)  # the trash keeps no vectors
        )

    def queue_reembedding(self) -> int:
        """Queue a re-embedding job for each person with memories lacking a vector of the current
        model, unless one is queued already; returns how many memories wait. Run at start and
        then periodically, so an upgrade that changes the model needs no manual step: until a
        person's job has run, search finds their memories by their words only."""
        if self._embedder is None:
            return 0
        missing = self._without_vector(self._embedder.model_name).subquery()
        queued = jobs.users_with_queued(REEMBED_JOB)
        with self._engine.begin() as conn:
            waiting = conn.execute(
                sa.select(missing.c.user_id, sa.func.count())
                .where(missing.c.user_id.not_in(queued))
                .group_by(missing.c.user_id)
            ).all()
            for user_id, _ in waiting:
                jobs.enqueue(conn, REEMBED_JOB, user_id, {})
        if waiting:
            self._on_enqueue()
        return sum(count for _, count in waiting)

    def reembed_job(self, user_id: str, payload: dict[str, Any], lease: jobs.Lease | None = None) -> None:
        """Embed the person's memories that lack a current vector, walking their keys upwards
        from `payload["after"]` (one slice, at most REEMBED_SECONDS), and queue the rest as a new
        job. Keys and the primary-key index keep each slice's queries small however large the
        tables. Idempotent: a second run finds nothing left to do."""
        if self._embedder is None:
            return
        model = self._embedder.model_name
        after = int(payload.get("after", 0))
        with self._engine.connect() as conn:
            page = conn.execute(
                sa.select(memories.c.pk, memories.c.text)
                .where(memories.c.user_id == user_id, memories.c.pk > after, LIVE)
                .order_by(memories.c.pk)
                .limit(REEMBED_SLICE)
            ).all()
            current = set(
                conn.execute(
                    sa.select(memory_vectors.c.memory_pk).where(
                        memory_vectors.c.memory_pk.in_([row.pk for row in page]),
                        owned_by(memory_vectors.c.user_id, user_id),
                        memory_vectors.c.model == model,
                    )
                ).scalars()
            )
        todo = [row for row in page if row.pk not in current]
        embedded: list[tuple[Any, np.ndarray]] = []
        started = time.monotonic()
        while len(embedded) < len(todo):  # at least one call, so every job moves on
            chunk = todo[len(embedded) : len(embedded) + REEMBED_CALL]
            embedded.extend(zip(chunk, self._embedder.embed([row.text for row in chunk]), strict=True))
            if time.monotonic() - started >= REEMBED_SECONDS:
                break
        if len(embedded) < len(todo):
            reached, more = embedded[-1][0].pk, True
        else:
            reached, more = (page[-1].pk if page else after), len(page) == REEMBED_SLICE
        if not embedded and not more:
            return
        with self._engine.begin() as conn:
            if lease is not None:
                lease.renew(conn)
            if embedded:
                # A memory reworded, trashed or deleted while this slice was embedding keeps what
                # its own write gave it.
                now = dict(
                    conn.execute(
                        sa.select(memories.c.pk, memories.c.text).where(
                            memories.c.pk.in_([row.pk for row, _ in embedded]),
                            owned_by(memories.c.user_id, user_id),
                            LIVE,
                        )
                    ).all()
                )
                self._write_vectors(
                    conn, user_id, [(row.pk, vector) for row, vector in embedded if now.get(row.pk) == row.text]
                )
                bump_version(conn, user_id)
            if more:
                jobs.enqueue(conn, REEMBED_JOB, user_id, {"after": reached})
        if more:
            self._on_enqueue()

    def reindex(self, progress: Callable[[int, int], None] | None = None, batch: int = EMBED_BATCH) -> int:
        """Embed every memory that has no vector from the current model; returns how many."""
        if self._embedder is None:
            return 0
        model = self._embedder.model_name
        with self._engine.connect() as conn:
            todo = conn.execute(self._without_vector(model)).all()
        for start in range(0, len(todo), batch):
            rows = todo[start : start + batch]
            vectors = self._embedder.embed([r.text for r in rows])
            with self._engine.begin() as conn:
                for user_id in {r.user_id for r in rows}:
                    mine = [(r.pk, v) for r, v in zip(rows, vectors, strict=True) if r.user_id == user_id]
                    self._write_vectors(conn, user_id, mine)
                    bump_version(conn, user_id)
            if progress:
                progress(min(start + batch, len(todo)), len(todo))
        with self._engine.begin() as conn:
            conn.execute(memory_vectors.delete().where(memory_vectors.c.model != model))
        return len(todo)
