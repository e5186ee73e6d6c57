"""One-time links that create an account: the first-run setup link and invites.

A link carries a random token; only its SHA-256 is stored (`invites.token_hash`). A setup link
(kind "setup", 24 h) makes the first account, an administrator, and works only while no
account exists; `serve` makes a new one on every start until then. An invite (kind "invite",
7 days) makes a normal account, for one email address when it was given one.

Using a link and creating the account happen in one transaction, and the link is taken by an
`UPDATE ... WHERE used_at IS NULL`: of two requests racing with the same link, the database
lets exactly one change the row, so exactly one account is made. Two different setup links
used at once are serialised too (a transaction-scoped advisory lock on PostgreSQL; SQLite has
one writer at a time and the update comes first), so at most one first administrator appears.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from jean_memory import clock
from jean_memory.accounts.passwords import hash_password
from jean_memory.accounts.users import AccountError, User, any_user, insert_user, normalise_email
from jean_memory.db.tables import invites, users

SETUP = "setup"
INVITE = "invite"
LIFETIME_SECONDS = {SETUP: 24 * 3600, INVITE: 7 * 24 * 3600}
_SETUP_LOCK = 0x6A6D5345  # any constant: the advisory lock that serialises first-account creation


class LinkInvalid(ValueError):
    """The link is wrong, used, expired, or (setup) an account exists already: one answer for all,
    so the page reveals nothing about which."""


@dataclass(frozen=True)
class Link:
    kind: str
    email: str | None  # the only address an invite may sign up, when bound


def create_setup_link(engine: Engine) -> str | None:
    """A new setup token while no account exists, else None. Older unused setup links stay
    valid until they expire (a restart does not break a link someone already opened)."""
    with engine.begin() as conn:
        if any_user(conn):
            return None
        return _insert(conn, SETUP, None, None)


def create_invite(engine: Engine, created_by: str | None = None, email: str | None = None) -> str:
    """A new invite token (raises AccountError for an email that is not one, or that already
    has an account: that invite could never be used)."""
    bound = normalise_email(email) if email else None
    with engine.begin() as conn:
        if bound and conn.execute(sa.select(users.c.id).where(users.c.email == bound)).first():
            raise AccountError(f"an account for {bound} already exists")
        return _insert(conn, INVITE, bound, created_by)


def _insert(conn: Connection, kind: str, email: str | None, created_by: str | None) -> str:
    token = clock.new_token()
    now = clock.now()
    conn.execute(
        invites.insert().values(
            token_hash=clock.sha256_hex(token),
            kind=kind,
            email=email,
            created_by=created_by,
            created_at=now,
            expires_at=now + LIFETIME_SECONDS[kind],
        )
    )
    return token


def _usable(kind: str, token_hash: str, now: float) -> sa.ColumnElement[bool]:
    return sa.and_(
        invites.c.token_hash == token_hash,
        invites.c.kind == kind,
        invites.c.used_at.is_(None),
        invites.c.expires_at > now,
    )


def find_link(engine: Engine, kind: str, token: str | None) -> Link | None:
    """The link for showing its page: None when wrong, used, expired, or a setup link after the
    first account exists."""
    if not token:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(invites.c.email).where(_usable(kind, clock.sha256_hex(token), clock.now()))
        ).first()
        if row is None or (kind == SETUP and any_user(conn)):
            return None
    return Link(kind, row.email)


def redeem(engine: Engine, kind: str, token: str | None, email: str, password: str) -> User:
    """Create the account the link is for and use the link up, in one transaction.

    Raises LinkInvalid (the link cannot be used), AccountError (bad email, email taken, or not
    the invite's address) or WeakPasswordError; in every case the link stays as it was."""
    email = normalise_email(email)
    password_hash = hash_password(password)  # before the transaction: it takes tens of ms of CPU
    if not token:
        raise LinkInvalid
    token_hash = clock.sha256_hex(token)
    with engine.begin() as conn:
        if kind == SETUP and conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SETUP_LOCK})
        bound = conn.execute(sa.select(invites.c.email).where(_usable(kind, token_hash, clock.now()))).first()
        if bound is None:
            raise LinkInvalid
        if bound.email and bound.email != email:
            raise AccountError(f"this invite is for {bound.email}; sign up with that address")
        user_id = clock.new_id()
        taken = conn.execute(
            invites.update().where(_usable(kind, token_hash, clock.now())).values(used_at=clock.now(), used_by=user_id)
        ).rowcount
        if taken != 1 or (kind == SETUP and any_user(conn)):
            raise LinkInvalid  # another request used it first, or made the first account with another link
        return insert_user(conn, email, password_hash, is_admin=kind == SETUP, user_id=user_id)


def sign_up_open(engine: Engine, email: str, password: str) -> User:
    """An account without a link (JEAN_MEMORY_SIGNUP=open)."""
    email = normalise_email(email)
    password_hash = hash_password(password)
    with engine.begin() as conn:
        return insert_user(conn, email, password_hash)
