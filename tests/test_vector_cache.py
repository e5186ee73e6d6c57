"""The SQLite vector cache under concurrent searches and saves (issue 18: a server of one busy
person reloaded every vector more often than it searched, a dozen loads at once, and its RSS
doubled in two minutes). Real SQLite, real threads; the loads are counted as the statements the
database receives."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from jean_memory.db.tables import memories, memory_vectors
from jean_memory.memory.vectors import VectorCache, bump_version

USER = "u1"
MODEL = "test-model"
DIMS = 384


@pytest.fixture
def sqlite_engine(engine: sa.Engine) -> sa.Engine:
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL searches vectors in the database (pg_vectors.py): no cache to keep")
    return engine


def unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write(engine: sa.Engine, first_pk: int, vectors: np.ndarray) -> int:
    """Memories with these vectors, as any writer stores them (the version bumped in the same
    transaction); returns the new version. Patches nothing: the caller decides who knows."""
    pks = range(first_pk, first_pk + len(vectors))
    with engine.begin() as conn:
        version = bump_version(conn, USER)
        conn.execute(
            memories.insert(),
            [
                dict(pk=pk, id=f"m{pk}", user_id=USER, text=f"note {pk}", content_hash=f"h{pk}", tags=[],
                     created_at=0.0, updated_at=0.0, kind="memory")
                for pk in pks
            ],
        )  # fmt: skip
        conn.execute(
            memory_vectors.insert(),
            [dict(memory_pk=pk, user_id=USER, model=MODEL, vector=v) for pk, v in zip(pks, vectors, strict=True)],
        )
    return version


@pytest.fixture
def statements(sqlite_engine: sa.Engine) -> Iterator[list[str]]:
    """Every statement SQLite runs from now on: SQLAlchemy's and those a search sends to the
    driver directly (sqlite_direct.py), as SQLite's trace sees them on each checked-out connection."""
    sent: list[str] = []
    tracing = [True]

    def trace(statement: str) -> None:
        if tracing[0]:
            sent.append(statement)

    def checkout(dbapi_connection: Any, *_args: Any) -> None:
        dbapi_connection.set_trace_callback(trace)

    sa.event.listen(sqlite_engine, "checkout", checkout)
    yield sent
    tracing[0] = False
    sa.event.remove(sqlite_engine, "checkout", checkout)


def loads(sent: list[str]) -> int:
    return sum("FROM memory_vectors" in s for s in sent)


def version_reads(sent: list[str]) -> int:
    return sum("FROM memory_versions" in s for s in sent)


def test_concurrent_searches_that_miss_load_a_persons_vectors_once(sqlite_engine, statements):
    """Another process saved (the version moved, no patch here): eight searches arriving at once
    all find the cache behind. One loads; the others wait for it and use its matrix. The first
    load is held at the database until all eight have seen the new version, so without the
    one-load-at-a-time rule every one of them loads."""
    write(sqlite_engine, 1, unit_vectors(2000, seed=1))
    cache = VectorCache(sqlite_engine)
    query = unit_vectors(1, seed=2)[0]
    cache.nearest(USER, MODEL, query, 10)
    write(sqlite_engine, 2001, unit_vectors(1, seed=3))  # "another process": no note_write
    searchers = 8
    statements.clear()
    seen_by_all = threading.Event()

    def hold_first_load(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM memory_vectors" in statement and not seen_by_all.is_set():
            deadline = time.monotonic() + 10
            while version_reads(statements) < searchers and time.monotonic() < deadline:
                time.sleep(0.005)  # polls a condition with a deadline: other threads are reading
            seen_by_all.set()

    sa.event.listen(sqlite_engine, "before_cursor_execute", hold_first_load)
    start = threading.Barrier(searchers)
    results: list[list[tuple[int, float]]] = []

    def search() -> None:
        start.wait(10)
        results.append(cache.nearest(USER, MODEL, query, 10))

    threads = [threading.Thread(target=search) for _ in range(searchers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    sa.event.remove(sqlite_engine, "before_cursor_execute", hold_first_load)
    assert len(results) == searchers
    assert loads(statements) == 1
    fresh = VectorCache(sqlite_engine).nearest(USER, MODEL, query, 10)
    assert all(result == fresh for result in results)


def test_patches_arriving_out_of_order_keep_the_cache(sqlite_engine, statements):
    """Two saves commit as versions n+1 and n+2, but the second one's thread patches the cache
    first (under load the threads run in any order). The cache keeps the later patch until the
    earlier arrives and then has both: the next search loads nothing and answers like a fresh
    load. (The cache used to take the early patch for someone else's write and drop the matrix.)"""
    write(sqlite_engine, 1, unit_vectors(50, seed=1))
    cache = VectorCache(sqlite_engine)
    cache.nearest(USER, MODEL, unit_vectors(1, seed=2)[0], 10)
    first, second = unit_vectors(2, seed=4)
    first_version = write(sqlite_engine, 51, first[None])
    second_version = write(sqlite_engine, 52, second[None])
    assert second_version == first_version + 1
    statements.clear()
    cache.note_write(USER, MODEL, second_version, {52: second})
    cache.note_write(USER, MODEL, first_version, {51: first})
    assert cache.nearest(USER, MODEL, second, 3)[0][0] == 52
    assert cache.nearest(USER, MODEL, first, 3)[0][0] == 51
    assert loads(statements) == 0
    fresh = VectorCache(sqlite_engine)
    for query in (first, second, unit_vectors(1, seed=5)[0]):
        assert cache.nearest(USER, MODEL, query, 20) == fresh.nearest(USER, MODEL, query, 20)


def test_a_write_elsewhere_is_seen_even_with_patches_waiting(sqlite_engine, statements):
    """A patch past a gap waits for the missing version; when that version was another
    process's write (which never patches), the next search loads and sees both writes."""
    write(sqlite_engine, 1, unit_vectors(50, seed=1))
    cache = VectorCache(sqlite_engine)
    cache.nearest(USER, MODEL, unit_vectors(1, seed=2)[0], 10)
    elsewhere, mine = unit_vectors(2, seed=6)
    write(sqlite_engine, 51, elsewhere[None])  # another process: no patch
    my_version = write(sqlite_engine, 52, mine[None])
    cache.note_write(USER, MODEL, my_version, {52: mine})
    statements.clear()
    assert cache.nearest(USER, MODEL, elsewhere, 3)[0][0] == 51
    assert cache.nearest(USER, MODEL, mine, 3)[0][0] == 52
    assert loads(statements) == 1
