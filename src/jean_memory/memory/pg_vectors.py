"""Nearest-neighbour search in PostgreSQL with pgvector: the database answers, nothing is cached.

A user with a modest number of vectors (the common case: thousands) is searched exactly, by
scanning only their rows through the (user_id, model) index, which is both exact and fast
(about 1 ms per thousand vectors). A user with very many vectors goes through the HNSW index
with pgvector's iterative scan, so the per-user filter does not starve the result list.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import sqlalchemy as sa
from pgvector.sqlalchemy import VECTOR
from sqlalchemy.engine import Engine

EXACT_SEARCH_MAX_VECTORS = 20_000
HNSW_EF_SEARCH = 200
SAFE_MODEL_NAME = re.compile(r"^[A-Za-z0-9:._/\-]{1,200}$")


def hnsw_index_name(model: str) -> str:
    return "ix_memory_vectors_hnsw_" + hashlib.sha256(model.encode()).hexdigest()[:12]


class PgVectorIndex:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._indexed: set[tuple[str, int]] = set()

    def ensure_index(self, model: str, dims: int) -> None:
        """One partial HNSW index per embedding model (vectors of different models cannot share one)."""
        if (model, dims) in self._indexed:
            return
        if not SAFE_MODEL_NAME.match(model):
            raise ValueError(f"embedding model name {model!r} has characters an index predicate cannot hold")
        with self._engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"CREATE INDEX IF NOT EXISTS {hnsw_index_name(model)} ON memory_vectors "
                    f"USING hnsw ((vector::vector({int(dims)})) vector_cosine_ops) WHERE model = '{model}'"
                )
            )
        self._indexed.add((model, dims))

    def nearest(self, user_id: str, model: str, query: np.ndarray, depth: int) -> list[tuple[int, float]]:
        dims = int(np.asarray(query).shape[0])
        params = {"user_id": user_id, "model": model, "query": np.asarray(query, dtype=np.float32), "depth": depth}
        with self._engine.begin() as conn:
            count = conn.execute(
                sa.text("SELECT count(*) FROM memory_vectors WHERE user_id = :user_id AND model = :model"), params
            ).scalar_one()
            if count == 0:
                return []
            if count <= EXACT_SEARCH_MAX_VECTORS:
                statement = sa.text(
                    """
                    WITH mine AS MATERIALIZED (
                        SELECT memory_pk, vector FROM memory_vectors WHERE user_id = :user_id AND model = :model
                    )
                    SELECT memory_pk, 1 - (vector <=> :query) AS cosine FROM mine
                    ORDER BY vector <=> :query LIMIT :depth
                    """
                )
            else:
                self.ensure_index(model, dims)
                conn.execute(sa.text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
                conn.execute(sa.text(f"SET LOCAL hnsw.ef_search = {HNSW_EF_SEARCH}"))
                cast = f"vector::vector({dims})"
                # The model name is a literal so the planner can match the partial index; it
                # passed SAFE_MODEL_NAME in ensure_index above, and dims is an int.
                statement = sa.text(
                    f"""
                    SELECT memory_pk, 1 - ({cast} <=> CAST(:query AS vector({dims}))) AS cosine
                    FROM memory_vectors WHERE user_id = :user_id AND model = '{model}'
                    ORDER BY {cast} <=> CAST(:query AS vector({dims})) LIMIT :depth
                    """  # noqa: S608
                )
            statement = statement.bindparams(sa.bindparam("query", type_=VECTOR()))
            rows = conn.execute(statement, params).all()
        return [(row.memory_pk, float(row.cosine)) for row in rows]

    def note_write(self, *_args: object, **_kwargs: object) -> None:
        """Nothing cached, nothing to patch."""
