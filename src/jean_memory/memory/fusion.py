"""Score fusion: one ranking from the lexical and the vector candidates, by how far ahead each is.

Each list's scores (BM25 or `ts_rank_cd`, cosine) become z-scores over that list's own
candidates, so one query's scores are comparable whatever the scale of either measure, and the
fused score is `lexical_weight * z_lexical + (1 - lexical_weight) * z_cosine`. Unlike
reciprocal rank fusion (what the service used before), this keeps the size of a lead: a strong
cosine match is not pulled level with the rank-1 of a lexical list whose best is a weak match on
one common word. On LoCoMo (bench/locomo.py, 760 questions) z-fusion at weight 0.5 gives hit@5
0.680 against RRF's 0.654 (k=10, depth 50; no RRF setting did better out of sample); with the
neighbours of `neighbours.py` on top, 0.711.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Ranking = Sequence[tuple[int, float]]  # (pk, score) best first; higher is better


def zscores(ranking: Ranking) -> tuple[dict[int, float], float]:
    """Each candidate's score in standard deviations from the list's mean, and the lowest one
    (what a memory missing from the list is given: it was at best as good as the last one).

    The mean and spread are numpy's `mean()` and `std()` to the last bit (the same reductions
    in the same order, numpy/_core/_methods.py) without their argument handling, and the
    values leave numpy in one `tolist()`: run on every search (issue 17)."""
    if not ranking:
        return {}, 0.0
    count = len(ranking)
    scores = np.fromiter((s for _, s in ranking), dtype=np.float64, count=count)
    deviations = scores - np.add.reduce(scores) / count
    spread = float(np.sqrt(np.add.reduce(deviations * deviations) / count))
    z = deviations / spread if spread > 0 else np.zeros_like(scores)
    values = z.tolist()
    return {pk: v for (pk, _), v in zip(ranking, values, strict=True)}, min(values)


def z_fusion(lexical: Ranking, vector: Ranking, lexical_weight: float) -> dict[int, float]:
    """pk -> fused score over the union of both lists, shifted so the lowest is 0 (every score
    is then >= 0, which the neighbours' shares rely on). With one list empty (no topical word,
    or no match), the other list's z-scores alone."""
    zl, floor_l = zscores(lexical)
    zv, floor_v = zscores(vector)
    keys = list(dict.fromkeys([*zl, *zv]))
    if not keys:
        return {}
    if not zl or not zv:
        fused = {pk: zl.get(pk, 0.0) + zv.get(pk, 0.0) for pk in keys}
    else:
        fused = {pk: lexical_weight * zl.get(pk, floor_l) + (1 - lexical_weight) * zv.get(pk, floor_v) for pk in keys}
    low = min(fused.values())
    return {pk: score - low for pk, score in fused.items()}


def best_first(scores: dict[int, float]) -> list[tuple[int, float]]:
    """Highest score first; ties by pk, so a ranking never depends on dict order."""
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
