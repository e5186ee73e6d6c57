"""`/memories` for a person with 10,000 memories: server time of the first page, of a later
page (by its "Next" cursor), of a tag filter and of a `?q=` search, against a real server.

    .venv/bin/python -m bench.pages                     # SQLite, local embeddings (about 2-4 min)
    .venv/bin/python -m bench.pages --postgresql        # an embedded PostgreSQL instead
    .venv/bin/python -m bench.pages --embeddings none   # lexical-only search

The memories are written straight into the database (one transaction, a minute apart, tags from
bench/corpus.py), embedded by `jean-memory reindex` as after a model change, and the server is
then started as `jean-memory serve`. A signed-in browser session (the /signin form) sends each
request with its own `X-Request-ID`; the server time is the request-log line's duration for that
id (the middleware's time from request to last byte, so it includes the session lookup,
rendering and the search; not the client's HTTP stack). Queries are distinct (no cache can
flatter them). Nothing asserts a timing: this prints p50/p90 per kind of request.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.corpus import make_memories, make_queries
from bench.mcp_load import free_port, log, percentile, start
from bench.provenance import REPO_ROOT, code_label
from jean_memory import clock
from jean_memory.db.engine import create_engine
from jean_memory.db.tables import memories, users
from jean_memory.memory.service import insert_memory

EMAIL = "pages-bench@example.com"
PASSWORD = "bench horse battery staple"
LOG_LINE = re.compile(r"GET (\S+) 200 ([0-9.]+)ms request=(\S+)")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NEXT = re.compile(r'<a rel="next" href="([^"]+)">Next</a>')


def seed(database_url: str, count: int, seed_value: int) -> str:
    """`count` distinct memories for the bench person, one a minute up to now; their user id."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            user_id = conn.execute(sa.select(users.c.id).where(users.c.email == EMAIL)).scalar_one()
            now = clock.now()
            pks = []
            for text, tags in make_memories(count, seed_value):
                pk, _ = insert_memory(conn, user_id, text, tags, "claude")
                pks.append(pk)
            conn.execute(
                memories.update()
                .where(memories.c.pk == sa.bindparam("row_pk"))
                .values(created_at=sa.bindparam("at"), updated_at=sa.bindparam("at")),
                [{"row_pk": pk, "at": now - (count - i) * 60.0} for i, pk in enumerate(pks)],
            )
        return user_id
    finally:
        engine.dispose()


def sign_in(http: httpx.Client) -> None:
    page = http.get("/signin")
    token = CSRF.search(page.text)
    assert token, "no CSRF field on /signin"
    answer = http.post("/signin", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token.group(1)})
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in failed: {answer.status_code} {answer.text[:300]}")


def timed(http: httpx.Client, kind: str, paths: list[str], ids: dict[str, str]) -> list[str]:
    """GET each path with a request id noted under `kind`; the pages' bodies."""
    bodies = []
    for i, path in enumerate(paths):
        request_id = f"bench-{kind.replace(' ', '-')}-{i}-{secrets.token_hex(4)}"
        answer = http.get(path, headers={"X-Request-ID": request_id})
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")
        ids[request_id] = kind
        bodies.append(answer.text)
    return bodies


def server_times(logfile: Path, ids: dict[str, str]) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for _path, ms, request_id in LOG_LINE.findall(logfile.read_text()):
        if request_id in ids:
            found.setdefault(ids[request_id], []).append(float(ms))
    return found


def postgresql_url(workdir: Path) -> str:
    from bench.scale import start_postgres, with_database

    admin, _ = start_postgres(workdir / "pg")
    name = f"pages_bench_{secrets.token_hex(4)}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return with_database(admin, name).replace("postgresql://", "postgresql+psycopg://", 1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="jean-pages-bench-"))
    python = sys.executable
    database_url = postgresql_url(workdir) if args.postgresql else f"sqlite:///{workdir / 'jean_memory.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JEAN_MEMORY_")}
    env.update(
        {
            "DATABASE_URL": database_url,
            "JEAN_MEMORY_DATA_DIR": str(workdir / "data"),
            "JWT_SECRET_KEY": secrets.token_hex(32),
            "JEAN_MEMORY_EMBEDDINGS": args.embeddings,
        }
    )

    def cli(*command: str, stdin: str | None = None) -> None:
        done = subprocess.run(
            [python, "-m", "jean_memory.cli", *command],
            input=stdin,
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")

    cli("user", "add", EMAIL, "--password-stdin", stdin=PASSWORD + "\n")
    log(f"seeding {args.memories} memories ({workdir})")
    seed(database_url, args.memories, args.seed)
    if args.embeddings != "none":
        log("embedding them (jean-memory reindex)")
        started = time.monotonic()
        cli("reindex")
        log(f"  embedded in {time.monotonic() - started:.0f}s")
    port = free_port()
    ids: dict[str, str] = {}
    with start("pages", [python, "-m", "jean_memory.cli", "serve", "--port", str(port)], env, port, workdir) as server:
        with httpx.Client(base_url=server.url, timeout=60, headers={"Accept": "text/html"}) as http:
            sign_in(http)
            first = timed(http, "warmup", ["/memories", "/memories?q=warm+up"], {})[0]
            later = NEXT.search(first)
            assert later, "the first page has no Next link"
            cursor_path = later.group(1).replace("&amp;", "&")
            queries = make_queries(args.requests, args.seed)
            timed(http, "first page", ["/memories"] * args.requests, ids)
            timed(http, "next page", [cursor_path] * args.requests, ids)
            timed(http, "tag filter", ["/memories?tag=travel"] * args.requests, ids)
            bodies = timed(http, "search", [f"/memories?{httpx.QueryParams({'q': q})}" for q in queries], ids)
            hits = sum(b.count('name="ids"') for b in bodies) / len(bodies)
        time.sleep(0.3)  # the request log is flushed line by line; let the last ones land
        times = server_times(server.logfile, ids)
    report: dict[str, Any] = {
        "code": code_label(),
        "database": "postgresql" if args.postgresql else "sqlite",
        "embeddings": args.embeddings,
        "memories": args.memories,
        "requests_per_kind": args.requests,
        "search_mean_rows": round(hits, 1),
        "server_ms": {
            kind: {
                "p50": round(percentile(values, 0.5), 1),
                "p90": round(percentile(values, 0.9), 1),
                "n": len(values),
            }
            for kind, values in times.items()
        },
    }
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200, help="requests per kind (default 200)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--embeddings", choices=("local", "none"), default="local")
    parser.add_argument("--postgresql", action="store_true", help="an embedded PostgreSQL instead of SQLite")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", action="store_true", help="print the JSON report only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{report['code']}  {report['database']}, embeddings {report['embeddings']}, {report['memories']} memories")
    print(f"{'request':<12} {'p50 ms':>8} {'p90 ms':>8} {'n':>5}")
    for kind, row in report["server_ms"].items():
        print(f"{kind:<12} {row['p50']:>8} {row['p90']:>8} {row['n']:>5}")
    print(f"search: {report['search_mean_rows']} rows a page on average")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
