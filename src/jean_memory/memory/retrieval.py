"""Ranking one person's memories for a query: lexical, vectors, their fusion and the neighbours.

The service's `search` and the benchmark (bench/locomo.py, which also ranks by each half alone
through `mode`) call the same `Retriever.rank`, so what is measured is what answers.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine

from jean_memory.memory.embedder import Embedder
from jean_memory.memory.fusion import best_first, z_fusion
from jean_memory.memory.lexical import lexical_search
from jean_memory.memory.neighbours import SPREAD_FROM, neighbours, pass_to_neighbours
from jean_memory.memory.pg_vectors import PgVectorIndex
from jean_memory.memory.recency import WINDOW, dated_by_pk, newer_first
from jean_memory.memory.vectors import VectorCache

T = TypeVar("T")


def _nothing(conn: Connection, ranking: list[tuple[int, float]]) -> None:
    return None


# BM25 for a person with very many memories runs here while the request's thread scans vectors.
SEARCH_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="jean-memory-search")


@dataclass(frozen=True)
class SearchConfig:
    """Chosen by bench/locomo.py with leave-one-conversation-out (picked on four LoCoMo
    conversations, scored on the fifth), not by habit: this setting is the choice in most folds
    (the second neighbours' shares: three of five folds, bench/README.md)."""

    depth: int = 50  # candidates taken from each ranking before fusion
    lexical_weight: float = 0.5  # of the BM25 z-score in the fused score; the cosine's is the rest
    next_share: float = 0.5  # of a top candidate's score passed to the memory saved right after it
    prev_share: float = 0.25  # ... and to the one saved right before it
    next2_share: float = 0.25  # ... to the one saved two after it
    prev2_share: float = 0.25  # ... and to the one saved two before it
    newer_first: bool = True  # the newer of two close memories first (recency.py)


def vector_index(engine: Engine) -> VectorCache | PgVectorIndex:
    """SQLite: an in-process matrix per user; PostgreSQL: pgvector answers (no cache to keep right)."""
    return PgVectorIndex(engine) if engine.dialect.name == "postgresql" else VectorCache(engine)


class Retriever:
    """Ranks with one engine, embedder (None: BM25 alone) and vector index. Several retrievers
    on one database agree: a vector cache notices any other writer by the person's version."""

    def __init__(
        self,
        engine: Engine,
        embedder: Embedder | None,
        search: SearchConfig | None = None,
        vectors: VectorCache | PgVectorIndex | None = None,
    ) -> None:
        self._engine = engine
        self._embedder = embedder
        self._search = search or SearchConfig()
        self.vectors = vectors if vectors is not None else vector_index(engine)

    @property
    def config(self) -> SearchConfig:
        return self._search

    def rank(self, user_id: str, query: str, depth: int, mode: str = "hybrid") -> list[tuple[int, float]]:
        """(pk, score) best first. `mode` is for the benchmark: "lexical", "vector" or "hybrid".

        Hybrid: the `depth` best of BM25 and of cosine similarity, fused by z-score (fusion.py),
        then the best candidates pass part of their score to the memories saved one and two
        before and after them (neighbours.py). On LoCoMo (bench/locomo.py) this finds an
        evidence turn in the top 5 for 0.726 of the questions (0.708 when the settings are
        chosen out of sample; 0.709 / 0.703 with the nearest neighbours only), against 0.654 for
        the reciprocal rank fusion it replaced and 0.614 for BM25.
        Last, among the best WINDOW, the newer of two close short statements saved a day or more
        apart moves directly above the older (recency.py; LoCoMo hit@5 and hit@10 unchanged).
        Without a model it is BM25 alone, as measured (the neighbours were tuned on the fusion)."""
        return self.rank_then(user_id, query, depth, _nothing, mode)[0]

    def rank_then(
        self,
        user_id: str,
        query: str,
        depth: int,
        then: Callable[[Connection, list[tuple[int, float]]], T],
        mode: str = "hybrid",
    ) -> tuple[list[tuple[int, float]], T]:
        """`rank`, and `then(conn, ranking)` on the same connection: the service reads the hits'
        rows there (issue 17: one pool checkout per search, not three)."""
        settings = self._search
        beside = None
        if mode == "hybrid" and isinstance(self.vectors, VectorCache) and self.vectors.is_large(user_id):
            # Both cores: BM25 in SQLite while this thread embeds the query and scores vectors.
            beside = SEARCH_POOL.submit(self._lexical, user_id, query, depth)
        query_vector = None
        vector: list[tuple[int, float]] = []
        if mode in ("hybrid", "vector") and self._embedder is not None:
            query_vector = self._embedder.embed_query(query)
            if not isinstance(self.vectors, VectorCache):  # pgvector: its own transaction, as before
                vector = self.vectors.nearest(user_id, self._embedder.model_name, query_vector, depth)
                query_vector = None
        # One connection for the cache's version check, the BM25 list, the neighbours and the
        # caller's rows (on PostgreSQL each checkout pings).
        with self._engine.connect() as conn:
            if query_vector is not None and isinstance(self.vectors, VectorCache) and self._embedder is not None:
                vector = self.vectors.nearest(user_id, self._embedder.model_name, query_vector, depth, conn)
            if mode == "vector":
                return vector, then(conn, vector)
            lexical = beside.result() if beside is not None else lexical_search(conn, user_id, query, depth)
            if mode == "lexical" or self._embedder is None:
                return lexical, then(conn, lexical)
            fused = z_fusion(lexical, vector, settings.lexical_weight)
            links = neighbours(conn, user_id, [pk for pk, _ in best_first(fused)[:SPREAD_FROM]])
            ranked = pass_to_neighbours(
                fused, links, settings.next_share, settings.prev_share, settings.next2_share, settings.prev2_share
            )
            if settings.newer_first and len(ranked) >= 2:
                head = [pk for pk, _ in ranked[:WINDOW]]
                dated = dated_by_pk(conn, user_id, self._embedder.model_name, head)
                scores = dict(ranked)
                # Order, not score, is the answer from here: a newer memory moved up keeps its own score.
                ranked = [(pk, scores[pk]) for pk in newer_first(head, dated)] + ranked[WINDOW:]
            return ranked, then(conn, ranked)

    def _lexical(self, user_id: str, query: str, depth: int) -> list[tuple[int, float]]:
        with self._engine.connect() as conn:
            return lexical_search(conn, user_id, query, depth)
