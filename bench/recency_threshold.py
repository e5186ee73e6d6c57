"""Choosing the cosine at which "the newer of two close memories comes first" applies
(memory/recency.py), by leave-one-scenario-out on bench/knowledge_updates.json.

A pair is close when T <= cosine < NEAR_DUPLICATE (at and above it a save merges instead). An
update scenario (old statement, its replacement) is right when its pair is close: the rule
then puts the replacement above the old one and marks the old one "earlier". A near miss (a
later statement that does not replace the first) is right when its pair is not close: marking
its first statement "earlier" or reordering it is the cost. Each scenario counts once; the
threshold for a held-out scenario is the grid point with the most right answers on the
others (ties to the higher, stricter T), so the reported accuracy never saw its own scenario.

Run from the repository root:
    .venv/bin/python -m bench.recency_threshold            # well under a minute
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from bench.knowledge_updates import DATA
from bench.provenance import code_label
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.recency import NEAR_DUPLICATE

GRID = tuple(round(0.30 + 0.025 * i, 3) for i in range(25))  # 0.30 .. 0.90


def pair_cosines(embedder: LocalOnnxEmbedder, pairs: list[tuple[str, str]]) -> list[float]:
    """Cosine of each (older, newer) pair with the vectors the service stores (`embed`)."""
    firsts = embedder.embed([a for a, _ in pairs])
    seconds = embedder.embed([b for _, b in pairs])
    return [float(np.dot(a, b)) for a, b in zip(firsts, seconds, strict=True)]


def right(cosine: float, update: bool, threshold: float) -> bool:
    close = threshold <= cosine < NEAR_DUPLICATE
    return close if update else not close


def choose(items: list[tuple[float, bool]]) -> float:
    """The grid point with the most right answers on `items`; ties to the stricter (higher) T."""
    return max(GRID, key=lambda t: (sum(right(c, u, t) for c, u in items), t))


def measure() -> dict[str, Any]:
    data = json.loads(DATA.read_text())
    embedder = LocalOnnxEmbedder()
    updates = pair_cosines(embedder, [(u["old"], u["new"]) for u in data["updates"]])
    near = pair_cosines(embedder, [(n["first"], n["second"]) for n in data["near_misses"]])
    items = [(c, True) for c in updates] + [(c, False) for c in near]
    folds: list[dict[str, Any]] = []
    for i, (cosine, update) in enumerate(items):
        t = choose(items[:i] + items[i + 1 :])
        folds.append({"threshold": t, "update": update, "cosine": round(cosine, 3), "right": right(cosine, update, t)})
    whole = choose(items)
    held_updates = [f for f in folds if f["update"]]
    held_near = [f for f in folds if not f["update"]]
    chosen: dict[float, int] = {}
    for f in folds:
        chosen[f["threshold"]] = chosen.get(f["threshold"], 0) + 1
    return {
        "code": code_label(),
        "updates": len(updates),
        "near_misses": len(near),
        "threshold_whole_set": whole,
        "thresholds_chosen_in_folds": dict(sorted(chosen.items())),
        "held_out_updates_close": sum(f["right"] for f in held_updates),
        "held_out_near_misses_marked": sum(not f["right"] for f in held_near),
        "held_out_accuracy": round(sum(f["right"] for f in folds) / len(folds), 3),
        "in_sample_updates_close": sum(right(c, True, whole) for c in updates),
        "in_sample_near_misses_marked": sum(not right(c, False, whole) for c in near),
        "update_cosines": sorted(round(c, 3) for c in updates),
        "near_miss_cosines": sorted(round(c, 3) for c in near),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    print(json.dumps(measure(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
