"""Saving, searching, listing and deleting one person's memories and documents.

Knows nothing of HTTP, MCP or OAuth: every call is handed the user id the caller verified, and
every query filters by it, which is the whole of the isolation between people. Calls block
(database, embedding) and are meant to run in worker threads.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from jean_memory import clock
from jean_memory.db.tables import documents, memories, memory_vectors
from jean_memory.memory import jobs
from jean_memory.memory.chunking import chunk_text
from jean_memory.memory.embedder import Embedder
from jean_memory.memory.extraction import LlmExtractor
from jean_memory.memory.fusion import best_first, z_fusion
from jean_memory.memory.lexical import lexical_search
from jean_memory.memory.neighbours import SPREAD_FROM, neighbours, pass_to_neighbours
from jean_memory.memory.pg_vectors import PgVectorIndex
from jean_memory.memory.records import (
    AddResult,
    Memory,
    MemoryInputError,
    check_limit,
    check_no_nul,
    clean_tags,
    clean_text,
    decode_cursor,
    encode_cursor,
    normalised_hash,
)
from jean_memory.memory.triage import importance
from jean_memory.memory.vectors import VectorCache, bump_version

NEAR_DUPLICATE = 0.95  # same fact reworded: update the memory in place (unless its numbers differ)
SIMILAR = 0.80  # related: store, and tell the assistant so it can correct or delete
MAX_DOCUMENT_BYTES = 5 * 1024 * 1024
MAX_SOURCE_URL_CHARS = 2048  # the column's size
DOCUMENT_TYPES = ("markdown", "text", "html", "code", "email", "note", "pdf-text")
SAVE_JOB = "save_memories"
INDEX_JOB = "index_document"
REEMBED_JOB = "reembed"
EMBED_BATCH = 64
#: A re-embedding job looks at this many of a person's memories (by key) and embeds for at most
#: REEMBED_SECONDS, then queues its continuation: a job stays short (shutdown waits for the one
#: running; a 256-wordpiece chunk takes 45 ms) and saves queued meanwhile go first.
REEMBED_SLICE = 512
REEMBED_SECONDS = 2.0
#: Texts per embedding call inside a re-embedding job, between two looks at the clock.
REEMBED_CALL = 16
# BM25 for a person with very many memories runs here while the request's thread scans vectors.
SEARCH_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="jean-memory-search")


def _vector_upsert(conn: Connection) -> sa.Insert:
    """Insert or replace memories' vectors in one statement. A delete-then-insert collided on
    PostgreSQL when two transactions wrote the same memory's vector (a background re-embedding
    beside `jean-memory reindex`, or beside a save rewording that memory): the second insert
    failed on the primary key once the first committed."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(memory_vectors)
    return statement.on_conflict_do_update(
        index_elements=[memory_vectors.c.memory_pk],
        set_={name: statement.excluded[name] for name in ("user_id", "model", "vector")},
    )


@dataclass(frozen=True)
class SearchConfig:
    """Chosen by bench/locomo.py with leave-one-conversation-out (picked on four LoCoMo
    conversations, scored on the fifth), not by habit: this setting is the choice in most folds."""

    depth: int = 50  # candidates taken from each ranking before fusion
    lexical_weight: float = 0.5  # of the BM25 z-score in the fused score; the cosine's is the rest
    next_share: float = 0.5  # of a top candidate's score passed to the memory saved right after it
    prev_share: float = 0.25  # ... and to the one saved right before it


# Looked up by primary key only, and the owner checked in Python: with `user_id = ?` in the query
# SQLite walks the user's whole index (13 ms at 100k memories instead of 0.2 ms). Built once: a
# statement built per call costs SQLAlchemy about 0.12 ms per search to compile and cache-key.
_ROWS_BY_PK = (
    sa.select(memories, documents.c.title)
    .outerjoin(documents, documents.c.id == memories.c.document_id)
    .where(memories.c.pk.in_(sa.bindparam("pks", expanding=True)))
)

NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


def is_rewording(existing: Memory, text: str) -> bool:
    """Close enough in meaning to be the same fact said again. Texts whose numbers differ are
    kept apart however close: "meeting at 3" and "meeting at 5" are two facts, not one."""
    if existing.score is None or existing.score < NEAR_DUPLICATE:
        return False
    return sorted(NUMBER.findall(existing.text)) == sorted(NUMBER.findall(text))


def _with_tags(conn: Connection, row: sa.Row, tags: list[str]) -> Memory:
    """The stored memory an exact duplicate was merged into, with the new tags added to its own."""
    merged = list(dict.fromkeys([*row.tags, *tags]))
    if merged != list(row.tags):
        conn.execute(memories.update().where(memories.c.pk == row.pk).values(tags=merged, updated_at=clock.now()))
    return replace(_row_memory(row), tags=merged)


def _row_memory(row: sa.Row, score: float | None = None, title: str | None = None) -> Memory:
    return Memory(
        id=row.id,
        text=row.text,
        tags=list(row.tags or []),
        created_at=row.created_at,
        score=score,
        kind=row.kind,
        title=title,
        document_id=row.document_id,
    )


def check_document(title: Any, content: Any, document_type: Any, source_url: Any = None) -> None:
    """The checks a document passes before anything is written. Import runs them over a whole
    file first, so one bad document cannot leave the rest of the file half-imported."""
    if not isinstance(title, str) or not title.strip():
        raise MemoryInputError("title is empty: give the document a short title")
    if not isinstance(content, str) or not content.strip():
        raise MemoryInputError("content is empty: pass the document's text")
    size = len(content.encode())
    if size > MAX_DOCUMENT_BYTES:
        raise MemoryInputError(
            f"content is {size / 1048576:.1f} MB; documents may be at most 5 MB. Split it into parts"
        )
    if document_type not in DOCUMENT_TYPES:
        raise MemoryInputError(f"document_type must be one of {', '.join(DOCUMENT_TYPES)}")
    if source_url is not None and (not isinstance(source_url, str) or len(source_url) > MAX_SOURCE_URL_CHARS):
        raise MemoryInputError(f"source_url must be a URL of at most {MAX_SOURCE_URL_CHARS} characters")
    for name, value in (("title", title), ("content", content), ("source_url", source_url or "")):
        check_no_nul(name, value)


class MemoryService:
    def __init__(
        self,
        engine: Engine,
        embedder: Embedder | None,
        search: SearchConfig | None = None,
        on_enqueue: Callable[[], None] | None = None,
        extractor: LlmExtractor | None = None,
    ) -> None:
        self._engine = engine
        self._embedder = embedder
        self._extractor = extractor
        self._search = search or SearchConfig()
        # SQLite: an in-process matrix per user; PostgreSQL: pgvector answers (no cache to keep right).
        self._vectors: VectorCache | PgVectorIndex = (
            PgVectorIndex(engine) if engine.dialect.name == "postgresql" else VectorCache(engine)
        )
        self._on_enqueue = on_enqueue or (lambda: None)

    @property
    def embedder(self) -> Embedder | None:
        return self._embedder

    @property
    def extracts_with_llm(self) -> bool:
        return self._extractor is not None

    def set_enqueue_hook(self, hook: Callable[[], None]) -> None:
        self._on_enqueue = hook

    # --- writing ----------------------------------------------------------------------------------

    def _write_vectors(self, conn: Connection, user_id: str, pairs: Iterable[tuple[int, np.ndarray]]) -> None:
        model = self._embedder.model_name if self._embedder else None
        if model is None:
            return
        rows = [{"memory_pk": pk, "user_id": user_id, "model": model, "vector": v} for pk, v in pairs]
        if rows:
            conn.execute(_vector_upsert(conn), rows)

    def _insert(
        self,
        conn: Connection,
        user_id: str,
        text: str,
        tags: list[str],
        client: str | None,
        kind: str = "memory",
        document_id: str | None = None,
    ) -> tuple[int, Memory]:
        now = clock.now()
        memory_id = clock.new_id()
        pk = conn.execute(
            memories.insert()
            .values(
                id=memory_id,
                user_id=user_id,
                text=text,
                content_hash=normalised_hash(text),
                tags=tags,
                client=client,
                created_at=now,
                updated_at=now,
                kind=kind,
                document_id=document_id,
            )
            .returning(memories.c.pk)
        ).scalar_one()
        return pk, Memory(id=memory_id, text=text, tags=tags, created_at=now, kind=kind, document_id=document_id)

    def add(self, user_id: str, text: str, tags: list[str] | None = None, client: str | None = None) -> AddResult:
        """Save a fact: an exact duplicate is not stored twice, a near duplicate (cosine ≥ 0.95)
        updates the existing memory, and related ones (≥ 0.80) are named in `similar`."""
        text = clean_text(text)
        tags = clean_tags(tags)
        content_hash = normalised_hash(text)
        with self._engine.connect() as conn:
            existing = conn.execute(
                sa.select(memories).where(
                    memories.c.user_id == user_id, memories.c.content_hash == content_hash, memories.c.kind == "memory"
                )
            ).first()
        if existing is not None:
            with self._engine.begin() as conn:
                return AddResult(saved=[], similar=[_with_tags(conn, existing, tags)])

        vector = self._embedder.embed([text])[0] if self._embedder else None
        nearest = self._closest(user_id, vector)
        closest = nearest[0] if nearest else None
        rewording = closest is not None and is_rewording(closest, text)
        with self._engine.begin() as conn:
            # The version bump comes first: it takes this person's write lock (the row lock on
            # PostgreSQL, the database's on SQLite), so the second look below sees every save
            # that raced this one, and an identical text arriving twice at once is stored once.
            version = bump_version(conn, user_id)
            raced = conn.execute(
                sa.select(memories).where(
                    memories.c.user_id == user_id, memories.c.content_hash == content_hash, memories.c.kind == "memory"
                )
            ).first()
            if raced is not None:
                return AddResult(saved=[], similar=[_with_tags(conn, raced, tags)])
            if rewording and closest is not None:
                merged = list(dict.fromkeys([*closest.tags, *tags]))
                conn.execute(
                    memories.update()
                    .where(memories.c.id == closest.id, memories.c.user_id == user_id)
                    .values(text=text, content_hash=content_hash, tags=merged, updated_at=clock.now())
                )
                pk = conn.execute(sa.select(memories.c.pk).where(memories.c.id == closest.id)).scalar_one()
                self._write_vectors(conn, user_id, [(pk, vector)])
                updated = replace(closest, text=text, tags=merged, score=None)
            else:
                pk, updated = self._insert(conn, user_id, text, tags, client)
                if vector is not None:
                    self._write_vectors(conn, user_id, [(pk, vector)])
        if vector is not None and self._embedder is not None:
            self._vectors.note_write(user_id, self._embedder.model_name, version, {pk: vector})
        if rewording:
            return AddResult(saved=[updated], similar=[])
        memory = updated
        similar = [m for m in nearest if m.score is not None and m.score >= SIMILAR]
        return AddResult(saved=[memory], similar=similar)

    def _closest(self, user_id: str, vector: np.ndarray | None, k: int = 5) -> list[Memory]:
        """The closest existing memories (not document chunks) with their cosine as score."""
        if vector is None or self._embedder is None:
            return []
        nearest = self._vectors.nearest(user_id, self._embedder.model_name, vector, k * 3)
        if not nearest or nearest[0][1] < SIMILAR:
            return []
        found = self._rows_by_pk(user_id, [pk for pk, _ in nearest], kind="memory")
        scores = dict(nearest)
        return [replace(found[pk], score=scores[pk]) for pk, _ in nearest if pk in found][:k]

    def enqueue_facts(self, user_id: str, facts: list[str], client: str | None, message: str | None = None) -> None:
        """Record what to save after the answer: the assistant never waits on embedding or an LLM.
        With an LLM configured, `message` goes along and the model picks the facts (`facts` is
        the fallback)."""
        payload: dict[str, Any] = {"facts": facts, "client": client}
        if message is not None and self._extractor is not None:
            payload["message"] = message
        with self._engine.begin() as conn:
            jobs.enqueue(conn, SAVE_JOB, user_id, payload)
        self._on_enqueue()

    def save_facts_job(self, user_id: str, payload: dict[str, Any], lease: jobs.Lease | None = None) -> None:
        """Short (one LLM call bounded by its timeout), so it never renews `lease`."""
        facts = payload.get("facts", [])
        if self._extractor is not None and payload.get("message"):
            facts = self._extractor.facts_or_fallback(payload["message"], facts)
        for fact in facts:
            try:
                self.add(user_id, fact, ["auto"], payload.get("client"))
            except MemoryInputError:
                continue

    # --- reading ------------------------------------------------------------------------------------

    def _rows_by_pk(self, user_id: str, pks: list[int], kind: str | None = None) -> dict[int, Memory]:
        if not pks:
            return {}
        with self._engine.connect() as conn:
            rows = conn.execute(_ROWS_BY_PK, {"pks": pks}).all()
        return {
            row.pk: _row_memory(row, title=row.title)
            for row in rows
            if row.user_id == user_id and (kind is None or row.kind == kind)
        }

    def search(self, user_id: str, query: str, limit: int = 10, tags: list[str] | None = None) -> list[Memory]:
        """Hybrid search (see `rank`), best first; with `tags`, only memories carrying all of them."""
        check_limit(limit)
        if not isinstance(query, str) or not query.strip():
            raise MemoryInputError("query is empty: say what to look for, e.g. 'favourite food'")
        ranked = self.rank(user_id, query, self._search.depth if not tags else self._search.depth * 4)
        wanted = set(clean_tags(tags))
        top = [pk for pk, _ in ranked[: limit if not wanted else len(ranked)]]
        rows = self._rows_by_pk(user_id, top)
        scores = dict(ranked)
        hits = [replace(rows[pk], score=scores[pk]) for pk in top if pk in rows and wanted <= set(rows[pk].tags)]
        return hits[:limit]

    def rank(self, user_id: str, query: str, depth: int, mode: str = "hybrid") -> list[tuple[int, float]]:
        """(pk, score) best first. `mode` is for the benchmark: "lexical", "vector" or "hybrid".

        Hybrid: the `depth` best of BM25 and of cosine similarity, fused by z-score (fusion.py),
        then the best candidates pass part of their score to the memories saved right before
        and after them (neighbours.py). On LoCoMo (bench/locomo.py) this finds an evidence turn
        in the top 5 for 0.709 of the questions (0.703 when the settings are chosen out of
        sample), against 0.654 for the reciprocal rank fusion it replaced and 0.614 for BM25
        (0.711 and 0.707 with the float32 model the settings were chosen on).
        Without a model it is BM25 alone, as measured (the neighbours were tuned on the fusion)."""
        settings = self._search
        beside = None
        if mode == "hybrid" and isinstance(self._vectors, VectorCache) and self._vectors.is_large(user_id):
            # Both cores: BM25 in SQLite while this thread embeds the query and scores vectors.
            beside = SEARCH_POOL.submit(self._lexical, user_id, query, depth)
        vector: list[tuple[int, float]] = []
        if mode in ("hybrid", "vector") and self._embedder is not None:
            query_vector = self._embedder.embed_query(query)
            vector = self._vectors.nearest(user_id, self._embedder.model_name, query_vector, depth)
        if mode == "vector":
            return vector
        # One connection for the BM25 list and the neighbours (on PostgreSQL each checkout pings).
        with self._engine.connect() as conn:
            lexical = beside.result() if beside is not None else lexical_search(conn, user_id, query, depth)
            if mode == "lexical" or self._embedder is None:
                return lexical
            fused = z_fusion(lexical, vector, settings.lexical_weight)
            links = neighbours(conn, user_id, [pk for pk, _ in best_first(fused)[:SPREAD_FROM]])
        return pass_to_neighbours(fused, links, settings.next_share, settings.prev_share)

    def _lexical(self, user_id: str, query: str, depth: int) -> list[tuple[int, float]]:
        with self._engine.connect() as conn:
            return lexical_search(conn, user_id, query, depth)

    def list(self, user_id: str, limit: int = 20, cursor: str | None = None) -> tuple[list[Memory], str | None]:
        """The person's facts, newest first (document chunks are listed with their document)."""
        check_limit(limit)
        statement = sa.select(memories).where(memories.c.user_id == user_id, memories.c.kind == "memory")
        if cursor:
            created_at, pk = decode_cursor(cursor)
            statement = statement.where(
                sa.or_(
                    memories.c.created_at < created_at,
                    sa.and_(memories.c.created_at == created_at, memories.c.pk < pk),
                )
            )
        statement = statement.order_by(memories.c.created_at.desc(), memories.c.pk.desc()).limit(limit + 1)
        with self._engine.connect() as conn:
            rows = conn.execute(statement).all()
        next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].pk) if len(rows) > limit else None
        return [_row_memory(row) for row in rows[:limit]], next_cursor

    def profile(self, user_id: str, limit: int) -> list[Memory]:
        """For a new conversation: the most telling facts (identity, lasting preferences) and the
        most recent ones, without repeats, newest first."""
        with self._engine.connect() as conn:
            recent = conn.execute(
                sa.select(memories)
                .where(memories.c.user_id == user_id, memories.c.kind == "memory")
                .order_by(memories.c.created_at.desc())
                .limit(200)
            ).all()
        by_importance = sorted(recent, key=lambda r: importance(r.text), reverse=True)
        chosen = {r.pk: r for r in by_importance[: limit // 2] if importance(r.text) > 0}
        for row in recent:
            if len(chosen) >= limit:
                break
            chosen.setdefault(row.pk, row)
        return [_row_memory(r) for r in sorted(chosen.values(), key=lambda r: r.created_at, reverse=True)]

    def get(self, user_id: str, memory_id: str) -> Memory | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(memories, documents.c.title)
                .outerjoin(documents, documents.c.id == memories.c.document_id)
                .where(memories.c.user_id == user_id, memories.c.id == memory_id)
            ).first()
        return _row_memory(row, title=row.title) if row else None

    def delete(self, user_id: str, memory_id: str) -> bool:
        if not isinstance(memory_id, str) or not memory_id.strip():
            raise MemoryInputError("memory_id is empty: pass an id from search_memory or list_memories")
        with self._engine.begin() as conn:
            deleted = conn.execute(
                memories.delete()
                .where(memories.c.user_id == user_id, memories.c.id == memory_id.strip())
                .returning(memories.c.pk)
            ).scalar()
            if deleted is None:
                return False
            version = bump_version(conn, user_id)
        if self._embedder is not None:
            self._vectors.note_write(user_id, self._embedder.model_name, version, {}, {deleted})
        return True

    def count(self, user_id: str) -> int:
        with self._engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).select_from(memories).where(memories.c.user_id == user_id)
            ).scalar_one()

    # --- documents ----------------------------------------------------------------------------------

    def store_document(
        self,
        user_id: str,
        title: str,
        content: str,
        document_type: str = "markdown",
        source_url: str | None = None,
        client: str | None = None,
    ) -> str:
        """Record the document and queue its chunking and embedding; returns its id at once."""
        check_document(title, content, document_type, source_url)
        with self._engine.begin() as conn:
            document_id = self.record_document(conn, user_id, title, content, document_type, source_url, client)
        self._on_enqueue()
        return document_id

    def record_document(
        self,
        conn: Connection,
        user_id: str,
        title: str,
        content: str,
        document_type: str,
        source_url: str | None,
        client: str | None,
        created_at: float | None = None,
    ) -> str:
        """Write a document that passed `check_document`, and its indexing job, in the caller's
        transaction: import writes a whole file in one, so a failure leaves nothing behind. Any
        instance's worker finds the job on its next poll."""
        document_id = clock.new_id()
        conn.execute(
            documents.insert().values(
                id=document_id,
                user_id=user_id,
                title=title.strip()[:500],
                document_type=document_type,
                source_url=source_url,
                content=content,
                content_hash=normalised_hash(content),
                status="pending",
                client=client,
                created_at=clock.now() if created_at is None else created_at,
            )
        )
        jobs.enqueue(conn, INDEX_JOB, user_id, {"document_id": document_id})
        return document_id

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
            conn.execute(memories.delete().where(memories.c.document_id == document_id))
        for start in range(0, len(chunks), EMBED_BATCH):
            batch = chunks[start : start + EMBED_BATCH]
            vectors = self._embedder.embed(batch) if self._embedder else [None] * len(batch)
            with self._engine.begin() as conn:
                hold(conn)
                pairs = []
                for text, vector in zip(batch, vectors, strict=True):
                    pk, _ = self._insert(conn, user_id, text, [], document.client, "chunk", document_id)
                    if vector is not None:
                        pairs.append((pk, vector))
                self._write_vectors(conn, user_id, pairs)
                bump_version(conn, user_id)
        with self._engine.begin() as conn:
            hold(conn)
            conn.execute(
                documents.update().where(documents.c.id == document_id).values(status="ready", chunk_count=len(chunks))
            )

    def document_status(self, user_id: str, document_id: str) -> tuple[str, int] | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(documents.c.status, documents.c.chunk_count).where(
                    documents.c.id == document_id, documents.c.user_id == user_id
                )
            ).first()
        return (row.status, row.chunk_count) if row else None

    def build_vector_index(self) -> bool:
        """PostgreSQL: build the HNSW index once some user has outgrown exact search, outside any
        request (see pg_vectors). True when it was built now; SQLite has nothing to build."""
        if not isinstance(self._vectors, PgVectorIndex) or self._embedder is None:
            return False
        return self._vectors.build_index_if_needed(self._embedder.model_name, self._embedder.dimensions)

    def job_handlers(self) -> dict[str, jobs.Handler]:
        return {SAVE_JOB: self.save_facts_job, INDEX_JOB: self.index_document_job, REEMBED_JOB: self.reembed_job}

    # --- re-embedding -------------------------------------------------------------------------------

    def _without_vector(self, model: str) -> sa.Select:
        """Memories (and chunks) with no vector from `model`: all of them after a model change,
        and any saved while a remote embedding service was down."""
        has_vector = sa.and_(memory_vectors.c.memory_pk == memories.c.pk, memory_vectors.c.model == model)
        return (
            sa.select(memories.c.pk, memories.c.user_id, memories.c.text)
            .outerjoin(memory_vectors, has_vector)
            .where(memory_vectors.c.memory_pk.is_(None))
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
                .where(memories.c.user_id == user_id, memories.c.pk > after)
                .order_by(memories.c.pk)
                .limit(REEMBED_SLICE)
            ).all()
            current = set(
                conn.execute(
                    sa.select(memory_vectors.c.memory_pk).where(
                        memory_vectors.c.memory_pk.in_([row.pk for row in page]), memory_vectors.c.model == model
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
                # A memory reworded or deleted while this slice was embedding keeps what its own
                # write gave it.
                now = dict(
                    conn.execute(
                        sa.select(memories.c.pk, memories.c.text).where(
                            memories.c.pk.in_([row.pk for row, _ in embedded])
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
