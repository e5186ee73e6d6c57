"""The MCP endpoint as a protected resource (RFC 6750 §3, RFC 9728 §5.1, MCP authorization spec)
and its transport details (Streamable HTTP, CORS, Origin, body limits)."""

import hashlib
import hmac
import json
import logging
import math
import socket
import time
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp.shared.exceptions import MCPError
from mcp.types import METHOD_NOT_FOUND

from jean_memory import clock
from jean_memory.oauth.jwt_tokens import InvalidAccessToken, verify_access_token
from tests.support.oauth import McpHttp, new_flow
from tests.support.sdk_client import Browser, MemoryTokenStorage, WireLog, sdk_client, sdk_provider
from tests.support.servers import TEST_SECRET


@pytest.fixture
def tokens(server, alice):
    return new_flow(server.base_url).tokens(alice.email)


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def forge(server, claims: dict, key: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def test_unauthenticated_probe_gets_401_with_resource_metadata_and_no_error(server):
    response = McpHttp(server.mcp_url, None).initialize()
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{server.base_url}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert 'scope="memory"' in challenge
    assert "error=" not in challenge  # RFC 6750 §3.1: no error code when no token was sent


@pytest.mark.parametrize("path", ["/mcp", "/mcp/"])
def test_both_spellings_answer_without_redirect(server, tokens, path):
    no_token = httpx.post(server.base_url + path, json={})
    assert no_token.status_code == 401
    ok = McpHttp(server.base_url + path, tokens["access_token"]).initialize()
    assert ok.status_code == 200


def test_initialize_answers_the_requested_version(server, tokens):
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    for version in ("2025-03-26", "2025-06-18", "2025-11-25"):
        assert mcp.initialize(version).json()["result"]["protocolVersion"] == version


def test_missing_protocol_version_header_is_accepted(server, tokens):
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    response = mcp.rpc("tools/list", {})
    assert response.status_code == 200
    assert response.json()["result"]["tools"]


def bad_tokens(server, good: str) -> dict[str, str]:
    claims = claims_of(good)
    now = int(time.time())
    header, payload, signature = good.split(".")
    tampered_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"memory"', b'"memorx"')
    ).decode()
    return {
        "tampered": f"{header}.{tampered_payload}.{signature}",
        "expired": forge(server, {**claims, "iat": now - 7200, "exp": now - 3600}),
        "no_exp": forge(server, {k: v for k, v in claims.items() if k != "exp"}),
        "alg_none": jwt.encode(claims, None, algorithm="none"),
        "wrong_key": forge(server, claims, key="another-secret-key-0123456789abcdef0123456789"),
        "wrong_aud": forge(server, {**claims, "aud": "https://other.example.com/mcp"}),
        "wrong_iss": forge(server, {**claims, "iss": "https://other.example.com"}),
        "hs512": forge(server, claims, key=TEST_SECRET * 2, algorithm="HS512"),
        "garbage": "not-a-jwt",
    }


@pytest.mark.parametrize(
    "kind", ["tampered", "expired", "no_exp", "alg_none", "wrong_key", "wrong_aud", "wrong_iss", "hs512", "garbage"]
)
def test_bad_tokens_get_401_invalid_token(server, tokens, kind):
    token = bad_tokens(server, tokens["access_token"])[kind]
    response = McpHttp(server.mcp_url, token).initialize()
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge
    assert "resource_metadata=" in challenge


def test_token_expires_by_the_server_clock(server, tokens):
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    assert mcp.initialize().status_code == 200
    clock.advance(3601)
    assert mcp.initialize().status_code == 401


def test_token_in_query_string_is_not_accepted(server, tokens):
    response = httpx.post(
        server.mcp_url,
        params={"access_token": tokens["access_token"]},
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={"Accept": "application/json, text/event-stream"},
    )
    assert response.status_code == 401


def test_token_without_memory_scope_gets_403_insufficient_scope(server, tokens):
    claims = claims_of(tokens["access_token"])
    token = forge(server, {**claims, "scope": "offline_access"})
    response = McpHttp(server.mcp_url, token).initialize()
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_foreign_origin_is_403(server, tokens):
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    for origin in ("https://evil.example.com", "null", "http://localhost.evil.example.com"):
        assert mcp.rpc("ping", {}, Origin=origin).status_code == 403
    assert mcp.rpc("ping", {}, Origin=server.settings.issuer).status_code == 200


def test_loopback_browser_origin_gets_cors_headers_even_on_401(server):
    origin = "http://localhost:6274"
    preflight = httpx.options(
        server.mcp_url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, mcp-protocol-version",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    allowed = [h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")]
    assert "authorization" in allowed and "mcp-protocol-version" in allowed
    unauthorized = McpHttp(server.mcp_url, None).rpc("ping", {}, Origin=origin)
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == origin
    assert "WWW-Authenticate" in unauthorized.headers["access-control-expose-headers"]


def test_body_over_10_mib_is_413(server, tokens):
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    big = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "add_memories", "arguments": {"text": "x" * (11 * 1024 * 1024)}},
    }
    response = mcp.post(big)
    assert response.status_code == 413


def test_malformed_json_is_a_parse_error(server, tokens):
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    response = mcp.http.post(mcp.url, content=b"{not json", headers=mcp.headers())
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32700


def test_unknown_method_is_method_not_found(server, tokens):
    response = McpHttp(server.mcp_url, tokens["access_token"]).rpc("no/such/method", {})
    assert response.json()["error"]["code"] == -32601


def test_get_and_delete_are_405_once_authenticated(server, tokens):
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    assert mcp.http.get(mcp.url, headers=mcp.headers()).status_code == 405
    assert mcp.http.delete(mcp.url, headers=mcp.headers()).status_code == 405
    assert httpx.get(server.mcp_url).status_code == 401


def test_content_type_is_compared_without_regard_to_case(server, tokens):
    """RFC 9110 §8.3.1: media types are case-insensitive (the SDK answered 415 to this)."""
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {**mcp.headers(), "Content-Type": "Application/JSON; charset=UTF-8"}
    response = mcp.http.post(mcp.url, content=json.dumps(body), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["tools"]


def test_a_session_id_this_server_never_issued_gets_404(server, tokens):
    """CONTRACT: a session id unknown to an instance gets 404, and the client starts a new
    session. This server is stateless and issues none, so every id is unknown (it used to be
    ignored with a 200)."""
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    response = mcp.rpc("tools/list", {}, **{"Mcp-Session-Id": "0123456789abcdef"})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Session not found"
    started = mcp.initialize()
    assert started.status_code == 200 and "mcp-session-id" not in started.headers
    assert mcp.rpc("tools/list", {}).status_code == 200


def test_refreshed_token_continues_the_conversation(server, alice):
    """Stateless transport: each request carries everything, so a refreshed token just works."""
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    mcp.call_tool("add_memories", {"text": "Lives in Lisbon"})
    mcp.token = flow.refresh(tokens["refresh_token"]).json()["access_token"]
    assert mcp.call_tool("search_memory", {"query": "Lisbon"})["structuredContent"]["results"]


def sign_raw(payload: bytes, key: str = TEST_SECRET) -> str:
    """An HS256 token over exactly these payload bytes (JSON that json.dumps would not write)."""
    encode = jwt.utils.base64url_encode
    signing_input = encode(b'{"alg":"HS256","typ":"JWT"}') + b"." + encode(payload)
    signature = hmac.new(key.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + encode(signature)).decode()


def with_claim(claims: dict, name: str, raw_value: str) -> bytes:
    """The claims as JSON, with `name` set to the JSON text `raw_value` (NaN, 1e400, ...)."""
    body = json.dumps({**claims, name: "__placeholder__"})
    return body.replace('"__placeholder__"', raw_value).encode()


ODD_CLAIMS = [
    # Times: only integers in a datetime's range (JSON also allows NaN, Infinity, 1e400, booleans).
    ("exp", "NaN"),
    ("exp", "Infinity"),
    ("exp", "-Infinity"),
    ("exp", "1e400"),
    ("exp", "1" + "0" * 5000),  # past Python's int-parsing digit limit
    ("exp", "10000000000000000000000000000000"),
    ("exp", '"9999999999"'),
    ("exp", "true"),
    ("exp", "null"),
    ("exp", "9999999999.5"),
    ("exp", "[9999999999]"),
    ("iat", "NaN"),
    ("iat", "Infinity"),
    ("iat", '"now"'),
    ("iat", "-1"),
    ("iat", "99999999999"),  # after exp
    ("nbf", "Infinity"),
    ("nbf", "NaN"),
    ("nbf", '"soon"'),
    # Text claims: strings, valid Unicode, no NUL.
    ("sub", "12345"),
    ("sub", '["a"]'),
    ("sub", "null"),
    ("sub", '"\\udfff"'),
    ("sub", '"a\\u0000"'),
    ("sid", "7"),
    ("sid", '{"id": 1}'),
    ("sid", '"\\ud800"'),
    ("scope", '["memory"]'),
    ("scope", "1"),
    ("client_id", "1"),
    ("client", "{}"),
    ("email", "[]"),
    ("jti", "false"),
    ("aud", "5"),
    ("iss", "[]"),
]


@pytest.mark.parametrize(("name", "raw_value"), ODD_CLAIMS, ids=[f"{n}={v[:20]}" for n, v in ODD_CLAIMS])
def test_a_signed_token_with_an_odd_claim_gets_401_never_an_error(server, tokens, name, raw_value):
    """Issue 18, defect 4: only the key's holder can sign these, but the verifier must answer
    401 to any of them, never raise (a NaN `exp` answered 500)."""
    claims = claims_of(tokens["access_token"])  # the real, live grant: only the odd claim is wrong
    response = McpHttp(server.mcp_url, sign_raw(with_claim(claims, name, raw_value))).initialize()
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"12", b"null", b"{", b"\xff\xfe"])
def test_a_signed_token_whose_payload_is_not_an_object_gets_401(server, payload):
    response = McpHttp(server.mcp_url, sign_raw(payload)).initialize()
    assert response.status_code == 401, response.text


def test_the_raw_signer_makes_tokens_the_server_accepts(server, tokens):
    """So a 401 above is about the odd claim, not the way the test signs."""
    claims = claims_of(tokens["access_token"])
    assert McpHttp(server.mcp_url, sign_raw(json.dumps(claims).encode())).initialize().status_code == 200


ODD_VALUES = st.sampled_from(
    [math.nan, math.inf, -math.inf, 1e308, -1.0, 0.5, 2**64, -(2**63), True, False, None, "", "\udfff", "a\x00", [], {}]
)
JSON_VALUES = ODD_VALUES | st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
CLAIM_NAMES = st.sampled_from(["exp", "iat", "nbf", "iss", "aud", "sub", "jti", "sid", "scope", "client_id", "email"])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(changes=st.dictionaries(CLAIM_NAMES, JSON_VALUES, min_size=1, max_size=2))
def test_the_verifier_answers_any_signed_claims_with_claims_or_invalid_token(changes):
    """Property: whatever a signed token's claims hold, the verifier returns claims or raises
    InvalidAccessToken, nothing else (no server: the pure function)."""
    issuer, now = "https://memory.example.com", int(time.time())
    claims = {
        "iss": issuer,
        "aud": issuer + "/mcp",
        "sub": "a" * 32,
        "sid": "b" * 32,
        "jti": "c" * 32,
        "iat": now,
        "exp": now + 60,
        "scope": "memory",
        "client_id": "jmc_x",
        **changes,
    }
    token = sign_raw(json.dumps(claims).encode())
    try:
        verified = verify_access_token(token, secrets=(TEST_SECRET,), issuer=issuer, audience=issuer + "/mcp")
    except InvalidAccessToken:
        return
    assert isinstance(verified.sub, str) and isinstance(verified.grant_id, str) and type(verified.exp) is int


# --- a client that goes away, and what the server does not serve (issue 18, defects 5 and 6) --------


@pytest.fixture
def server_log(caplog):
    """Every record of the server thread, uvicorn's own included: uvicorn's loggers do not
    propagate to the root logger that caplog listens on, and "Exception in ASGI application"
    is logged there."""
    caplog.set_level(logging.INFO)
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.addHandler(caplog.handler)
    yield caplog
    uvicorn_logger.removeHandler(caplog.handler)


def send_raw(server, request: bytes) -> bytes:
    """Send `request` bytes as they are, stop sending (the client is gone) and read what comes back."""
    address = urlsplit(server.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=15) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def access_line(
    caplog, method: str, route: str, timeout: float = 10.0, skip_status: int | None = None
) -> logging.LogRecord:
    """The request log's record for `method route`, once the server has written it; with
    `skip_status`, the first one of another status (the `tokens` fixture's own POST /oauth/token
    may be logged a moment after its answer reached the client, inside the test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in list(caplog.records):
            if record.name == "jean_memory.http" and (getattr(record, "route", None), record.method) == (route, method):
                if skip_status is not None and record.status == skip_status:
                    continue
                return record
        time.sleep(0.02)
    raise AssertionError(f"no access line for {method} {route}: {[r.getMessage() for r in caplog.records]}")


def no_errors(caplog) -> None:
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not problems, [f"{r.name}: {r.getMessage()}" for r in problems]


def cut_short(path: str, content_type: str, token: str | None = None) -> bytes:
    authorization = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}Content-Type: {content_type}\r\n"
        "Accept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n0123456789"
    ).encode()


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/oauth/token", "application/x-www-form-urlencoded"),
        ("/oauth/revoke", "application/x-www-form-urlencoded"),
        ("/oauth/authorize", "application/x-www-form-urlencoded"),
        ("/oauth/register", "application/json"),
        ("/mcp", "application/json"),
        ("/mcp/", "application/json"),
    ],
)
def test_a_client_that_hangs_up_mid_body_is_499_at_info_without_a_traceback(
    server, tokens, server_log, path, content_type
):
    """Issue 18 defect 5: Content-Length 1000, ten bytes, then the client is gone. It was an ERROR
    traceback and a 500 in the access log (inside the SDK, "Error handling POST request")."""
    token = tokens["access_token"] if path.startswith("/mcp") else None
    assert send_raw(server, cut_short(path, content_type, token)) == b""  # nobody left to answer
    record = access_line(server_log, "POST", path, skip_status=200)
    assert record.status == 499 and record.levelno == logging.INFO
    no_errors(server_log)


def test_an_invalid_chunked_mcp_body_is_uvicorns_400_and_no_error_of_ours(server, tokens, server_log):
    """uvicorn answers the broken chunk 400 and closes; the SDK then logged the body it could not
    read as an ERROR."""
    request = (
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {tokens['access_token']}\r\nContent-Type: application/json\r\n"
        "Accept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n"
    ).encode()
    assert send_raw(server, request).startswith(b"HTTP/1.1 400 ")
    assert access_line(server_log, "POST", "/mcp").status == 499
    no_errors(server_log)


UNSERVED = {
    "prompts/list": {},
    "prompts/get": {"name": "anything"},
    "resources/list": {},
    "resources/read": {"uri": "test://static-text"},
    "resources/templates/list": {},
}


def test_prompts_and_resources_are_neither_advertised_nor_served(server, tokens, server_log):
    """Issue 18 defect 6: `prompts/get` answered JSON-RPC error code 0 with an ERROR traceback,
    and `initialize` advertised prompts and resources, which this server has none of."""
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    capabilities = mcp.initialize().json()["result"]["capabilities"]
    assert set(capabilities) == {"tools"}
    for method, params in UNSERVED.items():
        error = mcp.rpc(method, params).json()["error"]
        assert (error["code"], error["message"], error.get("data")) == (-32601, "Method not found", method)
    assert mcp.rpc("tools/list", {}).json()["result"]["tools"]
    no_errors(server_log)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_sdk_client_sees_tools_only_and_method_not_found_for_prompts_and_resources(server, alice):
    async with httpx.AsyncClient(timeout=15) as http:
        browser = Browser(http=http, email=alice.email)
        provider = sdk_provider(server.mcp_url, MemoryTokenStorage(), browser)
        async with sdk_client(server.mcp_url, provider, WireLog()) as client:
            capabilities = client.server_capabilities
            assert capabilities.tools is not None
            assert capabilities.prompts is None and capabilities.resources is None
            calls = {
                "prompts/list": client.list_prompts,
                "prompts/get": lambda: client.get_prompt("anything"),
                "resources/list": client.list_resources,
                "resources/read": lambda: client.read_resource("test://static-text"),
                "resources/templates/list": client.list_resource_templates,
            }
            for method, call in calls.items():
                with pytest.raises(MCPError) as refused:
                    await call()
                assert refused.value.error.code == METHOD_NOT_FOUND, (method, refused.value.error)
            assert (await client.list_tools()).tools
