"""Knowledge updates through the real MCP tools (issue 15, Measure): current-first and
stale-in-context on the development set (bench/knowledge_updates.json).

A real server (the app under uvicorn, in this process so `jean_memory.clock` can move time; a
fresh SQLite database; the local embedding model; no LLM) and its MCP endpoint, reached over
HTTP with JSON-RPC through the API-key route, which runs the same tools as `/mcp`.

The scenarios are spread over a few people so that no person has two scenarios of the same
topic (one person does not live in Berlin and in Chicago). For each person, in order:
the first half of the unrelated pool (LoCoMo turns, read in place from ../shared/data/locomo/),
every old statement (and every near miss's first statement), the rest of the pool, all with
`add_memories`; then 30 days later, one hour apart, every new statement (and near miss's second).
Then, per update scenario:

- current-first: `search_memory(question, limit=5)` ranks the new statement above the old, or
  the old one is hidden (not in the top 5 while the new one is) or marked `superseded_by`;
- stale-in-context: `jean_memory(question, is_new_conversation=true)` shows the old statement
  as a current fact (a line of it not written "earlier: ...").

Near misses count the first statements wrongly superseded. Nothing here chooses a threshold.

Run from the repository root:
    .venv/bin/python -m bench.knowledge_updates_mcp          # a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import secrets
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bench.knowledge_updates import DATA, pool_texts
from bench.locomo import DEFAULT_DATA, free_port
from bench.provenance import code_label
from jean_memory import clock
from jean_memory.accounts.api_keys import create_api_key
from jean_memory.accounts.users import create_user
from jean_memory.app import build_app
from jean_memory.config import load_settings
from jean_memory.db.engine import create_engine

TOP = 5
DAY = 86400.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def running_server(workdir: Path) -> Iterator[tuple[str, Any]]:
    port = free_port()
    env = {"JEAN_MEMORY_DATA_DIR": str(workdir / "data"), "JWT_SECRET_KEY": secrets.token_hex(32)}
    settings = load_settings(port=port, database_url=f"sqlite:///{workdir / 'bench.db'}", env=env)
    engine = create_engine(settings.database_url)
    app = build_app(settings, engine)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not become ready in 120 s")
        time.sleep(0.2)
    try:
        yield url, engine
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        engine.dispose()


class Person:
    """One person's MCP connection (API key, legacy route: the same tools as /mcp)."""

    def __init__(self, url: str, engine: Any, index: int) -> None:
        self.user_id = create_user(engine, f"ku-{index}@example.com", secrets.token_urlsafe(16)).id
        key = create_api_key(engine, self.user_id)
        self.endpoint = f"{url}/mcp/v2/claude/{self.user_id}"
        self.http = httpx.Client(
            timeout=120,
            headers={
                "X-Api-Key": key,
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-11-25",
            },
        )
        self.ids: dict[str, str] = {}  # text -> the id add_memories answered

    def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}
        response = self.http.post(self.endpoint, json=body)
        result = response.json().get("result") if response.status_code == 200 else None
        if not result or result.get("isError"):
            raise RuntimeError(f"{tool} failed: HTTP {response.status_code} {response.text[:300]}")
        return result

    def add(self, text: str) -> None:
        answer = self.call("add_memories", {"text": text})["structuredContent"]
        saved = answer["saved"] or answer["similar"][:1]  # an exact duplicate answers the existing one
        if saved:
            self.ids[text] = saved[0]["id"]


def people_of(data: dict[str, Any], near_people: int = 4) -> list[dict[str, list[dict[str, Any]]]]:
    """Scenarios spread so no person holds two updates of one topic; the near misses go to
    people of their own (one of them repeats an update's old statement), round robin."""
    seen: dict[str, int] = defaultdict(int)
    people: list[dict[str, list[dict[str, Any]]]] = []
    for item in data["updates"]:
        index = seen[item["topic"]]
        seen[item["topic"]] += 1
        while len(people) <= index:
            people.append({"updates": [], "near_misses": []})
        people[index]["updates"].append(item)
    near = [{"updates": [], "near_misses": data["near_misses"][i::near_people]} for i in range(near_people)]
    return people + near


def stale_in(context: str, old: str) -> bool:
    """Whether `old` appears in the context as a current fact (not on an "earlier:" line)."""
    flat = " ".join(old.split())
    return any(flat in line and not line.startswith("- earlier:") for line in context.splitlines())


def marked_earlier(context: str, text: str) -> bool:
    """Whether `text` appears in the context on an "earlier:" line."""
    flat = " ".join(text.split())
    return any(flat in line and line.startswith("- earlier:") for line in context.splitlines())


def measure(data_dir: Path, pool_size: int, conversation: str) -> dict[str, Any]:
    data = json.loads(DATA.read_text())
    pool = pool_texts(data_dir, conversation, pool_size)
    groups = people_of(data)
    report: dict[str, Any] = {"code": code_label(), "pool": len(pool), "people": len(groups)}
    rows: list[dict[str, Any]] = []
    near: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, running_server(Path(tmp)) as (url, engine):
        for index, group in enumerate(groups):
            person = Person(url, engine, index)
            half = len(pool) // 2
            firsts = [u["old"] for u in group["updates"]] + [n["first"] for n in group["near_misses"]]
            for text in [*pool[:half], *firsts, *pool[half:]]:
                person.add(text)
            clock.advance(30 * DAY)
            for text in [u["new"] for u in group["updates"]] + [n["second"] for n in group["near_misses"]]:
                clock.advance(3600)
                person.add(text)
            for u in group["updates"]:
                hits = person.call("search_memory", {"query": u["question"], "limit": TOP})["structuredContent"]
                ids = [h["id"] for h in hits["results"]]
                marks = {h["id"]: h.get("superseded_by") for h in hits["results"]}
                old_id, new_id = person.ids.get(u["old"]), person.ids.get(u["new"])
                old_marked = old_id is not None and new_id is not None and _superseded(person, old_id) == new_id
                new_rank = ids.index(new_id) if new_id in ids else None
                old_rank = ids.index(old_id) if old_id in ids else None
                strict = new_rank is not None and (old_rank is None or new_rank < old_rank)
                context = person.call("jean_memory", {"user_message": u["question"], "is_new_conversation": True})
                text = context["content"][0]["text"]
                rows.append(
                    {
                        "topic": u["topic"],
                        "old": u["old"],
                        "new": u["new"],
                        "question": u["question"],
                        "merged": old_id == new_id,
                        "old_marked": old_marked,
                        "old_marked_in_top": bool(old_id and marks.get(old_id)),
                        "new_rank": new_rank,
                        "old_rank": old_rank,
                        "current_first": strict or old_marked,
                        "new_above_old": strict,
                        "stale_in_context": stale_in(text, u["old"]),
                    }
                )
            for n in group["near_misses"]:
                first_id, second_id = person.ids.get(n["first"]), person.ids.get(n["second"])
                by = _superseded(person, first_id) if first_id else None
                # The newer-first rule's cost (recency.py): asked with the first statement's own
                # words, does the second come above it, or is the first shown as "earlier"?
                hits = person.call("search_memory", {"query": n["first"], "limit": TOP})["structuredContent"]
                ids = [h["id"] for h in hits["results"]]
                reordered = second_id in ids and first_id in ids and ids.index(second_id) < ids.index(first_id)
                context = person.call("jean_memory", {"user_message": n["first"], "is_new_conversation": True})
                earlier = marked_earlier(context["content"][0]["text"], n["first"])
                # Wrong when its own second statement replaced it; by anything else, reported apart.
                near.append(
                    {
                        **n,
                        "wrongly_superseded": by is not None and by == person.ids.get(n["second"]),
                        "superseded_by_other": by is not None and by != person.ids.get(n["second"]),
                        "second_above_first": reordered,
                        "marked_earlier": earlier,
                    }
                )
            person.http.close()
            log(f"person {index + 1}/{len(groups)} done ({time.perf_counter() - started:.0f} s)")
    clock.reset()
    n = len(rows)
    report["scenarios"] = n
    report["current_first"] = round(sum(r["current_first"] for r in rows) / n, 3)
    report["new_above_old_in_top5"] = round(sum(r["new_above_old"] for r in rows) / n, 3)
    report["old_marked_superseded"] = round(sum(r["old_marked"] for r in rows) / n, 3)
    report["stale_in_context"] = round(sum(r["stale_in_context"] for r in rows) / n, 3)
    report["near_misses"] = len(near)
    report["near_misses_wrongly_superseded"] = sum(r["wrongly_superseded"] for r in near)
    report["misses"] = [r for r in rows if not r["current_first"] or r["stale_in_context"]]
    report["near_misses_second_above_first"] = sum(r["second_above_first"] for r in near)
    report["near_misses_marked_earlier"] = sum(r["marked_earlier"] for r in near)
    report["near_misses_superseded_by_other"] = sum(r["superseded_by_other"] for r in near)
    report["wrong_near_misses"] = [r for r in near if r["wrongly_superseded"] or r["superseded_by_other"]]
    report["seconds"] = round(time.perf_counter() - started)
    return report


def _superseded(person: Person, memory_id: str) -> str | None:
    """The id list_memories shows the memory replaced by, if any (walks the person's pages)."""
    cursor = None
    while True:
        arguments: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = person.call("list_memories", arguments)["structuredContent"]
        for item in page["results"]:
            if item["id"] == memory_id:
                return item.get("superseded_by")
        cursor = page.get("next_cursor")
        if not cursor:
            return None


def print_report(report: dict[str, Any]) -> None:
    print(
        f"code {report['code']}; {report['scenarios']} updates over {report['people']} people, "
        f"{report['pool']} unrelated memories each; {report['seconds']} s"
    )
    print(f"current-first        {report['current_first']:.3f}  (target >= 0.90)")
    print(f"  new above old top5 {report['new_above_old_in_top5']:.3f}")
    print(f"  old marked         {report['old_marked_superseded']:.3f}")
    print(f"stale-in-context     {report['stale_in_context']:.3f}  (target <= 0.10)")
    print(f"near misses wrongly superseded: {report['near_misses_wrongly_superseded']}/{report['near_misses']}")
    print(
        f"near misses, asked with the first statement: second above it {report['near_misses_second_above_first']}"
        f"/{report['near_misses']}, first shown as 'earlier' {report['near_misses_marked_earlier']}/{report['near_misses']}"
    )
    for r in report["misses"]:
        flags = ("" if r["current_first"] else "NOT-FIRST ") + ("STALE" if r["stale_in_context"] else "")
        print(f"  {flags:16} {r['old']!r} -> {r['new']!r} (new rank {r['new_rank']}, old rank {r['old_rank']})")
    for r in report["wrong_near_misses"]:
        print(f"  WRONG near miss: {r['first']!r} by {r['second']!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the LoCoMo folder")
    parser.add_argument("--pool", type=int, default=300, help="unrelated memories per person")
    parser.add_argument("--pool-conversation", default="26")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for name in ("httpx", "jean_memory", "mcp", "uvicorn"):  # one line per request otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    report = measure(args.data, args.pool, args.pool_conversation)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
