"""User accounts: creating them and checking a sign-in.

A disabled account (`users.disabled_at` set) cannot sign in; `authenticate` answers for it
exactly as for a wrong password, so the sign-in form does not tell a guesser which accounts
exist or are disabled.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from jean_memory import clock
from jean_memory.accounts.passwords import hash_password, verify_password
from jean_memory.db.tables import users


class AccountError(ValueError):
    pass


@dataclass(frozen=True)
class User:
    id: str
    email: str


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    local, _, domain = email.partition("@")
    if not local or "." not in domain or any(c.isspace() for c in email) or len(email) > 320:
        raise AccountError(f"{email!r} is not an email address")
    return email


def create_user(engine: Engine, email: str, password: str, is_admin: bool = False) -> User:
    email = normalise_email(email)
    password_hash = hash_password(password)
    with engine.begin() as conn:
        return insert_user(conn, email, password_hash, is_admin)


def insert_user(
    conn: Connection, email: str, password_hash: str, is_admin: bool = False, user_id: str | None = None
) -> User:
    """Add the account inside the caller's transaction (sign-up consumes its link in the same
    one, so a refused account leaves the link unused). `email` is already normalised."""
    if conn.execute(sa.select(users.c.id).where(users.c.email == email)).first():
        raise AccountError(f"an account for {email} already exists")
    user = User(id=user_id or clock.new_id(), email=email)
    conn.execute(
        users.insert().values(
            id=user.id, email=email, password_hash=password_hash, created_at=clock.now(), is_admin=is_admin
        )
    )
    return user


def any_user(conn: Connection) -> bool:
    """Whether any account exists (first run lasts until one does)."""
    return conn.execute(sa.select(users.c.id).limit(1)).first() is not None


def get_user(engine: Engine, user_id: str) -> User | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(users.c.id, users.c.email).where(users.c.id == user_id)).first()
    return User(row.id, row.email) if row else None


def find_user_by_email(engine: Engine, email: str) -> User | None:
    try:
        email = normalise_email(email)
    except AccountError:
        return None
    with engine.connect() as conn:
        row = conn.execute(sa.select(users.c.id, users.c.email).where(users.c.email == email)).first()
    return User(row.id, row.email) if row else None


def authenticate(engine: Engine, email: str, password: str) -> User | None:
    """The user for a correct email and password of an enabled account, else None (the same
    answer, after the same work, for every mistake)."""
    try:
        email = normalise_email(email)
    except AccountError:
        email = ""
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(users.c.id, users.c.email, users.c.password_hash, users.c.disabled_at).where(
                users.c.email == email
            )
        ).first()
    ok = verify_password(row.password_hash if row else None, password)
    return User(row.id, row.email) if ok and row and row.disabled_at is None else None
