"""Browser sign-in sessions: a random cookie value, stored only as its hash."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from jean_memory import clock
from jean_memory.db.tables import browser_sessions, users

COOKIE_NAME = "jm_session"


def start_session(engine: Engine, user_id: str, lifetime_seconds: int) -> str:
    token = clock.new_token()
    now = clock.now()
    with engine.begin() as conn:
        conn.execute(users.update().where(users.c.id == user_id).values(last_sign_in_at=now))
        conn.execute(
            browser_sessions.insert().values(
                token_hash=clock.sha256_hex(token), user_id=user_id, created_at=now, expires_at=now + lifetime_seconds
            )
        )
    return token


@dataclass(frozen=True)
class SignedIn:
    """The person a browser session belongs to, as the pages need them."""

    user_id: str
    email: str
    is_admin: bool


def signed_in(engine: Engine, token: str | None) -> SignedIn | None:
    """The person signed in with this session cookie, or None (no cookie, expired, ended, or
    the account is disabled: disabling ends page access at once)."""
    if not token:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(users.c.id, users.c.email, users.c.is_admin)
            .join(browser_sessions, users.c.id == browser_sessions.c.user_id)
            .where(
                browser_sessions.c.token_hash == clock.sha256_hex(token),
                browser_sessions.c.expires_at > clock.now(),
                users.c.disabled_at.is_(None),
            )
        ).first()
    return SignedIn(row.id, row.email, bool(row.is_admin)) if row else None


def end_session(engine: Engine, token: str | None) -> None:
    """Sign this one browser out (the "Sign out" button; the old session at a new sign-in)."""
    if token:
        with engine.begin() as conn:
            conn.execute(browser_sessions.delete().where(browser_sessions.c.token_hash == clock.sha256_hex(token)))


def end_other_sessions(engine: Engine, user_id: str, keep_token: str | None) -> int:
    """Sign the person out everywhere but here (a password change from the account page)."""
    keep = clock.sha256_hex(keep_token) if keep_token else ""
    with engine.begin() as conn:
        return conn.execute(
            browser_sessions.delete().where(
                browser_sessions.c.user_id == user_id, browser_sessions.c.token_hash != keep
            )
        ).rowcount


def session_user_id(engine: Engine, token: str | None) -> str | None:
    """The signed-in user's id, or None (no cookie, expired, ended, or the account is disabled)."""
    person = signed_in(engine, token)
    return person.user_id if person else None


def end_sessions(conn: Connection, user_id: str) -> int:
    """Sign the person out of every browser (password change, disabling): how many ended."""
    return conn.execute(browser_sessions.delete().where(browser_sessions.c.user_id == user_id)).rowcount


def sweep_expired_sessions(engine: Engine) -> int:
    """Drop sessions past their expiry (every sign-in adds one); how many went."""
    with engine.begin() as conn:
        return conn.execute(browser_sessions.delete().where(browser_sessions.c.expires_at <= clock.now())).rowcount
