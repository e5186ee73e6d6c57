"""z-score fusion's arithmetic: the fast z-scores (issue 17) are numpy's mean and std to the last bit."""

from __future__ import annotations

import random

import numpy as np
import pytest

from jean_memory.memory.fusion import zscores


def numpy_zscores(ranking: list[tuple[int, float]]) -> tuple[dict[int, float], float]:
    """What `zscores` computed before: `ndarray.mean()` and `ndarray.std()`."""
    scores = np.array([s for _, s in ranking], dtype=np.float64)
    spread = float(scores.std())
    z = (scores - scores.mean()) / spread if spread > 0 else np.zeros_like(scores)
    return {pk: float(v) for (pk, _), v in zip(ranking, z, strict=True)}, float(z.min())


# numpy sums up to 8 values one way, up to 128 in eight lanes, beyond that in halves: each regime.
@pytest.mark.parametrize("count", [1, 2, 7, 8, 9, 50, 100, 127, 128, 129, 200, 257])
def test_zscores_equal_numpys_mean_and_std_to_the_last_bit(count):
    rng = random.Random(count)
    for _ in range(200):
        ranking = [(pk, rng.choice([rng.uniform(0, 30), rng.uniform(-1, 1), 4.0])) for pk in range(count)]
        assert repr(zscores(ranking)) == repr(numpy_zscores(ranking))


def test_equal_scores_have_no_spread():
    assert zscores([(1, 2.5), (2, 2.5)]) == ({1: 0.0, 2: 0.0}, 0.0)
    assert zscores([]) == ({}, 0.0)
