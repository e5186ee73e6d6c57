"""What a memory is, and the checks every piece of input passes before it reaches the database."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jean_memory import clock

MAX_TEXT_CHARS = 20_000
MAX_TAGS = 20
MAX_TAG_CHARS = 64
MAX_LIMIT = 100


class MemoryInputError(ValueError):
    """Bad input from the assistant; the message tells it what to change."""


@dataclass(frozen=True)
class Memory:
    id: str
    text: str
    tags: list[str]
    created_at: float
    score: float | None = None
    kind: str = "memory"
    title: str | None = None  # the document's title, for a chunk
    document_id: str | None = None
    updated_at: float | None = None  # None: never changed since it was saved
    deleted_at: float | None = None  # set while it is in the trash
    client: str | None = None  # the app that saved it
    superseded_by: str | None = None  # the newer memory that replaced this one (superseding.py)
    superseded_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "tags": self.tags,
            "created_at": iso_time(self.created_at),
        }
        if self.was_updated:
            item["updated_at"] = iso_time(self.updated_at or 0.0)
        # float(): a numpy scalar is not JSON's; NaN is not JSON either, and without a score the
        # item says nothing about one (as the SDK wrote a MemoryItem whose score was NaN)
        if self.score is not None and math.isfinite(score := float(self.score)):
            item["score"] = round(score, 4)
        if self.title is not None:
            item["title"] = self.title
        if self.superseded_by is not None:
            item["superseded_by"] = self.superseded_by
        return item

    @property
    def was_updated(self) -> bool:
        """Changed after it was saved (to the second shown: a save's own instant is not a change)."""
        return self.updated_at is not None and iso_time(self.updated_at) != iso_time(self.created_at)


@dataclass
class AddResult:
    saved: list[Memory] = field(default_factory=list)
    similar: list[Memory] = field(default_factory=list)


@functools.lru_cache(maxsize=65536)
def iso_time(epoch: float) -> str:
    """Cached: a search formats each hit's times three times, the same memories' times again on
    every search (3.5% of the server's GIL time under load before, issue 17)."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def normalised_hash(text: str) -> str:
    """Equal for texts that differ only in case, spacing or Unicode form: exact duplicates."""
    folded = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return clock.sha256_hex(folded)


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise MemoryInputError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


def check_no_nul(name: str, value: str) -> None:
    """PostgreSQL cannot store a NUL character in text (SQLite can): refuse it on both, with a
    message, instead of a database error on one of them."""
    if "\x00" in value:
        raise MemoryInputError(f"{name} contains a NUL character (\\x00), which cannot be stored: remove it")


def check_memory_id(memory_id: Any) -> str:
    """An id as the tools hand it over: text, without the spaces a copy may add."""
    if not isinstance(memory_id, str) or not memory_id.strip():
        raise MemoryInputError("memory_id is empty: pass an id from search_memory or list_memories")
    check_no_nul("memory_id", memory_id)
    return memory_id.strip()


def clean_text(text: str, max_chars: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(text, str) or not text.strip():
        raise MemoryInputError("text is empty: pass the fact to remember, e.g. 'Prefers tea over coffee'")
    check_no_nul("text", text)
    text = text.strip()
    if len(text) > max_chars:
        raise MemoryInputError(
            f"text is {len(text):,} characters; a memory holds at most {max_chars:,}. "
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


def encode_cursor(created_at: float, pk: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([created_at, pk]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, int]:
    """Check the values, not just the shape: a tampered cursor with a pk beyond 64 bits or a date
    of Infinity or NaN decodes fine but fails inside the database, where the person would only see
    "Error executing tool" instead of what to do. Any cursor we hand out passes these checks."""
    largest_pk = 2**63 - 1  # the largest primary key either database stores
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, pk = json.loads(base64.urlsafe_b64decode(padded.encode()))
        created_at = float(created_at)
        if not math.isfinite(created_at) or type(pk) is not int or not 0 <= pk <= largest_pk:
            raise ValueError("cursor values out of range")
        return created_at, pk
    except (binascii.Error, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MemoryInputError("cursor is not one this server handed out; omit it to start from the newest") from exc
