"""Replays of what real MCP clients send, request by request, against a real server.

Each test is one client's connection as that client makes it: the same requests in the same
order with the same bodies, parameters and headers (user agents included), then the MCP calls
it makes once connected. Sources: PROTOCOL.md's "Who sends what" table, and per client the
comments below. A failure here means that client cannot connect.

CIMD (client ID metadata documents) replays run the flow when our authorization-server metadata
advertises `client_id_metadata_document_supported: true`, as it does.
"""

from __future__ import annotations

import html as html_lib
import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from jean_memory.accounts.users import User
from tests.support.oauth import CLAUDE_CALLBACK, CLAUDE_REGISTRATION, Flow, McpHttp, pkce_pair, redirect_params
from tests.support.servers import RunningServer, free_port

# User agents from anthropics/claude-ai-mcp#82 (a server developer's request logs): claude.ai's
# OAuth calls come from python-httpx, its MCP calls from "Claude-User"; ChatGPT's OAuth calls
# from aiohttp, its MCP calls from "openai-mcp/1.0.0 (ChatGPT)"; Claude Code is "claude-code/...".
CLAUDE_OAUTH_UA = "python-httpx/0.28.1"
CLAUDE_MCP_UA = "Claude-User"
CHATGPT_OAUTH_UA = "Python/3.12 aiohttp/3.13.3"
CHATGPT_MCP_UA = "openai-mcp/1.0.0 (ChatGPT)"
CLAUDE_CODE_UA = "claude-code/2.1.66 (cli)"

CLAUDE_CIMD = "https://claude.ai/oauth/mcp-oauth-client-metadata"
CLAUDE_CODE_CIMD = "https://claude.ai/oauth/claude-code-client-metadata"
CHATGPT_CIMD = "https://chatgpt.com/oauth/client.json"
CHATGPT_CALLBACK = "https://chatgpt.com/connector_platform_oauth_redirect"
CURSOR_CALLBACK = "cursor://anysphere.cursor-mcp/oauth/callback"
VSCODE_LOOPBACK = "http://127.0.0.1:33418/"
VSCODE_WEB = "https://vscode.dev/redirect"
INSPECTOR_ORIGIN = "http://localhost:6274"
INSPECTOR_CALLBACK = "http://localhost:6274/oauth/callback"

MEMORY_TOOLS = {"jean_memory", "add_memories", "search_memory", "list_memories", "delete_memory", "store_document"}
JSON_AND_SSE = "application/json, text/event-stream"
Backend = Callable[..., httpx.Client]  # the `backend` fixture: user agent (+ headers) -> client


# --- the pieces every client does ------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    """The person's browser: its own cookie jar, never following redirects (we read them)."""
    with httpx.Client(timeout=15) as client:
        yield client


@pytest.fixture
def backend() -> Iterator[Backend]:
    """Makes the client's own HTTP stack (its servers, or the app on the person's machine),
    identified by its user agent; closed after the test."""
    clients: list[httpx.Client] = []

    def make(user_agent: str, **headers: str) -> httpx.Client:
        clients.append(httpx.Client(timeout=15, headers={"User-Agent": user_agent, **headers}))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def initialize_params(version: str, name: str, client_version: str) -> dict[str, Any]:
    return {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": name, "version": client_version}}


def discover(http: httpx.Client, mcp_url: str, probe: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The unauthenticated probe, then RFC 9728 and RFC 8414 discovery from its challenge.
    Returns the protected-resource metadata, the authorization-server metadata and the
    challenge's scope."""
    response = http.post(
        mcp_url,
        json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": probe},
        headers={"Accept": JSON_AND_SSE, "Content-Type": "application/json"},
    )
    assert response.status_code == 401, f"the probe must get 401, got {response.status_code}: {response.text[:300]}"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and "error=" not in challenge, challenge
    metadata_url = re.search(r'resource_metadata="([^"]+)"', challenge)
    scope = re.search(r'scope="([^"]+)"', challenge)
    assert metadata_url and scope, challenge

    prm_response = http.get(metadata_url.group(1))
    assert prm_response.status_code == 200, prm_response.text
    prm = prm_response.json()
    assert prm["resource"] == mcp_url
    issuer = prm["authorization_servers"][0]
    as_response = http.get(f"{issuer}/.well-known/oauth-authorization-server")
    assert as_response.status_code == 200, as_response.text
    asm = as_response.json()
    assert asm["issuer"] == issuer
    assert "S256" in asm["code_challenge_methods_supported"]
    return prm, asm, scope.group(1)


def register(http: httpx.Client, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(endpoint, json=body)
    assert response.status_code == 201, response.text
    registration = response.json()
    assert registration["client_id"] and registration["token_endpoint_auth_method"]
    if "client_secret" in registration:
        assert "client_secret_expires_at" in registration
    return registration


def open_authorization(flow: Flow, endpoint: str, **params: str | None) -> httpx.Response:
    """The person's browser opens the authorization URL the client built (PKCE S256)."""
    flow.verifier, flow.challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": flow.client_id,
        "redirect_uri": flow.redirect_uri,
        "code_challenge": flow.challenge,
        "code_challenge_method": "S256",
        **params,
    }
    return flow.http.get(endpoint, params={k: v for k, v in query.items() if v is not None})


def visible_text(html: str) -> str:
    """What a person reads on a page (its <main>), for failure messages."""
    main = html.split("<main", 1)[-1].split("</main>", 1)[0]
    return html_lib.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", main.split(">", 1)[-1])).strip())[:800]


def sign_in_and_approve(flow: Flow, page: httpx.Response, email: str) -> tuple[httpx.Response, str]:
    """The person signs in (when asked) and approves (when asked; a signed-in person who approved
    this client before goes straight back). Returns the redirect back to the client and the
    consent page's text ("" when consent was remembered)."""
    assert page.status_code in (200, 302), f"authorization refused: {page.status_code} {visible_text(page.text)}"
    if page.status_code == 200 and 'name="password"' in page.text:
        page = flow.sign_in(page, email)
    consent_text = ""
    if page.status_code == 200 and 'value="approve"' in page.text:
        consent_text = page.text
        page = flow.consent(page)
    assert page.status_code == 302, f"expected the redirect back, got {page.status_code}: {visible_text(page.text)}"
    return page, consent_text


def callback_params(response: httpx.Response, redirect_uri: str, state: str, issuer: str) -> dict[str, str]:
    """The redirect back to the client: to its redirect URI, with code, its state and our issuer (RFC 9207)."""
    location = response.headers["location"]
    assert location.startswith(redirect_uri + "?"), location
    params = redirect_params(response)
    assert set(params) == {"code", "state", "iss"}, params
    assert params["state"] == state and params["iss"] == issuer
    return params


def token_request(
    http: httpx.Client, endpoint: str, registration: dict[str, Any], fields: dict[str, str]
) -> dict[str, Any]:
    """POST the token endpoint, authenticating as the registration answer said (clients such as
    Claude use whatever it says, whatever they asked for)."""
    method = registration["token_endpoint_auth_method"]
    data = dict(fields)
    auth = None
    if method == "client_secret_basic":
        auth = (registration["client_id"], registration["client_secret"])
    else:
        data["client_id"] = registration["client_id"]
        if method == "client_secret_post":
            data["client_secret"] = registration["client_secret"]
        else:
            assert method == "none", method
    response = http.post(endpoint, data=data, auth=auth)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    tokens = response.json()
    assert tokens["token_type"].lower() == "bearer" and tokens["access_token"]
    assert "memory" in tokens["scope"].split()
    return tokens


def code_exchange(
    http: httpx.Client, endpoint: str, registration: dict[str, Any], flow: Flow, code: str, resource: str | None
) -> dict[str, Any]:
    fields = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": flow.redirect_uri,
        "code_verifier": flow.verifier,
    }
    if resource is not None:
        fields["resource"] = resource
    return token_request(http, endpoint, registration, fields)


def tool_names(mcp: McpHttp, **headers: str) -> set[str]:
    response = mcp.rpc("tools/list", {}, **headers)
    assert response.status_code == 200, response.text
    return {t["name"] for t in response.json()["result"]["tools"]}


def call(mcp: McpHttp, name: str, arguments: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = mcp.rpc("tools/call", {"name": name, "arguments": arguments}, **headers)
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert not result.get("isError"), result
    return result


def mcp_initialize(mcp: McpHttp, params: dict[str, Any]) -> dict[str, Any]:
    """initialize (never with MCP-Protocol-Version: nothing is negotiated yet), then
    notifications/initialized; returns the initialize result."""
    response = mcp.rpc("initialize", params)
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["protocolVersion"] == params["protocolVersion"]
    return result


def initialized(mcp: McpHttp, **headers: str) -> None:
    response = mcp.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, **headers)
    assert response.status_code == 202, response.text


def require_cimd(asm: dict[str, Any]) -> None:
    """Claude and ChatGPT pick CIMD only when the metadata says so (PROTOCOL.md)."""
    assert asm.get("client_id_metadata_document_supported") is True


def save_from_another_client(server: RunningServer, email: str, browser: httpx.Client, text: str) -> str:
    """The person saves a memory through a memory-profile client (say Claude); returns its id."""
    flow = Flow(base_url=server.base_url, http=browser)
    flow.register(CLAUDE_REGISTRATION)
    tokens = flow.tokens(email)
    saved = McpHttp(server.mcp_url, tokens["access_token"]).call_tool("add_memories", {"text": text})
    return saved["structuredContent"]["saved"][0]["id"]


# --- Claude (claude.ai, Claude Desktop and mobile: the same cloud client) ---------------------------


@pytest.mark.parametrize("endpoints", ["from-metadata", "default-paths"])
def test_claude_web_via_dcr(
    server: RunningServer, alice: User, browser: httpx.Client, endpoints: str, backend: Backend
) -> None:
    """claude.ai's custom connector, first connection. Bodies: the DCR body claude.ai sends
    (tests/support/oauth.py CLAUDE_REGISTRATION: client_name "claudeai", client_secret_post,
    scope "claudeai"); protocol 2025-11-25 and clientInfo claude-ai (PROTOCOL.md). claude.ai has
    been seen to call /authorize, /token and /register at the server's root instead of the
    advertised endpoints (anthropics/claude-ai-mcp#82): "default-paths" replays that."""
    mcp_url = server.mcp_url
    oauth = backend(CLAUDE_OAUTH_UA)
    cloud = backend(CLAUDE_MCP_UA)

    # 1-3. Unauthenticated initialize from Claude's cloud, then discovery from the 401.
    _, asm, _ = discover(cloud, mcp_url, initialize_params("2025-11-25", "claude-ai", "0.1.0"))
    issuer = asm["issuer"]
    assert asm["authorization_response_iss_parameter_supported"] is True
    if endpoints == "from-metadata":
        registration_endpoint, authorization_endpoint, token_endpoint = (
            asm["registration_endpoint"],
            asm["authorization_endpoint"],
            asm["token_endpoint"],
        )
    else:
        registration_endpoint, authorization_endpoint, token_endpoint = (
            f"{issuer}/register",
            f"{issuer}/authorize",
            f"{issuer}/token",
        )

    # 4. Dynamic client registration, as claude.ai sends it.
    registration = register(oauth, registration_endpoint, CLAUDE_REGISTRATION)
    assert registration["token_endpoint_auth_method"] == "client_secret_post" and registration["client_secret"]

    # 5. The person's browser: authorize with PKCE, state, scope claudeai and the resource.
    flow = Flow(base_url=server.base_url, http=browser, registration=registration, redirect_uri=CLAUDE_CALLBACK)
    state = secrets.token_urlsafe(32)
    page = open_authorization(flow, authorization_endpoint, state=state, scope="claudeai", resource=mcp_url)
    redirect, consent = sign_in_and_approve(flow, page, alice.email)
    assert "claudeai" in consent and "claude.ai" in consent
    params = callback_params(redirect, CLAUDE_CALLBACK, state, issuer)

    # 6. The code exchange, client_secret_post, with the resource again.
    tokens = code_exchange(oauth, token_endpoint, registration, flow, params["code"], mcp_url)
    assert tokens["refresh_token"] and isinstance(tokens["expires_in"], int)

    # 7. MCP from Claude's cloud: claude.ai has sent requests without MCP-Protocol-Version.
    mcp = McpHttp(mcp_url, tokens["access_token"], cloud)
    result = mcp_initialize(mcp, initialize_params("2025-11-25", "claude-ai", "0.1.0"))
    assert result["serverInfo"]["name"] == "jean-memory"
    initialized(mcp)  # no MCP-Protocol-Version
    assert tool_names(mcp) >= MEMORY_TOOLS  # no MCP-Protocol-Version
    version = {"MCP-Protocol-Version": "2025-11-25"}
    context = call(mcp, "jean_memory", {"user_message": "What do you know about me?", "is_new_conversation": True})
    assert context["content"][0]["type"] == "text"
    saved = call(mcp, "add_memories", {"text": "I am allergic to hazelnuts"}, **version)["structuredContent"]
    found = call(mcp, "search_memory", {"query": "hazelnut allergy"})["structuredContent"]  # no header
    assert found["results"][0]["id"] == saved["saved"][0]["id"]


def test_claude_web_via_cimd(
    server: RunningServer,
    alice: User,
    browser: httpx.Client,
    backend: Backend,
) -> None:
    """claude.ai with a client ID metadata document: no registration; client_id is the URL of
    Claude's document (PROTOCOL.md). Claude picks CIMD only when the metadata has the flag and
    `none`; then it is a public client. The scope is the challenge's (SEP-835 order: the
    WWW-Authenticate scope first)."""
    mcp_url = server.mcp_url
    oauth = backend(CLAUDE_OAUTH_UA)
    cloud = backend(CLAUDE_MCP_UA)
    _, asm, scope = discover(cloud, mcp_url, initialize_params("2025-11-25", "claude-ai", "0.1.0"))
    require_cimd(asm)
    assert "none" in asm["token_endpoint_auth_methods_supported"]
    issuer = asm["issuer"]

    registration = {"client_id": CLAUDE_CIMD, "token_endpoint_auth_method": "none"}
    flow = Flow(base_url=server.base_url, http=browser, registration=registration, redirect_uri=CLAUDE_CALLBACK)
    state = secrets.token_urlsafe(32)
    page = open_authorization(flow, asm["authorization_endpoint"], state=state, scope=scope, resource=mcp_url)
    redirect, consent = sign_in_and_approve(flow, page, alice.email)
    assert "claude.ai" in consent  # for CIMD the consent page names the client_id's host
    params = callback_params(redirect, CLAUDE_CALLBACK, state, issuer)
    tokens = code_exchange(oauth, asm["token_endpoint"], registration, flow, params["code"], mcp_url)

    mcp = McpHttp(mcp_url, tokens["access_token"], cloud)
    mcp_initialize(mcp, initialize_params("2025-11-25", "claude-ai", "0.1.0"))
    initialized(mcp)
    assert tool_names(mcp) >= MEMORY_TOOLS  # Claude's profile


# --- ChatGPT ------------------------------------------------------------------------------------


def test_chatgpt_via_dcr_with_iss_callback(
    server: RunningServer, alice: User, browser: httpx.Client, backend: Backend
) -> None:
    """ChatGPT's connector without CIMD. Its authorize request is the one shown in
    community.openai.com/t/oauth-missing-scopes-after-reconnect/1366784 (state "oauth_s_...",
    scope from our metadata, PKCE S256, resource), and on reconnecting it sends the same request
    without `scope`. It uses the stable redirect connector_platform_oauth_redirect only with an
    authorization server that advertises and returns `iss` (RFC 9207). Its DCR body (client_name
    "ChatGPT", code + refresh grants, a public client) is the one servers document for ChatGPT."""
    mcp_url = server.mcp_url
    fact_id = save_from_another_client(server, alice.email, browser, "My bicycle is a green Brompton")
    oauth = backend(CHATGPT_OAUTH_UA)
    connector = backend(CHATGPT_MCP_UA)

    prm, asm, _ = discover(connector, mcp_url, initialize_params("2025-06-18", "openai-mcp", "1.0.0"))
    issuer = asm["issuer"]
    assert asm["authorization_response_iss_parameter_supported"] is True
    registration = register(
        oauth,
        asm["registration_endpoint"],
        {
            "client_name": "ChatGPT",
            "redirect_uris": [CHATGPT_CALLBACK],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
    )
    flow = Flow(base_url=server.base_url, http=browser, registration=registration, redirect_uri=CHATGPT_CALLBACK)

    def connect(scope: str | None) -> dict[str, Any]:
        state = f"oauth_s_{secrets.token_hex(16)}"
        page = open_authorization(flow, asm["authorization_endpoint"], state=state, scope=scope, resource=mcp_url)
        redirect, _ = sign_in_and_approve(flow, page, alice.email)
        params = callback_params(redirect, CHATGPT_CALLBACK, state, issuer)
        assert params["iss"] == issuer  # what lets ChatGPT use the stable redirect
        return code_exchange(oauth, asm["token_endpoint"], registration, flow, params["code"], mcp_url)

    tokens = connect(" ".join(prm["scopes_supported"]))
    mcp = McpHttp(mcp_url, tokens["access_token"], connector)
    mcp_initialize(mcp, initialize_params("2025-06-18", "openai-mcp", "1.0.0"))
    initialized(mcp, **{"MCP-Protocol-Version": "2025-06-18"})
    version = {"MCP-Protocol-Version": "2025-06-18"}
    assert tool_names(mcp, **version) == {"search", "fetch"}  # ChatGPT's profile
    hits = call(mcp, "search", {"query": "Brompton bicycle"}, **version)["structuredContent"]["results"]
    assert hits and hits[0]["id"] == fact_id and hits[0]["url"].startswith(issuer)
    document = call(mcp, "fetch", {"id": fact_id}, **version)["structuredContent"]
    assert document["id"] == fact_id and "Brompton" in document["text"]

    # Disconnect and connect again: the same client, authorize without `scope`.
    again = connect(None)
    assert again["scope"].split()[0] == "memory"
    assert tool_names(McpHttp(mcp_url, again["access_token"], connector), **version) == {"search", "fetch"}


def test_chatgpt_via_cimd(
    server: RunningServer,
    alice: User,
    browser: httpx.Client,
    backend: Backend,
) -> None:
    """ChatGPT prefers CIMD when the metadata advertises it; its client_id is
    https://chatgpt.com/oauth/client.json, whose document names token_endpoint_auth_method
    private_key_jwt and token_endpoint_auth_methods_supported ["none", "private_key_jwt"]: with a
    server that offers no private_key_jwt it must work as a public client (`none`)."""
    mcp_url = server.mcp_url
    oauth = backend(CHATGPT_OAUTH_UA)
    connector = backend(CHATGPT_MCP_UA)
    prm, asm, _ = discover(connector, mcp_url, initialize_params("2025-06-18", "openai-mcp", "1.0.0"))
    require_cimd(asm)
    issuer = asm["issuer"]

    registration = {"client_id": CHATGPT_CIMD, "token_endpoint_auth_method": "none"}
    flow = Flow(base_url=server.base_url, http=browser, registration=registration, redirect_uri=CHATGPT_CALLBACK)
    state = f"oauth_s_{secrets.token_hex(16)}"
    page = open_authorization(
        flow, asm["authorization_endpoint"], state=state, scope=" ".join(prm["scopes_supported"]), resource=mcp_url
    )
    redirect, consent = sign_in_and_approve(flow, page, alice.email)
    assert "chatgpt.com" in consent
    params = callback_params(redirect, CHATGPT_CALLBACK, state, issuer)
    tokens = code_exchange(oauth, asm["token_endpoint"], registration, flow, params["code"], mcp_url)

    mcp = McpHttp(mcp_url, tokens["access_token"], connector)
    mcp_initialize(mcp, initialize_params("2025-06-18", "openai-mcp", "1.0.0"))
    assert tool_names(mcp, **{"MCP-Protocol-Version": "2025-06-18"}) == {"search", "fetch"}


# --- Claude Code (and other native apps on the TypeScript SDK) ------------------------------------


def test_claude_code_public_client_with_a_new_loopback_port(
    server: RunningServer, alice: User, browser: httpx.Client, backend: Backend
) -> None:
    """Claude Code registers a public client (token_endpoint_auth_method none) with a loopback
    redirect on the port it listened on then; a later authorization listens on another port,
    same host and path: RFC 8252 §7.3 says the server must accept any port. Body: the TypeScript
    SDK's registration (Claude Code is built on it; client_name "Claude Code (<server>)")."""
    mcp_url = server.mcp_url
    cli = backend(CLAUDE_CODE_UA)
    registered_port, used_port = free_port(), free_port()
    while used_port == registered_port:
        used_port = free_port()
    registered_uri = f"http://localhost:{registered_port}/callback"
    used_uri = f"http://localhost:{used_port}/callback"

    _, asm, scope = discover(cli, mcp_url, initialize_params("2025-11-25", "claude-code", "2.1.66"))
    registration = register(
        cli,
        asm["registration_endpoint"],
        {
            "redirect_uris": [registered_uri],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_name": "Claude Code (jean-memory)",
            "scope": scope,
        },
    )
    assert registration["token_endpoint_auth_method"] == "none" and "client_secret" not in registration

    flow = Flow(base_url=server.base_url, http=browser, registration=registration, redirect_uri=used_uri)
    state = secrets.token_urlsafe(32)
    page = open_authorization(flow, asm["authorization_endpoint"], state=state, scope=scope, resource=mcp_url)
    redirect, _ = sign_in_and_approve(flow, page, alice.email)
    params = callback_params(redirect, used_uri, state, asm["issuer"])

    # The token request: client_id only, and the redirect URI the authorization used.
    tokens = code_exchange(cli, asm["token_endpoint"], registration, flow, params["code"], mcp_url)
    mcp = McpHttp(mcp_url, tokens["access_token"], cli)
    mcp_initialize(mcp, initialize_params("2025-11-25", "claude-code", "2.1.66"))
    initialized(mcp, **{"MCP-Protocol-Version": "2025-11-25"})
    assert tool_names(mcp, **{"MCP-Protocol-Version": "2025-11-25"}) >= MEMORY_TOOLS

    # Only the port may differ: another path on the same loopback host is an error page, no redirect.
    other_path = open_authorization(
        flow, asm["authorization_endpoint"], redirect_uri=f"http://localhost:{used_port}/other", state=state
    )
    assert 400 <= other_path.status_code < 500 and "location" not in other_path.headers


def test_claude_code_via_cimd(
    server: RunningServer,
    alice: User,
    browser: httpx.Client,
    backend: Backend,
) -> None:
    """Claude Code with CIMD (claude-code changelog 2.1.81: "MCP OAuth supports Client ID Metadata
    Document"): its client_id is the URL of Claude Code's document, whose redirect URIs are
    portless loopback ones (http://localhost/callback); the authorization uses the port Claude
    Code listens on, which RFC 8252 §7.3 lets differ."""
    mcp_url = server.mcp_url
    cli = backend(CLAUDE_CODE_UA)
    _, asm, scope = discover(cli, mcp_url, initialize_params("2025-11-25", "claude-code", "2.1.81"))
    require_cimd(asm)
    assert "none" in asm["token_endpoint_auth_methods_supported"]

    redirect_uri = f"http://localhost:{free_port()}/callback"
    registration = {"client_id": CLAUDE_CODE_CIMD, "token_endpoint_auth_method": "none"}
    flow = Flow(base_url=server.base_url, http=browser, registration=registration, redirect_uri=redirect_uri)
    state = secrets.token_urlsafe(32)
    page = open_authorization(flow, asm["authorization_endpoint"], state=state, scope=scope, resource=mcp_url)
    redirect, consent = sign_in_and_approve(flow, page, alice.email)
    assert "Claude Code" in consent
    params = callback_params(redirect, redirect_uri, state, asm["issuer"])
    tokens = code_exchange(cli, asm["token_endpoint"], registration, flow, params["code"], mcp_url)

    mcp = McpHttp(mcp_url, tokens["access_token"], cli)
    mcp_initialize(mcp, initialize_params("2025-11-25", "claude-code", "2.1.81"))
    assert tool_names(mcp, **{"MCP-Protocol-Version": "2025-11-25"}) >= MEMORY_TOOLS


# --- Cursor ----------------------------------------------------------------------------------------


def test_cursor_private_scheme_redirect(
    server: RunningServer, alice: User, browser: httpx.Client, backend: Backend
) -> None:
    """Cursor registers a public client whose redirect is its own URL scheme (PROTOCOL.md);
    the browser hands the 302 to the Cursor app."""
    mcp_url = server.mcp_url
    app = backend("Cursor/1.0")
    _, asm, scope = discover(app, mcp_url, initialize_params("2025-06-18", "cursor-vscode", "1.0.0"))
    registration = register(
        app,
        asm["registration_endpoint"],
        {
            "client_name": "Cursor",
            "redirect_uris": [CURSOR_CALLBACK],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
    )
    flow = Flow(base_url=server.base_url, http=browser, registration=registration, redirect_uri=CURSOR_CALLBACK)
    state = secrets.token_urlsafe(24)
    page = open_authorization(flow, asm["authorization_endpoint"], state=state, scope=scope, resource=mcp_url)
    redirect, _ = sign_in_and_approve(flow, page, alice.email)
    assert redirect.headers["location"].startswith("cursor://anysphere.cursor-mcp/oauth/callback?")
    params = callback_params(redirect, CURSOR_CALLBACK, state, asm["issuer"])
    tokens = code_exchange(app, asm["token_endpoint"], registration, flow, params["code"], mcp_url)
    mcp = McpHttp(mcp_url, tokens["access_token"], app)
    mcp_initialize(mcp, initialize_params("2025-06-18", "cursor-vscode", "1.0.0"))
    assert tool_names(mcp, **{"MCP-Protocol-Version": "2025-06-18"}) >= MEMORY_TOOLS


# --- VS Code -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "redirect_uri",
    [VSCODE_LOOPBACK, "http://127.0.0.1:{port}/", VSCODE_WEB],
    ids=["loopback-33418", "loopback-another-port", "vscode.dev"],
)
def test_vscode_loopback_and_web_redirects(
    server: RunningServer, alice: User, browser: httpx.Client, redirect_uri: str, backend: Backend
) -> None:
    """VS Code registers both its redirects (PROTOCOL.md) and uses the loopback one on the
    desktop (another port when 33418 is taken) and vscode.dev's in the browser."""
    mcp_url = server.mcp_url
    redirect_uri = redirect_uri.format(port=free_port())
    app = backend("Visual Studio Code")
    _, asm, scope = discover(app, mcp_url, initialize_params("2025-11-25", "Visual Studio Code", "1.106.0"))
    registration = register(
        app,
        asm["registration_endpoint"],
        {
            "client_name": "Visual Studio Code",
            "client_uri": "https://code.visualstudio.com",
            "redirect_uris": [VSCODE_LOOPBACK, VSCODE_WEB],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
    )
    flow = Flow(base_url=server.base_url, http=browser, registration=registration, redirect_uri=redirect_uri)
    state = secrets.token_urlsafe(24)
    page = open_authorization(flow, asm["authorization_endpoint"], state=state, scope=scope, resource=mcp_url)
    redirect, _ = sign_in_and_approve(flow, page, alice.email)
    params = callback_params(redirect, redirect_uri, state, asm["issuer"])
    tokens = code_exchange(app, asm["token_endpoint"], registration, flow, params["code"], mcp_url)
    mcp = McpHttp(mcp_url, tokens["access_token"], app)
    mcp_initialize(mcp, initialize_params("2025-11-25", "Visual Studio Code", "1.106.0"))
    assert tool_names(mcp, **{"MCP-Protocol-Version": "2025-11-25"}) >= MEMORY_TOOLS


# --- MCP Inspector (a browser app: every call is cross-origin) -------------------------------------


def preflight(http: httpx.Client, url: str, method: str, request_headers: str) -> httpx.Response:
    response = http.options(
        url,
        headers={
            "Origin": INSPECTOR_ORIGIN,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": request_headers,
        },
    )
    assert response.status_code in (200, 204), f"preflight {method} {url}: {response.status_code} {response.text}"
    assert_cors(response)
    allowed_methods = {m.strip().upper() for m in response.headers["access-control-allow-methods"].split(",")}
    assert method in allowed_methods, response.headers
    allowed_headers = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {h.strip() for h in request_headers.split(",")} <= allowed_headers, response.headers
    return response


def assert_cors(response: httpx.Response) -> None:
    allowed = response.headers.get("access-control-allow-origin")
    assert allowed in (INSPECTOR_ORIGIN, "*"), f"{response.request.url}: {dict(response.headers)}"
    if allowed == "*":
        assert response.headers.get("access-control-allow-credentials") != "true"


def exposed(response: httpx.Response) -> set[str]:
    return {h.strip().lower() for h in response.headers.get("access-control-expose-headers", "").split(",")}


def test_mcp_inspector_from_a_browser_origin(
    server: RunningServer, alice: User, browser: httpx.Client, backend: Backend
) -> None:
    """The MCP Inspector runs the TypeScript SDK in a browser page at http://localhost:6274:
    each request is preceded by a CORS preflight where needed and carries Origin; it must be able
    to read our answers, the 401's WWW-Authenticate included. Discovery requests carry
    MCP-Protocol-Version (the SDK's discovery fetch); registration is JSON. Its DCR body is the
    Inspector's OAuth provider's client metadata."""
    mcp_url = server.mcp_url
    base = server.base_url
    page_origin = {"Origin": INSPECTOR_ORIGIN}
    http = backend("Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 Safari/537.36", **page_origin)

    # /mcp: the preflight must answer without a token and name authorization explicitly.
    mcp_preflight = preflight(http, mcp_url, "POST", "authorization, content-type, mcp-protocol-version")
    allow_headers = [h.strip().lower() for h in mcp_preflight.headers["access-control-allow-headers"].split(",")]
    assert "authorization" in allow_headers  # a `*` does not cover Authorization in browsers
    # 2026-07-28 requests must carry Mcp-Method (and Mcp-Name for tools/call): a preflight that
    # does not allow them lets no such request leave the browser.
    for header in ("mcp-method", "mcp-name", "mcp-protocol-version"):
        assert header in allow_headers, header
    probe = McpHttp(mcp_url, None, http).initialize("2025-11-25")
    assert probe.status_code == 401
    assert_cors(probe)
    assert "www-authenticate" in exposed(probe), probe.headers

    # Discovery.
    discovery_headers = {"MCP-Protocol-Version": "2025-11-25"}
    prm_url = f"{base}/.well-known/oauth-protected-resource/mcp"
    as_url = f"{base}/.well-known/oauth-authorization-server"
    for url in (prm_url, as_url):
        preflight(http, url, "GET", "mcp-protocol-version")
        response = http.get(url, headers=discovery_headers)
        assert response.status_code == 200, response.text
        assert_cors(response)
    asm = http.get(as_url, headers=discovery_headers).json()

    # Registration.
    preflight(http, asm["registration_endpoint"], "POST", "content-type")
    response = http.post(
        asm["registration_endpoint"],
        json={
            "redirect_uris": [INSPECTOR_CALLBACK],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "client_name": "MCP Inspector",
            "client_uri": "https://github.com/modelcontextprotocol/inspector",
        },
    )
    assert response.status_code == 201, response.text
    assert_cors(response)
    registration = response.json()

    # The authorization is a top-level navigation (no CORS), then the token request from the page.
    flow = Flow(base_url=base, http=browser, registration=registration, redirect_uri=INSPECTOR_CALLBACK)
    state = secrets.token_urlsafe(24)
    page = open_authorization(flow, asm["authorization_endpoint"], state=state, scope="memory", resource=mcp_url)
    redirect, _ = sign_in_and_approve(flow, page, alice.email)
    params = callback_params(redirect, INSPECTOR_CALLBACK, state, asm["issuer"])
    preflight(http, asm["token_endpoint"], "POST", "content-type")
    token_response = http.post(
        asm["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": params["code"],
            "code_verifier": flow.verifier,
            "redirect_uri": INSPECTOR_CALLBACK,
            "resource": mcp_url,
            "client_id": registration["client_id"],
        },
        headers={"Accept": "application/json"},
    )
    assert token_response.status_code == 200, token_response.text
    assert_cors(token_response)
    tokens = token_response.json()

    # MCP with the token, cross-origin.
    mcp = McpHttp(mcp_url, tokens["access_token"], http)
    response = mcp.rpc("initialize", initialize_params("2025-11-25", "mcp-inspector", "0.17.2"))
    assert response.status_code == 200, response.text
    assert_cors(response)
    assert {"www-authenticate", "mcp-protocol-version"} <= exposed(response)
    response = mcp.rpc("tools/list", {}, **{"MCP-Protocol-Version": "2025-11-25"})
    assert response.status_code == 200 and {t["name"] for t in response.json()["result"]["tools"]} >= MEMORY_TOOLS
    assert_cors(response)


# --- protocol revisions ----------------------------------------------------------------------------


@pytest.fixture
def token(server: RunningServer, alice: User, browser: httpx.Client) -> str:
    flow = Flow(base_url=server.base_url, http=browser)
    flow.register(CLAUDE_REGISTRATION)
    return flow.tokens(alice.email)["access_token"]


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18", "2025-11-25"])
def test_handshake_revisions_are_answered_in_kind(server: RunningServer, token: str, version: str) -> None:
    """A client of each handshake-era revision gets its own version back and can go on with it."""
    mcp = McpHttp(server.mcp_url, token)
    result = mcp_initialize(mcp, initialize_params(version, "revision-client", "1.0"))
    assert result["capabilities"]["tools"] is not None
    initialized(mcp, **{"MCP-Protocol-Version": version})
    assert tool_names(mcp, **{"MCP-Protocol-Version": version}) >= MEMORY_TOOLS
    saved = call(mcp, "add_memories", {"text": f"Revision {version} works"}, **{"MCP-Protocol-Version": version})
    assert saved["structuredContent"]["saved"]


def test_missing_protocol_version_header_is_accepted(server: RunningServer, token: str) -> None:
    """claude.ai has sent requests after initialize without MCP-Protocol-Version (PROTOCOL.md);
    the transport spec says to assume 2025-03-26 then, never to refuse."""
    mcp = McpHttp(server.mcp_url, token)
    mcp_initialize(mcp, initialize_params("2025-11-25", "claude-ai", "0.1.0"))
    initialized(mcp)
    assert tool_names(mcp) >= MEMORY_TOOLS
    saved = call(mcp, "add_memories", {"text": "My favourite tea is lapsang souchong"})["structuredContent"]
    found = call(mcp, "search_memory", {"query": "lapsang souchong"})["structuredContent"]
    assert found["results"][0]["id"] == saved["saved"][0]["id"]


MODERN = "2026-07-28"


def modern_request(mcp: McpHttp, method: str, params: dict[str, Any], **headers: str) -> httpx.Response:
    """A 2026-07-28 request: self-contained (no initialize, no session), the protocol version,
    client capabilities and client info in params._meta, mirrored by the MCP-Protocol-Version and
    Mcp-Method headers (and Mcp-Name for tools/call). Wire format as the installed SDK reads it:
    mcp/server/_streamable_http_modern.py and mcp/shared/inbound.py (classify_inbound_request)."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "modern-client", "version": "1.0"},
    }
    routing = {"MCP-Protocol-Version": MODERN, "Mcp-Method": method}
    if method == "tools/call":
        routing["Mcp-Name"] = params["name"]
    routing.update(headers)
    return mcp.rpc(method, {**params, "_meta": meta}, **{k: v for k, v in routing.items() if v})


def test_stateless_2026_client_discovers_and_calls_tools(server: RunningServer, token: str) -> None:
    """A 2026-07-28 client: its first request is server/discover (no initialize). Unauthenticated
    it must get the same 401 challenge as any other; with a token, the SDK's discover result."""
    probe = modern_request(McpHttp(server.mcp_url, None), "server/discover", {})
    assert probe.status_code == 401
    assert 'resource_metadata="' in probe.headers["www-authenticate"]

    mcp = McpHttp(server.mcp_url, token)
    response = modern_request(mcp, "server/discover", {})
    assert response.status_code == 200, response.text
    assert "mcp-session-id" not in response.headers
    discovered = response.json()["result"]
    assert MODERN in discovered["supportedVersions"]
    assert discovered["resultType"] == "complete"
    assert "tools" in discovered["capabilities"]
    assert discovered["instructions"]

    listed = modern_request(mcp, "tools/list", {})
    assert listed.status_code == 200, listed.text
    assert {t["name"] for t in listed.json()["result"]["tools"]} >= MEMORY_TOOLS
    saved = modern_request(mcp, "tools/call", {"name": "add_memories", "arguments": {"text": "I sing in a choir"}})
    assert saved.status_code == 200, saved.text
    result = saved.json()["result"]
    assert not result["isError"] and result["structuredContent"]["saved"]

    # The revision's header rule, as the SDK enforces it: Mcp-Method must mirror the body.
    mismatch = modern_request(mcp, "server/discover", {}, **{"Mcp-Method": "tools/list"})
    assert mismatch.status_code == 400 and mismatch.json()["error"]["code"] == -32020  # HEADER_MISMATCH
