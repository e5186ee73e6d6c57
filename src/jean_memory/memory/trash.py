"""The trash: a deleted memory leaves search, list and context at once and can be restored until
the maintenance task purges it, `JEAN_MEMORY_TRASH_DAYS` (30) after it was deleted.

A trashed memory keeps its row (text, tags, dates, history) with `deleted_at` set; every reading
query names `LIVE`. Its vector is removed when it is trashed, so neither a cached matrix
(vectors.py, which patches or reloads from `memory_vectors`) nor pgvector can return it, and
re-embedding skips it; restoring embeds the text again. Its full-text row stays until the purge
(the lexical search leaves trashed rows out), so restoring needs no re-indexing.

"Delete all" and account deletion do not go through the trash: they erase at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from jean_memory import clock
from jean_memory.db.tables import documents, jobs, memories, memory_history, memory_vectors
from jean_memory.memory import history
from jean_memory.memory.owner import owned_by
from jean_memory.memory.vectors import bump_version

LIVE = memories.c.deleted_at.is_(None)
DAY_SECONDS = 86_400
PURGE_SLICE = 1_000  # memories purged per transaction: a long trash never holds a lock for long


@dataclass(frozen=True)
class Trashed:
    pk: int
    id: str
    text: str


def move_to_trash(conn: Connection, user_id: str, memory_id: str, client: str | None) -> int | None:
    """Trash the person's live memory; its pk, or None when they have no such live memory."""
    now = clock.now()
    pk = conn.execute(
        memories.update()
        .where(memories.c.user_id == user_id, memories.c.id == memory_id, LIVE)
        .values(deleted_at=now)
        .returning(memories.c.pk)
    ).scalar()
    if pk is None:
        return None
    conn.execute(memory_vectors.delete().where(memory_vectors.c.memory_pk == pk, memory_vectors.c.user_id == user_id))
    history.record(conn, user_id, memory_id, history.DELETED, client, at=now)
    return pk


def take_out(conn: Connection, user_id: str, memory_id: str, client: str | None) -> Trashed | None:
    """Restore the person's trashed memory; None when none of theirs by that id is in the trash."""
    row = conn.execute(
        memories.update()
        .where(memories.c.user_id == user_id, memories.c.id == memory_id, memories.c.deleted_at.is_not(None))
        .values(deleted_at=None)
        .returning(memories.c.pk, memories.c.id, memories.c.text)
    ).first()
    if row is None:
        return None
    history.record(conn, user_id, memory_id, history.RESTORED, client)
    return Trashed(row.pk, row.id, row.text)


def trashed_rows(conn: Connection, user_id: str) -> list[sa.Row]:
    """The person's trash, most recently deleted first."""
    return conn.execute(
        sa.select(memories)
        .where(memories.c.user_id == user_id, memories.c.deleted_at.is_not(None))
        .order_by(memories.c.deleted_at.desc(), memories.c.pk.desc())
    ).all()


def purge(engine: Engine, trash_days: int) -> int:
    """Delete for good every memory trashed more than `trash_days` ago, with its vector, full-text
    row (SQLite's trigger; PostgreSQL's is a column of the row) and history; returns how many.
    Finds the people with expired trash first, then works person by person, so every query that
    touches memories names its owner."""
    cutoff = clock.now() - trash_days * DAY_SECONDS
    expired = memories.c.deleted_at.is_not(None) & (memories.c.deleted_at < cutoff)
    with engine.connect() as conn:
        people = conn.execute(sa.select(memories.c.user_id).where(expired).distinct()).scalars().all()
    purged = 0
    for user_id in people:
        while True:
            with engine.begin() as conn:
                rows = conn.execute(
                    sa.select(memories.c.pk, memories.c.id)
                    .where(memories.c.user_id == user_id, expired)
                    .limit(PURGE_SLICE)
                ).all()
                if not rows:
                    break
                pks = [r.pk for r in rows]
                conn.execute(
                    memory_vectors.delete().where(
                        owned_by(memory_vectors.c.user_id, user_id), memory_vectors.c.memory_pk.in_(pks)
                    )
                )
                conn.execute(memories.delete().where(owned_by(memories.c.user_id, user_id), memories.c.pk.in_(pks)))
                history.forget(conn, user_id, [r.id for r in rows])
                bump_version(conn, user_id)
                purged += len(rows)
    return purged


def erase_all(conn: Connection, user_id: str) -> dict[str, int]:
    """Every memory, document chunk, document, vector and history event of the person, trash
    included, and their queued saves (which would bring facts back), at once; rows per table."""
    counts: dict[str, int] = {}
    bump_version(conn, user_id)
    for table in (memory_vectors, memory_history, memories, documents, jobs):
        count = conn.execute(table.delete().where(table.c.user_id == user_id)).rowcount
        if count:
            counts[table.name] = count
    return counts
