"""What an operator relies on: health, readiness, metrics, request logs, key rotation, and a
graceful shutdown that loses nothing acknowledged."""

import concurrent.futures
import json
import logging
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from jean_memory.accounts.users import create_user
from tests.support.oauth import PASSWORD, McpHttp, new_flow, parse_form
from tests.support.rate_windows import to_window_start
from tests.support.servers import TEST_SECRET, cli_env, free_port, run_cli, threaded_server, wait_until_up


def test_health_and_readiness(server):
    assert httpx.get(f"{server.base_url}/healthz").text == "ok"
    ready = httpx.get(f"{server.base_url}/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert set(body["checks"]) == {"database", "migrations", "embeddings"}


def test_metrics_are_off_by_default(server):
    assert httpx.get(f"{server.base_url}/metrics").status_code == 404


def test_metrics_count_requests_tools_tokens_and_failed_sign_ins(database_url, tmp_path):
    with threaded_server(database_url, tmp_path / "d", metrics_enabled=True) as running:
        user = create_user(running.engine, "m@example.com", PASSWORD)
        flow = new_flow(running.base_url)
        flow.sign_in(flow.authorize(), user.email, "wrong password")
        tokens = flow.tokens(user.email)
        mcp = McpHttp(running.mcp_url, tokens["access_token"])
        mcp.call_tool("add_memories", {"text": "Counted fact"})
        mcp.call_tool("delete_memory", {"memory_id": "missing"})
        text = httpx.get(f"{running.base_url}/metrics").text
    assert 'jean_memory_tool_calls_total{outcome="ok",tool="add_memories"} 1.0' in text
    assert 'jean_memory_tool_calls_total{outcome="tool_error",tool="delete_memory"} 1.0' in text
    assert 'jean_memory_tokens_issued_total{grant_type="authorization_code"} 1.0' in text
    assert "jean_memory_sign_in_failures_total 1.0" in text
    assert 'jean_memory_http_requests_total{method="POST",route="/oauth/token",status="200"}' in text


def test_made_up_methods_share_one_metrics_label(database_url, tmp_path):
    """Each method name a client invented used to become a series of its own, for good.
    A request is counted after its response is sent, so the count is awaited, not read once
    (read once, it missed the fifth request under load)."""
    series = 'jean_memory_http_requests_total{method="other",route="unmatched",status="404"} 5.0'
    with threaded_server(database_url, tmp_path / "d", metrics_enabled=True) as running:
        for i in range(5):
            httpx.request(f"MADEUP{i}", f"{running.base_url}/nowhere")
        wait_for(lambda: series in httpx.get(f"{running.base_url}/metrics").text, "the fifth request counted")
        text = httpx.get(f"{running.base_url}/metrics").text
    assert "MADEUP" not in text and series in text


def test_sign_in_failures_from_one_ipv6_network_count_together(database_url, tmp_path):
    """An IPv6 client holds a whole /64: rotating the address within it used to dodge the limit."""
    from jean_memory.db.rate_limits import SIGN_IN_FAILURES

    to_window_start(SIGN_IN_FAILURES)
    with threaded_server(database_url, tmp_path / "d", trusted_proxies=("127.0.0.1",)) as running:
        user = create_user(running.engine, "v6@example.com", PASSWORD)
        flow = new_flow(running.base_url)
        statuses = []
        for i in range(SIGN_IN_FAILURES.max_count + 1):
            page = flow.authorize()
            form = parse_form(page.text)
            response = flow.http.post(
                f"{running.base_url}{form['action']}",
                data={**form["fields"], "email": user.email, "password": "wrong password"},
                headers={"X-Forwarded-For": f"2001:db8:1:2::{i + 1:x}"},
            )
            statuses.append(response.status_code)
    assert statuses[:-1] == [400] * SIGN_IN_FAILURES.max_count
    assert statuses[-1] == 429


def test_one_log_line_per_request_with_ids_and_no_secrets(server, alice, caplog):
    caplog.set_level(logging.INFO, logger="jean_memory.http")
    flow = new_flow(server.base_url)
    params = flow.get_code(alice.email)
    tokens = flow.exchange(params["code"]).json()
    response = McpHttp(server.mcp_url, tokens["access_token"]).rpc("tools/list", {}, **{"X-Request-ID": "req-12345678"})
    assert response.headers["x-request-id"] == "req-12345678"
    deadline = time.monotonic() + 5  # the server thread logs right after it has answered
    while not any(getattr(r, "request_id", "") == "req-12345678" for r in caplog.records):
        assert time.monotonic() < deadline, "no log line for the MCP request"
        time.sleep(0.02)
    lines = [r for r in caplog.records if r.name == "jean_memory.http"]
    mcp_line = next(r for r in lines if r.route == "/mcp" and r.request_id == "req-12345678")
    assert mcp_line.user_id == alice.id and mcp_line.client_id == flow.client_id and mcp_line.status == 200
    token_line = next(r for r in lines if r.route == "/oauth/token")
    assert token_line.client_id == flow.client_id
    everything = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (
        params["code"],
        tokens["access_token"],
        tokens["refresh_token"],
        PASSWORD,
        flow.registration["client_secret"],
    ):
        assert secret not in everything


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def serve_process(env: dict[str, str], port: int, stderr: Any = subprocess.PIPE) -> subprocess.Popen:
    """`jean-memory serve` as its own process, once it answers; stderr (the log) to read after."""
    command = [sys.executable, "-m", "jean_memory.cli", "serve", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    wait_until_up(f"http://127.0.0.1:{port}", process=process)
    return process


def test_json_log_lines(database_url, tmp_path):
    env = cli_env(database_url, tmp_path / "data") | {"JEAN_MEMORY_LOG_FORMAT": "json"}
    port = free_port()
    process = serve_process(env, port)
    try:
        httpx.get(f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    request = next(e for e in entries if e.get("route") == "/.well-known/oauth-authorization-server")
    assert request["status"] == 200 and request["method"] == "GET" and request["request_id"]


def test_the_served_log_has_exactly_one_line_per_request(database_url, tmp_path):
    """`jean-memory serve` as an operator runs it: while it answers, each request is one line
    (the MCP SDK's own per-request INFO chatter, "Terminating session: None", must not double it)."""
    env = cli_env(database_url, tmp_path / "data") | {"JEAN_MEMORY_EMBEDDINGS": "none"}
    assert run_cli(["user", "add", "logs@example.com", "--password-stdin"], env, stdin=PASSWORD + "\n").returncode == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"  # a file, so the test can read the log while the server runs
    with log.open("w") as log_file:
        process = serve_process(env, port, stderr=log_file)
        try:
            token = new_flow(base).tokens("logs@example.com")["access_token"]
            mcp = McpHttp(f"{base}/mcp", token)
            mcp.call_tool("add_memories", {"text": "I keep bees on the roof"})
            mcp.call_tool("search_memory", {"query": "bees"})
            assert mcp.rpc("tools/list", {}).status_code == 200
            # The last request's line is written right after its answer: wait until it is there.
            wait_for(lambda: len(mcp_lines(log.read_text())) >= 3, "the third /mcp log line")
        finally:
            process.terminate()
            process.wait(timeout=30)
    lines = log.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if "jean_memory.http" in line)
    stop = next(i for i, line in enumerate(lines) if "Shutting down" in line)
    serving = lines[first:stop]
    assert serving and all("jean_memory.http" in line for line in serving), "\n".join(serving)
    assert len(mcp_lines("\n".join(serving))) == 3


def mcp_lines(log: str) -> list[str]:
    """The request log's lines for `/mcp`."""
    return [line for line in log.splitlines() if "jean_memory.http" in line and " /mcp " in line]


def test_rotating_the_key_logs_nobody_out(database_url, tmp_path):
    issuer = "http://memory.localhost"  # one issuer for the three servers, as behind one proxy
    with threaded_server(database_url, tmp_path / "d", issuer=issuer) as old:
        user = create_user(old.engine, "rot@example.com", PASSWORD)
        flow = new_flow(old.base_url)
        tokens = flow.exchange(flow.get_code(user.email, resource=f"{issuer}/mcp")["code"]).json()
    new_key = "a-brand-new-signing-key-0123456789abcdef0123456789"
    rotated = {"issuer": issuer, "jwt_secret_key": new_key, "jwt_secret_key_previous": TEST_SECRET}
    with threaded_server(database_url, tmp_path / "d", **rotated) as server:
        assert McpHttp(server.mcp_url, tokens["access_token"]).initialize().status_code == 200
    with threaded_server(database_url, tmp_path / "d", issuer=issuer, jwt_secret_key=new_key) as server:
        assert McpHttp(server.mcp_url, tokens["access_token"]).initialize().status_code == 401


@pytest.mark.slow
def test_sigterm_during_a_burst_loses_nothing_acknowledged(database_url, tmp_path):
    env = cli_env(database_url, tmp_path / "data")
    assert run_cli(["user", "add", "burst@example.com", "--password-stdin"], env, stdin=PASSWORD + "\n").returncode == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen:
        return serve_process(env, port, stderr=subprocess.DEVNULL)

    process = start()
    flow = new_flow(base)
    token = flow.tokens("burst@example.com")["access_token"]
    acknowledged: list[str] = []

    def save(i: int) -> None:
        mcp = McpHttp(f"{base}/mcp", token, httpx.Client(timeout=30))
        text = distinct_fact(i)
        try:
            if i % 2:
                result = mcp.call_tool("add_memories", {"text": text})
                ok = not result["isError"]
            else:  # queued by jean_memory, saved after the answer
                result = mcp.call_tool("jean_memory", {"user_message": text, "is_new_conversation": False})
                ok = "Saving to memory" in result["content"][0]["text"]
        except (httpx.HTTPError, AssertionError, KeyError):
            return  # not acknowledged: the server was going away
        if ok:
            acknowledged.append(text)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(save, i) for i in range(120)]
        # Mid-burst: some saves answered, the rest still to come or in flight.
        wait_for(lambda: len(acknowledged) >= 8, "the first acknowledged saves", timeout=60)
        assert not all(f.done() for f in futures), "the burst ended before the signal"
        process.send_signal(signal.SIGTERM)
        concurrent.futures.wait(futures)
    # uvicorn finishes in-flight requests and our lifespan drains queued saves, then re-raises
    # the signal so the exit status still says "terminated".
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    assert acknowledged, "nothing was acknowledged before the signal"

    process = start()
    try:
        mcp = McpHttp(f"{base}/mcp", token)
        deadline = time.monotonic() + 60
        while True:
            texts = all_texts(mcp)
            missing = [a for a in acknowledged if a not in texts]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged memories lost"
    finally:
        process.terminate()
        process.wait(timeout=30)


WORDS = (
    "violin harbour quantum tulip granite saffron glacier lantern orchard comet velvet canyon bamboo "
    "falcon meadow cobalt ember thimble walrus origami nebula pepper quartz fjord mosaic tundra cactus "
    "lagoon maple sonnet beacon puzzle summit cello otter prism garnet kayak truffle mango anvil"
).split()


def distinct_fact(i: int) -> str:
    """Sentences far apart in meaning, so near-duplicate merging (cosine >= 0.95) never joins two."""
    rng = random.Random(i)
    return f"I remember that {' '.join(rng.sample(WORDS, 6))} matters to me ({i})."


def all_texts(mcp: McpHttp) -> list[str]:
    texts, cursor = [], None
    while True:
        page = mcp.call_tool("list_memories", {"limit": 100, **({"cursor": cursor} if cursor else {})})
        texts += [m["text"] for m in page["structuredContent"]["results"]]
        cursor = page["structuredContent"].get("next_cursor")
        if not cursor:
            return texts
