"""RFC 7591 dynamic client registration, with the redirect-URI rules of PROTOCOL.md."""

import httpx
import pytest

from tests.support.oauth import CLAUDE_REGISTRATION
from tests.support.rate_windows import to_window_start


def register(server, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.base_url}/oauth/register", json=body, **kwargs)


def test_claude_registration_gets_a_secret_with_its_expiry(server):
    response = register(server, CLAUDE_REGISTRATION)
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["client_id"]
    assert body["token_endpoint_auth_method"] == "client_secret_post"
    assert body["client_secret"]
    assert body["client_secret_expires_at"] == 0  # RFC 7591 §3.2.1: required with a secret; 0 = never
    assert body["redirect_uris"] == CLAUDE_REGISTRATION["redirect_uris"]
    assert body["grant_types"] == ["authorization_code", "refresh_token"]


def test_public_client_gets_no_secret(server):
    body = register(
        server,
        {
            "client_name": "Claude Code",
            "redirect_uris": ["http://localhost:53682/callback"],
            "token_endpoint_auth_method": "none",
        },
    ).json()
    assert body["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in body
    assert "client_secret_expires_at" not in body


def test_default_auth_method_is_stated(server):
    body = register(server, {"redirect_uris": ["https://app.example.com/cb"]}).json()
    assert body["token_endpoint_auth_method"] == "client_secret_basic"  # RFC 7591 §2 default
    assert body["client_name"] == "app.example.com"


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:33418/",  # VS Code
        "http://localhost:6274/oauth/callback",  # MCP Inspector
        "http://[::1]:8080/callback",
        "cursor://anysphere.cursor-mcp/oauth/callback",  # Cursor
        "https://vscode.dev/redirect",
        "com.example.app:/oauth2redirect",  # RFC 8252 §7.1 private-use scheme
        "https://chatgpt.com/connector_platform_oauth_redirect",
    ],
)
def test_redirect_uris_of_real_clients_are_accepted(server, uri):
    response = register(server, {"client_name": "x", "redirect_uris": [uri], "token_endpoint_auth_method": "none"})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "uri",
    [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "http://evil.example.com/callback",  # plain http off loopback
        "https://app.example.com/cb#fragment",  # RFC 6749 §3.1.2
        "https://claude.ai@evil.example/cb",  # reads like claude.ai, goes to evil.example
        "http://user@127.0.0.1:3000/cb",
        "/relative/callback",
        "file:///etc/passwd",
    ],
)
def test_dangerous_redirect_uris_are_refused(server, uri):
    response = register(server, {"client_name": "x", "redirect_uris": [uri]})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"
    assert response.json()["error_description"]


def test_missing_redirect_uris_is_refused(server):
    response = register(server, {"client_name": "x"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_redirect_uri"


def test_unknown_and_null_fields_are_ignored(server):
    body = {**CLAUDE_REGISTRATION, "logo_uri": None, "software_statement_extra": {"a": 1}, "contacts": None}
    assert register(server, body).status_code == 201


def test_unsupported_auth_method_is_refused(server):
    response = register(
        server, {"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"client_name": ' + b"9" * 5000 + b"}",  # over Python's 4,300-digit limit: was a 500
        b"[" * 30000 + b"]" * 30000,  # deeper than the parser's recursion limit: was a 500
    ],
    ids=["malformed", "huge-number", "deep-nesting"],
)
def test_malformed_json_is_a_metadata_error_not_a_crash(server, body):
    response = httpx.post(
        f"{server.base_url}/oauth/register", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_metadata"


def test_body_over_64_kib_is_refused(server):
    body = {**CLAUDE_REGISTRATION, "client_name": "x" * (65 * 1024)}
    response = register(server, body)
    assert response.status_code == 413


def test_registration_is_allowed_from_browsers(server):
    preflight = httpx.options(
        f"{server.base_url}/oauth/register",
        headers={
            "Origin": "http://localhost:6274",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]


def test_aliases_register_too(server):
    assert httpx.post(f"{server.base_url}/register", json=CLAUDE_REGISTRATION).status_code == 201


def test_a_burst_of_registrations_is_fine_but_a_flood_is_limited(server):
    from jean_memory.db.rate_limits import REGISTRATIONS

    to_window_start(REGISTRATIONS)
    statuses = [register(server, CLAUDE_REGISTRATION).status_code for _ in range(REGISTRATIONS.max_count + 1)]
    assert statuses[: REGISTRATIONS.max_count] == [201] * REGISTRATIONS.max_count
    assert statuses[-1] == 429
