"""Lexical search: SQLite FTS5 with BM25 ranking over a user's memories and document chunks."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection

WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_WORDS = 64


def fts_query(text: str) -> str | None:
    """User text as an FTS5 query that cannot raise: every word quoted, any word may match.

    Quoting neutralises FTS5 syntax (`-`, `:`, `"`, `AND`, `NEAR`, column filters); BM25 then
    rewards memories that match more, and rarer, words."""
    words = list(dict.fromkeys(w.lower() for w in WORD.findall(text)))[:MAX_QUERY_WORDS]
    return " OR ".join(f'"{w}"' for w in words) or None


_SQLITE_SEARCH = sa.text(
    """
    SELECT m.pk AS pk, bm25(memories_fts) AS rank
    FROM memories_fts JOIN memories AS m ON m.pk = memories_fts.rowid
    WHERE memories_fts MATCH :match AND m.user_id = :user_id
    ORDER BY rank
    LIMIT :depth
    """
)


def lexical_search(conn: Connection, user_id: str, query: str, depth: int) -> list[tuple[int, float]]:
    """The `depth` best lexical matches as (pk, score), best first; higher score is better."""
    match = fts_query(query)
    if match is None:
        return []
    rows = conn.execute(_SQLITE_SEARCH, {"match": match, "user_id": user_id, "depth": depth}).all()
    return [(row.pk, -row.rank) for row in rows]
