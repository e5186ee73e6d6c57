"""Export one person's memories and documents to JSON, and import them into any backend.

The format is plain and versioned so a person can move between SQLite and PostgreSQL (or keep a
backup) with nothing lost: texts, tags, dates, the saving client, and documents with their full
content, each memory's history and the trash (a trashed memory has `deleted_at`). Vectors are
not exported: they belong to an embedding model and are recomputed. Importing twice is
harmless: a memory already present (same id, or same text) is skipped. Version 1 files (before
history and trash) still import: their memories arrive live, each with a "created" event.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from jean_memory import clock
from jean_memory.db.tables import documents, memories, memory_history
from jean_memory.memory import history
from jean_memory.memory.owner import require_owner
from jean_memory.memory.records import (
    MAX_TEXT_CHARS,
    MemoryInputError,
    check_no_nul,
    clean_tags,
    clean_text,
    normalised_hash,
)
from jean_memory.memory.service import MemoryService, check_document
from jean_memory.memory.vectors import bump_version

FORMAT = "jean-memory-export"
VERSION = 2
READABLE_VERSIONS = (1, 2)
Progress = Callable[[str, int, int], None]


class ImportFormatError(ValueError):
    """The file cannot be imported; the message names the first faulty entry and what is wrong."""


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
        events = history.all_events(conn, user_id)
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
                **({"deleted_at": r.deleted_at} if r.deleted_at is not None else {}),
                **({"superseded_by": r.superseded_by, "superseded_at": r.superseded_at} if r.superseded_by else {}),
                "history": [
                    {"kind": e.kind, "at": e.at, "client": e.client, "text_before": e.text_before}
                    for e in events.get(r.id, [])
                ],
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
    if data.get("version") not in READABLE_VERSIONS:
        raise ImportFormatError(
            f"export version {data.get('version')!r} is not supported; this server reads versions 1 to {VERSION}"
        )
    if not isinstance(data.get("memories"), list) or not isinstance(data.get("documents", []), list):
        raise ImportFormatError("the export's memories and documents must be lists")


LATEST = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a date can be shown as


def _when(value: Any, default: float, where: str) -> float:
    """A date from the file, in seconds since 1970; missing means `default`.

    Only dates from 1970 to the end of 9999 are taken: every later listing shows each date as a
    calendar date, and one outside that range (often milliseconds, as other tools export) would
    make every list and search for the person fail after an import that seemed fine."""
    if not value:
        return default
    try:
        when = float(value)
    except (TypeError, ValueError, OverflowError):
        when = math.nan
    if isinstance(value, bool) or not math.isfinite(when):
        raise ImportFormatError(f"{where}: dates must be seconds since 1970, got {value!r}")
    if not 0 <= when <= LATEST:
        hint = " (it looks like milliseconds: divide it by 1000)" if 0 <= when / 1000 <= LATEST else ""
        raise ImportFormatError(
            f"{where}: {value!r} is not a date between 1970 and the year 9999; dates must be seconds since 1970{hint}"
        )
    return when


def _maybe_when(value: Any, where: str) -> float | None:
    """An optional date (when it was trashed, superseded): None when the file has none."""
    return None if value is None else _when(value, 0.0, where)


def _short(value: Any, limit: int, what: str, where: str) -> str | None:
    """An optional string field that must fit its column (on PostgreSQL a longer one fails)."""
    if value is None or (isinstance(value, str) and len(value) <= limit):
        return value
    raise ImportFormatError(f"{where}: {what} must be text of at most {limit} characters")


def _checked_memories(items: list[Any]) -> list[dict[str, Any]]:
    """Every memory through the checks add_memories applies, before anything is written."""
    checked = []
    for index, item in enumerate(items, 1):
        where = f"memory {index}"
        if not isinstance(item, dict):
            raise ImportFormatError(f"{where} is not an object with a text")
        try:
            text, tags = clean_text(item.get("text")), clean_tags(item.get("tags") or [])
        except MemoryInputError as exc:
            raise ImportFormatError(f"{where}: {exc}") from exc
        created = _when(item.get("created_at"), clock.now(), f"{where} created_at")
        memory_id = item.get("id")
        superseded_by = item.get("superseded_by")
        checked.append(
            {
                "id": memory_id if isinstance(memory_id, str) and 0 < len(memory_id) <= 32 else None,
                "text": text,
                "tags": tags,
                "client": _short(item.get("client"), 255, "client", where),
                "created_at": created,
                "updated_at": _when(item.get("updated_at"), created, f"{where} updated_at"),
                "deleted_at": _maybe_when(item.get("deleted_at"), f"{where} deleted_at"),
                "superseded_by": _short(superseded_by, 32, "superseded_by", where) if superseded_by else None,
                "superseded_at": _maybe_when(item.get("superseded_at"), f"{where} superseded_at"),
                "history": _checked_history(item.get("history"), created, item.get("client"), where),
            }
        )
    return checked


def _checked_history(events: Any, created: float, client: Any, where: str) -> list[dict[str, Any]]:
    """A memory's events from the file, checked; none (a version 1 file) means one "created"."""
    if events is None:
        return [{"kind": history.CREATED, "at": created, "client": client, "text_before": None}]
    if not isinstance(events, list):
        raise ImportFormatError(f"{where}: history must be a list of events")
    checked = []
    for number, event in enumerate(events, 1):
        place = f"{where} history event {number}"
        if not isinstance(event, dict) or event.get("kind") not in history.KINDS:
            raise ImportFormatError(f"{place}: kind must be one of {', '.join(history.KINDS)}")
        before = event.get("text_before")
        if before is not None:
            if not isinstance(before, str) or len(before) > MAX_TEXT_CHARS:
                raise ImportFormatError(f"{place}: text_before must be text of at most {MAX_TEXT_CHARS:,} characters")
            try:
                check_no_nul("text_before", before)
            except MemoryInputError as exc:
                raise ImportFormatError(f"{place}: {exc}") from exc
        checked.append(
            {
                "kind": event["kind"],
                "at": _when(event.get("at"), created, f"{place} at"),
                "client": _short(event.get("client"), 255, "client", place),
                "text_before": before,
            }
        )
    return checked


def _checked_documents(docs: list[Any]) -> list[dict[str, Any]]:
    """Every document through the checks store_document applies, before anything is written."""
    checked = []
    for index, doc in enumerate(docs, 1):
        where = f"document {index}"
        if not isinstance(doc, dict):
            raise ImportFormatError(f"{where} is not an object with a content")
        title, content = doc.get("title") or "Imported document", doc.get("content")
        document_type = doc.get("document_type") or "markdown"
        try:
            check_document(title, content, document_type, doc.get("source_url"))
        except MemoryInputError as exc:
            raise ImportFormatError(f"{where}: {exc}") from exc
        checked.append(
            {
                "title": title,
                "content": content,
                "document_type": document_type,
                "source_url": doc.get("source_url"),  # check_document took its measure
                "client": _short(doc.get("client"), 255, "client", where),
                "created_at": _when(doc.get("created_at"), clock.now(), f"{where} created_at"),
            }
        )
    return checked


ID_SLICE = 10_000


def _taken_ids(conn: sa.Connection, wanted: list[str], slice_size: int = ID_SLICE) -> set[str]:
    """Which of `wanted` some memory (anybody's) already has, asked a slice at a time: each id is
    a bound parameter and PostgreSQL takes at most 65,535 in one statement."""
    taken: set[str] = set()
    for start in range(0, len(wanted), slice_size):
        ids = wanted[start : start + slice_size]
        taken.update(conn.execute(sa.select(memories.c.id).where(memories.c.id.in_(ids))).scalars())
    return taken


class _Batch:
    """Imported memories and their history, inserted a thousand rows to a statement: one
    INSERT per memory took a 70,000-memory file most of a minute on PostgreSQL, a round trip
    each. Events follow their memories, so every event's memory exists when it is inserted."""

    SIZE = 1000

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._memories: list[dict[str, object]] = []
        self._events: list[dict[str, object]] = []

    def add(self, memory: dict[str, object], events: list[dict[str, object]]) -> None:
        self._memories.append(memory)
        self._events.extend(events)
        if len(self._memories) >= self.SIZE:
            self.flush()

    def flush(self) -> None:
        if self._memories:
            self._conn.execute(memories.insert(), self._memories)
        if self._events:
            self._conn.execute(memory_history.insert(), self._events)
        self._memories, self._events = [], []


def import_user(
    service: MemoryService, engine: Engine, user_id: str, data: Any, progress: Progress | None = None
) -> tuple[int, int]:
    """Import memories and documents for `user_id`; returns (memories added, documents added).

    The whole file is checked first (each memory as add_memories checks it, each document as
    store_document does) and then written in one transaction, so a bad file is refused with the
    place of its first fault and leaves nothing half-imported."""
    _check(data)
    items = _checked_memories(data["memories"])
    docs = _checked_documents(data.get("documents", []))
    added = documents_added = 0
    with engine.begin() as conn:
        require_owner(conn, user_id)
        known_ids = {r.id for r in conn.execute(sa.select(memories.c.id).where(memories.c.user_id == user_id))}
        known_hashes = {
            r.content_hash
            for r in conn.execute(
                sa.select(memories.c.content_hash).where(memories.c.user_id == user_id, memories.c.kind == "memory")
            )
        }
        wanted_ids = [i["id"] for i in items if i["id"] is not None]
        taken = _taken_ids(conn, wanted_ids)
        batch = _Batch(conn)
        for index, item in enumerate(items, 1):
            content_hash = normalised_hash(item["text"])
            if item["id"] in known_ids or content_hash in known_hashes:
                continue
            memory_id = item["id"] if item["id"] is not None and item["id"] not in taken else clock.new_id()
            batch.add(
                {
                    "id": memory_id,
                    "user_id": user_id,
                    "text": item["text"],
                    "content_hash": content_hash,
                    "tags": item["tags"],
                    "client": item["client"],
                    "created_at": item["created_at"],
                    "updated_at": item["updated_at"],
                    "kind": "memory",
                    "deleted_at": item["deleted_at"],
                    "superseded_by": item["superseded_by"],
                    "superseded_at": item["superseded_at"],
                },
                [history.event_row(user_id, memory_id, **event) for event in item["history"]],
            )
            known_hashes.add(content_hash)
            taken.add(memory_id)
            added += 1
            if progress and (index % 100 == 0 or index == len(items)):
                progress("memories", index, len(items))
        batch.flush()
        bump_version(conn, user_id)
        existing = {
            r.content_hash
            for r in conn.execute(sa.select(documents.c.content_hash).where(documents.c.user_id == user_id))
        }
        for index, doc in enumerate(docs, 1):
            if normalised_hash(doc["content"]) in existing:
                continue
            service.record_document(conn, user_id, **doc)
            existing.add(normalised_hash(doc["content"]))
            documents_added += 1
            if progress:
                progress("documents", index, len(docs))
    return added, documents_added
