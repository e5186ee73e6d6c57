"""Lexical search over a user's memories and document chunks: SQLite FTS5 ranked by BM25, or
PostgreSQL's text search ranked by `ts_rank_cd`, behind one function.

Neither side stems (migration 0010): FTS5 splits on Unicode word boundaries and folds case and
diacritics, PostgreSQL uses the 'simple' configuration, so German, Spanish, French or Portuguese
words are matched as written rather than cut by English rules."""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from jean_memory.memory.stopwords import stopwords_of

WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_WORDS = 64


# Function words carry no topic: in an OR query they make every memory that says "my" or "what"
# a match and push the one that shares the real word down. But a word is only a function word in
# its own language ("die" is German's "the" and an English verb; "a" is Spanish "to"), so a query
# drops the stop words of the one language it is plainly written in (stopwords.py guesses it from
# those very words), none when that is unclear, and all when nothing else would be left.
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
    FROM memories AS m, to_tsquery('simple', :match) AS q(query)
    WHERE m.user_id = :user_id AND m.text_search @@ q.query AND m.deleted_at IS NULL
    ORDER BY rank DESC
    LIMIT :depth
    """
)


def topical_words(text: str) -> list[str]:
    words = list(dict.fromkeys(w.lower() for w in WORD.findall(text)))
    stop = stopwords_of(words)
    return ([w for w in words if w not in stop] or words)[:MAX_QUERY_WORDS]


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
