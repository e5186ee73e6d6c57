"""Every statement that names its memories by key finds them by key on SQLite, not by walking
the person's whole index (memory/owner.py).

SQLite keeps no statistics here (nothing runs ANALYZE), so for `pk IN (...) AND user_id = ?` it
picks an index on `user_id` and reads every row the person has: 0.11 ms for ten rows at 1,000
memories, ten times that at 10,000. A unary plus on the owner (`+user_id`) keeps the lookup on
the key and the owner check in the query. Rather than check the statements one by one (the
recency pass's two were missed that way), this test traces what SQLite is sent while a person's
memories are saved, searched, given as context, changed, trashed, restored, purged and
re-embedded, and asks SQLite for the plan of each statement that lists keys.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from bench.people import ensure_people

from jean_memory import clock
from jean_memory.db.engine import create_engine
from jean_memory.db.migrate import upgrade
from jean_memory.memory.browse import delete_document
from jean_memory.memory.context import context_for
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.indexing import Indexer
from jean_memory.memory.neighbours import neighbours
from jean_memory.memory.service import MemoryService, rows_by_pk
from jean_memory.memory.sqlite_direct import driver, hit_rows
from jean_memory.memory.trash import purge
from tests.test_memory import USER, run_jobs

DAY = 86400.0
# A list of keys, or one key compared with `=`, in a statement's WHERE.
KEYED = re.compile(r"\b(?:pk|id|memory_pk|rowid)\s*(?:IN\s*\(|=\s*[0-9'])", re.IGNORECASE)
# A plan step that searches an index on the owner alone: it reads all of the person's rows.
WALKS_OWNER = re.compile(r"USING (?:COVERING )?INDEX \w+ \(user_id=\?\)$")


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[sa.Engine, list[str]]]:
    """A migrated SQLite database whose connections record every statement (values bound)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'plans.db'}")
    upgrade(engine)
    engine.dispose()
    sent: list[str] = []
    sa.event.listen(engine, "connect", lambda connection, _record: connection.set_trace_callback(sent.append))
    yield engine, sent
    engine.dispose()


FACTS = [
    "I live in Berlin",
    "My sister is a nurse in Porto",
    "I moved to Lisbon, I don't live in Berlin anymore",
    "I keep bees on the roof",
    "The honey harvest is in August",
    "I work as a data engineer at a bank",
    "My partner Sam plays the cello",
    "I run 10 km every Sunday morning",
    "I am allergic to peanuts",
    "My favourite food is green curry",
    "Our dog Max is a beagle",
    "I switched jobs, I'm at a startup now",
    "I learn Portuguese on Tuesdays",
    "My bees swarmed in May",
]


def person_uses_their_memory(engine: sa.Engine) -> None:
    """What a person's assistants and pages do, each at least once, with ten and more keys per
    statement where there can be (the planner turns to the owner's index from seven on)."""
    ensure_people(engine, "alice", "bob")
    service = MemoryService(engine, LocalOnnxEmbedder())
    for text in FACTS:
        clock.advance(DAY)
        service.add("alice", text, client="Claude")
    service.add("bob", "I live in Oslo")
    notes = "\n\n".join(
        f"Bed {i}: the roses there need pruning in March, feeding in May, water in July. " * 12 for i in range(12)
    )
    document = service.store_document("alice", "Garden notes", notes)
    run_jobs(service, engine)
    service.search("alice", "Where do I live?")
    service.search("alice", "bees", tags=["garden"])
    context_for(service, "alice", "Where do I live and work these days?", True, True, "Claude", save=False)
    bees = service.search("alice", "bees")[0]
    service.update("alice", bees.id, "I keep two hives of bees on the roof")
    service.history("alice", bees.id)
    service.get("alice", bees.id)
    service.delete("alice", bees.id)
    service.restore("alice", bees.id)
    for memory in service.list("alice", limit=9)[0]:
        service.delete("alice", memory.id)
    service.deleted("alice")
    clock.advance(60 * DAY)
    assert purge(engine, 30) == 9
    assert delete_document(engine, "alice", document)
    Indexer(service).reindex()


def test_no_statement_naming_keys_walks_the_owners_index(traced):
    engine, sent = traced
    person_uses_their_memory(engine)
    keyed = sorted(
        {s for s in sent if KEYED.search(s) and s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))}
    )
    assert len(keyed) >= 10, keyed  # the trace saw the work (search, context, update, trash, purge)
    walking = []
    with sqlite3.connect(engine.url.database) as conn:
        for statement in keyed:
            plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + statement)]
            if any(WALKS_OWNER.search(step) for step in plan):
                walking.append((" ".join(statement.split())[:160], plan))
    assert walking == [], "\n".join(f"{statement}\n    {plan}" for statement, plan in walking)


def test_sqlite_finds_rows_by_primary_key_not_by_walking_the_owners_index(engine):
    """With a plain `user_id = ?` beside `pk IN (...)`, SQLite (no statistics) walks the person's
    whole (user_id, created_at) index: 8.4 ms at 100k memories against 0.035 ms by rowid. The
    owner is named in the form that keeps the rowid lookup (memory/owner.py)."""
    if engine.dialect.name != "sqlite":
        return
    sent: list[str] = []
    with engine.connect() as conn:
        # What reaches SQLite, from SQLAlchemy or sent to the driver directly (sqlite_direct.py),
        # with its values bound.
        driver(conn).set_trace_callback(sent.append)
        rows_by_pk(conn, USER, [1, 2])
        hit_rows(conn, USER, [1, 2])
        neighbours(conn, USER, [1, 2])
        driver(conn).set_trace_callback(None)
        assert len(sent) == 3
        for statement in sent:
            assert f"user_id = '{USER}'" in statement  # the owner is in the query itself
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement).all()
            assert "USING INTEGER PRIMARY KEY" in plan[0][-1], (statement, plan)
