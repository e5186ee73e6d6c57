"""What the person's pages read and erase beyond the tools' calls: a page of memories by tag,
one memory whether live or in the trash, the person's documents, and a document erased whole.

Kept out of service.py (the assistants' calls) because only the pages need these. Like every
memory query, each one names the owner in its WHERE: another person's id finds nothing.
Paging is by keyset (`created_at`, `pk`) on the (user_id, created_at) index, never OFFSET, so
page 200 costs what page 1 does.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Engine

from jean_memory.db.tables import documents, jobs, memories, memory_history, memory_vectors
from jean_memory.memory.owner import owned_by
from jean_memory.memory.records import Memory, check_limit, decode_cursor, encode_cursor
from jean_memory.memory.service import INDEX_JOB, row_memory
from jean_memory.memory.trash import LIVE
from jean_memory.memory.vectors import bump_version

MAX_DOCUMENTS = 200  # listed on one page; a person with more finds the rest by searching


@dataclass(frozen=True)
class DocumentInfo:
    id: str
    title: str
    document_type: str
    source_url: str | None
    status: str  # pending | ready
    chunk_count: int
    created_at: float
    client: str | None


def _has_tag(conn: Connection, tag: str) -> sa.ColumnElement[bool]:
    """`tag` is one of the memory's tags, in the form each database evaluates in SQL."""
    if conn.dialect.name == "postgresql":
        return sa.cast(memories.c.tags, JSONB).contains([tag])
    each = sa.func.json_each(memories.c.tags).table_valued("value")
    return sa.exists(sa.select(sa.literal(1)).select_from(each).where(each.c.value == tag))


@dataclass(frozen=True)
class Listing:
    """What the list page shows, read on one connection (one pool checkout, one thread hop)."""

    memories: list[Memory]
    next_cursor: str | None
    documents: list[DocumentInfo]
    total: int  # live facts, not document passages, not the trash


def _page(
    conn: Connection, user_id: str, limit: int, cursor: str | None, tag: str | None
) -> tuple[list[Memory], str | None]:
    check_limit(limit)
    statement = sa.select(memories).where(memories.c.user_id == user_id, memories.c.kind == "memory", LIVE)
    if cursor:
        created_at, pk = decode_cursor(cursor)
        # `created_at <= c` first: a range both databases answer from the (user_id, created_at)
        # index; the OR alone made PostgreSQL filter every newer row (7.5 ms against 1.8 ms for
        # the first page, at 10,000).
        statement = statement.where(
            memories.c.created_at <= created_at,
            sa.or_(memories.c.created_at < created_at, memories.c.pk < pk),
        )
    if tag:
        statement = statement.where(_has_tag(conn, tag))
    rows = conn.execute(statement.order_by(memories.c.created_at.desc(), memories.c.pk.desc()).limit(limit + 1)).all()
    next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].pk) if len(rows) > limit else None
    return [row_memory(row) for row in rows[:limit]], next_cursor


def _documents(conn: Connection, user_id: str, limit: int) -> list[DocumentInfo]:
    rows = conn.execute(
        sa.select(documents)
        .where(documents.c.user_id == user_id)
        .order_by(documents.c.created_at.desc(), documents.c.id)
        .limit(limit)
    ).all()
    return [
        DocumentInfo(r.id, r.title, r.document_type, r.source_url, r.status, r.chunk_count, r.created_at, r.client)
        for r in rows
    ]


def _total(conn: Connection, user_id: str) -> int:
    return conn.execute(
        sa.select(sa.func.count())
        .select_from(memories)
        .where(memories.c.user_id == user_id, memories.c.kind == "memory", LIVE)
    ).scalar_one()


def memory_page(
    engine: Engine, user_id: str, limit: int = 50, cursor: str | None = None, tag: str | None = None
) -> tuple[list[Memory], str | None]:
    """The person's live facts, newest first, `limit` at a time after `cursor` (from the page
    before), only those tagged `tag` when given; and the cursor of the next page, if any."""
    with engine.connect() as conn:
        return _page(conn, user_id, limit, cursor, tag)


def listing(
    engine: Engine,
    user_id: str,
    limit: int = 50,
    cursor: str | None = None,
    tag: str | None = None,
    with_page: bool = True,
    with_documents: bool = False,
) -> Listing:
    """The list page's reads at once: a page of facts (`memory_page`) unless `with_page` is
    off (a search brings its own), the documents when asked, and the count of live facts."""
    with engine.connect() as conn:
        found, next_cursor = _page(conn, user_id, limit, cursor, tag) if with_page else ([], None)
        docs = _documents(conn, user_id, MAX_DOCUMENTS) if with_documents else []
        return Listing(found, next_cursor, docs, _total(conn, user_id))


def find(engine: Engine, user_id: str, memory_id: str) -> Memory | None:
    """The person's memory or document passage by id, live or in the trash (`deleted_at` tells),
    with its document's title; None for an unknown id and for another person's alike."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(memories, documents.c.title)
            .outerjoin(
                documents,
                sa.and_(documents.c.id == memories.c.document_id, documents.c.user_id == memories.c.user_id),
            )
            .where(memories.c.user_id == user_id, memories.c.id == memory_id)
        ).first()
    return row_memory(row, title=row.title) if row else None


def trash_page(
    engine: Engine, user_id: str, limit: int = 50, cursor: str | None = None
) -> tuple[list[Memory], str | None]:
    """The person's trash, most recently deleted first, `limit` at a time after `cursor` (keyset
    on `deleted_at`, `pk`, like `memory_page`), and the next page's cursor: a person who emptied
    thousands of memories into it must not get every one of them, texts and all, on one page."""
    check_limit(limit)
    statement = sa.select(memories).where(memories.c.user_id == user_id, memories.c.deleted_at.is_not(None))
    if cursor:
        deleted_at, pk = decode_cursor(cursor)
        statement = statement.where(
            memories.c.deleted_at <= deleted_at,
            sa.or_(memories.c.deleted_at < deleted_at, memories.c.pk < pk),
        )
    with engine.connect() as conn:
        rows = conn.execute(
            statement.order_by(memories.c.deleted_at.desc(), memories.c.pk.desc()).limit(limit + 1)
        ).all()
    next_cursor = encode_cursor(rows[limit - 1].deleted_at, rows[limit - 1].pk) if len(rows) > limit else None
    return [row_memory(row) for row in rows[:limit]], next_cursor


def document_list(engine: Engine, user_id: str, limit: int = MAX_DOCUMENTS) -> list[DocumentInfo]:
    """The person's stored documents, newest first."""
    with engine.connect() as conn:
        return _documents(conn, user_id, limit)


def delete_document(engine: Engine, user_id: str, document_id: str) -> bool:
    """Erase the person's document at once, whole: its passages, their vectors and history, and
    its queued indexing; False when they have no such document. A document is not a fact the
    person might want back, so it skips the trash (the person stored it and can store it again)."""
    with engine.begin() as conn:
        gone = conn.execute(
            documents.delete().where(documents.c.id == document_id, documents.c.user_id == user_id)
        ).rowcount
        if not gone:
            return False
        chunks = conn.execute(
            sa.select(memories.c.pk, memories.c.id).where(
                memories.c.user_id == user_id, memories.c.document_id == document_id
            )
        ).all()
        pks = [c.pk for c in chunks]
        for start in range(0, len(pks), 10_000):
            part = pks[start : start + 10_000]
            conn.execute(
                memory_vectors.delete().where(
                    owned_by(memory_vectors.c.user_id, user_id), memory_vectors.c.memory_pk.in_(part)
                )
            )
            conn.execute(
                memory_history.delete().where(
                    memory_history.c.user_id == user_id,
                    memory_history.c.memory_id.in_([c.id for c in chunks[start : start + 10_000]]),
                )
            )
            conn.execute(memories.delete().where(owned_by(memories.c.user_id, user_id), memories.c.pk.in_(part)))
        queued = conn.execute(
            sa.select(jobs.c.id, jobs.c.payload).where(jobs.c.user_id == user_id, jobs.c.kind == INDEX_JOB)
        ).all()
        stale = [j.id for j in queued if (j.payload or {}).get("document_id") == document_id]
        if stale:
            conn.execute(jobs.delete().where(jobs.c.user_id == user_id, jobs.c.id.in_(stale)))
        bump_version(conn, user_id)  # every instance's cached vectors reload without the passages
    return True
