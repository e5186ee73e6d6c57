"""What an administrator does to an existing account: list, change the password, disable,
enable, delete.

Disabling takes effect without touching the token check: in one transaction the account is
marked, every live grant of the person is revoked (the same update `oauth.grants.revoke_grant`
makes: `revoked_at` set, refresh tokens deleted) and their browser sessions end. Access tokens
die with their grant, at once on an instance that revokes and within the revocation cache's
lifetime (30 s by default, at most 60 s) on the others; API keys and sign-in check the mark on
every use. Enabling only clears the mark: revoked grants stay revoked, so apps connect again.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from jean_memory import clock
from jean_memory.accounts.browser_sessions import end_sessions
from jean_memory.accounts.passwords import hash_password
from jean_memory.accounts.users import AccountError, User, find_user_by_email
from jean_memory.db.tables import api_keys, grants, memories, metadata, refresh_tokens, users

DISABLED_REASON = "account_disabled"
# Any constant: the advisory lock that serialises removals from the pages (keep_an_administrator).
_ADMINISTRATORS_LOCK = 0x6A6D4144


class LastAdministratorError(AccountError):
    """The change would leave people on the server and no enabled administrator to manage them."""


class NotAdministratorError(AccountError):
    """The person acting from /admin stopped being an enabled administrator meanwhile."""


@dataclass(frozen=True)
class UserSummary:
    id: str
    email: str
    created_at: float
    is_admin: bool
    disabled_at: float | None
    memory_count: int
    last_active_at: float | None = None  # latest sign-in, app use or API key use; None: never


def require_user(engine: Engine, email: str) -> User:
    user = find_user_by_email(engine, email)
    if user is None:
        raise AccountError(
            f"no account for {email} (jean-memory user list shows them; create it with: jean-memory user add {email})"
        )
    return user


def list_users(engine: Engine) -> list[UserSummary]:
    """Every account, oldest first, with how many memories (not document chunks, not the trash)
    it holds and when it was last active: the latest of a browser sign-in (kept on the account),
    an app's use of its connection (`grants.last_used_at`, kept to the minute) and an API key's use."""
    counts = (
        sa.select(memories.c.user_id, sa.func.count().label("n"))
        .where(memories.c.kind == "memory", memories.c.deleted_at.is_(None))
        .group_by(memories.c.user_id)
        .subquery()
    )
    latest = [
        sa.select(table.c.user_id, sa.func.max(column).label("at")).group_by(table.c.user_id).subquery()
        for table, column in (
            (grants, grants.c.last_used_at),
            (api_keys, api_keys.c.last_used_at),
        )
    ]
    query = sa.select(
        users.c.id,
        users.c.email,
        users.c.created_at,
        users.c.is_admin,
        users.c.disabled_at,
        users.c.last_sign_in_at,
        counts.c.n,
        *(sub.c.at.label(f"at{i}") for i, sub in enumerate(latest)),
    ).outerjoin(counts, counts.c.user_id == users.c.id)
    for sub in latest:
        query = query.outerjoin(sub, sub.c.user_id == users.c.id)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(users.c.created_at, users.c.email)).all()
    return [
        UserSummary(
            row.id,
            row.email,
            row.created_at,
            bool(row.is_admin),
            row.disabled_at,
            row.n or 0,
            max((at for at in (row.last_sign_in_at, row.at0, row.at1) if at is not None), default=None),
        )
        for row in rows
    ]


def set_password(engine: Engine, user_id: str, password: str) -> int:
    """Replace the password and end every browser session (whoever knew the old one is signed
    out); how many sessions ended. Raises WeakPasswordError before changing anything."""
    password_hash = hash_password(password)
    with engine.begin() as conn:
        conn.execute(users.update().where(users.c.id == user_id).values(password_hash=password_hash))
        return end_sessions(conn, user_id)


def disable_user(engine: Engine, user_id: str, acting: str | None = None) -> int:
    """Mark the account disabled, revoke its live grants and end its sessions; how many grants
    were revoked. Disabling a disabled account changes nothing. `acting`: see `delete_user`."""
    now = clock.now()
    with engine.begin() as conn:
        if acting is not None:
            keep_an_administrator(conn, user_id, acting)
        conn.execute(users.update().where(users.c.id == user_id, users.c.disabled_at.is_(None)).values(disabled_at=now))
        revoked = _revoke_grants(conn, user_id, now)
        end_sessions(conn, user_id)
    return revoked


def _revoke_grants(conn: Connection, user_id: str, now: float) -> int:
    of_user = sa.select(grants.c.id).where(grants.c.user_id == user_id).scalar_subquery()
    revoked = conn.execute(
        grants.update()
        .where(grants.c.user_id == user_id, grants.c.revoked_at.is_(None))
        .values(revoked_at=now, revoked_reason=DISABLED_REASON)
    ).rowcount
    conn.execute(refresh_tokens.delete().where(refresh_tokens.c.grant_id.in_(of_user)))
    return revoked


def enable_user(engine: Engine, user_id: str, acting: str | None = None) -> bool:
    """Clear the disabled mark; False when the account was not disabled. `acting`: see
    `delete_user` (enabling removes nobody, but the one acting must still be an administrator)."""
    with engine.begin() as conn:
        if acting is not None:
            keep_an_administrator(conn, None, acting)
        changed = conn.execute(
            users.update().where(users.c.id == user_id, users.c.disabled_at.is_not(None)).values(disabled_at=None)
        ).rowcount
    return bool(changed)


def keep_an_administrator(conn: Connection, leaving: str | None, acting: str) -> None:
    """Refuse, inside the change's own transaction, a change made from the pages that would
    leave people on the server and no enabled administrator (nobody could invite, disable or
    delete anyone from /admin), or that an administrator makes after losing the role.

    Checked and changed in one transaction behind one lock: checked apart, two administrators
    deleting themselves (or each other) at the same moment both saw the other one still there,
    and both went. PostgreSQL: a transaction-scoped advisory lock taken first, so a second
    change waits and then reads what the first committed (each statement reads afresh at READ
    COMMITTED). Not a lock on the administrators' rows: PostgreSQL locks rows in the order it
    meets them, which changes as the rows get new versions, so two changes could each hold a
    row the other wanted ("deadlock detected"). SQLite: a no-op UPDATE of those rows takes the
    database's write lock before anything is read, so the second change's reads start after
    the first commits (one writer at a time: no deadlock). The only person of all may still
    leave: the server goes back to its first run."""
    enabled_admin = sa.and_(users.c.is_admin.is_(True), users.c.disabled_at.is_(None))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADMINISTRATORS_LOCK})
    else:
        conn.execute(users.update().where(enabled_admin).values(is_admin=users.c.is_admin))
    admins = set(conn.execute(sa.select(users.c.id).where(enabled_admin)).scalars())
    if acting != leaving and acting not in admins:
        raise NotAdministratorError("you are no longer an administrator of this server")
    if leaving is None or leaving not in admins or admins - {leaving}:
        return
    others = conn.execute(sa.select(sa.func.count()).select_from(users).where(users.c.id != leaving)).scalar_one()
    if others:
        raise LastAdministratorError("this would leave no administrator while other people use the server")


def delete_user(engine: Engine, user_id: str, acting: str | None = None) -> dict[str, int]:
    """Erase the account and everything of it, in one transaction; rows deleted per table.

    `acting` is who asks from the pages (the person themselves, or an administrator): then the
    change must keep an administrator (`keep_an_administrator`). None is the operator at the
    command line, who may do anything.

    Every table with a column naming a person (`USER_COLUMNS`: `user_id`, and the invites they
    made or used) is cleared of the person's rows, and every table whose
    foreign key points at such a table (codes and refresh tokens hang off grants, vectors off
    memories) of the rows hanging off them, children first, then the user row itself. Walking
    the schema rather than listing tables means a table added later is erased too. SQLite's
    full-text index follows the memories through its triggers; PostgreSQL's is a column.

    The user row is locked first: a write of a memory or document holds a shared lock on it
    (memory.owner.require_owner), so this waits for writes under way and later ones find the
    account gone.

    Writers lock the person's rows in their own orders (a save takes the person's version row
    before its shared lock on the user row; an edit takes the memory's row first), and this
    takes them table by table, so on PostgreSQL a write under way can meet it in a deadlock.
    PostgreSQL then aborts one of the two. A write that loses is a write of an account being
    erased, so its error is the right answer; when the deletion loses, it runs again (the
    write has finished by then, or fails at once on the locked user row)."""
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        try:
            return _delete_user_once(engine, user_id, acting)
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != DEADLOCK_DETECTED or attempt == DEADLOCK_ATTEMPTS:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


DEADLOCK_ATTEMPTS = 3
DEADLOCK_DETECTED = "40P01"  # PostgreSQL's SQLSTATE for "deadlock detected"


def _delete_user_once(engine: Engine, user_id: str, acting: str | None) -> dict[str, int]:
    deleted: dict[str, int] = {}
    with engine.begin() as conn:
        if acting is not None:
            keep_an_administrator(conn, user_id, acting)
        conn.execute(sa.select(users.c.id).where(users.c.id == user_id).with_for_update())
        for table in reversed(metadata.sorted_tables):
            condition = _owned_by(table, user_id)
            if condition is not None:
                count = conn.execute(table.delete().where(condition)).rowcount
                if count:
                    deleted[table.name] = count
    return deleted


# Columns that name a person: `user_id` everywhere, and the invites a person made or used.
USER_COLUMNS = ("user_id", "created_by", "used_by")


def user_columns(table: sa.Table) -> list[sa.Column]:
    """The columns of `table` that hold a user id (the schema walk of `delete_user`, and the
    test that proves nothing of a deleted person is left)."""
    return [table.c[name] for name in USER_COLUMNS if name in table.c]


def _owned_by(table: sa.Table, user_id: str) -> sa.ColumnElement[bool] | None:
    if table is users:
        return users.c.id == user_id
    columns = user_columns(table)
    if columns:
        return sa.or_(*(column == user_id for column in columns))
    for fk in table.foreign_keys:
        parent = fk.column.table
        if parent is not users and "user_id" in parent.c:
            owned = sa.select(fk.column).where(parent.c.user_id == user_id)
            return fk.parent.in_(owned)
    return None
