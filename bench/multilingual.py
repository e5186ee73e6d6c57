"""Recall in other languages: personal memories in German, Spanish, French and Portuguese, found
by questions in the same language (said in other words) and by questions in English.

`bench/multilingual.json` holds 30 memories per language, each with two questions in its own
language and one in English. One person (a fresh SQLite database in a temporary directory, the
real migrations) saves all 120 through `MemoryService.add`, a day apart (so no two are each
other's neighbours in time, neighbours.py), in an order that mixes the languages; then every
question is asked through `MemoryService.search` (the hybrid the server answers with) and,
for insight, through `Retriever.rank` in `lexical` and `vector` mode. A question scores a hit@k
when its memory is among the first k results.

Targets (issue 16): same-language hit@5 >= 0.85 in every language; cross-lingual (English
question) reported, aim >= 0.6.

Run from the repository root:
    .venv/bin/python -m bench.multilingual                          # the default model (minilm)
    .venv/bin/python -m bench.multilingual --model use-multilingual --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.candidates import MODELS, make_embedder
from bench.locomo import clock_at
from bench.people import ensure_people
from bench.provenance import REPO_ROOT, code_label
from jean_memory.db.engine import create_engine
from jean_memory.db.migrate import upgrade
from jean_memory.db.tables import memories
from jean_memory.memory.retrieval import Retriever
from jean_memory.memory.service import MemoryService

DATA = REPO_ROOT / "bench" / "multilingual.json"
USER = "polyglot"
DAY = 86400.0
START = 1_767_225_600.0  # 2026-01-01 UTC
KS = (1, 5, 10)


def load(path: Path) -> dict[str, list[dict[str, Any]]]:
    return json.loads(path.read_text())["languages"]


def interleaved(languages: dict[str, list[dict[str, Any]]]) -> list[tuple[str, int, dict[str, Any]]]:
    """(language, index, item): the first memory of every language, then the second, ..."""
    longest = max(len(items) for items in languages.values())
    return [(lang, i, items[i]) for i in range(longest) for lang, items in languages.items() if i < len(items)]


def hits(ranks: list[int | None], k: int) -> float:
    return round(sum(1 for r in ranks if r is not None and r < k) / len(ranks), 3) if ranks else 0.0


def rank_of(found: list[str], wanted: str) -> int | None:
    return found.index(wanted) if wanted in found else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    languages = load(args.data)
    embedder: Any = make_embedder(args.model, args.vector_cache)
    embedder.load()
    workdir = Path(tempfile.mkdtemp(prefix="jean-multilingual-"))
    try:
        engine = create_engine(f"sqlite:///{workdir / 'multilingual.db'}")
        upgrade(engine)
        ensure_people(engine, USER)
        service = MemoryService(engine, embedder)
        retriever = Retriever(engine, embedder, vectors=service.vectors)
        memory_id: dict[tuple[str, int], str] = {}
        merged = 0
        for day, (lang, index, item) in enumerate(interleaved(languages)):
            with clock_at(START + day * DAY):
                result = service.add(USER, item["memory"])
            if not result.saved:
                merged += 1
            memory_id[(lang, index)] = (result.saved or result.similar)[0].id
        with engine.connect() as conn:
            pk_of = dict(conn.execute(sa.select(memories.c.id, memories.c.pk).where(memories.c.user_id == USER)).all())
        per_language: dict[str, Any] = {}
        cpu = time.process_time()
        asked = 0
        for lang, items in languages.items():
            ranks: dict[str, list[int | None]] = {"same": [], "english": []}
            modes: dict[str, dict[str, list[int | None]]] = {
                m: {"same": [], "english": []} for m in ("lexical", "vector")
            }
            for index, item in enumerate(items):
                wanted = memory_id[(lang, index)]
                for kind, questions in (("same", item["questions"]), ("english", [item["english"]])):
                    for question in questions:
                        found = [m.id for m in service.search(USER, question, limit=max(KS))]
                        ranks[kind].append(rank_of(found, wanted))
                        asked += 1
                        if pk_of:
                            for mode in modes:
                                top = [pk for pk, _ in retriever.rank(USER, question, 50, mode=mode)[: max(KS)]]
                                modes[mode][kind].append(rank_of(top, pk_of[wanted]))
            per_language[lang] = {
                "memories": len(items),
                "same_language": {f"hit@{k}": hits(ranks["same"], k) for k in KS} | {"questions": len(ranks["same"])},
                "cross_lingual": {f"hit@{k}": hits(ranks["english"], k) for k in KS}
                | {"questions": len(ranks["english"])},
                **{
                    f"{mode}_hit@5": {kind: hits(r, 5) for kind, r in by_kind.items()}
                    for mode, by_kind in modes.items()
                    if pk_of
                },
            }
        getattr(embedder, "save", lambda: None)()
        return {
            "code": code_label(),
            "model": embedder.model_name,
            "memories": sum(len(v) for v in languages.values()),
            "merged_on_save": merged,
            "search_cpu_ms_mean": round((time.process_time() - cpu) * 1000 / max(asked, 1) / (3 if pk_of else 1), 2),
            "languages": per_language,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def print_report(report: dict[str, Any]) -> None:
    print(
        f"{report['code']}  model {report['model']}  {report['memories']} memories, {report['merged_on_save']} merged"
    )
    print("lang  same hit@1/5/10        english hit@1/5/10     (hit@5 lexical / vector: same, english)")
    for lang, r in report["languages"].items():
        s, e = r["same_language"], r["cross_lingual"]
        extra = ""
        if "lexical_hit@5" in r:
            lx, vx = r["lexical_hit@5"], r["vector_hit@5"]
            extra = f"   lex {lx['same']:.2f}/{lx['english']:.2f}  vec {vx['same']:.2f}/{vx['english']:.2f}"
        print(
            f"{lang:<5} {s['hit@1']:.3f} {s['hit@5']:.3f} {s['hit@10']:.3f}     "
            f"{e['hit@1']:.3f} {e['hit@5']:.3f} {e['hit@10']:.3f}{extra}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", choices=MODELS, default="minilm", help="local embedding model (bench/candidates.py)")
    parser.add_argument("--vector-cache", type=Path, help="keep the model's vectors in this folder and reuse them")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
