"""The owner condition of a lookup by primary key, in the form each database plans well.

Every memory query names `user_id` in its WHERE (DESIGN.md, Isolation), a lookup by primary key
too. Without statistics SQLite's planner answers `pk IN (...) AND user_id = ?` through the
user's (user_id, created_at) index, walking all of that person's rows: 8.4 ms at 100k memories
against 0.035 ms by rowid. A unary plus (`+user_id`) is SQLite's documented way to keep a term
from choosing an index, so the rows are found by rowid and the owner is still checked in the
query. PostgreSQL has statistics (and a `+` on text is an error there): it gets the plain
`user_id = :user_id` a Citus router plans by.

It also holds `require_owner`, the check every write of a memory or document makes that its
owner still has an account (review finding 7).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from jean_memory.db.tables import users
from jean_memory.memory.records import MemoryInputError


class _NotIndexed(FunctionElement[str]):
    """A column as a value: `+column` on SQLite, the bare column elsewhere."""

    type = sa.String()
    inherit_cache = True


@compiles(_NotIndexed)
def _bare(element: _NotIndexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_NotIndexed, "sqlite")
def _unary_plus(element: _NotIndexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.clauses, **kw)


def owned_by(column: sa.ColumnElement[str], user_id: Any) -> sa.ColumnElement[bool]:
    """`column = user_id` for a query that finds its rows by primary key (see the module)."""
    return _NotIndexed(column) == user_id


def owner_column_sql(column: str, dialect_name: str) -> str:
    """The same condition's left side for a textual query: `+c.user_id` on SQLite."""
    return f"+{column}" if dialect_name == "sqlite" else column


def require_owner(conn: Connection, user_id: str) -> None:
    """Refuse to write for a person whose account is gone, in the writer's transaction.

    `jean-memory user delete` runs in its own process, so a server may honour the person's token
    for up to its revocation cache's lifetime afterwards, and a save job may be running as the
    delete commits. Memories have no foreign key to users, so what is written then would outlive
    the account. The shared lock on the user row (PostgreSQL; SQLite has one writer at a time)
    makes the delete, which locks the row for update first, wait for this transaction, or this
    one see the row gone."""
    found = conn.execute(sa.select(users.c.id).where(users.c.id == user_id).with_for_update(read=True)).first()
    if found is None:
        raise MemoryInputError("this account no longer exists: nothing was saved")
