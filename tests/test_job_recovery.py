"""Issue 18: what `jean_memory` said it was saving is saved within a minute of a crash, and a
SIGTERM under load leaves no job leased. Real `jean-memory serve` processes, killed for real."""

from __future__ import annotations

import concurrent.futures
import http.server
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import sqlalchemy as sa

from jean_memory.db.engine import create_engine
from jean_memory.db.tables import documents, jobs, memories
from jean_memory.memory.jobs import HEARTBEAT_SECONDS, LEASE_SECONDS, job_slots
from jean_memory.memory.service import INDEX_JOB
from tests.support.oauth import PASSWORD, McpHttp, new_flow
from tests.support.servers import cli_env, free_port, run_cli, wait_until_up
from tests.test_operations import all_texts, distinct_fact, serve_process

pytestmark = pytest.mark.slow

RECOVERY_SECONDS = 60  # the target, from the restart; LEASE_SECONDS is half of it
#: The job lease (and heartbeat, in the product's proportion) of the servers the kill -9 test
#: starts: a killed process's jobs are taken again once their lease lapses, and waiting out the
#: product's 30 s was most of that test's time. That 30 s fits the minute is asserted on its own.
SHORT_LEASE_SECONDS = 3.0


class StandInLlm:
    """An OpenAI-compatible chat endpoint that either holds every request (a job stuck in its
    LLM call, as a crash finds it) or fails at once (the worker then keeps the message's own
    sentences verbatim). Counts the requests it received: one arriving means a job is running."""

    def __init__(self) -> None:
        self.hold = True
        self.received = threading.Semaphore(0)
        self.let_go = threading.Event()
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stand_in.received.release()
                if stand_in.hold:
                    stand_in.let_go.wait(60)
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @contextmanager
    def running(self) -> Iterator[StandInLlm]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.let_go.set()
            self.server.shutdown()
            self.server.server_close()

    def fail_fast(self) -> None:
        self.hold = False
        self.let_go.set()


def saving(answer: dict) -> list[str]:
    """The facts a `jean_memory` answer said it was saving."""
    for part in answer["content"][0]["text"].split("\n\n"):
        if part.startswith("Saving to memory: "):
            return part.removeprefix("Saving to memory: ").split(" | ")
    raise AssertionError(f"not a save: {answer}")


def document(days: int) -> str:
    return "\n\n".join(f"# Day {i}\n\nWatered the tomatoes and the {i % 7} basil pots on day {i}." for i in range(days))


def job_states(database_url: str) -> list[tuple[str, int, float | None]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.select(jobs.c.kind, jobs.c.attempts, jobs.c.locked_until))]
    finally:
        engine.dispose()


def wait_for(condition, seconds: float, what: str) -> float:
    """Poll `condition` until true; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"{what} not within {seconds}s"
        time.sleep(0.2)
    return time.monotonic() - started


def chunks(database_url: str, document_id: str) -> tuple[str, int, int, int]:
    """(status, chunk rows, distinct chunk texts, chunk_count)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows, distinct = conn.execute(
                sa.select(sa.func.count(), sa.func.count(sa.distinct(memories.c.text))).where(
                    memories.c.document_id == document_id
                )
            ).one()
            status, count = conn.execute(
                sa.select(documents.c.status, documents.c.chunk_count).where(documents.c.id == document_id)
            ).one()
        return status, rows, distinct, count
    finally:
        engine.dispose()


def short_lease_serve(env: dict[str, str], port: int) -> subprocess.Popen:
    """`jean-memory serve` as `serve_process` starts it, its job leases SHORT_LEASE_SECONDS long."""
    heartbeat = SHORT_LEASE_SECONDS * HEARTBEAT_SECONDS / LEASE_SECONDS
    code = (
        "import sys; from jean_memory.memory import jobs; "
        f"jobs.LEASE_SECONDS = {SHORT_LEASE_SECONDS}; jobs.HEARTBEAT_SECONDS = {heartbeat}; "
        "from jean_memory.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    command = [sys.executable, "-c", code, "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_up(f"http://127.0.0.1:{port}", process=process)
    return process


def test_saves_promised_before_a_kill_9_are_made_within_a_minute_of_the_restart(database_url, tmp_path):
    """Found by the issue's harness: a job claimed when the process died stayed leased for 300 s,
    so the facts appeared five minutes after the restart, and a document killed halfway had
    half its chunks until then. The servers here lease jobs for SHORT_LEASE_SECONDS; the product's
    lease must leave the restart at least half of the minute."""
    assert LEASE_SECONDS <= RECOVERY_SECONDS / 2
    if job_slots() < 2:
        pytest.skip("needs two job slots (two cores) to hold a save and a document at once")
    with StandInLlm().running() as llm:
        env = cli_env(database_url, tmp_path / "data") | {"JEAN_MEMORY_LLM_BASE_URL": llm.url}
        assert (
            run_cli(["user", "add", "crash@example.com", "--password-stdin"], env, stdin=PASSWORD + "\n").returncode
            == 0
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = short_lease_serve(env, port)
        try:
            token = new_flow(base).tokens("crash@example.com")["access_token"]
            mcp = McpHttp(f"{base}/mcp", token, httpx.Client(timeout=30))
            answer = mcp.call_tool(
                "jean_memory",
                {"user_message": "I live in Porto and I keep bees on the roof.", "is_new_conversation": False},
            )
            promised = saving(answer)
            assert llm.received.acquire(timeout=30), "the save job never reached its LLM call"
            stored = mcp.call_tool(
                "store_document", {"title": "Garden log", "content": document(600), "document_type": "markdown"}
            )
            document_id = stored["structuredContent"]["document_id"]
            wait_for(
                lambda: sorted(attempts for _, attempts, _ in job_states(database_url)) == [1, 1],
                30,
                "both jobs claimed",
            )
            wait_for(lambda: chunks(database_url, document_id)[1] > 0, 60, "the document half indexed")
        finally:
            process.kill()  # kill -9: no shutdown, no release
            process.wait(timeout=30)
        assert chunks(database_url, document_id)[0] == "pending"
        llm.fail_fast()  # after the restart the worker keeps the message's sentences verbatim

        process = short_lease_serve(env, port)
        try:
            mcp = McpHttp(f"{base}/mcp", token, httpx.Client(timeout=30))
            took = wait_for(
                lambda: all(fact in all_texts(mcp) for fact in promised), RECOVERY_SECONDS, "the promised save"
            )
            assert took < RECOVERY_SECONDS
            # The document is taken up again within the minute (a new attempt, or already done);
            # indexing its 600 chunks takes as long as the machine needs, so that gets more room.
            wait_for(
                lambda: (
                    chunks(database_url, document_id)[0] == "ready"
                    or any(kind == INDEX_JOB and attempts >= 2 for kind, attempts, _ in job_states(database_url))
                ),
                RECOVERY_SECONDS,
                "the document taken up again",
            )
            wait_for(lambda: chunks(database_url, document_id)[0] == "ready", 600, "the document indexed")
            _, rows, distinct, count = chunks(database_url, document_id)
            assert rows == distinct == count > 0  # re-run from the start, nothing twice
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_sigterm_under_load_finishes_or_releases_every_job(database_url, tmp_path):
    """A document still indexing when the shutdown grace period ends is released (its lease
    cleared) rather than held until the process is killed; the saves acknowledged during the
    load are all made, after the restart at once."""
    grace = 2
    env = cli_env(database_url, tmp_path / "data") | {"JEAN_MEMORY_SHUTDOWN_SECONDS": str(grace)}
    assert run_cli(["user", "add", "term@example.com", "--password-stdin"], env, stdin=PASSWORD + "\n").returncode == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = serve_process(env, port, stderr=subprocess.DEVNULL)
    token = new_flow(base).tokens("term@example.com")["access_token"]
    mcp = McpHttp(f"{base}/mcp", token, httpx.Client(timeout=30))
    document_id = mcp.call_tool(
        "store_document", {"title": "Long log", "content": document(20000), "document_type": "markdown"}
    )["structuredContent"]["document_id"]
    wait_for(lambda: chunks(database_url, document_id)[1] > 0, 60, "indexing under way")
    acknowledged: list[str] = []
    stop = threading.Event()

    def client(k: int) -> None:
        client_mcp = McpHttp(f"{base}/mcp", token, httpx.Client(timeout=30))
        i = k
        while not stop.is_set():
            try:
                answer = client_mcp.call_tool(
                    "jean_memory", {"user_message": distinct_fact(i), "is_new_conversation": False}
                )
                acknowledged.extend(saving(answer))
            except (httpx.HTTPError, AssertionError, KeyError):
                return  # the server is going away
            i += 8

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, k) for k in range(8)]
        wait_for(lambda: len(acknowledged) >= 20, 60, "saves acknowledged under load")
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
        stopped_after = time.monotonic() - signalled
        stop.set()
        concurrent.futures.wait(futures)
    # uvicorn's grace for requests, then ours for jobs, then the released handler's last batch.
    assert stopped_after < 2 * grace + 10, f"took {stopped_after:.1f}s to stop"
    assert chunks(database_url, document_id)[0] == "pending"  # far from done: it was released
    assert all(locked is None for _, _, locked in job_states(database_url)), job_states(database_url)

    process = serve_process(env, port, stderr=subprocess.DEVNULL)
    try:
        mcp = McpHttp(f"{base}/mcp", token, httpx.Client(timeout=30))
        wait_for(lambda: not set(acknowledged) - set(all_texts(mcp)), LEASE_SECONDS / 2, "the acknowledged saves")
        # Taken again at once: the released document is re-indexed from the start.
        wait_for(lambda: job_states(database_url) and job_states(database_url)[0][2] is not None, 10, "re-claim")
    finally:
        process.terminate()
        process.wait(timeout=60)
