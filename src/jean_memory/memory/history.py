"""Every change of a memory, kept so the person can see what it said before and which app changed it.

The service records an event in the same transaction as the change itself, so a memory never
changes without its history saying so (and a change that fails leaves no event behind). Events
live as long as their memory: the trash keeps them, purging and erasing remove them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from jean_memory import clock
from jean_memory.db.tables import memory_history
from jean_memory.memory.records import iso_time

CREATED, MERGED, UPDATED, SUPERSEDED, DELETED, RESTORED = (
    "created",
    "merged",
    "updated",
    "superseded",
    "deleted",
    "restored",
)
KINDS = (CREATED, MERGED, UPDATED, SUPERSEDED, DELETED, RESTORED)
MAX_CLIENT_CHARS = 255  # the column's size


@dataclass(frozen=True)
class HistoryEvent:
    kind: str
    at: float
    client: str | None = None
    text_before: str | None = None  # the text the change replaced (merged, updated)

    def as_dict(self) -> dict[str, Any]:
        item: dict[str, Any] = {"kind": self.kind, "at": iso_time(self.at)}
        if self.client is not None:
            item["client"] = self.client
        if self.text_before is not None:
            item["text_before"] = self.text_before
        return item


def record(
    conn: Connection,
    user_id: str,
    memory_id: str,
    kind: str,
    client: str | None = None,
    text_before: str | None = None,
    at: float | None = None,
) -> None:
    """Add one event, in the caller's transaction (the one that made the change)."""
    conn.execute(memory_history.insert().values(**event_row(user_id, memory_id, kind, client, text_before, at)))


def event_row(
    user_id: str,
    memory_id: str,
    kind: str,
    client: str | None = None,
    text_before: str | None = None,
    at: float | None = None,
) -> dict[str, object]:
    """One event's row, checked: what `record` inserts, and what an import inserts by the thousand."""
    if kind not in KINDS:
        raise ValueError(f"unknown history event kind {kind!r}")
    return {
        "user_id": user_id,
        "memory_id": memory_id,
        "kind": kind,
        "at": clock.now() if at is None else at,
        "client": client[:MAX_CLIENT_CHARS] if client else None,
        "text_before": text_before,
    }


def events(conn: Connection, user_id: str, memory_id: str) -> list[HistoryEvent]:
    """The memory's events, oldest first (another person's memory has none)."""
    rows = conn.execute(
        sa.select(memory_history)
        .where(memory_history.c.user_id == user_id, memory_history.c.memory_id == memory_id)
        .order_by(memory_history.c.at, memory_history.c.pk)
    ).all()
    return [HistoryEvent(r.kind, r.at, r.client, r.text_before) for r in rows]


def all_events(conn: Connection, user_id: str) -> dict[str, list[HistoryEvent]]:
    """Every event of the person's memories by memory id, oldest first (for export)."""
    rows = conn.execute(
        sa.select(memory_history)
        .where(memory_history.c.user_id == user_id)
        .order_by(memory_history.c.at, memory_history.c.pk)
    ).all()
    found: dict[str, list[HistoryEvent]] = {}
    for r in rows:
        found.setdefault(r.memory_id, []).append(HistoryEvent(r.kind, r.at, r.client, r.text_before))
    return found


def forget(conn: Connection, user_id: str, memory_ids: list[str]) -> None:
    """Remove the events of memories that are gone for good (purged), a slice at a time."""
    for start in range(0, len(memory_ids), 10_000):
        conn.execute(
            memory_history.delete().where(
                memory_history.c.user_id == user_id, memory_history.c.memory_id.in_(memory_ids[start : start + 10_000])
            )
        )
