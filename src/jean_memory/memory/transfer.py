"""Export one person's memories and documents to JSON, and import them into any backend.

The format is plain and versioned so a person can move between SQLite and PostgreSQL (or keep a
backup) with nothing lost: texts, tags, dates, the saving client, and documents with their full
content. Vectors are not exported: they belong to an embedding model and are recomputed.
Importing twice is harmless: a memory already present (same id, or same text) is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jean_memory import clock
from jean_memory.db.tables import documents, memories
from jean_memory.memory.records import clean_tags, normalised_hash
from jean_memory.memory.service import MemoryService
from jean_memory.memory.vectors import bump_version

FORMAT = "jean-memory-export"
VERSION = 1
Progress = Callable[[str, int, int], None]


class ImportFormatError(ValueError):
    pass


def export_user(engine: Engine, user_id: str, email: str) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(memories)
            .where(memories.c.user_id == user_id, memories.c.kind == "memory")
            .order_by(memories.c.created_at, memories.c.pk)
        ).all()
        docs = conn.execute(
            sa.select(documents).where(documents.c.user_id == user_id).order_by(documents.c.created_at)
        ).all()
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": clock.now(),
        "user": {"email": email},
        "memories": [
            {
                "id": r.id,
                "text": r.text,
                "tags": list(r.tags or []),
                "client": r.client,
                "created_at": r.created_at,
                "updated_at": r.updated_at,
            }
            for r in rows
        ],
        "documents": [
            {
                "id": d.id,
                "title": d.title,
                "document_type": d.document_type,
                "source_url": d.source_url,
                "content": d.content,
                "client": d.client,
                "created_at": d.created_at,
            }
            for d in docs
        ],
    }


def _check(data: Any) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ImportFormatError('this file is not a jean-memory export (missing "format": "jean-memory-export")')
    if data.get("version") != VERSION:
        raise ImportFormatError(f"export version {data.get('version')!r} is not supported; this server reads {VERSION}")
    if not isinstance(data.get("memories"), list) or not isinstance(data.get("documents", []), list):
        raise ImportFormatError("the export's memories and documents must be lists")


def import_user(
    service: MemoryService, engine: Engine, user_id: str, data: Any, progress: Progress | None = None
) -> tuple[int, int]:
    """Import memories and documents for `user_id`; returns (memories added, documents added).
    All memories land in one transaction, so a bad file leaves nothing half-imported."""
    _check(data)
    items = data["memories"]
    added = 0
    with engine.begin() as conn:
        known_ids = {r.id for r in conn.execute(sa.select(memories.c.id).where(memories.c.user_id == user_id))}
        known_hashes = {
            r.content_hash
            for r in conn.execute(
                sa.select(memories.c.content_hash).where(memories.c.user_id == user_id, memories.c.kind == "memory")
            )
        }
        taken = {
            r.id for r in conn.execute(sa.select(memories.c.id).where(memories.c.id.in_([i.get("id") for i in items])))
        }
        for index, item in enumerate(items, 1):
            text = str(item.get("text") or "").strip()
            content_hash = normalised_hash(text)
            if not text or item.get("id") in known_ids or content_hash in known_hashes:
                continue
            memory_id = item["id"] if isinstance(item.get("id"), str) and item["id"] not in taken else clock.new_id()
            created = float(item.get("created_at") or clock.now())
            conn.execute(
                memories.insert().values(
                    id=memory_id,
                    user_id=user_id,
                    text=text,
                    content_hash=content_hash,
                    tags=clean_tags(item.get("tags") or []),
                    client=item.get("client"),
                    created_at=created,
                    updated_at=float(item.get("updated_at") or created),
                    kind="memory",
                )
            )
            known_hashes.add(content_hash)
            added += 1
            if progress and (index % 100 == 0 or index == len(items)):
                progress("memories", index, len(items))
        bump_version(conn, user_id)
    documents_added = 0
    docs = data.get("documents", [])
    with engine.connect() as conn:
        existing = {
            r.content_hash
            for r in conn.execute(sa.select(documents.c.content_hash).where(documents.c.user_id == user_id))
        }
    for index, doc in enumerate(docs, 1):
        content = str(doc.get("content") or "")
        if not content.strip() or normalised_hash(content) in existing:
            continue
        document_id = service.store_document(
            user_id,
            str(doc.get("title") or "Imported document"),
            content,
            doc.get("document_type") or "markdown",
            doc.get("source_url"),
            doc.get("client"),
        )
        with engine.begin() as conn:
            conn.execute(
                documents.update()
                .where(documents.c.id == document_id)
                .values(created_at=float(doc.get("created_at") or clock.now()))
            )
        documents_added += 1
        if progress:
            progress("documents", index, len(docs))
    return added, documents_added
