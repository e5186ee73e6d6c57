"""Load benchmark: authenticated `tools/call search_memory` on `/mcp`, ours against the bare SDK.

Starts, side by side on free 127.0.0.1 ports:
  * ours: `jean-memory serve` on a fresh SQLite database in a temporary directory, with one
    account, a token obtained through the real OAuth flow, and N seeded memories;
  * the bare SDK server (`bench/bare_sdk_server.py`): same tool, same JWT check, no database.

Then, for each concurrency level, runs a closed loop (each worker sends its next request as soon
as the previous answer arrives, over its own keep-alive connection) against each server in turn,
alternating the order over rounds so drift hits both alike, and prints requests/s, p50/p99
latency, server CPU per request and the ratio ours/bare. Finally it times `/oauth/token`
authorization-code exchanges (a fresh code per exchange from a signed-in, already-consented
browser session; only the token POST is timed).

Run from the repository root:  .venv/bin/python -m bench.mcp_load [--duration 10] [--json]

Caveat: the load generator runs on the same machine as the servers. It is kept cheap (one
asyncio loop, raw HTTP/1.1 over keep-alive sockets, request bytes built in advance), but on a
2-core machine it still takes CPU from the server under test; the server CPU-per-request column
is the number that does not depend on that.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import http.client
import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import jwt

from bench.corpus import make_memories, make_queries
from bench.provenance import REPO_ROOT, code_label

EMAIL = "bench@example.com"
PASSWORD = "bench horse battery staple"
PROTOCOL_VERSION = "2025-11-25"
REDIRECT_URI = "https://claude.ai/api/mcp/auth_callback"
TOKEN_LOG_LINE = re.compile(r"POST /oauth/token 200 ([0-9.]+)ms")
MAX_CANDIDATES = 50_000  # distinct sentences the corpus can make, with margin
CHECKED_QUERIES = 256  # queries sent once to each server, answers checked, before the load
NOISY_SHARE = 0.15  # other processes' CPU, in cores, above which a row is flagged
SAME_WORK = "same"  # the bare SDK server doing our search work in memory (bench/bare_sdk_server.py)
FLOOR = "floor"  # Starlette + PyJWT + hand-built JSON-RPC doing the same search (bench/floor_server.py)
ONE_WORKER = "ours1"  # ours with --workers 1, on the same database as ours
GRANIAN = "gran1"  # ours under granian, one worker (--granian)
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, logfile: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{logfile.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up within {timeout}s:\n{logfile.read_text()[-2000:]}")


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen
    logfile: Path
    token: str = ""

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 80

    def tree(self) -> list[int]:
        """The server's process and all its descendants (`serve --workers N`: the supervisor,
        its workers and multiprocessing's resource tracker)."""
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            for task in Path(f"/proc/{pid}/task").glob("*"):
                with contextlib.suppress(OSError, ValueError):
                    todo.extend(int(c) for c in (task / "children").read_text().split())
        return found

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server's whole process tree (all threads, plus children
        that have exited and been waited for), from /proc."""
        total = 0.0
        for pid in self.tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                if pid == self.process.pid:
                    return None
                continue
            total += sum(int(f) for f in fields[11:15]) / CLK_TCK
        return total

    def rss_bytes(self) -> dict[int, int]:
        """Resident memory of each process of the tree, by pid."""
        sizes = {}
        for pid in self.tree():
            with contextlib.suppress(OSError, ValueError, IndexError):
                line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:"))
                sizes[pid] = int(line.split()[1]) * 1024
        return sizes


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


@contextlib.contextmanager
def start(name: str, args: list[str], env: dict[str, str], port: int, workdir: Path) -> Iterator[Server]:
    logfile = workdir / f"{name}.log"
    with logfile.open("w") as out:
        process = subprocess.Popen(args, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    server = Server(name, f"http://127.0.0.1:{port}", process, logfile)
    try:
        wait_until_up(server.url, process, logfile)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the OAuth flow (the minimal browser and client steps) ------------------------------------------


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": attributes.get("action", ""), "fields": {}})
        elif tag == "input" and self.forms and attributes.get("name"):
            self.forms[-1]["fields"][attributes["name"]] = attributes.get("value", "")


def submit_form(http: httpx.Client, base: str, page: httpx.Response, **values: str) -> httpx.Response:
    parser = _FormParser()
    parser.feed(page.text)
    if not parser.forms:
        raise RuntimeError(f"expected a form, got {page.status_code}: {page.text[:300]}")
    form = parser.forms[0]
    return http.post(urljoin(base, form["action"]), data={**form["fields"], **values})


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class OAuthClient:
    """A dynamically registered confidential client (as claude.ai registers) plus a browser
    whose cookie jar keeps the sign-in session, so after the first consent every authorize
    request redirects straight back with a code."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(timeout=30)
        response = self.http.post(
            f"{base}/oauth/register",
            json={
                "client_name": "claudeai",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_post",
                "redirect_uris": [REDIRECT_URI],
            },
        )
        if response.status_code != 201:
            raise RuntimeError(f"registration failed: {response.status_code} {response.text}")
        registration = response.json()
        self.client_id = registration["client_id"]
        self.client_secret = registration["client_secret"]

    def code(self) -> tuple[str, str]:
        """A fresh authorization code and its PKCE verifier (signs in and consents if asked)."""
        verifier, challenge = pkce_pair()
        page = self.http.get(
            f"{self.base}/oauth/authorize",
            params={
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": REDIRECT_URI,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": secrets.token_hex(4),
                "scope": "claudeai",
                "resource": f"{self.base}/mcp",
            },
        )
        if page.status_code == 200 and 'name="password"' in page.text:
            page = submit_form(self.http, self.base, page, email=EMAIL, password=PASSWORD)
        if page.status_code == 200 and 'value="approve"' in page.text:
            page = submit_form(self.http, self.base, page, decision="approve")
        if page.status_code != 302:
            raise RuntimeError(f"expected a redirect with a code, got {page.status_code}: {page.text[:300]}")
        query = parse_qs(urlsplit(page.headers["location"]).query)
        if "code" not in query:
            raise RuntimeError(f"no code in the redirect: {page.headers['location']}")
        return query["code"][0], verifier

    def token_form(self, code: str, verifier: str) -> dict[str, str]:
        return {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": verifier,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }

    def access_token(self) -> str:
        code, verifier = self.code()
        response = self.http.post(f"{self.base}/oauth/token", data=self.token_form(code, verifier))
        if response.status_code != 200:
            raise RuntimeError(f"token exchange failed: {response.status_code} {response.text}")
        return response.json()["access_token"]


def mint_bare_token(secret: str, issuer: str) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": f"{issuer}/mcp",
        "sub": "bench-user",
        "iat": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
        "email": EMAIL,
        "client": "claude",
        "client_id": "bench",
        "scope": "memory offline_access",
        "sid": "bench-grant",
    }
    return jwt.encode(claims, secret, algorithm="HS256")


# --- a cheap HTTP/1.1 client ----------------------------------------------------------------------


def rpc_request(server: Server, rpc_id: int, tool: str, arguments: dict[str, Any]) -> bytes:
    """The full request bytes of one JSON-RPC `tools/call`, built once ahead of the loop."""
    host, port = server.host_port
    body = json.dumps(
        {"jsonrpc": "2.0", "id": rpc_id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}},
        separators=(",", ":"),
    ).encode()
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {server.token}\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
        f"MCP-Protocol-Version: {PROTOCOL_VERSION}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """One keep-alive connection; sends prepared request bytes and reads one response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: Server) -> Connection:
        host, port = server.host_port
        reader, writer = await asyncio.open_connection(host, port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, data: bytes) -> tuple[int, bytes]:
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = -1
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            return status, b"".join(parts)
        if length < 0:
            raise RuntimeError("response without Content-Length or chunking")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def tool_ok(status: int, body: bytes) -> bool:
    return status == 200 and b'"result"' in body and b'"isError":true' not in body


async def call_many(server: Server, requests: list[bytes], concurrency: int) -> list[tuple[int, bytes]]:
    """Send each request once (order kept), `concurrency` at a time; for seeding and checks."""
    results: list[tuple[int, bytes]] = [(0, b"")] * len(requests)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        conn = await Connection.open(server)
        try:
            while next_index < len(requests):
                i = next_index
                next_index += 1
                results[i] = await conn.request(requests[i])
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


# --- the closed loop ------------------------------------------------------------------------------


@dataclass
class Window:
    """One measured run of one server at one concurrency."""

    server: str
    concurrency: int
    seconds: float
    requests: int
    errors: int
    server_cpu_seconds: float | None
    client_cpu_seconds: float
    other_cpu_seconds: float | None  # everything else on the machine: noise
    latencies_ms: list[float] = field(repr=False)
    spread: list[int] = field(default_factory=list)  # connections each server process held, largest first


def connections_per_process(server: Server, conns: list[Connection]) -> list[int]:
    """How many of `conns` each process of the server holds, largest first: with several
    workers, which one accepted each keep-alive connection (it serves all of that connection's
    requests, so the split bounds the window's req/s). From /proc/net/tcp and the descriptors."""
    _, port = server.host_port
    client_ports = {c.writer.get_extra_info("sockname")[1] for c in conns}
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
                if local == port and remote in client_ports:
                    inodes.add(f"socket:[{fields[9]}]")
    counts = []
    for pid in server.tree():
        held = 0
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            with contextlib.suppress(OSError):
                held += os.readlink(fd) in inodes
        if held or is_worker(pid):  # an idle worker counts as 0, so 16/0 reads as such
            counts.append(held)
    return sorted(counts, reverse=True)


def is_worker(pid: int) -> bool:
    """A process multiprocessing spawned to run the app (not its resource tracker)."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def closed_loop(server: Server, pool: list[bytes], concurrency: int, warmup: float, duration: float) -> Window:
    conns = [await Connection.open(server) for _ in range(concurrency)]
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter
    begin = clock()
    measure_from = begin + warmup
    stop_at = measure_from + duration
    cpu_start: list[float | None] = [None]
    spread: list[int] = []
    busy_start: list[float | None] = [None]
    client_cpu_start = [0.0]
    last_end = [measure_from]

    async def mark_start() -> None:
        await asyncio.sleep(max(0.0, measure_from - clock()))
        cpu_start[0] = server.cpu_seconds()
        spread.extend(connections_per_process(server, conns))  # each has been answered by now
        busy_start[0] = machine_busy_seconds()
        client_cpu_start[0] = time.process_time()

    async def worker(index: int, conn: Connection) -> None:
        nonlocal errors
        i = index * 7919  # spread the workers over the query pool
        n = len(pool)
        while True:
            started = clock()
            if started >= stop_at:
                return
            status, body = await conn.request(pool[i % n])
            ended = clock()
            i += 1
            if ended >= measure_from:  # completions inside the window, as its CPU is counted
                if not tool_ok(status, body):
                    errors += 1
                latencies.append((ended - started) * 1000)
                last_end[0] = max(last_end[0], ended)

    async def ticker() -> None:
        """A live count on a terminal (each finished window also gets a line of its own)."""
        while True:
            await asyncio.sleep(0.5)
            phase = "warm-up" if clock() < measure_from else f"{clock() - measure_from:4.1f}s"
            print(f"\r  {server.name} c={concurrency} {phase} {len(latencies):7d} requests", end="", file=sys.stderr)

    marker = asyncio.create_task(mark_start())
    tick = asyncio.create_task(ticker()) if sys.stderr.isatty() else None
    try:
        await asyncio.gather(*(worker(k, c) for k, c in enumerate(conns)))
    finally:
        await marker
        if tick is not None:
            tick.cancel()
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        cpu_end = server.cpu_seconds()
        busy_end = machine_busy_seconds()
        client_cpu = time.process_time() - client_cpu_start[0]
        for conn in conns:
            await conn.close()
    seconds = last_end[0] - measure_from
    server_cpu = cpu_end - cpu_start[0] if cpu_end is not None and cpu_start[0] is not None else None
    other = None
    if server_cpu is not None and busy_end is not None and busy_start[0] is not None:
        other = max(0.0, busy_end - busy_start[0] - server_cpu - client_cpu)
    return Window(
        server.name, concurrency, seconds, len(latencies), errors, server_cpu, client_cpu, other, latencies, spread
    )


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass
class Row:
    server: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_req: float | None
    client_cpu_share: float
    other_cpu_share: float | None


def summarise(windows: list[Window]) -> Row:
    latencies = [x for w in windows for x in w.latencies_ms]
    seconds = sum(w.seconds for w in windows)
    requests = sum(w.requests for w in windows)
    cpu = [w.server_cpu_seconds for w in windows]
    server_cpu = sum(c for c in cpu if c is not None) if all(c is not None for c in cpu) else None
    return Row(
        server=windows[0].server,
        concurrency=windows[0].concurrency,
        requests=requests,
        errors=sum(w.errors for w in windows),
        seconds=round(seconds, 3),
        rps=round(requests / seconds, 1) if seconds else 0.0,
        p50_ms=round(percentile(latencies, 0.50), 2),
        p99_ms=round(percentile(latencies, 0.99), 2),
        server_cpu_ms_per_req=round(server_cpu * 1000 / requests, 3) if server_cpu is not None and requests else None,
        client_cpu_share=round(sum(w.client_cpu_seconds for w in windows) / seconds, 2) if seconds else 0.0,
        other_cpu_share=(
            round(sum(w.other_cpu_seconds for w in windows if w.other_cpu_seconds is not None) / seconds, 2)
            if seconds and all(w.other_cpu_seconds is not None for w in windows)
            else None
        ),
    )


# --- the token endpoint ---------------------------------------------------------------------------


def token_exchanges(server: Server, count: int) -> dict[str, Any]:
    """Time `count` authorization-code exchanges; the code for each comes from an authorize
    request that the signed-in, consented browser session turns into an immediate redirect."""
    oauth = OAuthClient(server.url)
    oauth.access_token()  # signs in and consents once; later authorizes redirect at once
    host, port = server.host_port
    conn = http.client.HTTPConnection(host, port, timeout=30)
    timings: list[float] = []
    try:
        for i in range(count):
            while True:
                code, verifier = oauth.code()
                body = str(httpx.QueryParams(oauth.token_form(code, verifier))).encode()
                started = time.perf_counter()
                conn.request("POST", "/oauth/token", body, {"Content-Type": "application/x-www-form-urlencoded"})
                response = conn.getresponse()
                payload = response.read()
                elapsed = (time.perf_counter() - started) * 1000
                if response.status != 429:
                    break
                # The server's per-address limit on token requests: wait it out (untimed), then
                # take a fresh code, since the old one may expire meanwhile.
                wait = int(response.headers.get("Retry-After", "5"))
                log(f"  rate-limited by the token endpoint; waiting {wait}s (not timed)")
                time.sleep(wait)
            timings.append(elapsed)
            if response.status != 200 or b"access_token" not in payload:
                raise RuntimeError(f"token exchange {i} failed: {response.status} {payload[:300]!r}")
            if (i + 1) % 50 == 0:
                log(f"  token exchanges: {i + 1}/{count}")
    finally:
        conn.close()
        oauth.http.close()
    time.sleep(0.2)  # let the server flush its request log
    server_side = [float(x) for x in TOKEN_LOG_LINE.findall(server.logfile.read_text())][-count:]
    return {
        "exchanges": count,
        "client_p50_ms": round(percentile(timings, 0.5), 2),
        "client_p99_ms": round(percentile(timings, 0.99), 2),
        "client_mean_ms": round(sum(timings) / len(timings), 2),
        "server_log_p50_ms": round(percentile(server_side, 0.5), 2) if server_side else None,
        "server_log_p99_ms": round(percentile(server_side, 0.99), 2) if server_side else None,
    }


# --- main -----------------------------------------------------------------------------------------


def seed_memories(server: Server, count: int, seed: int) -> int:
    """Save `count` memories through `add_memories`. The server may merge a sentence into a
    near-duplicate it already holds instead of saving it, so candidates are sent in batches until
    `count` were saved (the same seed gives the same sentences, so the same memories)."""
    candidates = make_memories(min(count * 2 + 100, MAX_CANDIDATES), seed)
    started = time.perf_counter()
    saved = merged = sent = 0
    while saved < count:
        batch = candidates[sent : sent + count - saved]
        if not batch:
            raise RuntimeError(f"only {saved} memories were saved from {sent} distinct sentences")
        requests = [
            rpc_request(server, sent + i, "add_memories", {"text": text, "tags": tags})
            for i, (text, tags) in enumerate(batch)
        ]
        sent += len(batch)
        for status, body in asyncio.run(call_many(server, requests, 4)):
            if not tool_ok(status, body):
                raise RuntimeError(f"add_memories failed: {status} {body[:300]!r}")
            result = json.loads(body)["result"]["structuredContent"]
            saved += len(result["saved"])
            merged += 0 if result["saved"] else 1
    log(f"  seeded {saved} memories in {time.perf_counter() - started:.1f}s ({merged} sentences merged as duplicates)")
    return saved


def check_answers(server: Server, pool: list[bytes]) -> dict[str, float]:
    """Each query once: all must succeed; returns the mean hits and response size."""
    results = asyncio.run(call_many(server, pool, 4))
    hits = 0
    size = 0
    for status, body in results:
        if not tool_ok(status, body):
            raise RuntimeError(f"{server.name}: search_memory failed: {status} {body[:300]!r}")
        hits += len(json.loads(body)["result"]["structuredContent"]["results"])
        size += len(body)
    return {"mean_hits": round(hits / len(results), 2), "mean_response_bytes": round(size / len(results))}


def local_model_path() -> Path:
    """The int8 model file our server derived (and caches) from the pinned one."""
    from jean_memory.memory.int8_model import cache_dir, cached_name
    from jean_memory.memory.onnx_encoder import MODEL_SHA256

    return cache_dir() / cached_name(MODEL_SHA256)


def tokenizer_path() -> Path:
    from jean_memory.memory import embeddings

    return Path(embeddings.__file__).parent / "model_assets" / "tokenizer.json"


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="jean-bench-"))
    secret = secrets.token_hex(32)
    python = sys.executable
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("JEAN_MEMORY_")}
    ours_env = {
        **base_env,
        "DATABASE_URL": f"sqlite:///{workdir / 'jean_memory.db'}",
        "JEAN_MEMORY_DATA_DIR": str(workdir / "data"),
        "JWT_SECRET_KEY": secret,
        "JEAN_MEMORY_LOG_LEVEL": args.log_level,
    }
    if args.embeddings:
        ours_env["JEAN_MEMORY_EMBEDDINGS"] = args.embeddings
    extra_path = os.environ.get("PYTHONPATH", "")  # e.g. a directory with uvloop + httptools, for every server
    bare_env = {
        **base_env,
        "BENCH_JWT_SECRET": secret,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), extra_path])),
    }
    report: dict[str, Any] = {
        "code": code_label(),
        "config": {k: v for k, v in vars(args).items() if k != "json"},
    }
    try:
        created = subprocess.run(
            [python, "-m", "jean_memory.cli", "user", "add", EMAIL, "--password-stdin"],
            input=PASSWORD + "\n",
            env=ours_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"user add failed: {created.stderr}")
        ours_port, ours1_port, bare_port, same_port, floor_port, granian_port = (free_port() for _ in range(6))
        ours_env["JEAN_MEMORY_ISSUER"] = f"http://127.0.0.1:{ours_port}"  # one issuer: one token serves both of ours
        log(f"starting servers (work dir {workdir})")
        workers = [] if args.workers is None else ["--workers", str(args.workers)]
        ours_cmd = [python, "-m", "jean_memory.cli", "serve", "--port", str(ours_port), *workers]
        ours1_cmd = [python, "-m", "jean_memory.cli", "serve", "--port", str(ours1_port), "--workers", "1"]
        bare_url = f"http://127.0.0.1:{bare_port}"
        bare_cmd = [python, "-m", "bench.bare_sdk_server", "--port", str(bare_port), "--issuer", bare_url]
        with contextlib.ExitStack() as running:
            ours = running.enter_context(start("ours", ours_cmd, ours_env, ours_port, workdir))
            servers = [ours]
            if args.with_one_worker:
                servers.append(running.enter_context(start(ONE_WORKER, ours1_cmd, ours_env, ours1_port, workdir)))
            if args.granian:
                # The same app under granian (one worker, asyncio loop), for issue 17's comparison;
                # needs `pip install granian` (on PYTHONPATH).
                granian_cmd = [
                    *[python, "-m", "granian", "--interface", "asgi", "--factory", "--workers", "1"],
                    *["--loop", "asyncio", "--host", "127.0.0.1", "--port", str(granian_port)],
                    "jean_memory.serving:worker_app",
                ]
                granian_env = {**ours_env, "JEAN_MEMORY_WORKERS": "1"}
                servers.append(running.enter_context(start(GRANIAN, granian_cmd, granian_env, granian_port, workdir)))
            if args.static_bare:
                servers.append(running.enter_context(start("bare", bare_cmd, bare_env, bare_port, workdir)))
            if args.embeddings in (None, "local"):
                # Started after ours, which has made the int8 model file by now.
                model = [
                    *["--search-model", str(local_model_path()), "--tokenizer", str(tokenizer_path())],
                    *["--memories", str(args.memories), "--seed", str(args.seed)],
                ]
                same_url = f"http://127.0.0.1:{same_port}"
                same_cmd = [python, "-m", "bench.bare_sdk_server", "--port", str(same_port), "--issuer", same_url]
                servers.append(
                    running.enter_context(start(SAME_WORK, [*same_cmd, *model], bare_env, same_port, workdir))
                )
                floor_url = f"http://127.0.0.1:{floor_port}"
                floor_cmd = [python, "-m", "bench.floor_server", "--port", str(floor_port), "--issuer", floor_url]
                servers.append(running.enter_context(start(FLOOR, [*floor_cmd, *model], bare_env, floor_port, workdir)))
            started = re.search(r"starting (\d+) worker processes", ours.logfile.read_text())
            report["ours_workers"] = int(started.group(1)) if started else 1
            log(f"  ours runs {report['ours_workers']} worker process(es)")
            log("getting a token through the OAuth flow")
            oauth = OAuthClient(ours.url)
            ours.token = oauth.access_token()
            oauth.http.close()
            for other in servers[1:]:
                other.token = ours.token if other.name in (ONE_WORKER, GRANIAN) else mint_bare_token(secret, other.url)
            log(f"seeding {args.memories} memories through add_memories")
            report["memories"] = seed_memories(ours, args.memories, args.seed)

            queries = make_queries(args.queries, args.seed)
            pools = {
                s.name: [rpc_request(s, i, "search_memory", {"query": q, "limit": 10}) for i, q in enumerate(queries)]
                for s in servers
            }
            report["answers"] = {s.name: check_answers(s, pools[s.name][:CHECKED_QUERIES]) for s in servers}
            log(f"  answers: {report['answers']}")

            windows: list[Window] = []
            per_window = args.duration / args.rounds
            for concurrency in args.concurrency:
                for round_no in range(args.rounds):
                    order = servers if round_no % 2 == 0 else servers[::-1]
                    for server in order:
                        window = asyncio.run(
                            closed_loop(server, pools[server.name], concurrency, args.warmup, per_window)
                        )
                        windows.append(window)
                        log(
                            f"  c={concurrency:<3} round {round_no + 1}/{args.rounds} {server.name:<4} "
                            f"{window.requests / window.seconds:8.1f} req/s  "
                            f"p50 {percentile(window.latencies_ms, 0.5):6.2f} ms  errors {window.errors}"
                            + (
                                f"  connections per worker {'/'.join(map(str, window.spread))}"
                                if server is ours
                                else ""
                            )
                        )
            rows = [
                summarise([w for w in windows if w.server == s.name and w.concurrency == c])
                for c in args.concurrency
                for s in servers
            ]
            report["rows"] = [asdict(r) for r in rows]
            # With several workers the kernel and the workers' accept loops decide which worker
            # takes each of a window's keep-alive connections; req/s follows the split.
            report["ours_spread"] = {
                str(c): ["/".join(map(str, w.spread)) for w in windows if w.server == "ours" and w.concurrency == c]
                for c in args.concurrency
            }

            report["ratios"] = ratios(rows, args.concurrency)
            report["rss"] = {server.name: sorted(server.rss_bytes().values(), reverse=True) for server in servers}
            log(f"timing {args.exchanges} /oauth/token code exchanges")
            report["token"] = token_exchanges(ours, args.exchanges)
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return report


def ratios(rows: list[Row], levels: list[int]) -> dict[str, dict[str, float]]:
    """The comparisons issue 17 asks for, per concurrency level, where both sides ran."""
    by = {(r.server, r.concurrency): r for r in rows}
    pairs = {
        "ours/ours1 req/s": ("ours", ONE_WORKER, "rps"),
        f"ours1/{SAME_WORK} CPU per request": (ONE_WORKER, SAME_WORK, "server_cpu_ms_per_req"),
        f"ours/{SAME_WORK} CPU per request": ("ours", SAME_WORK, "server_cpu_ms_per_req"),
        f"ours/{FLOOR} req/s": ("ours", FLOOR, "rps"),
        f"ours1/{FLOOR} req/s": (ONE_WORKER, FLOOR, "rps"),
        f"ours1/{FLOOR} CPU per request": (ONE_WORKER, FLOOR, "server_cpu_ms_per_req"),
        f"ours/{SAME_WORK} req/s": ("ours", SAME_WORK, "rps"),
        "ours/bare req/s": ("ours", "bare", "rps"),
        f"{GRANIAN}/ours1 CPU per request": (GRANIAN, ONE_WORKER, "server_cpu_ms_per_req"),
        f"{GRANIAN}/ours1 req/s": (GRANIAN, ONE_WORKER, "rps"),
    }
    found: dict[str, dict[str, float]] = {}
    for label, (a, b, column) in pairs.items():
        for c in levels:
            left, right = by.get((a, c)), by.get((b, c))
            x = getattr(left, column) if left else None
            y = getattr(right, column) if right else None
            if x and y:
                found.setdefault(label, {})[str(c)] = round(x / y, 3)
    return found


def print_table(report: dict[str, Any]) -> None:
    embeddings = report["config"].get("embeddings") or "server default (local)"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"\ncode: {report['code']}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}, embeddings: {embeddings}, "
        f"ours: {report['ours_workers']} workers, load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    answers = ", ".join(
        f"{name}: {a['mean_hits']} hits, {a['mean_response_bytes']} B" for name, a in report["answers"].items()
    )
    print(f"search_memory over {report['memories']} memories (mean per answer: {answers})")
    header = (
        f"{'server':<6} {'conc':>4} {'requests':>9} {'err':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'srv CPU ms/req':>15} {'client CPU':>10} {'other CPU':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in report["rows"]:
        cpu = f"{r['server_cpu_ms_per_req']:.3f}" if r["server_cpu_ms_per_req"] is not None else "n/a"
        other = f"{r['other_cpu_share']:.0%}" if r["other_cpu_share"] is not None else "n/a"
        print(
            f"{r['server']:<6} {r['concurrency']:>4} {r['requests']:>9} {r['errors']:>4} {r['rps']:>8.1f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {cpu:>15} {r['client_cpu_share']:>10.0%} {other:>9}"
        )
    noisy = [r for r in report["rows"] if (r["other_cpu_share"] or 0) > NOISY_SHARE]
    if noisy:
        print(
            f"warning: other processes used more than {NOISY_SHARE:.0%} of a core during "
            f"{len(noisy)} of {len(report['rows'])} rows; requests/s and latency are unreliable, "
            "srv CPU ms/req less so. Rerun on a quiet machine."
        )
    print()
    for label, values in report["ratios"].items():
        print(f"{label:<28} " + "  ".join(f"c={c}: {v:.2f}" for c, v in values.items()))
    if report.get("ours_workers", 1) > 1:
        splits = "; ".join(f"c={c}: {', '.join(v)}" for c, v in report["ours_spread"].items() if v)
        print(f"ours' connections per worker, each round: {splits}")
    print("\nRSS after the load, MB (largest process first; ours: supervisor, workers, resource tracker):")
    for name, sizes in report["rss"].items():
        print(f"  {name:<6} total {sum(sizes) / 2**20:7.1f}  each: " + ", ".join(f"{x / 2**20:.0f}" for x in sizes))
    t = report["token"]
    print(
        f"\n/oauth/token code exchange ({t['exchanges']}x): p50 {t['client_p50_ms']:.2f} ms, "
        f"p99 {t['client_p99_ms']:.2f} ms (client-timed); server log p50 {t['server_log_p50_ms']} ms, "
        f"p99 {t['server_log_p99_ms']} ms (target p50 < 10 ms: {'met' if t['client_p50_ms'] < 10 else 'NOT met'})"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="MCP tools/call load benchmark: ours against the bare SDK and a floor."
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per server per level")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds the duration is split into")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each window")
    parser.add_argument("--memories", type=int, default=1000)
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16], help="e.g. 1,16"
    )
    parser.add_argument(
        "--queries", type=int, default=20_000, help="distinct queries in the pool (cycled if the run needs more)"
    )
    parser.add_argument(
        "--embeddings",
        choices=["local", "none", "openai"],
        help="our server's JEAN_MEMORY_EMBEDDINGS (default: the server's default, local)",
    )
    parser.add_argument("--exchanges", type=int, default=200, help="/oauth/token code exchanges to time")
    parser.add_argument("--workers", type=int, help="ours: serve --workers N (default: serve's own default)")
    parser.add_argument(
        "--no-one-worker", dest="with_one_worker", action="store_false", help="skip ours with --workers 1 (ours1)"
    )
    parser.add_argument("--static-bare", action="store_true", help="also the bare SDK answering a static list")
    parser.add_argument("--granian", action="store_true", help="also ours under granian, one worker (gran1)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--log-level", default="INFO", help="our server's JEAN_MEMORY_LOG_LEVEL (INFO = production)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (database, server logs)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
