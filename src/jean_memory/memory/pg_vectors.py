"""Nearest-neighbour search in PostgreSQL with pgvector: the database answers, nothing is cached.

A user with a modest number of vectors (the common case: thousands) is searched exactly, by
scanning only their rows through the (user_id, model) index, which is both exact and fast
(about 1 ms per thousand vectors). A user with very many vectors goes through the HNSW index
with pgvector's iterative scan, so the per-user filter does not starve the result list.

The HNSW index is never built inside a request: a plain CREATE INDEX over every user's vectors
took minutes at 100k rows and blocked every insert meanwhile. The server's maintenance task
builds it with CREATE INDEX CONCURRENTLY once some user passes the exact-search limit; until it
is valid, those users are searched exactly (slower, never wrong).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import sqlalchemy as sa
from pgvector.sqlalchemy import VECTOR
from sqlalchemy.engine import Connection, Engine

EXACT_SEARCH_MAX_VECTORS = 20_000
HNSW_EF_SEARCH = 200
SAFE_MODEL_NAME = re.compile(r"^[A-Za-z0-9:._/\-]{1,200}$")


def hnsw_index_name(model: str) -> str:
    return "ix_memory_vectors_hnsw_" + hashlib.sha256(model.encode()).hexdigest()[:12]


class PgVectorIndex:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._valid: set[str] = set()  # index names seen valid (an index never becomes invalid)

    def _index_is_valid(self, conn: Connection, name: str) -> bool:
        if name not in self._valid and _index_state(conn, name) == "valid":
            self._valid.add(name)
        return name in self._valid

    def build_index_if_needed(self, model: str, dims: int) -> bool:
        """Build the model's HNSW index, without blocking writes, once a user needs it; True when
        this call built it. One instance at a time (advisory lock); a build that failed half-way
        (an invalid index) is dropped and redone."""
        if not SAFE_MODEL_NAME.match(model):
            raise ValueError(f"embedding model name {model!r} has characters an index predicate cannot hold")
        name = hnsw_index_name(model)
        with self._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if _index_state(conn, name) == "valid":
                return False
            needed = conn.execute(
                sa.text(
                    "SELECT 1 FROM memory_vectors WHERE model = :model GROUP BY user_id HAVING count(*) > :limit LIMIT 1"
                ),
                {"model": model, "limit": EXACT_SEARCH_MAX_VECTORS},
            ).first()
            if needed is None:
                return False
            lock = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            if not conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": lock}).scalar_one():
                return False  # another instance is building it
            try:
                if _index_state(conn, name) == "invalid":
                    conn.execute(sa.text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                conn.execute(
                    sa.text(
                        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON memory_vectors "
                        f"USING hnsw ((vector::vector({int(dims)})) vector_cosine_ops) WHERE model = '{model}'"
                    )
                )
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": lock})
        return True

    def nearest(self, user_id: str, model: str, query: np.ndarray, depth: int) -> list[tuple[int, float]]:
        dims = int(np.asarray(query).shape[0])
        params = {"user_id": user_id, "model": model, "query": np.asarray(query, dtype=np.float32), "depth": depth}
        with self._engine.begin() as conn:
            count = conn.execute(
                sa.text("SELECT count(*) FROM memory_vectors WHERE user_id = :user_id AND model = :model"), params
            ).scalar_one()
            if count == 0:
                return []
            exact = count <= EXACT_SEARCH_MAX_VECTORS or not SAFE_MODEL_NAME.match(model)
            if exact or not self._index_is_valid(conn, hnsw_index_name(model)):
                # The plain query, not a MATERIALIZED CTE of the user's rows: 0.9-1.7 ms against
                # 2.3-4.7 ms for 1,000 vectors (bench/README.md, "Scale"). It cannot use the HNSW
                # index (that one is on the cast expression), so it stays exact.
                statement = sa.text(
                    """
                    SELECT memory_pk, vector <=> :query AS distance FROM memory_vectors
                    WHERE user_id = :user_id AND model = :model
                    ORDER BY distance LIMIT :depth
                    """
                )
            else:
                conn.execute(sa.text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
                conn.execute(sa.text(f"SET LOCAL hnsw.ef_search = {HNSW_EF_SEARCH}"))
                cast = f"vector::vector({dims})"
                # The model name is a literal so the planner can match the partial index; it
                # passed SAFE_MODEL_NAME above, and dims is an int.
                statement = sa.text(
                    f"""
                    SELECT memory_pk, {cast} <=> CAST(:query AS vector({dims})) AS distance
                    FROM memory_vectors WHERE user_id = :user_id AND model = '{model}'
                    ORDER BY {cast} <=> CAST(:query AS vector({dims})) LIMIT :depth
                    """  # noqa: S608
                )
            statement = statement.bindparams(sa.bindparam("query", type_=VECTOR()))
            rows = conn.execute(statement, params).all()
        return [(row.memory_pk, 1.0 - float(row.distance)) for row in rows]

    def note_write(self, *_args: object, **_kwargs: object) -> None:
        """Nothing cached, nothing to patch."""


def _index_state(conn: Connection, name: str) -> str:
    """ "valid", "invalid" (a concurrent build under way or failed) or "missing"."""
    valid = conn.execute(
        sa.text("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = :n"),
        {"n": name},
    ).scalar()
    return "missing" if valid is None else "valid" if valid else "invalid"
