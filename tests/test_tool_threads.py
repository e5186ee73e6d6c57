"""MCP tool calls queue for a few threads instead of taking anyio's forty (issue 17).

Sixteen searches at once in one process on two cores spent most of their extra CPU handing the
GIL between threads; `run_tool_work` admits `tool_threads()` of them at a time. A call that
waits without using a core (on the embeddings provider, on the person's write lock) must not
hold one of those few threads, or a handful of them stops every other person's calls.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import httpx
import pytest
import sqlalchemy as sa

from jean_memory import cores, off_loop
from jean_memory.accounts.users import User
from jean_memory.mcp_server import tool_threads
from tests.conftest import person
from tests.support.oauth import McpHttp, new_flow
from tests.support.servers import RunningServer, threaded_server

pytestmark = pytest.mark.anyio
DEADLINE = 10.0


async def test_no_more_tool_calls_run_at_once_than_tool_threads() -> None:
    limit = tool_threads.tool_threads()
    inside = 0
    most = 0
    lock = threading.Lock()
    release = threading.Event()

    def work() -> None:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        release.wait(DEADLINE)
        with lock:
            inside -= 1

    async with anyio.create_task_group() as group:
        for _ in range(3 * limit):
            group.start_soon(tool_threads.run_tool_work, work)
        limiter = tool_threads._tool_limiter()
        end = time.monotonic() + DEADLINE
        # The first `limit` calls are inside `work`, the others parked at the limiter: nothing
        # more can enter until one leaves, so the counts are final once both are reached.
        while not (inside == limit and limiter.statistics().tasks_waiting == 2 * limit):
            assert time.monotonic() < end, f"{inside} calls inside, {limiter.statistics()}"
            await anyio.sleep(0.01)
        assert most == limit
        release.set()
    assert inside == 0 and most == limit


async def test_a_failing_tool_call_gives_its_thread_back() -> None:
    def fail() -> None:
        raise ValueError("bad input")

    for _ in range(tool_threads.tool_threads() + 1):
        with pytest.raises(ValueError, match="bad input"):
            await tool_threads.run_tool_work(fail)
    assert tool_threads._tool_limiter().statistics().borrowed_tokens == 0
    assert await tool_threads.run_tool_work(lambda: 42) == 42


def test_tool_threads_follow_this_processs_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores, "usable_cores", lambda: 8)
    monkeypatch.delenv(cores.WORKERS_ENV, raising=False)
    assert cores.cores_per_worker() == 8
    assert tool_threads.tool_threads() == 8
    monkeypatch.setenv(cores.WORKERS_ENV, "4")
    assert cores.cores_per_worker() == 2
    assert tool_threads.tool_threads() == 2
    # One worker per core (serve's default): still two threads, so a slow call does not stop the rest.
    monkeypatch.setenv(cores.WORKERS_ENV, "8")
    assert cores.cores_per_worker() == 1
    assert tool_threads.tool_threads() == 2
    monkeypatch.setenv(cores.WORKERS_ENV, "16")
    assert cores.cores_per_worker() == 1
    monkeypatch.setenv(cores.WORKERS_ENV, "junk")
    assert cores.workers() == 1


# --- a wait on another service must not hold a tool thread -----------------------------------


class _HeldEmbeddings(BaseHTTPRequestHandler):
    """An OpenAI-compatible /embeddings endpoint (the provider is an outside service, so a
    stand-in is fair) that answers at once, or, once `server.hold` is set, holds every request
    until `server.release` is set: a slow or hung provider."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.hold.is_set():
            with self.server.lock:
                self.server.waiting += 1
            self.server.release.wait(DEADLINE * 3)
        data = [{"index": i, "embedding": [1.0 + len(t) % 7, 2.0, 3.0, 4.0]} for i, t in enumerate(body["input"])]
        raw = json.dumps({"data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def held_embeddings() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _HeldEmbeddings)
    httpd.daemon_threads = True
    httpd.hold, httpd.release, httpd.lock, httpd.waiting = threading.Event(), threading.Event(), threading.Lock(), 0
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_a_hung_embeddings_provider_does_not_stop_other_peoples_tool_calls(
    database_url: str, tmp_path: Path, held_embeddings: ThreadingHTTPServer, request: pytest.FixtureRequest
) -> None:
    """With JEAN_MEMORY_EMBEDDINGS=openai every search and save waits on the provider (up to its
    30 s timeout): a call waiting there is not using a core, so it must not take one of the few
    tool threads. Here one person's searches hang at the provider, and another's list_memories,
    which needs no embedding, still answers."""
    if database_url.startswith("sqlite:///"):  # as the `server` fixture does
        target = Path(database_url.removeprefix("sqlite:///"))
        if not target.exists():
            shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
    base = f"http://127.0.0.1:{held_embeddings.server_address[1]}/v1"
    with threaded_server(
        database_url, tmp_path / "data", embeddings="openai", embeddings_base_url=base, embeddings_model="m"
    ) as server:
        alice, bob = person(server.engine, "alice@example.com"), person(server.engine, "bob@example.com")
        alice_mcp = McpHttp(server.mcp_url, new_flow(server.base_url).tokens(alice.email)["access_token"])
        bob_mcp = McpHttp(
            server.mcp_url,
            new_flow(server.base_url).tokens(bob.email)["access_token"],
            httpx.Client(timeout=DEADLINE),
        )
        assert alice_mcp.call_tool("add_memories", {"text": "Lives in Lisbon"})["isError"] is False
        assert bob_mcp.call_tool("add_memories", {"text": "Plays the cello"})["isError"] is False
        held_embeddings.hold.set()
        hung = [
            threading.Thread(target=alice_mcp.call_tool, args=("search_memory", {"query": f"city {i}"}), daemon=True)
            for i in range(tool_threads.tool_threads())
        ]
        for thread in hung:
            thread.start()
        end = time.monotonic() + DEADLINE
        while held_embeddings.waiting < len(hung):
            assert time.monotonic() < end, f"{held_embeddings.waiting} of {len(hung)} searches reached the provider"
            time.sleep(0.01)
        try:
            listed = bob_mcp.call_tool("list_memories", {"limit": 5})
        except httpx.TimeoutException:
            pytest.fail(f"list_memories waited over {DEADLINE:g} s behind searches hung at the embeddings provider")
        finally:
            held_embeddings.release.set()
            for thread in hung:
                thread.join(DEADLINE)
        assert [m["text"] for m in listed["structuredContent"]["results"]] == ["Plays the cello"]


#: The saving calls, with the table each one's first write goes to.
SAVING_CALLS = {
    "add_memories": (lambda i: {"text": f"Fact {i}"}, "memory_versions"),
    # jean_memory reads on the tool threads, then queues the facts it found: that write waits too.
    "jean_memory": (
        lambda i: {"user_message": f"I moved to city {i} and I work at Stripe now.", "is_new_conversation": False},
        "jobs",
    ),
}


@pytest.mark.parametrize("tool", sorted(SAVING_CALLS))
def test_saves_waiting_on_a_lock_do_not_stop_other_peoples_searches(
    server: RunningServer, alice: User, bob: User, tool: str
) -> None:
    """A long writer elsewhere (`jean-memory import` or `user delete` in their own process, the
    whole-account delete of the web page) holds the database's write lock (SQLite) or the
    person's row (PostgreSQL), and that person's saves wait on it, using no core, for up to the
    busy timeout. Waiting, they must not hold the tool threads that other people's searches,
    which need no lock, queue for."""
    alice_mcp = McpHttp(server.mcp_url, new_flow(server.base_url).tokens(alice.email)["access_token"])
    bob_mcp = McpHttp(
        server.mcp_url, new_flow(server.base_url).tokens(bob.email)["access_token"], httpx.Client(timeout=DEADLINE)
    )
    assert bob_mcp.call_tool("add_memories", {"text": "Plays the cello"})["isError"] is False
    assert alice_mcp.call_tool("add_memories", {"text": "Lives in Lisbon"})["isError"] is False
    arguments, table = SAVING_CALLS[tool]
    writes = 0
    lock = threading.Lock()

    def count_writes(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        nonlocal writes
        if statement.lstrip().upper().startswith(f"INSERT INTO {table.upper()}"):
            with lock:
                writes += 1

    saves = tool_threads.tool_threads()
    postgresql = server.engine.dialect.name == "postgresql"
    if postgresql and tool == "jean_memory":
        pytest.skip("on PostgreSQL queuing facts (a jobs row, no foreign key) waits on no lock a long writer holds")
    waiting: list[threading.Thread] = []
    holder = server.engine.connect()
    try:
        if postgresql:  # what `user delete` takes first; a save's owner check waits on it
            holder.execute(sa.text("SELECT id FROM users WHERE id = :id FOR UPDATE"), {"id": alice.id})
        else:
            holder.exec_driver_sql("BEGIN IMMEDIATE")
        sa.event.listen(server.engine, "before_cursor_execute", count_writes)
        waiting += [
            threading.Thread(target=alice_mcp.call_tool, args=(tool, arguments(i)), daemon=True) for i in range(saves)
        ]
        for thread in waiting:
            thread.start()
        end = time.monotonic() + DEADLINE
        # Each save sent its write (SQLite: it waits there for the lock); on PostgreSQL each
        # also waits on the row lock (pg_stat_activity).
        while writes < saves or (postgresql and lock_waiters(server.engine) < saves):
            assert time.monotonic() < end, f"{writes} of {saves} saves reached the lock"
            time.sleep(0.01)
        try:
            found = bob_mcp.call_tool("search_memory", {"query": "cello"})
        except httpx.TimeoutException:
            pytest.fail(f"search_memory waited over {DEADLINE:g} s behind saves waiting on a lock")
        assert [m["text"] for m in found["structuredContent"]["results"]] == ["Plays the cello"]
    finally:
        holder.rollback()
        holder.close()
        for thread in waiting:
            thread.join(DEADLINE)
        sa.event.remove(server.engine, "before_cursor_execute", count_writes)


def lock_waiters(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()


@pytest.mark.one_database
def test_tool_calls_queue_for_the_tool_threads_unless_they_wait_on_another_service(database_url: str) -> None:
    """What the tests above rely on: with the local model (or none) a tool call's work is this
    process's CPU and queues for the tool threads; with a remote embeddings provider it is not."""
    from jean_memory.db.engine import create_engine
    from jean_memory.mcp_server.tools import ToolSet
    from jean_memory.memory.remote_embeddings import OpenAICompatibleEmbedder
    from jean_memory.memory.service import MemoryService
    from jean_memory.observability.metrics import Metrics

    engine = create_engine(database_url)
    try:
        local = ToolSet(MemoryService(engine, None), "https://memory.example", Metrics())
        remote = ToolSet(
            MemoryService(engine, OpenAICompatibleEmbedder(base_url="http://127.0.0.1:9/v1", model="m")),
            "https://memory.example",
            Metrics(),
        )
        assert local._run is tool_threads.run_tool_work
        assert remote._run is off_loop.run_db
    finally:
        engine.dispose()
