"""Deleting an account while a write of that person is under way (PostgreSQL, where writers
hold row locks side by side; SQLite has one writer at a time).

A save takes the person's version row and then a shared lock on the user row; the deletion
takes the user row and then deletes table by table, the version row among them. Met halfway,
PostgreSQL aborts one of the two with "deadlock detected". When the deletion was the one
aborted, `jean-memory user delete` or "Delete my account" failed with a 500 and left the
account in place; it now runs again once the write is out of its way."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import sqlalchemy as sa

from jean_memory.accounts.lifecycle import delete_user
from jean_memory.accounts.users import create_user
from jean_memory.db.engine import create_engine
from jean_memory.db.tables import memories, users
from jean_memory.memory.service import MemoryService
from tests.support.databases import fresh_postgresql_database
from tests.support.oauth import PASSWORD


def wait_for_lock_waits(engine: sa.Engine, count: int, seconds: float = 15.0) -> None:
    """Until `count` backends of this database wait on a lock (pg_stat_activity)."""
    deadline = time.monotonic() + seconds
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query).scalar_one() >= count:
                return
        time.sleep(0.02)  # polling pg_stat_activity against the deadline
    raise TimeoutError(f"no {count} lock waits within {seconds}s")


def test_a_deletion_aborted_by_a_deadlock_with_a_save_runs_again(postgresql_server, postgresql_template):
    with fresh_postgresql_database(postgresql_server, postgresql_template) as url:
        engine = create_engine(url)
        try:
            person = create_user(engine, "racer@example.com", PASSWORD)
            MemoryService(engine, None).add(person.id, "I keep bees on the roof")
            with engine.connect() as save, ThreadPoolExecutor(1) as pool:
                # The save's order: the version row first (as MemoryService.add bumps it) ...
                save.execute(sa.text("SET deadlock_timeout = '20s'"))  # the deletion's check fires first
                save.execute(
                    sa.text("UPDATE memory_versions SET version = version + 1 WHERE user_id = :u"), {"u": person.id}
                )
                deleting: Future = pool.submit(delete_user, engine, person.id)
                wait_for_lock_waits(engine, 1)  # the deletion holds the user row, waits for the version row
                # ... then the shared lock on the user row (memory.owner.require_owner): a cycle.
                save.execute(sa.select(users.c.id).where(users.c.id == person.id).with_for_update(read=True))
                save.commit()
                deleted = deleting.result(timeout=60)
            assert deleted["users"] == 1 and deleted["memories"] == 1
            with engine.connect() as conn:
                assert conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one() == 0
                assert conn.execute(sa.select(sa.func.count()).select_from(memories)).scalar_one() == 0
        finally:
            engine.dispose()
