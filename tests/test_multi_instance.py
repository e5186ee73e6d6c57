"""Several instances over one database, as behind a load balancer: any instance may answer any
step of the flow, and what one instance does (revocation, writes) the others honour.

Both instances share the issuer a load balancer would present; the test talks to each directly.
"""

import concurrent.futures
import time

import httpx
import pytest
import sqlalchemy as sa

from jean_memory.db.engine import create_engine
from jean_memory.db.tables import refresh_tokens
from tests.conftest import person
from tests.support.oauth import CLAUDE_CALLBACK, Flow, McpHttp, redirect_params
from tests.support.servers import cli_env, server_processes

pytestmark = pytest.mark.slow
ISSUER = "http://memory.localhost"  # http: the test reaches the instances without TLS, so cookies must not be Secure
RESOURCE = f"{ISSUER}/mcp"


@pytest.fixture
def two_instances(database_url, engine, tmp_path):
    env = cli_env(database_url, tmp_path / "data")
    env.update(
        {
            "JEAN_MEMORY_ISSUER": ISSUER,
            "JEAN_MEMORY_REVOCATION_CACHE_SECONDS": "1",
            "JEAN_MEMORY_EMBEDDINGS": "none",  # this is about shared state, not recall
        }
    )
    person(engine, "me@example.com")
    with server_processes(env, 2) as (first, second):
        yield first, second


def registered(base: str, auth_method: str) -> Flow:
    """A client registered on `base`, with a cookie-keeping browser."""
    http = httpx.Client(timeout=60)
    body = {"client_name": "claudeai", "redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": auth_method}
    registration = http.post(f"{base}/oauth/register", json=body).json()
    return Flow(base_url=base, http=http, registration=registration, redirect_uri=CLAUDE_CALLBACK)


def authorize_on(flow: Flow, base: str) -> dict[str, str]:
    flow.base_url = base
    page = flow.authorize(resource=RESOURCE)
    page = flow.sign_in(page, "me@example.com")
    return redirect_params(flow.consent(page))


def test_the_flow_may_hop_between_instances(two_instances):
    first, second = two_instances
    flow = registered(first, "client_secret_post")
    http = flow.http
    params = authorize_on(flow, first)
    assert params["iss"] == ISSUER
    flow.base_url = second
    tokens = flow.exchange(params["code"]).json()  # code from the first, redeemed on the second
    assert tokens["token_type"] == "Bearer"

    clients = [McpHttp(f"{base}/mcp", tokens["access_token"], http) for base in (first, second, first, second)]
    clients[0].call_tool("add_memories", {"text": "Written through the first instance"})
    clients[1].call_tool("add_memories", {"text": "Written through the second instance"})
    for mcp in clients:
        texts = {m["text"] for m in mcp.call_tool("list_memories", {"limit": 10})["structuredContent"]["results"]}
        assert texts == {"Written through the first instance", "Written through the second instance"}

    refreshed_on_second = flow.refresh(tokens["refresh_token"]).json()
    flow.base_url = first
    refreshed_on_first = flow.refresh(refreshed_on_second["refresh_token"]).json()
    assert refreshed_on_first["access_token"]

    # Revoke on the first; the second stops honouring the token within its cache window (1 s here,
    # 30 s by default, 60 s promised).
    live = McpHttp(f"{second}/mcp", refreshed_on_first["access_token"], http)
    assert live.initialize().status_code == 200
    revoke = http.post(
        f"{first}/oauth/revoke", data={"token": refreshed_on_first["refresh_token"], **flow.client_auth()}
    )
    assert revoke.status_code == 200
    assert McpHttp(f"{first}/mcp", refreshed_on_first["access_token"], http).initialize().status_code == 401

    deadline = time.monotonic() + 10
    while live.initialize().status_code != 401:
        assert time.monotonic() < deadline, "the second instance never saw the revocation"
        time.sleep(0.2)


def test_concurrent_refreshes_on_both_instances_leave_one_token_chain(two_instances, database_url):
    first, second = two_instances
    flow = registered(first, "none")
    http = flow.http
    params = authorize_on(flow, first)
    tokens = flow.exchange(params["code"]).json()

    def refresh_at(base: str) -> httpx.Response:
        return httpx.post(
            f"{base}/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": tokens["refresh_token"],
                "client_id": flow.client_id,
            },
            timeout=30,
        )

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(refresh_at, [first, second]))
    assert [a.status_code for a in answers] == [200, 200]  # the second is inside the grace window
    bodies = [answer.json() for answer in answers]
    # One chain (issue 12, finding 5): both answers carry the same successor, not two live ones.
    assert bodies[0]["refresh_token"] == bodies[1]["refresh_token"]
    for body, base in zip(bodies, (second, first), strict=True):
        assert McpHttp(f"{base}/mcp", body["access_token"], http).initialize().status_code == 200
    assert live_refresh_tokens(database_url) == 1
    flow.base_url = second
    assert flow.refresh(bodies[0]["refresh_token"]).status_code == 200
    assert live_refresh_tokens(database_url) == 1


def live_refresh_tokens(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            query = sa.select(sa.func.count()).select_from(refresh_tokens).where(refresh_tokens.c.rotated_at.is_(None))
            return conn.execute(query).scalar_one()
    finally:
        engine.dispose()


def test_200_concurrent_saves_over_both_instances_lose_nothing(two_instances):
    first, second = two_instances
    flow = registered(first, "none")
    http = flow.http
    token = flow.exchange(authorize_on(flow, first)["code"]).json()["access_token"]

    def save(i: int) -> str:
        mcp = McpHttp(f"{(first, second)[i % 2]}/mcp", token, httpx.Client(timeout=60))
        result = mcp.call_tool("add_memories", {"text": f"Concurrent fact number {i} of the load test"})
        assert result["isError"] is False, result
        return result["structuredContent"]["saved"][0]["id"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(save, range(200)))
    assert len(set(ids)) == 200
    mcp = McpHttp(f"{second}/mcp", token, http)
    seen, cursor = set(), None
    while True:
        page = mcp.call_tool("list_memories", {"limit": 100, **({"cursor": cursor} if cursor else {})})
        seen |= {m["id"] for m in page["structuredContent"]["results"]}
        cursor = page["structuredContent"].get("next_cursor")
        if not cursor:
            break
    assert seen == set(ids)
