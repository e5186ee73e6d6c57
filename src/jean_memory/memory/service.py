"""Saving, changing, searching, listing and deleting one person's memories and documents.

Knows nothing of HTTP, MCP or OAuth: every call is handed the user id the caller verified, and
every query filters by it, which is the whole of the isolation between people. Calls block
(database, embedding) and are meant to run in worker threads. Ranking is retrieval.py's; the
work queued here (saves `jean_memory` decided on, document indexing) is done by indexing.py.
Every change of a memory is recorded in its history (history.py) in the change's own
transaction; deleting moves a memory to the trash (trash.py), and only live memories are read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from jean_memory import clock
from jean_memory.db.tables import documents, memories, memory_vectors
from jean_memory.memory import history, jobs
from jean_memory.memory.embedder import Embedder
from jean_memory.memory.extraction import LlmExtractor
from jean_memory.memory.history import HistoryEvent
from jean_memory.memory.owner import owned_by, require_owner
from jean_memory.memory.pg_vectors import PgVectorIndex
from jean_memory.memory.records import (
    AddResult,
    Memory,
    MemoryInputError,
    check_limit,
    check_memory_id,
    check_no_nul,
    clean_tags,
    clean_text,
    decode_cursor,
    encode_cursor,
    normalised_hash,
)
from jean_memory.memory.retrieval import Retriever, SearchConfig
from jean_memory.memory.sqlite_direct import hit_rows
from jean_memory.memory.superseding import current_first, supersede_older
from jean_memory.memory.supersession import SupersessionConfig
from jean_memory.memory.trash import LIVE, erase_all, move_to_trash, take_out, trashed_rows
from jean_memory.memory.triage import importance
from jean_memory.memory.vectors import VectorCache, bump_version

NEAR_DUPLICATE = 0.95  # same fact reworded: update the memory in place (unless its numbers differ)
SIMILAR = 0.80  # related: store, and tell the assistant so it can correct or delete
CONSIDERED = min(SIMILAR, SupersessionConfig().with_cue)  # below this, a neighbour is neither
MAX_DOCUMENT_BYTES = 5 * 1024 * 1024
MAX_SOURCE_URL_CHARS = 2048  # the column's size
DOCUMENT_TYPES = ("markdown", "text", "html", "code", "email", "note", "pdf-text")
# The jobs this service queues; indexing.py runs them.
SAVE_JOB = "save_memories"
INDEX_JOB = "index_document"


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


def write_vectors(
    conn: Connection, embedder: Embedder | None, user_id: str, pairs: Iterable[tuple[int, np.ndarray]]
) -> None:
    """Store (pk, vector) pairs of the user's memories as `embedder`'s; nothing without one."""
    model = embedder.model_name if embedder else None
    if model is None:
        return
    rows = [{"memory_pk": pk, "user_id": user_id, "model": model, "vector": v} for pk, v in pairs]
    if rows:
        conn.execute(_vector_upsert(conn), rows)


def insert_memory(
    conn: Connection,
    user_id: str,
    text: str,
    tags: list[str],
    client: str | None,
    kind: str = "memory",
    document_id: str | None = None,
) -> tuple[int, Memory]:
    require_owner(conn, user_id)
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


# Found by primary key, and the owner named in the WHERE in the form that keeps SQLite on the
# rowid (owner.py). Built once: a statement built per call costs SQLAlchemy about 0.12 ms per
# search to compile and cache-key.
_ROWS_BY_PK = (
    sa.select(memories, documents.c.title)
    .outerjoin(documents, sa.and_(documents.c.id == memories.c.document_id, documents.c.user_id == memories.c.user_id))
    .where(
        memories.c.pk.in_(sa.bindparam("pks", expanding=True)),
        owned_by(memories.c.user_id, sa.bindparam("user_id")),
        LIVE,
    )
)


def rows_by_pk(conn: Connection, user_id: str, pks: list[int], kind: str | None = None) -> dict[int, Memory]:
    """The user's live memories among `pks` (another person's pk, or a trashed one, finds nothing), by pk."""
    if not pks:
        return {}
    rows = conn.execute(_ROWS_BY_PK, {"pks": pks, "user_id": user_id}).all()
    return {row.pk: row_memory(row, title=row.title) for row in rows if kind is None or row.kind == kind}


NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


def is_rewording(existing: Memory, text: str) -> bool:
    """Close enough in meaning to be the same fact said again. Texts whose numbers differ are
    kept apart however close: "meeting at 3" and "meeting at 5" are two facts, not one."""
    if existing.score is None or existing.score < NEAR_DUPLICATE:
        return False
    return sorted(NUMBER.findall(existing.text)) == sorted(NUMBER.findall(text))


def _with_tags(conn: Connection, row: sa.Row, tags: list[str], client: str | None) -> Memory:
    """The stored memory an exact duplicate was merged into, with the new tags added to its own
    (a change, so in its history; the same text with no new tag changes nothing)."""
    merged = list(dict.fromkeys([*row.tags, *tags]))
    if merged != list(row.tags):
        conn.execute(
            memories.update()
            .where(memories.c.pk == row.pk, memories.c.user_id == row.user_id)
            .values(tags=merged, updated_at=clock.now())
        )
        history.record(conn, row.user_id, row.id, history.MERGED, client, row.text)
    return replace(row_memory(row), tags=merged)


def row_memory(row: sa.Row, score: float | None = None, title: str | None = None) -> Memory:
    return Memory(
        id=row.id,
        text=row.text,
        tags=list(row.tags or []),
        created_at=row.created_at,
        score=score,
        kind=row.kind,
        title=title,
        document_id=row.document_id,
        updated_at=row.updated_at,
        deleted_at=row.deleted_at,
        client=row.client,
        superseded_by=row.superseded_by,
        superseded_at=row.superseded_at,
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
        self._retriever = Retriever(engine, embedder, search)
        self._search = self._retriever.config
        self._vectors = self._retriever.vectors
        self._on_enqueue = on_enqueue or (lambda: None)

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def embedder(self) -> Embedder | None:
        return self._embedder

    @property
    def extractor(self) -> LlmExtractor | None:
        return self._extractor

    @property
    def extracts_with_llm(self) -> bool:
        return self._extractor is not None

    @property
    def vectors(self) -> VectorCache | PgVectorIndex:
        """The vector index this service's writes keep current (and its searches read)."""
        return self._vectors

    def set_enqueue_hook(self, hook: Callable[[], None]) -> None:
        self._on_enqueue = hook

    def job_queued(self) -> None:
        """Tell the worker (when one listens) that a job waits, so it need not wait for its poll."""
        self._on_enqueue()

    # --- writing ----------------------------------------------------------------------------------

    def add(self, user_id: str, text: str, tags: list[str] | None = None, client: str | None = None) -> AddResult:
        """Save a fact: an exact duplicate is not stored twice, a near duplicate (cosine ≥ 0.95)
        updates the existing memory, and related ones (≥ 0.80) are named in `similar`. An older
        memory the new one replaces (supersession.py) is marked so and named first in `similar`."""
        text = clean_text(text)
        tags = clean_tags(tags)
        content_hash = normalised_hash(text)
        with self._engine.connect() as conn:
            existing = conn.execute(
                sa.select(memories).where(
                    memories.c.user_id == user_id,
                    memories.c.content_hash == content_hash,
                    memories.c.kind == "memory",
                    LIVE,
                )
            ).first()
        if existing is not None:
            with self._engine.begin() as conn:
                return AddResult(saved=[], similar=[_with_tags(conn, existing, tags, client)])

        vector = self._embedder.embed([text])[0] if self._embedder else None
        nearest = self._closest(user_id, vector)
        closest = nearest[0] if nearest else None
        rewording = closest is not None and is_rewording(closest, text)
        replaced: Memory | None = None
        with self._engine.begin() as conn:
            # The version bump comes first: it takes this person's write lock (the row lock on
            # PostgreSQL, the database's on SQLite), so the second look below sees every save
            # that raced this one, and an identical text arriving twice at once is stored once.
            version = bump_version(conn, user_id)
            raced = conn.execute(
                sa.select(memories).where(
                    memories.c.user_id == user_id,
                    memories.c.content_hash == content_hash,
                    memories.c.kind == "memory",
                    LIVE,
                )
            ).first()
            if raced is not None:
                return AddResult(saved=[], similar=[_with_tags(conn, raced, tags, client)])
            if rewording and closest is not None:
                merged = list(dict.fromkeys([*closest.tags, *tags]))
                conn.execute(
                    memories.update()
                    .where(memories.c.id == closest.id, memories.c.user_id == user_id)
                    .values(text=text, content_hash=content_hash, tags=merged, updated_at=clock.now())
                )
                pk = conn.execute(
                    sa.select(memories.c.pk).where(memories.c.id == closest.id, memories.c.user_id == user_id)
                ).scalar_one()
                write_vectors(conn, self._embedder, user_id, [(pk, vector)])
                history.record(conn, user_id, closest.id, history.MERGED, client, closest.text)
                updated = replace(closest, text=text, tags=merged, score=None)
            else:
                pk, updated = insert_memory(conn, user_id, text, tags, client)
                history.record(conn, user_id, updated.id, history.CREATED, client, at=updated.created_at)
                if vector is not None:
                    write_vectors(conn, self._embedder, user_id, [(pk, vector)])
                    replaced = supersede_older(conn, user_id, updated, nearest, client)
        if vector is not None and self._embedder is not None:
            self._vectors.note_write(user_id, self._embedder.model_name, version, {pk: vector})
        if rewording:
            return AddResult(saved=[updated], similar=[])
        similar = [m for m in nearest if m.score is not None and m.score >= SIMILAR]
        if replaced is not None:  # named first, marked, so the assistant sees what it replaced
            similar = [replaced, *(m for m in similar if m.id != replaced.id)]
        return AddResult(saved=[updated], similar=similar)

    def update(
        self, user_id: str, memory_id: str, text: str, tags: list[str] | None = None, client: str | None = None
    ) -> Memory | None:
        """Rewrite the person's memory (a fact that changed or was wrong): new text, embedded
        anew, and new tags when given (None keeps its tags). Its history keeps the text it had.
        None when they have no such live memory; a document's passage is changed by storing
        the document again."""
        memory_id = check_memory_id(memory_id)
        text = clean_text(text)
        new_tags = None if tags is None else clean_tags(tags)
        vector = self._embedder.embed([text])[0] if self._embedder else None
        with self._engine.begin() as conn:
            # FOR UPDATE (PostgreSQL): two rewrites at once each keep the text the other left
            # in the history; SQLite's writers take turns anyway.
            row = conn.execute(
                sa.select(memories)
                .where(memories.c.user_id == user_id, memories.c.id == memory_id, LIVE)
                .with_for_update()
            ).first()
            if row is None:
                return None
            if row.kind != "memory":
                raise MemoryInputError(
                    f"{memory_id} is a passage of a stored document, which cannot be edited here: "
                    "store the corrected document with store_document"
                )
            version = bump_version(conn, user_id)
            now = clock.now()
            tags_after = list(row.tags or []) if new_tags is None else new_tags
            conn.execute(
                memories.update()
                .where(memories.c.pk == row.pk, memories.c.user_id == user_id)
                .values(text=text, content_hash=normalised_hash(text), tags=tags_after, updated_at=now)
            )
            if vector is not None:
                write_vectors(conn, self._embedder, user_id, [(row.pk, vector)])
            else:  # no model now: a vector of the old text from an earlier one must not answer for it
                conn.execute(
                    memory_vectors.delete().where(
                        memory_vectors.c.memory_pk == row.pk, memory_vectors.c.user_id == user_id
                    )
                )
            history.record(conn, user_id, memory_id, history.UPDATED, client, row.text, at=now)
        if vector is not None and self._embedder is not None:
            self._vectors.note_write(user_id, self._embedder.model_name, version, {row.pk: vector})
        return replace(row_memory(row), text=text, tags=tags_after, updated_at=now)

    def _closest(self, user_id: str, vector: np.ndarray | None, k: int = 5) -> list[Memory]:
        """The closest existing memories (not document chunks) with their cosine as score, down to
        the least cosine at which a memory is either similar or possibly replaced."""
        if vector is None or self._embedder is None:
            return []
        nearest = [
            (pk, s)
            for pk, s in self._vectors.nearest(user_id, self._embedder.model_name, vector, k * 3)
            if s >= CONSIDERED
        ]
        if not nearest:
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

    # --- reading ------------------------------------------------------------------------------------

    def _rows_by_pk(self, user_id: str, pks: list[int], kind: str | None = None) -> dict[int, Memory]:
        if not pks:
            return {}
        with self._engine.connect() as conn:
            return rows_by_pk(conn, user_id, pks, kind)

    def search(self, user_id: str, query: str, limit: int = 10, tags: list[str] | None = None) -> list[Memory]:
        """Hybrid search (see `Retriever.rank`), best first; with `tags`, only memories carrying all of them."""
        check_limit(limit)
        if not isinstance(query, str) or not query.strip():
            raise MemoryInputError("query is empty: say what to look for, e.g. 'favourite food'")
        wanted = set(clean_tags(tags))
        take = None if wanted else limit  # with tags, every candidate: the filter comes after

        def top_rows(conn: Connection, ranked: list[tuple[int, float]]) -> dict[int, Memory]:
            pks = [pk for pk, _ in ranked[:take]]
            return hit_rows(conn, user_id, pks) if conn.dialect.name == "sqlite" else rows_by_pk(conn, user_id, pks)

        depth = self._search.depth if not tags else self._search.depth * 4
        ranked, rows = self._retriever.rank_then(user_id, query, depth, top_rows)
        top = [pk for pk, _ in ranked[:take]]
        scores = dict(ranked)
        hits = [replace(rows[pk], score=scores[pk]) for pk in top if pk in rows and wanted <= set(rows[pk].tags)]
        return current_first(hits[:limit])

    def list(self, user_id: str, limit: int = 20, cursor: str | None = None) -> tuple[list[Memory], str | None]:
        """The person's facts, newest first (document chunks are listed with their document)."""
        check_limit(limit)
        statement = sa.select(memories).where(memories.c.user_id == user_id, memories.c.kind == "memory", LIVE)
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
        return [row_memory(row) for row in rows[:limit]], next_cursor

    def profile(self, user_id: str, limit: int) -> list[Memory]:
        """For a new conversation: the most telling facts (identity, lasting preferences) and the
        most recent ones, without repeats, newest first."""
        with self._engine.connect() as conn:
            recent = conn.execute(
                sa.select(memories)
                .where(
                    memories.c.user_id == user_id,
                    memories.c.kind == "memory",
                    memories.c.superseded_by.is_(None),  # the profile states current facts only
                    LIVE,
                )
                .order_by(memories.c.created_at.desc())
                .limit(200)
            ).all()
        by_importance = sorted(recent, key=lambda r: importance(r.text), reverse=True)
        chosen = {r.pk: r for r in by_importance[: limit // 2] if importance(r.text) > 0}
        for row in recent:
            if len(chosen) >= limit:
                break
            chosen.setdefault(row.pk, row)
        return [row_memory(r) for r in sorted(chosen.values(), key=lambda r: r.created_at, reverse=True)]

    def get(self, user_id: str, memory_id: str) -> Memory | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(memories, documents.c.title)
                .outerjoin(
                    documents,
                    sa.and_(documents.c.id == memories.c.document_id, documents.c.user_id == memories.c.user_id),
                )
                .where(memories.c.user_id == user_id, memories.c.id == memory_id, LIVE)
            ).first()
        return row_memory(row, title=row.title) if row else None

    def delete(self, user_id: str, memory_id: str, client: str | None = None) -> bool:
        """Move the person's memory to the trash: out of search, list and context at once,
        restorable (`restore`) until the maintenance task purges it. False when they have no
        such live memory (another person's id answers exactly like an unknown one)."""
        memory_id = check_memory_id(memory_id)
        with self._engine.begin() as conn:
            pk = move_to_trash(conn, user_id, memory_id, client)
            if pk is None:
                return False  # nothing changed: the version (and every cache) stays
            version = bump_version(conn, user_id)
        if self._embedder is not None:
            self._vectors.note_write(user_id, self._embedder.model_name, version, {}, {pk})
        return True

    def restore(self, user_id: str, memory_id: str, client: str | None = None) -> Memory | None:
        """Take the person's memory out of the trash, searchable again at once (its vector is
        computed anew: the trash keeps none); None when none of theirs by that id is there."""
        memory_id = check_memory_id(memory_id)
        with self._engine.connect() as conn:
            text = conn.execute(
                sa.select(memories.c.text).where(
                    memories.c.user_id == user_id, memories.c.id == memory_id, memories.c.deleted_at.is_not(None)
                )
            ).scalar()
        if text is None:
            return None
        vector = self._embedder.embed([text])[0] if self._embedder else None
        with self._engine.begin() as conn:
            restored = take_out(conn, user_id, memory_id, client)
            if restored is None:
                return None
            version = bump_version(conn, user_id)
            pairs = [(restored.pk, vector)] if vector is not None and restored.text == text else []
            write_vectors(conn, self._embedder, user_id, pairs)
        if self._embedder is not None:
            self._vectors.note_write(user_id, self._embedder.model_name, version, dict(pairs))
        return self.get(user_id, memory_id)

    def deleted(self, user_id: str) -> list[Memory]:
        """The person's trash, most recently deleted first (`deleted_at` says when)."""
        with self._engine.connect() as conn:
            return [row_memory(row) for row in trashed_rows(conn, user_id)]

    def delete_all(self, user_id: str) -> dict[str, int]:
        """Erase every memory, document, vector and history event of the person, trash included,
        at once (no trash: the person asked for all of it to go); rows deleted per table."""
        with self._engine.begin() as conn:
            return erase_all(conn, user_id)  # bumps the version: every cache reloads (empty)

    def history(self, user_id: str, memory_id: str) -> list[HistoryEvent]:
        """What happened to the person's memory (trashed ones too), oldest first."""
        with self._engine.connect() as conn:
            return history.events(conn, user_id, memory_id)

    def count(self, user_id: str) -> int:
        """The person's live memories (not document chunks, not the trash)."""
        with self._engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count())
                .select_from(memories)
                .where(memories.c.user_id == user_id, memories.c.kind == "memory", LIVE)
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
        require_owner(conn, user_id)
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

    def document_status(self, user_id: str, document_id: str) -> tuple[str, int] | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(documents.c.status, documents.c.chunk_count).where(
                    documents.c.id == document_id, documents.c.user_id == user_id
                )
            ).first()
        return (row.status, row.chunk_count) if row else None
