"""Waiting, with a deadline, until a second connection is blocked on a lock a test holds, so a
test of two writers at once commits the first only when the second is really waiting for it
(instead of sleeping and assuming it is)."""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa


def signal_statements(conn: sa.Connection, started: threading.Event) -> None:
    """Set `started` as `conn` sends its next statement to the database."""

    def before(*_args: Any) -> None:
        started.set()

    sa.event.listen(conn, "before_cursor_execute", before)


_LOCK_WAITERS = sa.text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
)


def wait_until_blocked(engine: sa.Engine, started: threading.Event, timeout: float = 30.0) -> None:
    """Until the other writer has sent its statement (`started`, from `signal_statements`) and,
    on PostgreSQL, a backend of this database waits on a lock (pg_stat_activity). SQLite shows
    no waiting writers; there the writer having sent its statement is all there is to see, and
    since SQLite serialises writers the outcome does not depend on the rest of the order."""
    deadline = time.monotonic() + timeout
    assert started.wait(timeout), f"the second writer did not start within {timeout:g} s"
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        while not conn.execute(_LOCK_WAITERS).scalar_one():
            assert time.monotonic() < deadline, f"the second writer was not waiting on a lock within {timeout:g} s"
            conn.rollback()  # a fresh snapshot of pg_stat_activity on the next read
            time.sleep(0.01)
