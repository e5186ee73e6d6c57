"""Lexical search over a user's memories and document chunks: SQLite FTS5 ranked by BM25, or
PostgreSQL's text search ranked by `ts_rank_cd`, behind one function."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection

WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_WORDS = 64
# Function words carry no topic: in an OR query they make every memory that says "my" or "what"
# a match and push the one that shares the real word down. Dropped unless nothing else is left.
STOPWORDS = frozenset(
    """a an the and or but if of to in on at by for with about from into over after before as is are was were be
    been being am do does did doing have has had having i me my mine myself we us our ours you your yours he him his
    she her hers it its they them their what which who whom whose this that these those there here when where why
    how all any both each few more most other some such no nor not only own same so than too very can could would
    should will shall may might must s t d ll m re ve just also again ever""".split()
)


def fts_query(text: str) -> str | None:
    """User text as an FTS5 query that cannot raise: every word quoted, any word may match.

    Quoting neutralises FTS5 syntax (`-`, `:`, `"`, `AND`, `NEAR`, column filters); BM25 then
    rewards memories that match more, and rarer, words."""
    return " OR ".join(f'"{w}"' for w in topical_words(text)) or None


# The owner is an indexed column (migration 0003), so FTS5 matches the user's rows only and no
# match is looked up in `memories`; its weight 0 keeps it out of the score. The trash keeps its
# full-text rows until the purge (trash.py): the person's trashed keys, one seek on the
# (user_id, deleted_at) index and usually none, are left out before the ranking is cut.
_SQLITE_SEARCH = sa.text(
    """
    SELECT rowid AS pk, bm25(memories_fts, 1.0, 0.0) AS rank
    FROM memories_fts
    WHERE memories_fts MATCH :match
      AND rowid NOT IN (SELECT pk FROM memories WHERE user_id = :user_id AND deleted_at IS NOT NULL)
    ORDER BY rank
    LIMIT :depth
    """
)


def owner_token(user_id: str) -> str:
    """The user id as the FTS5 `owner` column holds it: each hex digit of its UTF-8 bytes as
    two decimal digits, a token no stemmer rewrites (same mapping as migration 0003's SQL)."""
    return "".join(f"{int(digit, 16):02d}" for digit in user_id.encode().hex())


_POSTGRESQL_SEARCH = sa.text(
    """
    SELECT m.pk AS pk, ts_rank_cd(m.text_search, q.query) AS rank
    FROM memories AS m, to_tsquery('english', :match) AS q(query)
    WHERE m.user_id = :user_id AND m.text_search @@ q.query AND m.deleted_at IS NULL
    ORDER BY rank DESC
    LIMIT :depth
    """
)


def topical_words(text: str) -> list[str]:
    words = list(dict.fromkeys(w.lower() for w in WORD.findall(text)))
    return ([w for w in words if w not in STOPWORDS] or words)[:MAX_QUERY_WORDS]


def lexical_search(conn: Connection, user_id: str, query: str, depth: int) -> list[tuple[int, float]]:
    """The `depth` best lexical matches as (pk, score), best first; higher score is better."""
    if conn.dialect.name == "postgresql":
        # Words are \w+ runs, so they cannot carry tsquery syntax; `|` makes any word match.
        words = topical_words(query)
        if not words:
            return []
        rows = conn.execute(_POSTGRESQL_SEARCH, {"match": " | ".join(words), "user_id": user_id, "depth": depth})
        return [(row.pk, float(row.rank)) for row in rows]
    match = fts_query(query)
    if match is None:
        return []
    match = f'owner : "{owner_token(user_id)}" AND text : ({match})'
    rows = conn.execute(_SQLITE_SEARCH, {"match": match, "user_id": user_id, "depth": depth}).all()
    return [(row.pk, -row.rank) for row in rows]
