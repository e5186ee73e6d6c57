"""Reciprocal rank fusion: one ranking from several, by rank alone (Cormack et al., 2009).

Ranks, not scores, are fused because BM25 and cosine live on scales that cannot be compared.
`k` damps the weight of the top ranks; the LoCoMo benchmark (bench/locomo.py) picks it.
"""

from __future__ import annotations

DEFAULT_K = 10


def reciprocal_rank_fusion(rankings: list[list[int]], k: int = DEFAULT_K) -> list[tuple[int, float]]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank + 1)
    return sorted(scores.items(), key=lambda item: item[1], reverse=True)
