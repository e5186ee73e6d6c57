"""Fixed-window counters in the database, so every instance sees the same counts.

Used for sign-in failures, registrations, authorization, token and revocation requests per
client address. The limits are generous on purpose: a person connecting several apps in a few
minutes must never trip them; they exist to make password guessing and request floods slow.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from jean_memory import clock
from jean_memory.db.tables import rate_limits


@dataclass(frozen=True)
class Limit:
    name: str
    max_count: int
    window_seconds: int


SIGN_IN_FAILURES = Limit("sign_in_failures", 20, 900)
REGISTRATIONS = Limit("registrations", 120, 600)
TOKEN_REQUESTS = Limit("token_requests", 600, 60)
# Every authorization request may store a pending request and fetch a metadata document;
# a person connecting apps makes a handful a minute, an office behind one address a few dozen.
AUTHORIZE_REQUESTS = Limit("authorize_requests", 300, 60)
REVOCATIONS = Limit("revocations", 600, 60)
# Each sign-up attempt costs a password hash (about 50 ms of a core); an office setting its
# people up behind one address makes a few dozen an hour.
SIGN_UPS = Limit("sign_ups", 60, 3600)
LIMITS = (SIGN_IN_FAILURES, REGISTRATIONS, TOKEN_REQUESTS, AUTHORIZE_REQUESTS, REVOCATIONS, SIGN_UPS)


def _window(limit: Limit) -> int:
    return int(clock.now()) // limit.window_seconds * limit.window_seconds


def retry_after(limit: Limit) -> int:
    return max(1, _window(limit) + limit.window_seconds - int(clock.now()))


def hit(engine: Engine, limit: Limit, key: str) -> int:
    """Count one event and return the window's count (atomic across instances)."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(rate_limits).values(bucket=f"{limit.name}:{key}", window_start=_window(limit), count=1)
    statement = statement.on_conflict_do_update(
        index_elements=[rate_limits.c.bucket, rate_limits.c.window_start],
        set_={"count": rate_limits.c.count + 1},
    ).returning(rate_limits.c.count)
    with engine.begin() as conn:
        return conn.execute(statement).scalar_one()


def take_back(engine: Engine, limit: Limit, key: str) -> None:
    """Uncount one event counted with `hit` that turned out not to be one (a sign-in counted
    before the password check, which then succeeded)."""
    with engine.begin() as conn:
        conn.execute(
            rate_limits.update()
            .where(
                rate_limits.c.bucket == f"{limit.name}:{key}",
                rate_limits.c.window_start == _window(limit),
                rate_limits.c.count > 0,
            )
            .values(count=rate_limits.c.count - 1)
        )


def exceeded(engine: Engine, limit: Limit, key: str) -> bool:
    return hit(engine, limit, key) > limit.max_count


def sweep(engine: Engine) -> None:
    """Drop every counter whose window has ended: nothing reads it again. Any request from a new
    address (each /64 of an IPv6 block) adds a row, so rows must not outlive their window (kept
    a day, a flood from a large block grew the table 96 times beyond what the limits need)."""
    now = int(clock.now())
    with engine.begin() as conn:
        for limit in LIMITS:
            conn.execute(
                rate_limits.delete().where(
                    rate_limits.c.bucket.startswith(f"{limit.name}:", autoescape=True),
                    rate_limits.c.window_start <= now - limit.window_seconds,
                )
            )
        # A limit no longer defined (renamed in an upgrade): its rows go after a day, as before.
        conn.execute(rate_limits.delete().where(rate_limits.c.window_start < now - 86400))
