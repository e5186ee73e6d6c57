"""Marking an older memory replaced by a newer one, and putting current facts first.

supersession.py decides (pure, on texts and cosines); this module writes the decision: the
older memory keeps its text and stays searchable, but carries `superseded_by` (the newer id)
and `superseded_at`, and its history says "superseded" and which app's save did it (issue 15,
item 4). Readers use `current_first` so a replaced fact never outranks the one that replaced it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from sqlalchemy.engine import Connection

from jean_memory import clock
from jean_memory.db.tables import memories
from jean_memory.memory import history
from jean_memory.memory.records import Memory
from jean_memory.memory.supersession import SupersessionConfig, best_superseded
from jean_memory.memory.trash import LIVE


def mark_superseded(conn: Connection, user_id: str, old_id: str, new_id: str, client: str | None) -> float | None:
    """Mark the person's live memory `old_id` replaced by `new_id`, with its history event, in
    the caller's transaction. False (and nothing written) when it is gone, in the trash, or
    already replaced: a memory is replaced once, by the first newer fact that did it. The time
    it was marked otherwise."""
    now = clock.now()
    marked = conn.execute(
        memories.update()
        .where(memories.c.user_id == user_id, memories.c.id == old_id, memories.c.superseded_by.is_(None), LIVE)
        .values(superseded_by=new_id, superseded_at=now)
    ).rowcount
    if not marked:
        return None
    history.record(conn, user_id, old_id, history.SUPERSEDED, client, at=now)
    return now


def supersede_older(
    conn: Connection,
    user_id: str,
    new: Memory,
    nearest: Iterable[Memory],
    client: str | None,
    config: SupersessionConfig | None = None,
) -> Memory | None:
    """Run the detector on a just-saved memory against its nearest earlier ones (each with its
    cosine as `score`), and mark the one it replaces, if any. The replaced memory, marked, or None."""
    candidates = {m.id: m for m in nearest if m.superseded_by is None and m.score is not None and m.id != new.id}
    found = best_superseded(
        new.text, new.created_at, ((m.id, m.text, m.score or 0.0, m.created_at) for m in candidates.values()), config
    )
    if found is None:
        return None
    at = mark_superseded(conn, user_id, str(found.old_id), new.id, client)
    return None if at is None else replace(candidates[str(found.old_id)], superseded_by=new.id, superseded_at=at)


def current_first(found: list[Memory]) -> list[Memory]:
    """`found` in its order, but every replaced memory after every current one: a stale fact
    stays findable (the person may ask where they used to live) without outranking its successor."""
    return [m for m in found if m.superseded_by is None] + [m for m in found if m.superseded_by is not None]
