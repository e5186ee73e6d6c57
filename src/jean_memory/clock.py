"""The one source of time and randomness, so tests can move time instead of sleeping."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid

_offset_seconds = 0.0


def now() -> float:
    """Seconds since the epoch, as every lifetime check in the server sees them."""
    return time.time() + _offset_seconds


def now_int() -> int:
    return int(now())


def advance(seconds: float) -> None:
    """Move the server's clock forward (tests only: lets a test expire a code without sleeping)."""
    global _offset_seconds
    _offset_seconds += seconds


def reset() -> None:
    global _offset_seconds
    _offset_seconds = 0.0


def new_token(prefix: str = "", nbytes: int = 32) -> str:
    """A high-entropy secret for codes, refresh tokens, API keys and client secrets."""
    return prefix + secrets.token_urlsafe(nbytes)


def new_id() -> str:
    return uuid.uuid4().hex


def sha256_hex(value: str) -> str:
    """How high-entropy secrets are stored: a fast hash is enough when guessing is hopeless."""
    return hashlib.sha256(value.encode()).hexdigest()
