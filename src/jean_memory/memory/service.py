"""Saving, searching, listing and deleting one person's memories.

Knows nothing of HTTP, MCP or OAuth: every call is handed the user id the caller verified, and
every query filters by it, which is the whole of the isolation between people.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jean_memory import clock
from jean_memory.db.tables import memories

MAX_TEXT_CHARS = 20_000
MAX_TAGS = 20
MAX_TAG_CHARS = 64
MAX_LIMIT = 100
WORD = re.compile(r"\w+", re.UNICODE)


class MemoryInputError(ValueError):
    """Bad input from the assistant; the message tells it what to change."""


@dataclass(frozen=True)
class Memory:
    id: str
    text: str
    tags: list[str]
    created_at: float
    score: float | None = None

    def as_dict(self) -> dict:
        item: dict = {"id": self.id, "text": self.text, "tags": self.tags, "created_at": iso_time(self.created_at)}
        if self.score is not None:
            item["score"] = round(self.score, 4)
        return item


@dataclass
class AddResult:
    saved: list[Memory] = field(default_factory=list)
    similar: list[Memory] = field(default_factory=list)


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def normalised_hash(text: str) -> str:
    """Equal for texts that differ only in case, spacing or Unicode form: exact duplicates."""
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return clock.sha256_hex(folded)


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise MemoryInputError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def clean_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise MemoryInputError("text is empty: pass the fact to remember, e.g. 'Prefers tea over coffee'")
    text = text.strip()
    if len(text) > MAX_TEXT_CHARS:
        raise MemoryInputError(
            f"text is {len(text):,} characters; a memory holds at most {MAX_TEXT_CHARS:,}. "
            "Split it into separate facts, or use store_document for long content"
        )
    return text


def clean_tags(tags: list[str] | None) -> list[str]:
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise MemoryInputError("tags must be a list of strings")
    cleaned = list(dict.fromkeys(t.strip().lower() for t in tags if t.strip()))
    if len(cleaned) > MAX_TAGS or any(len(t) > MAX_TAG_CHARS for t in cleaned):
        raise MemoryInputError(f"at most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} characters each")
    return cleaned


def fts_query(text: str) -> str | None:
    """User text as an FTS5 query that cannot raise: every word quoted, any word may match.

    Quoting neutralises FTS5 syntax (`-`, `:`, `"`, `AND`, `NEAR`, column filters)."""
    words = list(dict.fromkeys(w.lower() for w in WORD.findall(text)))[:64]
    return " OR ".join(f'"{w}"' for w in words) or None


def encode_cursor(created_at: float, pk: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, pk]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, pk = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return float(created_at), int(pk)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise MemoryInputError("cursor is not one this server handed out; omit it to start from the newest") from exc


def _memory(row: sa.Row, score: float | None = None) -> Memory:
    return Memory(id=row.id, text=row.text, tags=list(row.tags or []), created_at=row.created_at, score=score)


class MemoryService:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, user_id: str, text: str, tags: list[str] | None = None, client: str | None = None) -> AddResult:
        text = clean_text(text)
        tags = clean_tags(tags)
        content_hash = normalised_hash(text)
        now = clock.now()
        with self._engine.begin() as conn:
            existing = conn.execute(
                sa.select(memories).where(memories.c.user_id == user_id, memories.c.content_hash == content_hash)
            ).first()
            if existing is not None:
                merged_tags = list(dict.fromkeys([*existing.tags, *tags]))
                if merged_tags != list(existing.tags):
                    conn.execute(
                        memories.update().where(memories.c.pk == existing.pk).values(tags=merged_tags, updated_at=now)
                    )
                return AddResult(saved=[], similar=[replace(_memory(existing), tags=merged_tags)])
            memory_id = clock.new_id()
            conn.execute(
                memories.insert().values(
                    id=memory_id,
                    user_id=user_id,
                    text=text,
                    content_hash=content_hash,
                    tags=tags,
                    client=client,
                    created_at=now,
                    updated_at=now,
                )
            )
        return AddResult(saved=[Memory(id=memory_id, text=text, tags=tags, created_at=now)])

    def search(self, user_id: str, query: str, limit: int = 10, tags: list[str] | None = None) -> list[Memory]:
        check_limit(limit)
        if not isinstance(query, str) or not query.strip():
            raise MemoryInputError("query is empty: say what to look for, e.g. 'favourite food'")
        match = fts_query(query)
        if match is None:
            return []
        wanted_tags = set(clean_tags(tags))
        fts = sa.table("memories_fts", sa.column("rowid"))
        rank = sa.literal_column("bm25(memories_fts)")
        statement = (
            sa.select(memories, rank.label("rank"))
            .select_from(fts.join(memories, memories.c.pk == fts.c.rowid))
            .where(sa.text("memories_fts MATCH :match"), memories.c.user_id == user_id)
            .order_by(rank)
            .limit(limit * 5 if wanted_tags else limit)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(statement, {"match": match}).all()
        hits = [_memory(row, score=-row.rank) for row in rows if wanted_tags <= set(row.tags or [])]
        return hits[:limit]

    def list(self, user_id: str, limit: int = 20, cursor: str | None = None) -> tuple[list[Memory], str | None]:
        check_limit(limit)
        statement = sa.select(memories).where(memories.c.user_id == user_id)
        if cursor:
            created_at, pk = decode_cursor(cursor)
            statement = statement.where(
                sa.or_(
                    memories.c.created_at < created_at,
                    sa.and_(memories.c.created_at == created_at, memories.c.pk < pk),
                )
            )
        statement = statement.order_by(memories.c.created_at.desc(), memories.c.pk.desc()).limit(limit + 1)
        with self._engine.connect() as conn:
            rows = conn.execute(statement).all()
        next_cursor = encode_cursor(rows[limit - 1].created_at, rows[limit - 1].pk) if len(rows) > limit else None
        return [_memory(row) for row in rows[:limit]], next_cursor

    def get(self, user_id: str, memory_id: str) -> Memory | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(memories).where(memories.c.user_id == user_id, memories.c.id == memory_id)
            ).first()
        return _memory(row) if row else None

    def delete(self, user_id: str, memory_id: str) -> bool:
        if not isinstance(memory_id, str) or not memory_id.strip():
            raise MemoryInputError("memory_id is empty: pass an id from search_memory or list_memories")
        with self._engine.begin() as conn:
            result = conn.execute(
                memories.delete().where(memories.c.user_id == user_id, memories.c.id == memory_id.strip())
            )
        return bool(result.rowcount)

    def count(self, user_id: str) -> int:
        with self._engine.connect() as conn:
            return conn.execute(
                sa.select(sa.func.count()).select_from(memories).where(memories.c.user_id == user_id)
            ).scalar_one()
