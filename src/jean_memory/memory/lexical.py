"""Lexical search over a user's memories and document chunks: SQLite FTS5 ranked by BM25, or
PostgreSQL's text search ranked by `ts_rank_cd`, behind one function.

Each database has two indexes of the same text (migration 0010): one stemmed by English rules
(FTS5 `porter`, PostgreSQL 'english') and one that only splits words and folds case (FTS5
`unicode61`, PostgreSQL 'simple'). A query in English is matched on the stemmed one, which finds
"paint" in "painted" (LoCoMo hybrid hit@5 0.709 against 0.686 without); a query in another
language on the plain one, where German, Spanish, French or Portuguese words are matched as
written rather than cut by English rules ("ações" no longer finds "aço").
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from jean_memory.memory.sqlite_direct import fetch
from jean_memory.memory.stopwords import STOPWORDS, guess_language

ENGLISH_STOPWORDS = STOPWORDS["en"]

WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_WORDS = 64


# Function words carry no topic: in an English OR query they make every memory that says "my" or
# "what" a match and push the one that shares the real word down, so an English query drops them
# (unless nothing else is left). Other languages keep theirs: on bench/multilingual.py dropping
# German, Spanish, French or Portuguese function words lowered BM25's hit@5 (German 0.68 -> 0.48:
# with paraphrased questions they are often what a question shares with its memory's language).
def fts_query(words: list[str]) -> str | None:
    """Words as an FTS5 query that cannot raise: every word quoted, any word may match.

    Quoting neutralises FTS5 syntax (`-`, `:`, `"`, `AND`, `NEAR`, column filters); BM25 then
    rewards memories that match more, and rarer, words."""
    return " OR ".join(f'"{w}"' for w in words) or None


# The owner is an indexed column (migration 0003), so FTS5 matches the user's rows only and no
# match is looked up in `memories`; its weight 0 keeps it out of the score. The trash keeps its
# full-text rows until the purge (trash.py): the person's trashed keys, one seek on the
# (user_id, deleted_at) index and usually none, are left out before the ranking is cut.
_SQLITE_SQL = """
    SELECT rowid AS pk, bm25({table}, 1.0, 0.0) AS rank
    FROM {table}
    WHERE {table} MATCH :match
      AND rowid NOT IN (SELECT pk FROM memories WHERE user_id = :user_id AND deleted_at IS NOT NULL)
    ORDER BY rank
    LIMIT :depth
    """
# English: the Porter-stemmed index; otherwise the plain one (migration 0010). Sent to the
# driver directly (sqlite_direct.py).
SQLITE_SEARCH = {
    english: _SQLITE_SQL.format(table=t) for english, t in ((True, "memories_fts"), (False, "memories_fts_plain"))
}


def owner_token(user_id: str) -> str:
    """The user id as the FTS5 `owner` column holds it: each hex digit of its UTF-8 bytes as
    two decimal digits, a token no stemmer rewrites (same mapping as migration 0003's SQL)."""
    return "".join(f"{int(digit, 16):02d}" for digit in user_id.encode().hex())


_POSTGRESQL_SQL = """
    SELECT m.pk AS pk, ts_rank_cd(m.{column}, q.query) AS rank
    FROM memories AS m, to_tsquery('{configuration}', :match) AS q(query)
    WHERE m.user_id = :user_id AND m.{column} @@ q.query AND m.deleted_at IS NULL
    ORDER BY rank DESC
    LIMIT :depth
    """
_POSTGRESQL_SEARCH = {
    english: sa.text(_POSTGRESQL_SQL.format(column=column, configuration=configuration))
    for english, column, configuration in ((True, "text_search", "english"), (False, "text_search_simple", "simple"))
}


def is_english(words: list[str]) -> bool:
    """English when its function words say so, or when none says anything and every word is
    plain ASCII ("favourite food", "Petrobras"): what all queries were treated as before 0010."""
    language = guess_language(words)
    return language == "en" or (language is None and all(w.isascii() for w in words))


def query_words(text: str) -> tuple[list[str], bool]:
    """The words a query is matched on (lower case, each once), and whether it is English."""
    words = list(dict.fromkeys(w.lower() for w in WORD.findall(text)))
    english = is_english(words)
    if english:
        words = [w for w in words if w not in ENGLISH_STOPWORDS] or words
    return words[:MAX_QUERY_WORDS], english


def topical_words(text: str) -> list[str]:
    return query_words(text)[0]


def lexical_search(conn: Connection, user_id: str, query: str, depth: int) -> list[tuple[int, float]]:
    """The `depth` best lexical matches as (pk, score), best first; higher score is better."""
    if conn.dialect.name == "postgresql":
        # Words are \w+ runs, so they cannot carry tsquery syntax; `|` makes any word match.
        words, english = query_words(query)
        if not words:
            return []
        rows = conn.execute(
            _POSTGRESQL_SEARCH[english], {"match": " | ".join(words), "user_id": user_id, "depth": depth}
        )
        return [(row.pk, float(row.rank)) for row in rows]
    words, english = query_words(query)
    match = fts_query(words)
    if match is None:
        return []
    match = f'owner : "{owner_token(user_id)}" AND text : ({match})'
    rows = fetch(conn, SQLITE_SEARCH[english], {"match": match, "user_id": user_id, "depth": depth})
    return [(pk, -rank) for pk, rank in rows]
