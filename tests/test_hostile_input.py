"""Input a fuzzer or an attacker sends at every door: malformed URLs, text that is not Unicode,
OPTIONS with a body, values that would forge a log line or put words on our pages, and floods
of anonymous requests. Each answers with the standard's error and leaves nothing behind."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from starlette.routing import Mount, Route

from jean_memory import clock
from jean_memory.accounts.api_keys import create_api_key
from jean_memory.app import build_app
from jean_memory.db import rate_limits
from jean_memory.db.rate_limits import AUTHORIZE_REQUESTS, REVOCATIONS
from jean_memory.db.tables import authorization_requests, oauth_clients
from tests.support.oauth import CLAUDE_REGISTRATION, FORM_HEADERS, McpHttp, new_flow, surrogate_multipart
from tests.support.rate_windows import to_window_start
from tests.support.servers import RunningServer, threaded_server

LOOPBACK_REGISTRATION = {
    "client_name": "Local app",
    "redirect_uris": ["http://127.0.0.1/callback"],
    "token_endpoint_auth_method": "none",
}


def count(server: RunningServer, table: sa.Table) -> int:
    with server.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def assert_page(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert "location" not in response.headers
    assert "text/html" in response.headers["content-type"]
    return response.text


# --- OPTIONS never runs an endpoint (issue 18, defect 7) -------------------------------------


def route_paths(server: RunningServer) -> list[str]:
    """Every route of the app the server runs, with its path parameters filled in."""
    app = build_app(server.settings.with_overrides(embeddings="none"), server.engine, migrate=False)
    paths = []
    for route in app.routes:
        if isinstance(route, Route):
            paths.append(route.path.replace("{client_name}", "claude").replace("{user_id}", "someone"))
        elif isinstance(route, Mount):
            paths.append(route.path + "/style.css")
    return paths


def test_options_never_runs_an_endpoint_on_any_route(server):
    """A bare OPTIONS (no preflight headers) carrying a registration body registered a client:
    CORSMiddleware passes what is not a preflight on to the endpoint."""
    paths = route_paths(server)
    assert "/oauth/register" in paths and "/mcp" in paths  # the list is the app's own
    clients, pending = count(server, oauth_clients), count(server, authorization_requests)
    for path in paths:
        response = httpx.request(
            "OPTIONS",
            f"{server.base_url}{path}",
            json=LOOPBACK_REGISTRATION,
            params={"client_id": "x", "response_type": "code"},
        )
        assert response.status_code in (204, 405), (path, response.status_code, response.text[:200])
        assert response.content == b"" or response.status_code == 405, path
        if response.status_code == 204:
            assert "OPTIONS" in response.headers["allow"], path
    assert count(server, oauth_clients) == clients
    assert count(server, authorization_requests) == pending


def test_a_real_preflight_is_still_answered_for_browsers(server):
    response = httpx.options(
        f"{server.base_url}/oauth/token",
        headers={"Origin": "http://localhost:6274", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


# --- malformed URLs (issue 18, defect 1) -----------------------------------------------------


@pytest.mark.parametrize("uri", ["http://[127.0.0.1/callback", "https://app.example:port/cb", "http://]::1[/cb"])
def test_a_malformed_redirect_uri_is_invalid_redirect_uri(server, uri):
    response = httpx.post(f"{server.base_url}/oauth/register", json={**LOOPBACK_REGISTRATION, "redirect_uris": [uri]})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_redirect_uri"


def test_a_malformed_redirect_uri_at_authorize_gets_the_error_page(server):
    flow = new_flow(server.base_url, LOOPBACK_REGISTRATION)
    text = assert_page(flow.authorize(redirect_uri="http://[::1/callback"))
    assert "Redirect address not allowed" in text


def test_a_malformed_resource_is_invalid_target(server):
    flow = new_flow(server.base_url)
    response = flow.authorize(resource="http://[::1/mcp")
    assert response.status_code == 302, response.text[:300]
    assert "error=invalid_target" in response.headers["location"]


@pytest.mark.parametrize("path", ["/mcp", "/mcp/"])
@pytest.mark.parametrize("method", ["POST", "OPTIONS", "GET"])
def test_a_malformed_origin_is_403(server, path, method):
    response = httpx.request(method, f"{server.base_url}{path}", headers={"Origin": "http://[::1"})
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden_origin"


# --- text that is not Unicode (issue 18, defect 3) -------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"client_name": "a\\udfff", "redirect_uris": ["http://127.0.0.1/cb"]}',
        b'{"client_name": "a", "redirect_uris": ["http://127.0.0.1/cb\\ud800"]}',
        b'{"client_name": "a", "redirect_uris": ["http://127.0.0.1/cb"], "x\\udfff": 1}',
    ],
    ids=["client_name", "redirect_uri", "unknown-key"],
)
def test_a_lone_surrogate_in_registration_is_invalid_client_metadata(server, body):
    clients = count(server, oauth_clients)
    response = httpx.post(
        f"{server.base_url}/oauth/register", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_client_metadata"
    assert "Unicode" in response.json()["error_description"]
    assert count(server, oauth_clients) == clients


def test_a_lone_surrogate_in_a_form_is_refused(server):
    flow = new_flow(server.base_url)
    body, headers = surrogate_multipart({"client_id": flow.client_id + "\\udfff", "response_type": "code"})
    assert_page(httpx.post(f"{server.base_url}/oauth/authorize", content=body, headers=headers))
    body, headers = surrogate_multipart(
        {"grant_type": "authorization_code", "code": "c\\udfff", "client_id": flow.client_id}
    )
    response = httpx.post(f"{server.base_url}/oauth/token", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


# --- nothing from outside forges a log line or speaks on our pages (issue 12, 9 and 10) --------


def test_a_newline_in_a_client_id_forges_no_log_line(server, caplog):
    caplog.set_level(logging.INFO, logger="jean_memory")
    forged = "https://app.example/client.json\n2026-01-01 WARNING jean_memory.oauth: admin password reset"
    response = httpx.get(f"{server.base_url}/oauth/authorize", params={"client_id": forged, "response_type": "code"})
    assert_page(response)
    messages = [record.getMessage() for record in caplog.records if record.name.startswith("jean_memory")]
    assert any("app.example" in m for m in messages), messages  # it was logged ...
    assert not any("\n" in m for m in messages), messages  # ... on one line


@pytest.mark.parametrize(
    "client_id,host",
    [
        ("https://evil.example/c.json IMPORTANT: your account was locked. Call +1-555-0100", "evil.example"),
        ("http://evil.example/IMPORTANT:-your-account-was-locked.-Call-+1-555-0100", None),
        ("IMPORTANT: your account was locked. Call +1-555-0100", None),
    ],
    ids=["https-with-text", "http", "not-a-url"],
)
def test_the_error_page_shows_at_most_the_host_of_a_client_id(server, client_id, host):
    text = assert_page(httpx.get(f"{server.base_url}/oauth/authorize", params={"client_id": client_id}))
    assert "IMPORTANT" not in text and "555-0100" not in text
    if host:
        assert host in text


# --- anonymous requests cannot grow the database (issue 12, finding 4) ------------------------


def test_at_most_ten_redirect_uris_per_client(server):
    uris = [f"https://app.example/cb{i}" for i in range(11)]
    response = httpx.post(f"{server.base_url}/oauth/register", json={**LOOPBACK_REGISTRATION, "redirect_uris": uris})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"
    assert "at most 10" in response.json()["error_description"]
    response = httpx.post(
        f"{server.base_url}/oauth/register", json={**LOOPBACK_REGISTRATION, "redirect_uris": uris[:10]}
    )
    assert response.status_code == 201


@pytest.fixture
def short_lived_requests(database_url, tmp_path) -> Iterator[RunningServer]:
    with threaded_server(database_url, tmp_path / "data", authorization_request_seconds=1) as running:
        yield running


def test_expired_authorization_requests_are_swept_within_minutes(short_lived_requests):
    """Sweeping only with the hourly maintenance let an hour of anonymous requests pile up; the
    sweep runs every few minutes, or once per request lifetime when that is shorter."""
    server = short_lived_requests
    flow = new_flow(server.base_url)
    assert flow.authorize().status_code == 200  # the sign-in page: a pending request is stored
    assert count(server, authorization_requests) == 1
    clock.advance(5)
    deadline = time.monotonic() + 10
    while count(server, authorization_requests) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert count(server, authorization_requests) == 0


def test_authorize_is_rate_limited_per_address_after_a_generous_burst(server):
    flow = new_flow(server.base_url)
    to_window_start(AUTHORIZE_REQUESTS)
    for _ in range(AUTHORIZE_REQUESTS.max_count - 1):  # the window's count so far, as if sent
        rate_limits.hit(server.engine, AUTHORIZE_REQUESTS, "127.0.0.1")
    assert flow.authorize().status_code == 200  # the last one the limit allows
    response = flow.authorize()
    assert_page(response, 429)
    assert int(response.headers["retry-after"]) > 0


def test_revocation_is_rate_limited_per_address(server):
    flow = new_flow(server.base_url, CLAUDE_REGISTRATION)
    to_window_start(REVOCATIONS)
    for _ in range(REVOCATIONS.max_count - 1):
        rate_limits.hit(server.engine, REVOCATIONS, "127.0.0.1")
    data = {"token": "whatever", **flow.client_auth()}
    assert httpx.post(f"{server.base_url}/oauth/revoke", data=data, headers=FORM_HEADERS).status_code == 200
    response = httpx.post(f"{server.base_url}/oauth/revoke", data=data, headers=FORM_HEADERS)
    assert response.status_code == 429
    assert response.json()["error"] == "too_many_requests"


def test_a_newline_in_the_legacy_client_name_forges_no_request_log_line(server, alice, caplog):
    """The legacy route takes its client name from the (percent-decoded) path, and the request
    log line names the client: a %0A there started a line of the caller's choosing."""
    caplog.set_level(logging.INFO, logger="jean_memory.http")
    key = create_api_key(server.engine, alice.id)
    url = f"{server.base_url}/mcp/v2/claude%0AERROR%20jean_memory%20forged/{alice.id}"
    mcp = McpHttp(url, None)
    mcp.http.headers["X-Api-Key"] = key
    assert mcp.initialize().status_code == 200
    deadline = time.monotonic() + 5  # the line is written once the answer has gone out
    while not any("forged" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
        time.sleep(0.02)
    lines = [r.getMessage() for r in caplog.records if r.name == "jean_memory.http"]
    assert any("forged" in line for line in lines), lines
    assert not any("\n" in line for line in lines), lines
