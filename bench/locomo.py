"""LoCoMo retrieval benchmark: BM25 alone, vectors alone and hybrid, through the memory service.

Reads the LoCoMo conversations in place from `../shared/data/locomo/*.json` (never copied into
this repository; see that folder's README.md). For each conversation, on a fresh SQLite database
in a temporary directory, one user per conversation:

1. stores every turn as one memory with `MemoryService.add`, text `[<session date>] <speaker>:
   <text>`, with the server clock set to the session's date (so `created_at` is when the turn was
   said, 30 s apart within a session); a turn that `add` merges into an existing memory (exact or
   near duplicate) counts as found wherever that memory is found;
2. asks every question of categories 1-4 through `Retriever.rank` (retrieval.py) in the three modes
   (`lexical`, `vector`, `hybrid`, the code path `search` uses: z-score fusion of BM25 and
   cosine, then credit passed to the memories saved just before and after the best candidates)
   and scores hit@5, hit@10 (at least one evidence turn among the top k) and recall@10 (share
   of the evidence turns among the top 10), per category and overall; beside them `rrf`, the
   reciprocal rank fusion (k=10, depth 50) the service used before, for comparison;
3. times `add` for every turn and `search` (hybrid, query embedding included) for every question.

Then, from the same candidate lists (each ranking taken at depth 100 once per question), a sweep
of the hybrid's settings (`SearchConfig`: lexical weight x depth x the neighbours' shares), with
the values chosen by leave-one-conversation-out (pick on the other conversations, score on the
one left out), next to the in-sample grid.
Finally, the scale test: a fresh database with `--scale` memories of one user (LoCoMo turns,
repeated with the session year moved on), search p50 with the LoCoMo questions, `add` p50 on
new memories, this process's RSS, and a real `jean-memory serve` process on that database
(its RSS with the model loaded, and `search_memory` / `add_memories` latency over HTTP through
the API-key endpoint).

Run from the repository root:
    .venv/bin/python -m bench.locomo                     # about 5 minutes on 2 quiet cores
    .venv/bin/python -m bench.locomo --conversations 26,30 --hybrid 0.5,50,0.5,0.25 --scale 0
    .venv/bin/python -m bench.locomo --json > locomo.json
Progress goes to stderr, the tables (or the JSON report) to stdout. Retrieval numbers are
deterministic; timings are not (each is given as wall-clock p50/p95 and CPU p50, and the load
average is printed: other work on the machine inflates the wall-clock ones).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench.candidates import MODELS, make_embedder
from bench.corpus import make_memories
from bench.people import ensure_people
from bench.provenance import REPO_ROOT, code_label
from jean_memory import clock
from jean_memory.db.engine import create_engine
from jean_memory.db.migrate import upgrade
from jean_memory.db.tables import memories, memory_vectors
from jean_memory.memory.context import context_for
from jean_memory.memory.embedder import Embedder
from jean_memory.memory.fusion import best_first, z_fusion
from jean_memory.memory.lexical import lexical_search
from jean_memory.memory.neighbours import SPREAD_FROM, Links, neighbours, pass_to_neighbours
from jean_memory.memory.retrieval import Retriever, SearchConfig
from jean_memory.memory.service import MemoryService, insert_memory, write_vectors
from jean_memory.memory.vectors import bump_version

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "locomo"
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
MODES = ("lexical", "vector", "hybrid")
# "plain": hybrid before recency.py's newer-first reordering (the offline fusion and neighbours)
NAMES = (*MODES, "plain", "rrf")  # columns of the report
LABELS = {
    "lexical": "bm25",
    "vector": "vectors",
    "hybrid": "hybrid",
    "plain": "hybrid without newer-first",
    "rrf": "rrf (before)",
}
METRICS = ("hit@5", "hit@10", "recall@10")
TOP = 10  # results kept per question: enough for every metric
CANDIDATES = 100  # depth of the cached candidate lists the sweeps fuse
SESSION_TIME = "%I:%M %p on %d %B, %Y"  # "1:56 pm on 8 May, 2023"
TURN_SECONDS = 30.0
TEXT_FORMATS = {
    "date-speaker": "[{date}] {speaker}: {text}",
    "date": "[{date}] {text}",
    "date-speaker-caption": "[{date}] {speaker}: {text}{caption}",
}
RRF_K, RRF_DEPTH = 10, 50  # the reciprocal rank fusion the service used before (the `rrf` column)

# The grid the hybrid's sweep explores (`SearchConfig`).
SWEEP_WEIGHT = (0.4, 0.5, 0.6, 0.7)
SWEEP_DEPTH = (20, 50, 100)
SWEEP_NEXT = (0.0, 0.25, 0.5)
SWEEP_PREV = (0.0, 0.25, 0.5)
SWEEP_SECOND = ((0.0, 0.0), (0.25, 0.25), (0.25, 0.0), (0.1, 0.1))  # (next2, prev2): two turns away


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Progress:
    """One self-overwriting status line on stderr (a terminal), redrawn at most ten times a
    second; elsewhere only the closing line is written."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self._drawn = label, total, 0, 0.0
        self.started = time.perf_counter()
        self._live = sys.stderr.isatty()

    def step(self, count: int = 1) -> None:
        self.done += count
        if not self._live:
            return
        now = time.perf_counter()
        if now - self._drawn >= 0.1 or self.done >= self.total:
            self._drawn = now
            print(f"\r  {self.label}: {self.done}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self, note: str = "") -> None:
        seconds = time.perf_counter() - self.started
        print(f"\r  {self.label}: {self.done}/{self.total} in {seconds:.1f} s{note}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def timing(values_ms: Sequence[float], cpu_ms: Sequence[float] | None = None) -> dict[str, Any]:
    out = {
        "n": len(values_ms),
        "p50_ms": _round(percentile(values_ms, 0.5)),
        "p95_ms": _round(percentile(values_ms, 0.95)),
        "mean_ms": _round(sum(values_ms) / len(values_ms)) if values_ms else None,
    }
    if cpu_ms:
        out["cpu_p50_ms"] = _round(percentile(cpu_ms, 0.5))
    return out


class Timer:
    """Wall-clock and CPU time (this process, all threads) of repeated calls, in ms. The CPU
    time barely moves when other work shares the machine; the wall-clock time does."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.cpu.append((time.process_time() - cpu) * 1000)
        self.wall.append((time.perf_counter() - wall) * 1000)

    def report(self) -> dict[str, Any]:
        return timing(self.wall, self.cpu)

    @staticmethod
    def merged(timers: Iterable[Timer]) -> Timer:
        out = Timer()
        for t in timers:
            out.wall.extend(t.wall)
            out.cpu.extend(t.cpu)
        return out


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float | None:
    with contextlib.suppress(OSError, AttributeError):
        return round(os.getloadavg()[0], 2)
    return None


def _round(value: float | None, places: int = 2) -> float | None:
    return None if value is None else round(value, places)


def rss_mb(pid: int | str = "self") -> dict[str, float | None]:
    """VmRSS (now) and VmHWM (peak) of a process, in MB, from /proc."""
    out: dict[str, float | None] = {"rss_mb": None, "peak_rss_mb": None}
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out["rss_mb" if name == "VmRSS" else "peak_rss_mb"] = round(int(value.split()[0]) / 1024, 1)
    return out


# --- the data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    dia_id: str
    speaker: str
    text: str
    caption: str | None
    date: str  # the session's date as written in the file
    at: float  # epoch seconds: the session's date plus TURN_SECONDS per turn


@dataclass(frozen=True)
class Question:
    text: str
    category: int
    evidence: tuple[str, ...]  # dia_ids, each known to be a turn of the conversation


@dataclass
class Conversation:
    name: str
    turns: list[Turn]
    questions: list[Question]
    unanswerable: int = 0  # category 1-4 questions left out: none of their evidence is a turn
    dropped_evidence: list[str] = field(default_factory=list)  # evidence ids that name no turn


EVIDENCE_ID = re.compile(r"D:?(\d+):(\d+)")


def parse_evidence(raw: Iterable[str], known: set[str]) -> tuple[list[str], list[str]]:
    """(turn ids, unusable ids). The files have a few slips: two ids in one string
    ("D8:6; D9:17"), a stray colon ("D:11:26"), and ids of turns that do not exist."""
    found: list[str] = []
    dropped: list[str] = []
    for item in raw:
        for piece in re.split(r"[;,\s]+", str(item)):
            if not piece:
                continue
            match = EVIDENCE_ID.fullmatch(piece)
            ident = f"D{match.group(1)}:{match.group(2)}" if match else piece
            (found if ident in known else dropped).append(ident)
    return list(dict.fromkeys(found)), dropped


def session_numbers(data: dict[str, Any]) -> list[int]:
    numbers = [int(m.group(1)) for key in data if (m := re.fullmatch(r"session_(\d+)", key))]
    return sorted(n for n in numbers if isinstance(data[f"session_{n}"], list) and data[f"session_{n}"])


def load_conversation(path: Path) -> Conversation:
    data = json.loads(path.read_text())
    turns: list[Turn] = []
    for number in session_numbers(data):
        date = data[f"session_{number}_date_time"]
        start = dt.datetime.strptime(date, SESSION_TIME).replace(tzinfo=dt.UTC).timestamp()
        for index, turn in enumerate(data[f"session_{number}"]):
            caption = turn.get("blip_caption")
            turns.append(
                Turn(turn["dia_id"], turn["speaker"], turn["text"], caption, date, start + index * TURN_SECONDS)
            )
    known = {t.dia_id for t in turns}
    conversation = Conversation(path.stem, turns, [])
    for qa in data["qa"]:
        if qa.get("category") not in CATEGORIES:
            continue
        evidence, dropped = parse_evidence(qa.get("evidence", []), known)
        conversation.dropped_evidence.extend(dropped)
        if evidence:
            conversation.questions.append(Question(qa["question"], qa["category"], tuple(evidence)))
        else:
            conversation.unanswerable += 1
    return conversation


def memory_text(turn: Turn, text_format: str) -> str:
    caption = f" [shares {turn.caption}]" if turn.caption else ""
    return TEXT_FORMATS[text_format].format(date=turn.date, speaker=turn.speaker, text=turn.text, caption=caption)


def conversation_paths(data_dir: Path, names: str | None) -> list[Path]:
    if not names:
        paths = sorted(data_dir.glob("*.json"))
        if not paths:
            raise SystemExit(f"no LoCoMo files in {data_dir}: see --data")
        return paths
    paths = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        path = Path(name)
        if not path.suffix:
            path = path.with_suffix(".json")
        if not path.is_absolute() and not path.exists():
            path = data_dir / path
        if not path.exists():
            raise SystemExit(f"{path} does not exist")
        paths.append(path)
    return paths


@contextlib.contextmanager
def clock_at(when: float) -> Iterator[None]:
    """Make `clock.now()` read `when` (and run on from it) inside the block."""
    clock.advance(when - clock.now())
    try:
        yield
    finally:
        clock.reset()


# --- the hybrid ranking, offline (from cached candidate lists, for the sweep) ---------------------


def label(config: SearchConfig) -> str:
    return (
        f"weight={config.lexical_weight} depth={config.depth} next={config.next_share} prev={config.prev_share}"
        f" next2={config.next2_share} prev2={config.prev2_share}"
    )


def hybrid_top(
    lexical: Sequence[tuple[int, float]],
    vector: Sequence[tuple[int, float]],
    links: dict[int, Links],
    config: SearchConfig,
) -> list[int]:
    """What `Retriever.rank(mode="hybrid")` returns with `config`, from deeper cached lists
    and every memory's neighbours (`links`)."""
    fused = z_fusion(lexical[: config.depth], vector[: config.depth], config.lexical_weight)
    ranked = pass_to_neighbours(
        fused, links, config.next_share, config.prev_share, config.next2_share, config.prev2_share
    )
    return [pk for pk, _ in ranked[:TOP]]


def rrf_top(lexical: Sequence[tuple[int, float]], vector: Sequence[tuple[int, float]]) -> list[int]:
    """The reciprocal rank fusion the service used before (Cormack et al., 2009), for the
    comparison column only."""
    scores: dict[int, float] = {}
    for ranking in (lexical[:RRF_DEPTH], vector[:RRF_DEPTH]):
        for rank, (pk, _) in enumerate(ranking):
            scores[pk] = scores.get(pk, 0.0) + 1.0 / (RRF_K + rank + 1)
    # Ties keep the lexical list's order, as the service's sort did.
    return [pk for pk, _ in sorted(scores.items(), key=lambda item: item[1], reverse=True)[:TOP]]


def all_neighbours(engine: Engine, user_id: str, pks: Iterable[int]) -> dict[int, Links]:
    wanted = list(pks)
    out: dict[int, tuple[int | None, int | None]] = {}
    with engine.connect() as conn:
        for start in range(0, len(wanted), 500):
            out.update(neighbours(conn, user_id, wanted[start : start + 500]))
    return out


# --- building and asking --------------------------------------------------------------------------


@dataclass
class Asked:
    """One question's evidence (as memory pks, one per evidence turn) and what came back."""

    conversation: str
    category: int
    evidence: list[int]
    top: dict[str, list[int]]  # ranking name -> best TOP pks
    lexical: list[tuple[int, float]]  # CANDIDATES-deep candidate lists, for the sweeps
    vector: list[tuple[int, float]]


@dataclass
class Run:
    conversation: Conversation
    memories: int
    merged: int  # turns that did not make a memory of their own
    build_seconds: float
    add: Timer
    search: Timer  # MemoryService.search, hybrid, query embedding included
    rank: dict[str, Timer]
    asked: list[Asked]
    vectors: dict[str, np.ndarray]  # memory text -> its vector, reused by the scale test
    links: dict[int, tuple[int | None, int | None]]
    consistent: float  # share of questions whose offline hybrid top 10 equals the service's
    # jean_memory's context per question (no profile): its memory lines, and (older, newer) texts
    # of the lines marked "earlier" by recency.py
    context_lines: int = 0
    earlier: list[tuple[str, str]] = field(default_factory=list)


def arrivals(turns: list[Turn], jitter: float, seed: int) -> list[tuple[Turn, float]]:
    """(turn, when it is saved). Without jitter each turn is saved at the moment it was said, in
    order. With jitter, as when a few clients send one conversation at once (issue 16 item 4):
    each turn arrives `uniform(0, jitter)` turns late, the arrivals are saved in that order, and
    each is stamped with the time of the slot it arrived in, as the server stamps a save."""
    if not jitter:
        return [(t, t.at) for t in turns]
    import random

    rng = random.Random(seed)
    order = sorted(range(len(turns)), key=lambda i: i + rng.uniform(0, jitter))
    return [(turns[i], turns[slot].at) for slot, i in enumerate(order)]


def build_and_ask(
    conversation: Conversation,
    workdir: Path,
    embedder: Embedder,
    search: SearchConfig,
    text_format: str,
    jitter: float = 0.0,
    seed: int = 0,
) -> Run:
    engine = create_engine(f"sqlite:///{workdir / f'locomo-{conversation.name}.db'}")
    upgrade(engine)
    service = MemoryService(engine, embedder, search)
    retriever = Retriever(engine, embedder, search, vectors=service.vectors)  # what service.search ranks with
    user_id = f"locomo-{conversation.name}"
    ensure_people(engine, user_id)  # a save checks that its owner has an account

    memory_of: dict[str, str] = {}
    add_timer = Timer()
    progress = Progress(f"{conversation.name}: adding turns", len(conversation.turns))
    started = time.perf_counter()
    for turn, at in arrivals(conversation.turns, jitter, seed):
        with clock_at(at), add_timer():
            result = service.add(user_id, memory_text(turn, text_format))
        # A near duplicate updates the memory in place (saved[0] is it); an exact one is not
        # stored again (similar[0] is the one it matches).
        memory_of[turn.dia_id] = (result.saved or result.similar)[0].id
        progress.step()
    build_seconds = time.perf_counter() - started
    with engine.connect() as conn:
        rows = conn.execute(sa.select(memories.c.id, memories.c.pk).where(memories.c.user_id == user_id)).all()
    pk_of_id = {row.id: row.pk for row in rows}
    pk_of = {dia_id: pk_of_id[memory_id] for dia_id, memory_id in memory_of.items()}
    count = len(pk_of_id)
    progress.close(f", {count} memories ({len(conversation.turns) - count} turns merged)")

    links = all_neighbours(engine, user_id, pk_of_id.values())
    asked: list[Asked] = []
    search_timer = Timer()
    rank_timers = {mode: Timer() for mode in MODES}
    consistent = 0
    context_lines = 0
    earlier: list[tuple[str, str]] = []
    progress = Progress(f"{conversation.name}: asking", len(conversation.questions))
    for question in conversation.questions:
        top: dict[str, list[int]] = {}
        for mode in MODES:
            with rank_timers[mode]():
                ranked = retriever.rank(user_id, question.text, search.depth, mode=mode)
            top[mode] = [pk for pk, _ in ranked[:TOP]]
        with search_timer():
            service.search(user_id, question.text, TOP)
        lexical = retriever.rank(user_id, question.text, CANDIDATES, mode="lexical")
        vector = retriever.rank(user_id, question.text, CANDIDATES, mode="vector")
        top["rrf"] = rrf_top(lexical, vector)
        top["plain"] = hybrid_top(lexical, vector, links, search)
        consistent += top["plain"] == top["hybrid"]
        shown = context_for(service, user_id, question.text, False, True, None, save=False)
        context_lines += len(shown.relevant or [])
        earlier += [(m.text, shown.newer[m.id].text) for m in shown.relevant or [] if m.id in shown.newer]
        asked.append(
            Asked(
                conversation.name,
                question.category,
                [pk_of[e] for e in question.evidence],
                top,
                lexical,
                vector,
            )
        )
        progress.step()
    progress.close()
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(memories.c.text, memory_vectors.c.vector)
            .join(memory_vectors, memory_vectors.c.memory_pk == memories.c.pk)
            .where(memories.c.user_id == user_id)
        ).all()
    engine.dispose()
    return Run(
        conversation,
        count,
        len(conversation.turns) - count,
        build_seconds,
        add_timer,
        search_timer,
        rank_timers,
        asked,
        {row.text: np.asarray(row.vector, dtype=np.float32) for row in stored},
        links,
        consistent / len(conversation.questions) if conversation.questions else 1.0,
        context_lines,
        earlier,
    )


# --- scoring --------------------------------------------------------------------------------------


def question_scores(evidence: list[int], top: list[int]) -> tuple[float, float, float]:
    """hit@5, hit@10 and recall@10 of one question; `evidence` has one pk per evidence turn."""
    top5, top10 = set(top[:5]), set(top[:10])
    return (
        float(any(pk in top5 for pk in evidence)),
        float(any(pk in top10 for pk in evidence)),
        sum(pk in top10 for pk in evidence) / len(evidence),
    )


def summarise(asked: Iterable[Asked], name: str, tops: Callable[[Asked], list[int]] | None = None) -> dict[str, Any]:
    rows = [question_scores(a.evidence, tops(a) if tops else a.top[name]) for a in asked]
    if not rows:
        return {"n": 0, **{m: None for m in METRICS}}
    columns = list(zip(*rows, strict=True))
    return {"n": len(rows), **{m: round(sum(c) / len(rows), 3) for m, c in zip(METRICS, columns, strict=True)}}


def summary_by_category(asked: list[Asked], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Asked]] = {
        f"{c} {label}": [a for a in asked if a.category == c] for c, label in CATEGORIES.items()
    }
    groups["overall"] = asked
    return {group: {name: summarise(members, name) for name in names} for group, members in groups.items()}


# --- sweeps ---------------------------------------------------------------------------------------


def hits_per_conversation(
    asked: list[Asked], rank: Callable[[Asked], list[int]]
) -> dict[str, tuple[int, float, float, float]]:
    """conversation -> (questions, hit@5 sum, hit@10 sum, recall@10 sum)."""
    out: dict[str, list[float]] = {}
    for a in asked:
        h5, h10, r10 = question_scores(a.evidence, rank(a))
        row = out.setdefault(a.conversation, [0, 0.0, 0.0, 0.0])
        row[0] += 1
        row[1] += h5
        row[2] += h10
        row[3] += r10
    return {c: (int(r[0]), r[1], r[2], r[3]) for c, r in out.items()}


def pooled(rows: Iterable[tuple[int, float, float, float]]) -> tuple[float, float, float]:
    rows = list(rows)
    n = sum(r[0] for r in rows)
    return tuple(round(sum(r[i] for r in rows) / n, 3) if n else 0.0 for i in (1, 2, 3))  # type: ignore[return-value]


def leave_one_out(
    grid: dict[Any, dict[str, tuple[int, float, float, float]]], conversations: list[str], default: Any
) -> dict[str, Any]:
    """For each conversation: the grid point best on the others (hit@5, then hit@10, then
    recall@10, then the default), scored on the one left out; pooled over all held-out questions."""
    folds = []
    for held in conversations:
        others = [c for c in conversations if c != held]

        def key(point: Any, others: list[str] = others) -> tuple[float, float, float, bool]:
            return (*pooled(grid[point][c] for c in others), point == default)

        best = max(grid, key=key)
        folds.append({"held_out": held, "chosen": best, "held_out_scores": pooled([grid[best][held]])})
    held_rows = [grid[f["chosen"]][f["held_out"]] for f in folds]
    default_rows = [grid[default][c] for c in conversations] if default in grid else []
    return {
        "folds": folds,
        "held_out": dict(zip(METRICS, pooled(held_rows), strict=True)),
        "default": dict(zip(METRICS, pooled(default_rows), strict=True)) if default_rows else None,
    }


def hybrid_sweep(runs: list[Run], current: SearchConfig) -> dict[str, Any]:
    """Every `SearchConfig` of the grid scored from the cached lists, and the one chosen by
    leave-one-conversation-out."""
    by_conversation = {r.conversation.name: r.links for r in runs}
    asked = [a for r in runs for a in r.asked]
    points = [
        SearchConfig(
            depth=depth, lexical_weight=weight, next_share=nxt, prev_share=prev, next2_share=n2, prev2_share=p2
        )
        for weight, depth, nxt, prev, (n2, p2) in itertools.product(
            SWEEP_WEIGHT, SWEEP_DEPTH, SWEEP_NEXT, SWEEP_PREV, SWEEP_SECOND
        )
    ]
    # the same fusion without neighbours
    alone = replace(current, next_share=0.0, prev_share=0.0, next2_share=0.0, prev2_share=0.0)
    points.extend(p for p in (current, alone) if p not in points)
    progress = Progress("hybrid sweep", len(points))
    grid = {}
    for p in points:
        grid[p] = hits_per_conversation(
            asked, lambda a, p=p: hybrid_top(a.lexical, a.vector, by_conversation[a.conversation], p)
        )
        progress.step()
    progress.close()
    names = [r.conversation.name for r in runs]
    best = max(grid, key=lambda p: (*pooled(grid[p].values()), p == current))
    ranked_points = sorted(grid, key=lambda p: pooled(grid[p].values()), reverse=True)

    def row(p: SearchConfig) -> dict[str, Any]:
        return {"config": label(p), **dict(zip(METRICS, pooled(grid[p].values()), strict=True))}

    return {
        "top_in_sample": [row(p) for p in ranked_points[:10]],
        "current": row(current),
        "no_neighbours_best": next(
            row(p) for p in ranked_points if not (p.next_share or p.prev_share or p.next2_share or p.prev2_share)
        ),
        "no_neighbours_current": row(alone),
        "best_in_sample": label(best),
        "leave_one_out": _loo_labels(leave_one_out(grid, names, current), label) if len(names) > 1 else None,
    }


def _loo_labels(result: dict[str, Any], label: Callable[[Any], Any]) -> dict[str, Any]:
    for fold in result["folds"]:
        fold["chosen"] = label(fold["chosen"])
        fold["held_out_scores"] = dict(zip(METRICS, fold["held_out_scores"], strict=True))
    return result


# --- scale ----------------------------------------------------------------------------------------


def scale_texts(conversations: list[Conversation], count: int, text_format: str) -> list[tuple[str, str, float]]:
    """`count` (text, original text, time): every turn, then every turn again with the session's
    year moved on by one, two, ... (so the texts differ; the original's vector is reused)."""
    out: list[tuple[str, str, float]] = []
    turns = [t for c in conversations for t in c.turns]
    for shift in itertools.count():
        for turn in turns:
            if len(out) >= count:
                return out
            original = memory_text(turn, text_format)
            if shift:
                year = int(turn.date[-4:]) + shift
                turn = Turn(turn.dia_id, turn.speaker, turn.text, turn.caption, f"{turn.date[:-4]}{year}", turn.at)
            out.append((memory_text(turn, text_format), original, turn.at + shift * 366 * 86400))
    return out


def bulk_add(
    engine: Engine,
    embedder: Embedder,
    user_id: str,
    items: list[tuple[str, str, float]],
    known: dict[str, np.ndarray],
) -> float:
    """Insert memories the way `index_document_job` does (vectors for a batch, inserted in one
    transaction): no duplicate check, so it is only for filling a database quickly. A text whose
    original was stored by a conversation run reuses that vector (a copy with another year would
    embed within rounding of it); the rest are embedded here."""
    progress = Progress("scale: bulk insert", len(items))
    started = time.perf_counter()
    for start in range(0, len(items), 256):
        batch = items[start : start + 256]
        missing = list(dict.fromkeys(original for _, original, _ in batch if original not in known))
        if missing:
            known.update(zip(missing, embedder.embed(missing), strict=True))
        vectors = [known[original] for _, original, _ in batch]
        with engine.begin() as conn:
            pairs = []
            for (text, _, when), vector in zip(batch, vectors, strict=True):
                with clock_at(when):
                    pk, _ = insert_memory(conn, user_id, text, [], "bench")
                pairs.append((pk, vector))
            write_vectors(conn, embedder, user_id, pairs)
            bump_version(conn, user_id)
        progress.step(len(batch))
    progress.close()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server_process(database: Path, workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JEAN_MEMORY_")}
    env.update(
        {
            "DATABASE_URL": f"sqlite:///{database}",
            "JEAN_MEMORY_DATA_DIR": str(workdir / "server-data"),
            "JWT_SECRET_KEY": secrets.token_hex(32),
            "JEAN_MEMORY_LOG_LEVEL": "WARNING",
        }
    )
    logfile = (workdir / "server.log").open("wb")
    process = subprocess.Popen(
        # One process: its RSS is read by pid, and the runs before workers existed had one.
        [sys.executable, "-m", "jean_memory.cli", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {(workdir / 'server.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready in 120 s")
            time.sleep(0.2)
        yield process, url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        logfile.close()


def mcp_call(http: httpx.Client, url: str, rpc_id: int, tool: str, arguments: dict[str, Any]) -> float:
    body = {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
    t0 = time.perf_counter()
    response = http.post(url, json=body)
    elapsed = (time.perf_counter() - t0) * 1000
    text = response.text
    if response.status_code != 200 or '"isError":true' in text.replace(" ", ""):
        raise RuntimeError(f"{tool} failed: HTTP {response.status_code} {text[:300]}")
    return elapsed


def scale_test(
    conversations: list[Conversation],
    known: dict[str, np.ndarray],
    count: int,
    workdir: Path,
    embedder: Embedder,
    search: SearchConfig,
    text_format: str,
    queries: int,
    adds: int,
    server: bool,
) -> dict[str, Any]:
    from jean_memory.accounts.api_keys import create_api_key
    from jean_memory.accounts.users import create_user

    database = workdir / "scale.db"
    engine = create_engine(f"sqlite:///{database}")
    upgrade(engine)
    service = MemoryService(engine, embedder, search)
    user_id = create_user(engine, "locomo-bench@example.com", secrets.token_urlsafe(16)).id
    report: dict[str, Any] = {"memories": count, "load_average_before": load_average()}
    items = scale_texts(conversations, count, text_format)
    report["bulk_insert_s"] = round(bulk_add(engine, embedder, user_id, items, dict(known)), 1)

    pool = [q.text for c in conversations for q in c.questions]
    pool = pool[:: max(1, len(pool) // queries)][:queries] if queries else []
    service.search(user_id, "warm up the vector cache", TOP)
    stages = {name: Timer() for name in ("search", "embed_query", "vector_nearest", "lexical", "fusion+neighbours")}
    progress = Progress(f"scale: searching {count} memories", len(pool))
    for query in pool:
        with stages["search"]():
            service.search(user_id, query, TOP)
        with stages["embed_query"]():
            vector = embedder.embed_query(query)
        with stages["vector_nearest"]():
            nearest = service.vectors.nearest(user_id, embedder.model_name, vector, search.depth)
        with engine.connect() as conn:
            with stages["lexical"]():
                lexical = lexical_search(conn, user_id, query, search.depth)
            with stages["fusion+neighbours"]():
                fused = z_fusion(lexical, nearest, search.lexical_weight)
                links = neighbours(conn, user_id, [pk for pk, _ in best_first(fused)[:SPREAD_FROM]])
                pass_to_neighbours(
                    fused, links, search.next_share, search.prev_share, search.next2_share, search.prev2_share
                )
        progress.step()
    progress.close()
    report["search"] = {name: timer.report() for name, timer in stages.items()}

    add_timer = Timer()
    progress = Progress("scale: single adds", adds)
    for text, _ in make_memories(adds, seed=7):
        with add_timer():
            service.add(user_id, text, None, "bench")
        progress.step()
    progress.close()
    report["add"] = add_timer.report()
    report["bench_process"] = rss_mb()

    if server:
        key = create_api_key(engine, user_id)
        engine.dispose()
        log("  scale: starting `jean-memory serve` on the scale database")
        with server_process(database, workdir) as (process, url):
            report["server_idle"] = rss_mb(process.pid)
            endpoint = f"{url}/mcp/v2/bench/{user_id}"
            headers = {
                "X-Api-Key": key,
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-11-25",
            }
            calls = {
                "search_memory": [("search_memory", {"query": q, "limit": TOP}) for q in pool],
                "add_memories": [("add_memories", {"text": text}) for text, _ in make_memories(adds, seed=8)],
            }
            report["server_http"] = {}
            with httpx.Client(headers=headers, timeout=60) as http:
                mcp_call(http, endpoint, 0, "search_memory", {"query": "warm up", "limit": TOP})
                for name, batch in calls.items():
                    cpu_before = process_cpu_seconds(process.pid)
                    wall = [
                        mcp_call(http, endpoint, i + 1, tool, arguments) for i, (tool, arguments) in enumerate(batch)
                    ]
                    cpu_after = process_cpu_seconds(process.pid)
                    report["server_http"][name] = timing(wall)
                    if cpu_before is not None and cpu_after is not None and batch:
                        report["server_http"][name]["server_cpu_ms_per_call"] = round(
                            (cpu_after - cpu_before) * 1000 / len(batch), 2
                        )
            report["server_after"] = rss_mb(process.pid)
    report["load_average_after"] = load_average()
    return report


# --- the report -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    search = args.hybrid
    conversations = [load_conversation(p) for p in conversation_paths(args.data, args.conversations)]
    workdir = Path(tempfile.mkdtemp(prefix="jean-locomo-"))
    log(f"work dir {workdir}")
    embedder: Any = make_embedder(args.model, args.vector_cache)
    t0 = time.perf_counter()
    embedder.load()
    report: dict[str, Any] = {
        "code": code_label(),
        "config": {
            "conversations": [c.name for c in conversations],
            "hybrid": label(search),
            "rrf": f"k={RRF_K} depth={RRF_DEPTH}",
            "text_format": TEXT_FORMATS[args.text],
            "model": embedder.model_name,
            "cpus": os.cpu_count(),
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        },
        "load_average_before": load_average(),
        "model_load_s": round(time.perf_counter() - t0, 2),
        "rss_after_model_load": rss_mb(),
    }
    runs = [build_and_ask(c, workdir, embedder, search, args.text, args.jitter, args.seed) for c in conversations]
    asked = [a for r in runs for a in r.asked]
    names = NAMES
    report["data"] = {
        r.conversation.name: {
            "turns": len(r.conversation.turns),
            "memories": r.memories,
            "questions": len(r.conversation.questions),
            "left_out_no_evidence": r.conversation.unanswerable,
            "evidence_ids_dropped": r.conversation.dropped_evidence,
            "offline_hybrid_matches_service": round(r.consistent, 3),
            "context_lines": r.context_lines,
            "context_lines_marked_earlier": len(r.earlier),
        }
        for r in runs
    }
    report["results"] = summary_by_category(asked, names)
    marked = [pair for r in runs for pair in r.earlier]
    report["earlier_marks"] = {
        "context_lines": sum(r.context_lines for r in runs),
        "marked_earlier": len(marked),
        "sample": [list(p) for p in random.Random(args.seed).sample(marked, min(20, len(marked)))],
    }
    report["per_conversation"] = {r.conversation.name: {n: summarise(r.asked, n) for n in names} for r in runs}
    report["timing"] = {
        "build_s": {r.conversation.name: round(r.build_seconds, 1) for r in runs},
        "add": Timer.merged(r.add for r in runs).report(),
        "search": Timer.merged(r.search for r in runs).report(),
        "rank": {mode: Timer.merged(r.rank[mode] for r in runs).report() for mode in MODES},
        "load_average_after": load_average(),
    }
    if args.sweep:
        log("sweeping")
        report["hybrid_sweep"] = hybrid_sweep(runs, search)
    if args.scale:
        known = {text: vector for r in runs for text, vector in r.vectors.items()}
        report["scale"] = scale_test(
            conversations,
            known,
            args.scale,
            workdir,
            embedder,
            search,
            args.text,
            args.scale_queries,
            args.adds,
            args.server,
        )
    getattr(embedder, "save", lambda: None)()
    report["rss_end"] = rss_mb()
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def ms(t: dict[str, Any]) -> str:
    cpu = f", cpu {t['cpu_p50_ms']}" if t.get("cpu_p50_ms") is not None else ""
    return f"p50 {t['p50_ms']} ms (p95 {t['p95_ms']}{cpu})"


def triple(m: dict[str, Any]) -> str:
    return " / ".join(fmt(m[name]) for name in METRICS)


def print_report(report: dict[str, Any]) -> None:
    config = report["config"]
    names = NAMES
    print(
        f"LoCoMo retrieval: conversations {', '.join(config['conversations'])}, memory text {config['text_format']!r}"
    )
    print(
        f"hybrid = the service: z-score fusion and neighbours, {config['hybrid']}; "
        f"rrf (before) = reciprocal rank fusion, {config['rrf']}"
    )
    print(f"code {report['code']}, {config['cpus']} CPUs, OPENBLAS_NUM_THREADS {config['blas_threads']}")
    print()
    print("hit@5 / hit@10 / recall@10")
    print()
    print("| questions | n | " + " | ".join(LABELS[n] for n in names) + " |")
    print("|---|---:|" + "---|" * len(names))
    for group, row in report["results"].items():
        print(f"| {group} | {row['hybrid']['n']} | " + " | ".join(triple(row[n]) for n in names) + " |")
    print()
    print("| conversation | turns | memories | questions | " + " | ".join(LABELS[n] for n in names) + " |")
    print("|---|---:|---:|---:|" + "---|" * len(names))
    for name, row in report["per_conversation"].items():
        data = report["data"][name]
        cells = " | ".join(triple(row[n]) for n in names)
        print(f"| {name} | {data['turns']} | {data['memories']} | {data['questions']} | {cells} |")
    print()
    t = report["timing"]
    print(f"model load {report['model_load_s']} s, RSS after it {report['rss_after_model_load']['rss_mb']} MB")
    print("build, one MemoryService.add per turn: " + ", ".join(f"{k} {v} s" for k, v in t["build_s"].items()))
    print(f"add {ms(t['add'])}")
    print(f"search (MemoryService.search, hybrid, embedding included) {ms(t['search'])}")
    print("rank alone: " + "; ".join(f"{LABELS[m]} {ms(v)}" for m, v in t["rank"].items()))
    print(f"load average {report['load_average_before']} before, {t['load_average_after']} after")
    skipped = {k: (v["left_out_no_evidence"], v["evidence_ids_dropped"]) for k, v in report["data"].items()}
    print(
        "questions left out (no evidence turn) / evidence ids dropped: "
        + "; ".join(f"{k}: {n} / {', '.join(d) or 'none'}" for k, (n, d) in skipped.items())
    )
    print(
        "the offline hybrid (before newer-first) gives the service's top 10 for: "
        + ", ".join(f"{k} {v['offline_hybrid_matches_service']:.0%}" for k, v in report["data"].items())
    )
    marks = report["earlier_marks"]
    print(
        f"jean_memory context lines marked 'earlier' (recency.py): {marks['marked_earlier']} / "
        f"{marks['context_lines']}; a sample (older -> newer):"
    )
    for older, newer in marks["sample"]:
        print(f"  {older!r} -> {newer!r}")
    if "hybrid_sweep" in report:
        sweep = report["hybrid_sweep"]
        print()
        print("hybrid sweep (in sample, best 10): hit@5 / hit@10 / recall@10")
        for row in sweep["top_in_sample"]:
            print(f"  {row['config']:<44} {triple(row)}")
        for name, title in (
            ("current", "the current setting"),
            ("no_neighbours_current", "the same without neighbours"),
            ("no_neighbours_best", "best without neighbours"),
        ):
            row = sweep[name]
            print(f"  {title}: {row['config']} {triple(row)}")
        _print_loo(sweep["leave_one_out"])
    if "scale" in report:
        s = report["scale"]
        print()
        print(f"scale: {s['memories']} memories of one user (bulk insert {s['bulk_insert_s']} s)")
        for name, v in s["search"].items():
            print(f"  {name:<15} {ms(v)}")
        print(f"  add (MemoryService.add, one at a time) {ms(s['add'])}")
        print(f"  this process: RSS {s['bench_process']['rss_mb']} MB, peak {s['bench_process']['peak_rss_mb']} MB")
        if "server_idle" in s:
            print(
                f"  jean-memory serve: RSS {s['server_idle']['rss_mb']} MB once ready (model loaded), "
                f"{s['server_after']['rss_mb']} MB after the calls below (peak {s['server_after']['peak_rss_mb']} MB)"
            )
            for name, v in s["server_http"].items():
                cpu = v.get("server_cpu_ms_per_call")
                print(f"  {name} over HTTP {ms(v)}; server CPU {cpu} ms per call")
        print(f"  load average {s['load_average_before']} before, {s['load_average_after']} after")


def _print_loo(loo: dict[str, Any] | None) -> None:
    if not loo:
        return
    for fold in loo["folds"]:
        s = fold["held_out_scores"]
        print(f"  leave {fold['held_out']} out: chose {fold['chosen']}, on {fold['held_out']} hit@5 {s['hit@5']:.3f}")
    held = loo["held_out"]
    default = loo["default"]
    print(
        f"  pooled held-out hit@5 {held['hit@5']:.3f} hit@10 {held['hit@10']:.3f} recall@10 {held['recall@10']:.3f}"
        + (f"; the current setting: hit@5 {default['hit@5']:.3f}" if default else "")
    )


def parse_hybrid(text: str) -> SearchConfig:
    parts = [p.strip() for p in text.split(",")]
    try:
        weight, depth, nxt, prev = float(parts[0]), int(parts[1]), float(parts[2]), float(parts[3])
        second = (float(parts[4]), float(parts[5])) if len(parts) == 6 else (0.0, 0.0)
        if len(parts) not in (4, 6):
            raise ValueError
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(
            "expected weight,depth,next,prev[,next2,prev2], e.g. 0.5,50,0.5,0.25,0.25,0.25"
        ) from None
    return SearchConfig(
        depth=depth,
        lexical_weight=weight,
        next_share=nxt,
        prev_share=prev,
        next2_share=second[0],
        prev2_share=second[1],
    )


def main(argv: list[str] | None = None) -> int:
    defaults = SearchConfig()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"LoCoMo folder (default {DEFAULT_DATA})")
    parser.add_argument("--conversations", help="comma-separated files or names, e.g. 26,30 (default: every *.json)")
    parser.add_argument(
        "--hybrid",
        type=parse_hybrid,
        default=defaults,
        help="the service's hybrid settings: lexical weight,depth,next share,prev share "
        f"(default {defaults.lexical_weight},{defaults.depth},{defaults.next_share},{defaults.prev_share},"
        f"{defaults.next2_share},{defaults.prev2_share})",
    )
    parser.add_argument("--model", choices=MODELS, default="minilm", help="local embedding model (bench/candidates.py)")
    parser.add_argument(
        "--vector-cache", type=Path, help="keep the model's vectors in this folder and reuse them (reruns are faster)"
    )
    parser.add_argument(
        "--jitter", type=float, default=0.0, help="turns arrive up to this many turns late (arrival order, item 4)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the jitter's random seed")
    parser.add_argument("--text", choices=sorted(TEXT_FORMATS), default="date-speaker", help="memory text format")
    parser.add_argument(
        "--no-sweep", dest="sweep", action="store_false", help="skip the sweep of the hybrid's settings"
    )
    parser.add_argument("--scale", type=int, default=10_000, help="memories of one user for the scale test (0: skip)")
    parser.add_argument("--scale-queries", type=int, default=300, help="searches timed at scale")
    parser.add_argument("--adds", type=int, default=100, help="single adds timed at scale")
    parser.add_argument("--no-server", dest="server", action="store_false", help="skip the `jean-memory serve` part")
    parser.add_argument("--keep", action="store_true", help="keep the temporary databases")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
