"""The read statements of one search, sent straight to SQLite's driver (issue 17).

A search sends four statements besides the vector cache's version check: the BM25 candidates,
the neighbours, the recency pass's dates and vectors, and the hits' rows. Through SQLAlchemy
each costs about 0.1 ms of Python before SQLite sees it (the compiled-cache lookup, the
expanding `IN` list rendered anew, an execution context, a result object, type processing per
row): on bench/mcp_load.py's 1,000 memories about 0.4 ms of a request's 5.4 ms of CPU, the
largest piece of what separates us from the bare SDK doing the same search. Here the same SQL
(what SQLAlchemy compiles for SQLite, character for character where a plan depends on it: the
owner as `+user_id`, owner.py) goes to the `sqlite3` connection the SQLAlchemy connection holds,
with the values converted as the column types convert them (tags: JSON text; vectors: float32
bytes). Nothing is written here, so SQLAlchemy's transaction handling has nothing to miss.

PostgreSQL keeps the SQLAlchemy statements: each module's own `conn.dialect.name` check picks.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection

from jean_memory.memory.records import Memory


def driver(conn: Connection) -> sqlite3.Connection:
    """The `sqlite3` connection under a SQLAlchemy connection (checked out for this search)."""
    return conn.connection.driver_connection  # type: ignore[return-value]


@functools.lru_cache(maxsize=256)
def _keys(count: int) -> tuple[str, tuple[str, ...]]:
    """`(:k0, ..., :kN)` and its parameter names, for an `IN` list of `count` keys."""
    names = tuple(f"k{i}" for i in range(count))
    return "(" + ", ".join(f":{name}" for name in names) + ")", names


@functools.lru_cache(maxsize=64)
def _expanded(sql: str, count: int) -> str:
    return sql.replace(":pks", _keys(count)[0])


def fetch(conn: Connection, sql: str, params: dict[str, Any], pks: Sequence[int] | None = None) -> list[tuple]:
    """The rows of `sql` with `params`; `pks` fills its `:pks` list (one `IN (...)`)."""
    if pks is not None:
        sql = _expanded(sql, len(pks))
        params = {**params, **dict(zip(_keys(len(pks))[1], pks, strict=True))}
    return driver(conn).execute(sql, params).fetchall()


# service.rows_by_pk's statement as SQLAlchemy compiles it for SQLite, the columns Memory needs.
_HIT_ROWS = """
    SELECT memories.pk, memories.id, memories.text, memories.tags, memories.created_at, memories.kind,
      memories.document_id, memories.updated_at, memories.deleted_at, memories.client, memories.superseded_by,
      memories.superseded_at, documents.title
    FROM memories LEFT OUTER JOIN documents
      ON documents.id = memories.document_id AND documents.user_id = memories.user_id
    WHERE memories.pk IN :pks AND +memories.user_id = :user_id AND memories.deleted_at IS NULL
    """


def hit_rows(conn: Connection, user_id: str, pks: list[int]) -> dict[int, Memory]:
    """service.rows_by_pk (no kind filter) on SQLite: the user's live memories among `pks`, by pk."""
    if not pks:
        return {}
    found: dict[int, Memory] = {}
    for pk, id_, text, tags, created, kind, document, updated, deleted, client, by, at, title in fetch(
        conn, _HIT_ROWS, {"user_id": user_id}, pks
    ):
        found[pk] = Memory(
            id=id_,
            text=text,
            tags=list(json.loads(tags) or []) if tags is not None else [],
            created_at=created,
            kind=kind,
            title=title,
            document_id=document,
            updated_at=updated,
            deleted_at=deleted,
            client=client,
            superseded_by=by,
            superseded_at=at,
        )
    return found


# recency._DATED_BY_PK as SQLAlchemy compiles it for SQLite.
DATED_SQL = """
    SELECT memories.pk, memories.text, memories.created_at, memory_vectors.vector
    FROM memories JOIN memory_vectors ON memory_vectors.memory_pk = memories.pk
    WHERE +memories.user_id = :user_id AND memories.pk IN :pks AND memory_vectors.model = :model
    """


def dated_rows(conn: Connection, user_id: str, model: str, pks: Sequence[int]) -> list[tuple[int, str, float, Any]]:
    """(pk, text, created_at, vector) as recency.dated_by_pk reads them; the vector as the column
    type reads SQLite's bytes (db/types.py)."""
    return [
        (pk, text, created, np.frombuffer(bytes(vector), dtype="<f4"))
        for pk, text, created, vector in fetch(conn, DATED_SQL, {"user_id": user_id, "model": model}, pks)
    ]
