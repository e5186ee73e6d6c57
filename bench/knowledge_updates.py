"""Knowledge updates: how well the local supersession detector (memory/supersession.py) finds the
memory a new one replaces, and how often it replaces one it should not (issue 15, Measure).

The development set is bench/knowledge_updates.json: `updates` (an old statement, a later
one replacing it, a question) and `near_misses` (a later statement that looks like an update
but is not one). Each scenario is one person whose memories are a pool of unrelated ones (the
first `--pool` turns of a LoCoMo conversation, read in place from ../shared/data/locomo/), the
old statement saved among them, and the new statement saved last. Like the service will, the
detector sees the new statement's 5 nearest earlier memories by cosine (local model).

Offline (no database, no server):
1. precision and recall of supersessions on the set; a supersession of the wrong memory, or
   of anything in a near miss, is a false one. The thresholds (`SupersessionConfig`) are
   chosen by leave-one-scenario-out: for each scenario the grid point with the best F0.5 on
   the others (precision counts twice) decides it, so the reported numbers never saw their
   own scenario; the configuration chosen on the whole set is printed for the code's defaults.
2. the false-supersession rate on the LoCoMo conversations: every turn saved in order, per
   speaker, the detector run against that speaker's 5 nearest earlier turns; LoCoMo turns do
   not replace one another (or very rarely), so each supersession counts as wrong. The rate
   is superseded turns / turns; a seeded sample of 20 is printed for reading. LoCoMo plays no
   part in choosing thresholds (beyond the pool's turns being the scenarios' distractors).

Next step, once update/supersede lands in the service (issue 15 items 1 and 4): current-first
and stale-in-context through the real MCP tools. `current_first` below already measures the
first through `MemoryService.search` with `mark_superseded` stubbed as a down-ranking.

Run from the repository root:
    .venv/bin/python -m bench.knowledge_updates            # about a minute on 2 cores
    .venv/bin/python -m bench.knowledge_updates --service  # also current-first through search
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.locomo import DEFAULT_DATA, load_conversation, memory_text
from bench.provenance import code_label
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.supersession import (
    Candidate,
    PairSignals,
    SupersessionConfig,
    decide,
    find_superseded,
    pair_signals,
)

DATA = Path(__file__).resolve().with_suffix(".json")
NEAREST = 5  # earlier memories the detector sees, as the service's `_closest` hands it
GRID_CUE = tuple(round(0.40 + 0.05 * i, 2) for i in range(10))  # 0.40 .. 0.85
GRID_VALUES = tuple(round(0.50 + 0.05 * i, 2) for i in range(9))  # 0.50 .. 0.90
GRID_SHARED = (1, 2)
GRID_WORDS = (15, 25, 40)
GRID_TOPIC = (0.30, 0.35, 0.40, 1.01)  # 1.01: the same-topic rule off


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Scenario:
    """One person's save of `new`; `target` is the index in `candidates` it should supersede
    (None for a near miss)."""

    kind: str  # "update" or "near miss"
    new: str
    old: str
    question: str | None
    candidates: list[tuple[str, PairSignals]]  # (text, signals) of the nearest earlier memories
    target: int | None


class Embeddings:
    """Vectors by text, each embedded once."""

    def __init__(self, embedder: LocalOnnxEmbedder) -> None:
        self.embedder = embedder
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.embedder.embed(missing), strict=True))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, self.embedder.dimensions))


def pool_texts(data_dir: Path, conversation: str, count: int) -> list[str]:
    """The first `count` distinct turn texts of a LoCoMo conversation (read in place)."""
    turns = load_conversation(data_dir / f"{conversation}.json").turns
    return list(dict.fromkeys(t.text for t in turns))[:count]


def build_scenarios(data: dict[str, Any], pool: list[str], embed: Embeddings) -> list[Scenario]:
    """Each scenario's new statement against its nearest earlier memories: the pool and the old
    statement. The pool's cosines are computed once; the old statement is one more row."""
    pool_vectors = embed(pool)
    items = [("update", u["new"], u["old"], u["question"]) for u in data["updates"]]
    items += [("near miss", n["second"], n["first"], None) for n in data["near_misses"]]
    out = []
    for kind, new, old, question in items:
        new_vector, old_vector = embed([new, old])
        texts = [*pool, old]
        cosines = np.append(pool_vectors @ new_vector, float(old_vector @ new_vector))
        nearest = np.argsort(-cosines, kind="stable")[:NEAREST]
        candidates = [(texts[i], pair_signals(new, texts[i], float(cosines[i]))) for i in nearest]
        target = next((rank for rank, i in enumerate(nearest) if i == len(pool)), None)
        out.append(Scenario(kind, new, old, question, candidates, target if kind == "update" else None))
    # The pool saved in order: each turn against its nearest earlier turns. None replaces another,
    # so these are chat-like negatives for the choice of thresholds.
    for i in range(1, len(pool)):
        cosines = pool_vectors[:i] @ pool_vectors[i]
        nearest = np.argsort(-cosines, kind="stable")[:NEAREST]
        candidates = [(pool[k], pair_signals(pool[i], pool[k], float(cosines[k]))) for k in nearest]
        out.append(Scenario("pool", pool[i], "", None, candidates, None))
    return out


def outcome(scenario: Scenario, config: SupersessionConfig) -> tuple[int, int, int]:
    """(true, false, missed) supersessions of one scenario under `config`."""
    chosen, best = None, -2.0
    for rank, (_, signals) in enumerate(scenario.candidates):
        if decide(signals, config) is not None and signals.cosine > best:
            chosen, best = rank, signals.cosine
    if scenario.kind == "update":
        hit = chosen is not None and chosen == scenario.target
        return int(hit), int(chosen is not None and not hit), int(not hit)
    return 0, int(chosen is not None), 0


def grid() -> list[SupersessionConfig]:
    points = itertools.product(GRID_CUE, GRID_VALUES, GRID_SHARED, GRID_WORDS, GRID_TOPIC)
    return [SupersessionConfig(c, v, s, w, t) for c, v, s, w, t in points]


def f_half(true: int, false: int, missed: int) -> float:
    """F0.5: precision weighs twice recall, because a wrong supersession hides a true fact."""
    denominator = 1.25 * true + 0.25 * missed + false
    return 1.25 * true / denominator if denominator else 0.0


def choose(counts: np.ndarray, configs: list[SupersessionConfig]) -> int:
    """The grid point with the best F0.5; ties go to the stricter thresholds (fewer supersessions)."""

    def key(i: int) -> tuple[float, float, float, int, int, float]:
        c = configs[i]
        return (f_half(*counts[i]), c.with_cue, c.with_values, c.min_shared, -c.max_words, c.with_topic)

    return max(range(len(configs)), key=key)


def rates(true: int, false: int, missed: int) -> dict[str, float | int]:
    fired = true + false
    return {
        "precision": round(true / fired, 3) if fired else 1.0,
        "recall": round(true / (true + missed), 3) if true + missed else 0.0,
        "true": true,
        "false": false,
        "missed": missed,
    }


def evaluate(scenarios: list[Scenario]) -> dict[str, Any]:
    """Leave-one-scenario-out numbers, and the configuration the whole set picks."""
    configs = grid()
    table = np.array([[outcome(s, c) for s in scenarios] for c in configs])  # config x scenario x 3
    totals = table.sum(axis=1)
    loo = {kind: np.zeros(3, dtype=int) for kind in ("update", "near miss", "pool")}
    picks: dict[SupersessionConfig, int] = {}
    for j, scenario in enumerate(scenarios):
        pick = choose(totals - table[:, j], configs)
        picks[configs[pick]] = picks.get(configs[pick], 0) + 1
        loo[scenario.kind] += table[pick, j]
    whole = choose(totals, configs)
    default = configs.index(SupersessionConfig()) if SupersessionConfig() in configs else None
    pool = sum(s.kind == "pool" for s in scenarios)
    return {
        "leave_one_out": rates(*map(int, loo["update"] + loo["near miss"])),
        "leave_one_out_near_misses_superseded": int(loo["near miss"][1]),
        "leave_one_out_pool_superseded": f"{int(loo['pool'][1])}/{pool}",
        "leave_one_out_all": rates(*map(int, sum(loo.values()))),
        "picked_in_folds": {label(c): n for c, n in sorted(picks.items(), key=lambda kv: -kv[1])},
        "whole_set_choice": label(configs[whole]),
        "whole_set_in_sample": rates(*map(int, totals[whole])),
        "defaults_in_sample": rates(*map(int, totals[default])) if default is not None else None,
        "defaults": label(SupersessionConfig()),
    }


def label(config: SupersessionConfig) -> str:
    return (
        f"with_cue={config.with_cue} with_values={config.with_values} min_shared={config.min_shared} "
        f"max_words={config.max_words} with_topic={config.with_topic}"
    )


def mistakes(scenarios: list[Scenario], config: SupersessionConfig) -> list[dict[str, Any]]:
    """What the detector got wrong on the set with `config`, for reading."""
    out = []
    for s in scenarios:
        _, false, missed = outcome(s, config)
        if s.kind == "pool" and false:
            fired = [(t, sig.cosine) for t, sig in s.candidates if decide(sig, config) is not None]
            out.append({"kind": s.kind, "new": s.new, "superseded": max(fired, key=lambda f: f[1])[0]})
            continue
        if false or missed:
            fired = [(t, sig.cosine) for t, sig in s.candidates if decide(sig, config) is not None]
            old = next((sig for t, sig in s.candidates if t == s.old), None)
            out.append(
                {
                    "kind": s.kind,
                    "new": s.new,
                    "old": s.old,
                    "superseded": max(fired, key=lambda f: f[1])[0] if fired else None,
                    "old_cosine": round(old.cosine, 3) if old else "not among the nearest 5",
                }
            )
    return out


# --- LoCoMo: every turn saved, every supersession counted as false -------------------------------


def locomo_false_supersessions(
    data_dir: Path, embed: Embeddings, config: SupersessionConfig, text_format: str | None, seed: int = 7
) -> dict[str, Any]:
    """Per conversation and speaker, each turn against the speaker's 5 nearest earlier turns.
    `text_format` is one of bench/locomo.py's (`date-speaker` is what it stores), or None for
    the turn's text alone."""
    turns_total, superseded_total = 0, 0
    examples: list[dict[str, str]] = []
    per_conversation = {}
    for path in sorted(data_dir.glob("*.json")):
        conversation = load_conversation(path)
        texts = [memory_text(t, text_format) if text_format else t.text for t in conversation.turns]
        vectors = embed(texts)
        superseded: set[int] = set()
        for speaker in dict.fromkeys(t.speaker for t in conversation.turns):
            rows = [i for i, t in enumerate(conversation.turns) if t.speaker == speaker]
            for position, i in enumerate(rows[1:], start=1):
                earlier = rows[:position]
                cosines = vectors[earlier] @ vectors[i]
                nearest = [earlier[k] for k in np.argsort(-cosines, kind="stable")[:NEAREST]]
                candidates = [Candidate(k, texts[k], vectors[k], conversation.turns[k].at) for k in nearest]
                found = find_superseded(texts[i], vectors[i], conversation.turns[i].at, candidates, config)
                if found is not None:
                    superseded.add(int(found.old_id))  # type: ignore[call-overload]
                    examples.append(
                        {"conversation": conversation.name, "new": texts[i], "old": texts[int(found.old_id)],  # type: ignore[call-overload]
                         "cosine": f"{found.cosine:.3f}", "reasons": "; ".join(found.reasons)}
                    )  # fmt: skip
        per_conversation[conversation.name] = {"turns": len(texts), "superseded": len(superseded)}
        turns_total += len(texts)
        superseded_total += len(superseded)
    sample = random.Random(seed).sample(examples, min(20, len(examples)))
    return {
        "format": text_format or "text",
        "turns": turns_total,
        "superseded": superseded_total,
        "rate": round(superseded_total / turns_total, 4) if turns_total else 0.0,
        "per_conversation": per_conversation,
        "sample": sample,
    }


# --- through the memory service: current-first with a stubbed supersession ------------------------


def current_first(
    data: dict[str, Any], pool: list[str], embedder: LocalOnnxEmbedder, config: SupersessionConfig
) -> dict[str, Any]:
    """Each update scenario as one person of a fresh SQLite database, saved through
    `MemoryService.add` (the pool, the old statement, more pool, the new statement), the
    detector run on each save against the person's nearest memories, and the question asked
    through `MemoryService.search` (limit 5). Current-first: the new statement is in the top 5
    and the old is absent or below it, once `mark_superseded` has moved every superseded
    memory below its replacement. That hook stands in for the service's own supersession
    (the other half of issue 15, item 4); until it lands this is an estimate, not the metric."""
    from bench.people import ensure_people
    from jean_memory import clock
    from jean_memory.db.engine import create_engine
    from jean_memory.db.migrate import upgrade
    from jean_memory.memory.service import MemoryService

    counts = {"before": 0, "after": 0, "marked": 0}
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/bench.db")
        upgrade(engine)
        service = MemoryService(engine, embedder)
        half = len(pool) // 2
        for n, update in enumerate(data["updates"]):
            user = f"person-{n}"
            ensure_people(engine, user)  # a save checks that its owner has an account
            replaced: dict[str, str] = {}  # old id -> new id

            def mark_superseded(old_id: str, new_id: str, replaced: dict[str, str] = replaced) -> None:
                replaced[old_id] = new_id

            saved: list[tuple[str, str, np.ndarray, float]] = []
            ids: dict[str, str] = {}
            for text in [*pool[:half], update["old"], *pool[half:], update["new"]]:
                clock.advance(60.0)
                result = service.add(user, text)
                for memory in result.saved:
                    vector = embedder.embed_query(memory.text)
                    earlier = sorted(saved, key=lambda s: -float(s[2] @ vector))[:NEAREST]
                    found = find_superseded(
                        memory.text, vector, memory.created_at, [Candidate(*s) for s in earlier], config
                    )
                    if found is not None:
                        mark_superseded(str(found.old_id), memory.id)
                    saved.append((memory.id, memory.text, vector, memory.created_at))
                    ids[text] = memory.id
            hits = [m.id for m in service.search(user, update["question"], limit=5)]
            old_id, new_id = ids.get(update["old"]), ids.get(update["new"])
            counts["marked"] += int(replaced.get(old_id or "") == new_id)
            counts["before"] += int(_new_first(hits, old_id, new_id))
            counts["after"] += int(_new_first(_down_rank(hits, replaced), old_id, new_id))
        clock.reset()
    total = len(data["updates"])
    return {k: f"{v}/{total} = {v / total:.2f}" for k, v in counts.items()}


def _down_rank(hits: list[str], replaced: dict[str, str]) -> list[str]:
    """The stub of the service's ranking of superseded memories: each goes below the rest."""
    return [h for h in hits if h not in replaced] + [h for h in hits if h in replaced]


def _new_first(hits: list[str], old_id: str | None, new_id: str | None) -> bool:
    if new_id is None or new_id not in hits:
        return False
    return old_id not in hits or hits.index(new_id) < hits.index(old_id)


# --- report --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the LoCoMo folder")
    parser.add_argument("--pool", type=int, default=300, help="unrelated memories per scenario")
    parser.add_argument("--pool-conversation", default="26")
    parser.add_argument("--service", action="store_true", help="also current-first through MemoryService.search")
    parser.add_argument("--service-pool", type=int, default=60, help="unrelated memories per person there")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    embedder = LocalOnnxEmbedder()
    embed = Embeddings(embedder)
    data = json.loads(DATA.read_text())
    pool = pool_texts(args.data, args.pool_conversation, args.pool)
    log(f"{len(data['updates'])} updates, {len(data['near_misses'])} near misses, pool of {len(pool)}")
    scenarios = build_scenarios(data, pool, embed)
    report: dict[str, Any] = {
        "code": code_label(),
        "pool_conversation": args.pool_conversation,
        "dev_set": evaluate(scenarios),
    }
    config = SupersessionConfig()
    report["dev_set"]["mistakes_with_defaults"] = mistakes(scenarios, config)
    log("LoCoMo: every turn, per speaker")
    report["locomo"] = [locomo_false_supersessions(args.data, embed, config, f) for f in ("date-speaker", None)]
    for run in report["locomo"]:
        held = [v for k, v in run["per_conversation"].items() if k != args.pool_conversation]
        turns, superseded = sum(v["turns"] for v in held), sum(v["superseded"] for v in held)
        run["held_out"] = f"{superseded}/{turns} = {superseded / turns:.2%}" if turns else None
    if args.service:
        log("current-first through MemoryService.search")
        report["current_first"] = current_first(data, pool[: args.service_pool], embedder, config)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def print_report(report: dict[str, Any], out: Callable[[str], None] = print) -> None:
    dev = report["dev_set"]
    out(f"code: {report['code']}")
    out(f"dev set, leave-one-scenario-out: {dev['leave_one_out']}")
    out(f"  near misses superseded: {dev['leave_one_out_near_misses_superseded']}")
    out(f"  pool turns superseded (LoCoMo {report['pool_conversation']}): {dev['leave_one_out_pool_superseded']}")
    out(f"  all, pool included: {dev['leave_one_out_all']}")
    out(f"  picked in the folds: {dev['picked_in_folds']}")
    out(f"  whole set picks {dev['whole_set_choice']}: {dev['whole_set_in_sample']} (in sample)")
    out(f"  code defaults {dev['defaults']}: {dev['defaults_in_sample']} (in sample)")
    out("  mistakes with the defaults:")
    for m in dev["mistakes_with_defaults"]:
        out(f"    [{m['kind']}] new={m['new']!r} old={m.get('old')!r} -> {m['superseded']!r} {m.get('old_cosine', '')}")
    for run in report["locomo"]:
        out(f"LoCoMo ({run['format']}): {run['superseded']}/{run['turns']} turns superseded = {run['rate']:.2%}")
        out(f"  per conversation: {run['per_conversation']}")
        out(f"  without the pool's conversation {report['pool_conversation']}: {run['held_out']}")
        for e in run["sample"]:
            out(f"    {e['cosine']} [{e['reasons']}]\n      new: {e['new'][:160]}\n      old: {e['old'][:160]}")
    if "current_first" in report:
        out(f"current-first through MemoryService.search (stubbed down-ranking): {report['current_first']}")


if __name__ == "__main__":
    raise SystemExit(main())
