"""Discovery: RFC 8414 authorization-server metadata and RFC 9728 protected-resource metadata.

Most failed connectors fail here (PROTOCOL.md): an issuer with a trailing slash, a resource that
differs from the pasted URL, metadata behind auth. Each check names the clause it enforces.
"""

import httpx
import pytest

from jean_memory.config import ConfigError, validate_issuer

AS_PATHS = [
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/oauth/.well-known/oauth-authorization-server",
]
PR_PATHS = [
    "/.well-known/oauth-protected-resource/mcp",
    "/.well-known/oauth-protected-resource/mcp/",  # RFC 9728 §3.1 path for a pasted `/mcp/`
    "/.well-known/oauth-protected-resource",
]


def test_authorization_server_metadata_is_one_document_at_every_path(server):
    bodies = [httpx.get(server.base_url + path) for path in AS_PATHS]
    assert all(r.status_code == 200 for r in bodies)
    assert len({r.content for r in bodies}) == 1
    doc = bodies[0].json()
    # RFC 8414 §3.3: issuer identical to the URL it was fetched from, byte for byte (no trailing slash).
    assert doc["issuer"] == server.base_url
    assert not doc["issuer"].endswith("/")
    assert doc["authorization_endpoint"] == f"{server.base_url}/oauth/authorize"
    assert doc["token_endpoint"] == f"{server.base_url}/oauth/token"
    assert doc["registration_endpoint"] == f"{server.base_url}/oauth/register"
    assert doc["revocation_endpoint"] == f"{server.base_url}/oauth/revoke"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert doc["response_types_supported"] == ["code"]
    assert set(doc["token_endpoint_auth_methods_supported"]) == {"none", "client_secret_post", "client_secret_basic"}
    assert "offline_access" in doc["scopes_supported"]
    assert doc["authorization_response_iss_parameter_supported"] is True  # RFC 9207
    # CIMD works (tests/test_cimd.py), so it is advertised; with `none` above, Claude picks it.
    assert doc["client_id_metadata_document_supported"] is True


def test_protected_resource_metadata_names_the_pasted_url(server):
    bodies = [httpx.get(server.base_url + path) for path in PR_PATHS]
    assert all(r.status_code == 200 for r in bodies)
    for response in bodies:
        doc = response.json()
        assert doc["resource"] == f"{server.base_url}/mcp"  # RFC 9728 §3.3: equals the resource URL exactly
        assert doc["authorization_servers"] == [server.base_url]
        assert doc["bearer_methods_supported"] == ["header"]
        assert "offline_access" not in doc["scopes_supported"]


def test_metadata_is_reachable_from_browsers(server):
    response = httpx.get(server.base_url + AS_PATHS[0], headers={"Origin": "http://localhost:6274"})
    assert response.headers["access-control-allow-origin"] in ("*", "http://localhost:6274")
    preflight = httpx.options(
        server.base_url + PR_PATHS[0],
        headers={
            "Origin": "http://localhost:6274",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "mcp-protocol-version",
        },
    )
    assert preflight.status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/oauth/register"),
        ("DELETE", "/register"),
        ("GET", "/oauth/token"),  # RFC 6749 §3.2: the client MUST use POST
        ("GET", "/token"),
        ("GET", "/oauth/revoke"),
        ("POST", "/.well-known/oauth-authorization-server"),
        ("DELETE", "/.well-known/oauth-protected-resource/mcp"),
    ],
)
def test_endpoints_answer_only_their_methods(server, method, path):
    """These endpoints used to run their handler for any method: PUT registered a client and a
    GET with a body redeemed a code."""
    response = httpx.request(method, f"{server.base_url}{path}", data={"grant_type": "refresh_token"})
    assert response.status_code == 405
    assert "OPTIONS" in response.headers["allow"]
    assert httpx.head(f"{server.base_url}/.well-known/oauth-authorization-server").status_code == 200


@pytest.mark.parametrize(
    "issuer",
    ["https://memory.example.com/", "https://memory.example.com/base", "ftp://x.example", "https://x.example?a=1"],
)
def test_issuer_with_path_or_trailing_slash_is_refused(issuer):
    with pytest.raises(ConfigError):
        validate_issuer(issuer)


def test_issuer_host_is_lowercased_and_kept_exact():
    assert validate_issuer("https://Memory.Example.com") == "https://memory.example.com"
    assert validate_issuer("http://127.0.0.1:8000") == "http://127.0.0.1:8000"


def test_trusting_every_proxy_is_refused():
    from jean_memory.config import load_settings

    with pytest.raises(ConfigError, match="forge its address"):
        load_settings(env={"JEAN_MEMORY_TRUSTED_PROXIES": "*"})
    assert load_settings(env={"JEAN_MEMORY_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8"}).trusted_proxies == (
        "127.0.0.1",
        "10.0.0.0/8",
    )


@pytest.mark.parametrize("entry", ["localhost", "127.0.0.1:443", "10.0.0.0/99", "proxy.internal"])
def test_a_trusted_proxy_that_is_no_address_is_refused(entry):
    """Such entries used to be accepted and never match: the proxy silently untrusted."""
    from jean_memory.config import load_settings

    with pytest.raises(ConfigError, match="not an IP address or network"):
        load_settings(env={"JEAN_MEMORY_TRUSTED_PROXIES": f"127.0.0.1, {entry}"})
    assert load_settings(env={"JEAN_MEMORY_TRUSTED_PROXIES": "::1, 127.0.0.1/8"}).trusted_proxies == (
        "::1",
        "127.0.0.1/8",
    )


def test_listening_everywhere_without_an_issuer_falls_back_to_loopback():
    from jean_memory.config import load_settings

    assert load_settings(host="0.0.0.0", port=9000, env={}).issuer == "http://127.0.0.1:9000"  # noqa: S104
