"""`jean-memory serve --workers 2`: two real worker processes on one port over one database.

Which worker answered is read from the server's own log (with several workers every line names
its process). Each request goes on a fresh connection, so the kernel hands connections to both
workers; the tests send until both have answered, within a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from jean_memory.serving import default_workers, hold_port, listening_twin, parse_workers
from tests.conftest import person
from tests.support.oauth import Flow, McpHttp
from tests.support.processes import stop_process
from tests.support.servers import cli_env, free_port, run_cli, wait_until_up

pytestmark = pytest.mark.slow
EMAIL = "me@example.com"
DEADLINE = 60.0
STARTED = re.compile(r"\[(\d+)\] uvicorn\.error: Started server process")
ANSWERED = re.compile(r"\[(\d+)\] jean_memory\.http: (\w+) (\S+) (\d+) ")


@dataclass
class Workers:
    process: subprocess.Popen
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def started(self) -> list[int]:
        return [int(pid) for pid in STARTED.findall(self.log())]

    def answered_by(self, route: str) -> set[int]:
        return {int(pid) for pid, _, path, _ in ANSWERED.findall(self.log()) if path == route}

    def wait_for(self, what: str, condition, deadline: float = DEADLINE):  # type: ignore[no-untyped-def]
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            value = condition()
            if value:
                return value
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited ({self.process.returncode}) waiting for {what}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {deadline}s:\n{self.log()}")


@pytest.fixture
def workers(database_url: str, engine: Engine, tmp_path: Path) -> Iterator[Workers]:
    env = cli_env(database_url, tmp_path / "data")
    env.update({"JEAN_MEMORY_EMBEDDINGS": "none", "JEAN_MEMORY_METRICS": "on", "JEAN_MEMORY_SHUTDOWN_SECONDS": "30"})
    person(engine, EMAIL)
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jean_memory.cli", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = Workers(process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_until_up(running.base_url, process=process)
        running.wait_for("two workers", lambda: len(running.started()) >= 2)
        yield running
    finally:
        stop_process(process, timeout=40)


def fresh_connections() -> httpx.Client:
    """A client that opens a new connection for every request (so any worker may take it)."""
    return httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def test_both_workers_serve_the_oauth_flow_and_mcp_calls(workers: Workers) -> None:
    http = fresh_connections()
    flow = Flow(base_url=workers.base_url, http=http)
    flow.register()
    tokens = flow.tokens(EMAIL)  # authorize, sign in, consent, exchange: each step on any worker
    mcp = McpHttp(f"{workers.base_url}/mcp", tokens["access_token"], http=http)
    saved = mcp.call_tool("add_memories", {"text": "My favourite mountain is Ben Nevis"})
    assert not saved.get("isError"), saved
    calls = 1

    def both_answered_mcp() -> bool:
        nonlocal calls
        found = mcp.call_tool("search_memory", {"query": "favourite mountain"})
        calls += 1
        assert "Ben Nevis" in str(found["structuredContent"]), found  # saved through one worker, found by any
        return len(workers.answered_by("/mcp")) >= 2

    workers.wait_for("/mcp answers from both workers", both_answered_mcp)
    assert len(workers.answered_by("/oauth/token") | workers.answered_by("/oauth/register")) >= 1

    # /metrics sums every worker's counts, whichever worker answers the scrape.
    for _ in range(4):
        scrape = http.get(f"{workers.base_url}/metrics").text
        counted = sum(
            float(value) for value in re.findall(r"^jean_memory_tool_calls_total\{[^}]*\} (\S+)$", scrape, re.M)
        )
        assert counted == calls, scrape


def read_response(conn: socket.socket) -> bytes:
    """The next whole response (our answers here carry Content-Length)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = conn.recv(65536)
        if not chunk:
            return answer
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def listening_sockets(port: int) -> dict[str, set[int]]:
    """Each socket listening on `port` (by inode) and the processes holding it, from
    /proc/net/tcp and the processes' descriptors (Linux)."""
    inodes = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
            inodes[f"socket:[{fields[9]}]"] = set()
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            if (target := os.readlink(fd)) in inodes:
                inodes[target].add(int(fd.parts[2]))
    return inodes


@pytest.mark.one_database  # the sockets, not the database
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads connections on Linux")
def test_each_worker_listens_on_its_own_socket_and_connections_are_spread(workers: Workers) -> None:
    """A keep-alive connection stays with the worker that accepted it, and from one shared
    socket the worker that happened to be awake took them (16/0 in the benchmark's windows).
    Each worker now listens on a socket of its own (SO_REUSEPORT) and the kernel picks one per
    connection by a hash: 64 connections made at once, each kept open, are split between the
    two (fewer than 16 on one worker: about 1 in 50,000 by chance)."""
    port = int(workers.base_url.rsplit(":", 1)[1])
    first, second = workers.started()[:2]
    holders = workers.wait_for("a listening socket per worker", lambda: len(s := listening_sockets(port)) == 2 and s)
    assert sorted(pid for pids in holders.values() for pid in pids) == sorted([first, second]), holders

    def healthz_answers() -> Counter[int]:
        return Counter(int(pid) for pid, _, path, _ in ANSWERED.findall(workers.log()) if path == "/healthz")

    before = healthz_answers()
    conns = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(64)]
    try:
        for conn in conns:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for conn in conns:
            assert read_response(conn).startswith(b"HTTP/1.1 200")
    finally:
        for conn in conns:
            conn.close()
    spread = workers.wait_for("the 64 log lines", lambda: (n := healthz_answers() - before).total() == 64 and n)
    assert len(spread) == 2 and min(spread.values()) >= 16, spread


@pytest.mark.one_database  # the port, not the database
def test_a_second_server_on_the_same_port_is_refused(workers: Workers, database_url: str, tmp_path: Path) -> None:
    """The workers' sockets accept others bound with SO_REUSEPORT by the same user: a second
    `serve` on the port, with one worker or several, must still be refused, not share the
    connections with the first."""
    port = workers.base_url.rsplit(":", 1)[1]
    env = cli_env(database_url, tmp_path / "data")
    env["JEAN_MEMORY_EMBEDDINGS"] = "none"
    for count in ("1", "2"):
        second = run_cli(["serve", "--port", port, "--workers", count], env)
        output = second.stdout + second.stderr
        assert second.returncode != 0, output
        assert "address already in use" in output.lower(), output


def test_a_killed_worker_is_replaced_and_sigterm_drains_every_worker(workers: Workers) -> None:
    first, second = workers.started()[:2]
    os.kill(first, signal.SIGKILL)
    replacement = workers.wait_for(
        "a replacement worker", lambda: [p for p in workers.started() if p not in (first, second)]
    )
    http = fresh_connections()
    workers.wait_for(
        "answers from the replacement",
        lambda: (
            http.get(f"{workers.base_url}/healthz").status_code == 200
            and replacement[0] in workers.answered_by("/healthz")
        ),
    )

    # A request in flight when SIGTERM arrives is still answered: its body arrives afterwards.
    body = b'{"client_name": "late", "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"]}'
    host, port = workers.base_url.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=30)
    # A first request answered on this connection: a worker holds it (not the listen backlog).
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(conn).startswith(b"HTTP/1.1 200")
    conn.sendall(
        b"POST /oauth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    # The supervisor passes SIGTERM on at its next 0.5 s tick, long after the worker read the headers.
    workers.process.send_signal(signal.SIGTERM)
    live = {second, replacement[0]}
    workers.wait_for(
        "both workers shutting down",
        lambda: all(f"[{pid}] uvicorn.error: Shutting down" in workers.log() for pid in live),
    )
    conn.sendall(body[10:])
    answer = read_response(conn)
    conn.close()
    assert answer.startswith(b"HTTP/1.1 201"), answer
    workers.process.wait(timeout=DEADLINE)
    assert workers.process.returncode == 0
    log = workers.log()
    for pid in live:
        assert f"[{pid}] uvicorn.error: Application shutdown complete" in log, log


def test_the_default_worker_count_follows_cores_and_memory() -> None:
    gib = 1024**3
    assert default_workers(local_model=True, cores=8, available=64 * gib) == 8
    assert default_workers(local_model=True, cores=8, available=3 * gib) == 4  # 3 GiB - 1 GiB headroom, 512 MB each
    assert default_workers(local_model=False, cores=8, available=3 * gib) == 8
    assert default_workers(local_model=True, cores=4, available=gib) == 1  # never none
    assert parse_workers(None) is None and parse_workers("auto") is None and parse_workers("3") == 3


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_worker_count_is_refused_with_a_message(value: str, tmp_path: Path) -> None:
    env = cli_env(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "data")
    env["JEAN_MEMORY_WORKERS"] = value
    result = run_cli(["serve", "--port", str(free_port())], env)
    assert result.returncode == 2
    assert "JEAN_MEMORY_WORKERS (--workers)" in result.stderr, result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the workers' own sockets are Linux only")
def test_the_port_is_held_while_no_worker_listens() -> None:
    """Before the workers listen (they load the app first) and after all have died, the
    parent's socket alone holds the port: a second server's bind (SO_REUSEADDR, as uvicorn's)
    is refused then too, while a worker's socket still binds beside it."""

    def second_server_binds(port: int) -> bool:
        other = socket.socket()
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            other.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            other.close()
        return True

    shared = socket.socket()
    shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's Config.bind_socket
    shared.bind(("127.0.0.1", 0))
    with hold_port(shared):
        port = shared.getsockname()[1]
        assert not second_server_binds(port)  # the workers are still starting
        twin = listening_twin(shared)
        twin.listen()
        twin.close()
        assert not second_server_binds(port)  # every worker died


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the workers' own sockets are Linux only")
def test_a_worker_that_cannot_listen_stops_the_supervisor() -> None:
    """A worker whose own socket cannot bind exits with uvicorn's STARTUP_FAILURE, so the
    supervisor stops instead of replacing it forever (each replacement loading the app again):
    here the port is taken by a listener that does not share it."""
    from uvicorn.config import STARTUP_FAILURE

    from jean_memory.serving import AsyncioWorkerLoop

    shared = socket.socket()
    shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not held: another binds beside it
    shared.bind(("127.0.0.1", 0))
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind(shared.getsockname())
    taken.listen()
    loop = AsyncioWorkerLoop()
    try:
        with pytest.raises(SystemExit) as exited:
            loop.run_until_complete(loop.create_server(asyncio.Protocol, sock=shared))
        assert exited.value.code == STARTUP_FAILURE
    finally:
        loop.close()
        taken.close()
        shared.close()
