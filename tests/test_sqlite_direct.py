"""The search's statements SQLite runs without SQLAlchemy (sqlite_direct.py) against the
SQLAlchemy statements they replaced, over many sets of keys: two people's, trashed, reworded
and document chunks mixed, keys of nobody's; and hostile queries never reach another person."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa
from bench.people import ensure_people

from jean_memory import clock
from jean_memory.db.tables import memories
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.lexical import SQLITE_SEARCH, fts_query, lexical_search, owner_token, query_words
from jean_memory.memory.neighbours import SQLITE_NEIGHBOURS, neighbours
from jean_memory.memory.recency import _DATED_BY_PK
from jean_memory.memory.service import MemoryService, rows_by_pk
from jean_memory.memory.sqlite_direct import dated_rows, hit_rows
from tests.test_memory import run_jobs

HOSTILE = [
    '"',
    "'",
    'a" OR owner:*',
    "NEAR(a b)",
    "user_id: x",
    "owner : x",
    "*",
    "^a",
    "a*",
    "-a",
    "(",
    "_",
    "text:alice",
    "ñandú ações",
    "名前は何",
    "ﬁsh",
    "x\u0301",
    "١٢٣",
    "İstanbul",
    "alice",
    "0" * 200,
    "a " * 300,
]
WORDS = "apple banana cherry dog elephant fish garden house island jungle".split()


@pytest.fixture
def service(engine) -> MemoryService:
    ensure_people(engine, "alice", "bob")
    service = MemoryService(engine, LocalOnnxEmbedder())
    rng = random.Random(1)
    for i in range(60):
        clock.advance(rng.choice([0.0, 1.0, 10.0, 4000.0]))  # ties, neighbours, and an hour apart
        service.add(("bob", "alice")[i % 2], " ".join(rng.sample(WORDS, 3)) + f" n{i}", [f"t{i % 3}"])
    alice = [m.id for m in service.list("alice", 100)[0]]
    for memory_id in alice[:4]:
        service.delete("alice", memory_id)
    service.update("alice", alice[10], "banana replaced text")
    service.store_document("alice", "Orchard", "apple orchard notes.\n\n" * 5)
    run_jobs(service, engine)
    return service


def test_direct_statements_read_what_sqlalchemy_reads(service, engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL runs the SQLAlchemy statements themselves")
    rng = random.Random(2)
    model = service.embedder.model_name
    old_neighbours = sa.text(SQLITE_NEIGHBOURS).bindparams(sa.bindparam("pks", expanding=True))
    with engine.connect() as conn:
        every = [pk for (pk,) in conn.execute(sa.select(memories.c.pk))]
        for _ in range(60):
            pks = [*rng.sample(every, rng.randint(1, len(every))), 10**9]
            for who in ("alice", "bob", "nobody"):
                assert hit_rows(conn, who, pks) == rows_by_pk(conn, who, pks)
                rows = conn.execute(old_neighbours, {"pks": pks, "window": 3600.0, "user_id": who}).all()
                assert neighbours(conn, who, pks) == {
                    r.pk: (r.prev_pk, r.next_pk, r.prev2_pk, r.next2_pk) for r in rows
                }
                rows = conn.execute(_DATED_BY_PK, {"user_id": who, "pks": pks, "model": model}).all()
                direct = dated_rows(conn, who, model, pks)
                assert sorted((p, t, c, v.tobytes()) for p, t, c, v in direct) == sorted(
                    (r.pk, r.text, r.created_at, r.vector.tobytes()) for r in rows
                )
                assert all(type(c) is float for _, _, c, _ in direct)
        for query in HOSTILE + WORDS:
            words, english = query_words(query)
            match = fts_query(words)
            for who in ("alice", "bob"):
                found = lexical_search(conn, who, query, 50)
                if match:
                    values = {
                        "match": f'owner : "{owner_token(who)}" AND text : ({match})',
                        "user_id": who,
                        "depth": 50,
                    }
                    rows = conn.execute(sa.text(SQLITE_SEARCH[english]), values).all()
                    assert found == [(r.pk, -r.rank) for r in rows], query


def test_hostile_queries_find_only_the_persons_own_memories(service):
    bob = {m.id for m in service.list("bob", 100)[0]}
    for query in HOSTILE:
        assert {m.id for m in service.search("bob", query, 50)} <= bob, query
        assert not {m.id for m in service.search("alice", query, 50, tags=["t1"])} & bob, query
        assert service.search("nobody", query, 50) == []
