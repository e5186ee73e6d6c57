"""Migrations and table definitions must agree, and every migration must run both ways."""

import subprocess
import sys
import time

import pytest
from alembic import command

from jean_memory.db.engine import create_engine
from jean_memory.db.migrate import alembic_config, current_and_head, upgrade
from tests.support.databases import fresh_postgresql_database


def test_migrations_match_the_tables_and_run_down_and_up(database_url):
    engine = create_engine(database_url)
    upgrade(engine)
    config = alembic_config(engine)
    command.check(config)  # raises when tables.py describes something no migration creates
    command.downgrade(config, "base")
    assert current_and_head(engine)[0] is None
    upgrade(engine)
    current, head = current_and_head(engine)
    assert current == head
    engine.dispose()


OWNERS = ["u1", "ff52d917b93113ba3ca0422449e24c46", "Zoë-ß 東京", "e" * 32]


def test_memories_saved_before_the_fts_owner_column_are_found_after_it(database_url):
    """Migration 0003 rebuilds SQLite's full-text index with the owner as an indexed token;
    rows written under 0002 must be found by owner afterwards, and by nobody else."""
    import sqlalchemy as sa

    from jean_memory.memory.lexical import lexical_search, owner_token

    engine = create_engine(database_url)
    config = alembic_config(engine)
    command.upgrade(config, "0002")
    with engine.begin() as conn:
        for pk, owner in enumerate(OWNERS, start=1):
            conn.execute(
                sa.text(
                    "INSERT INTO memories (pk, id, user_id, text, content_hash, tags, created_at, updated_at, kind)"
                    " VALUES (:pk, :id, :user_id, :text, 'h', '[]', 0, 0, 'memory')"
                ),
                {"pk": pk, "id": f"m{pk}", "user_id": owner, "text": f"my parrot is called Kiwi number {pk}"},
            )
    upgrade(engine)
    with engine.connect() as conn:
        for pk, owner in enumerate(OWNERS, start=1):
            assert [hit for hit, _ in lexical_search(conn, owner, "parrot", 10)] == [pk]
        if engine.dialect.name == "sqlite":  # the trigger's SQL and the Python mapping agree
            stored = conn.execute(sa.text("SELECT owner FROM memories_fts_content ORDER BY pk")).scalars().all()
            assert stored == [owner_token(owner) for owner in OWNERS]
    engine.dispose()


# Each process imports first, then waits for the same instant, so the upgrades really overlap.
UPGRADE_AT = """
import sys, time
from jean_memory.db.engine import create_engine
from jean_memory.db.migrate import upgrade
engine = create_engine(sys.argv[1])
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
upgrade(engine)
"""


@pytest.fixture
def new_database_url(backend, request, tmp_path):
    """An empty database: no template, no tables, not even alembic_version."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'new.db'}"
        return
    with fresh_postgresql_database(request.getfixturevalue("postgresql_server")) as url:
        yield url


def test_instances_starting_at_once_on_a_new_database_all_upgrade_it(backend, new_database_url):
    """Found by review: every command and every start runs the migrations, and two at once on a
    new database made one crash (PostgreSQL: duplicate pg_type entry; SQLite: "table
    alembic_version already exists"). Now they queue, and the later ones find nothing to do."""
    start = time.time() + 4
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", UPGRADE_AT, new_database_url, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in processes]
    assert [code for code, _ in results] == [0] * 4, "\n".join(err[-600:] for _, err in results)
    engine = create_engine(new_database_url)
    current, head = current_and_head(engine)
    assert current == head
    engine.dispose()


def test_accounts_from_before_0007_are_ordinary_and_enabled(database_url):
    """Migration 0007 adds users.is_admin and users.disabled_at; an account created under 0005
    comes out an enabled non-administrator that still signs in."""
    import sqlalchemy as sa

    from jean_memory.accounts.passwords import hash_password
    from jean_memory.accounts.users import authenticate

    engine = create_engine(database_url)
    command.upgrade(alembic_config(engine), "0005")
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO users (id, email, password_hash, created_at) VALUES ('u1', 'old@example.com', :h, 0)"),
            {"h": hash_password("long enough password")},
        )
    upgrade(engine)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT is_admin, disabled_at FROM users WHERE id = 'u1'")).one()
    assert (bool(row.is_admin), row.disabled_at) == (False, None)
    assert authenticate(engine, "old@example.com", "long enough password") is not None
    engine.dispose()
