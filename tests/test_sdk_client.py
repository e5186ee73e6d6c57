"""The official MCP Python SDK client connects to us with its own OAuth support.

Our flow tests drive each OAuth step by hand; these let the SDK's `OAuthClientProvider` take
every step itself (discover from our 401, register, authorize with PKCE, exchange, refresh), so
a mismatch between what we serve and what a real, widely used client expects fails here. The
person in the middle is `tests.support.sdk_client.Browser`.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from mcp.client import Client
from mcp.client.auth import oauth2 as sdk_oauth2
from mcp.shared import auth_utils as sdk_auth_utils
from mcp_types import CallToolResult

from jean_memory import clock
from tests.support.sdk_client import (
    SDK_REDIRECT_URI,
    Browser,
    MemoryTokenStorage,
    WireLog,
    query_of,
    sdk_client,
    sdk_provider,
)
from tests.support.servers import RunningServer

MEMORY_TOOLS = {"jean_memory", "add_memories", "search_memory", "list_memories", "delete_memory"}
FACT = "I adopted a beagle named Max"


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None, result.content
    return result.structured_content


async def save_and_find(client: Client, text: str, query: str) -> dict[str, Any]:
    """add_memories then search_memory through the SDK: the search result holding `text`."""
    saved = structured(await client.call_tool("add_memories", {"text": text}))
    assert [m["text"] for m in saved["saved"]] == [text]
    found = structured(await client.call_tool("search_memory", {"query": query}))
    hits = [r for r in found["results"] if r["text"] == text]
    assert hits, found
    return hits[0]


def sdk_follows_shared_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the SDK read `jean_memory.clock` where it reads the time for token expiry.

    The provider refreshes only when its own clock says the access token expired: it computes
    the expiry as `time.time() + expires_in` on receipt (`auth_utils.calculate_token_expiry`)
    and compares `time.time()` to it before each request (`oauth2.OAuthContext.is_token_valid`).
    Moving only the server's clock would leave the SDK sure its token is fresh. Both modules
    use `time` only for this, so swapping their `time` name moves the SDK with the server.
    """
    shared = SimpleNamespace(time=clock.now)
    monkeypatch.setattr(sdk_oauth2, "time", shared)
    monkeypatch.setattr(sdk_auth_utils, "time", shared)


async def list_tools_raw(server: RunningServer, access_token: str) -> httpx.Response:
    """tools/list with a given bearer token, outside the SDK, to see what the server thinks of the token."""
    async with httpx.AsyncClient(timeout=15) as http:
        return await http.post(
            server.mcp_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={
                "Authorization": f"Bearer {access_token}",
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-11-25",
            },
        )


@pytest.mark.anyio
@pytest.mark.parametrize(
    "auth_method", [None, "none", "client_secret_post"], ids=["auth-omitted", "auth-none", "auth-secret-post"]
)
async def test_sdk_client_connects_with_oauth_and_uses_tools(
    server: RunningServer, browser: Browser, auth_method: str | None
) -> None:
    """From nothing to a saved and found memory: the SDK discovers us from the 401, registers,
    sends the person through sign-in and consent, exchanges the code with PKCE and calls tools.

    Parametrized over the registration's `token_endpoint_auth_method`: omitted (RFC 7591 makes
    that client_secret_basic), a public client, and client_secret_post - each is a different
    branch of how the SDK authenticates at our token endpoint.
    """
    storage, log = MemoryTokenStorage(), WireLog()
    provider = sdk_provider(server.mcp_url, storage, browser, auth_method)

    async with sdk_client(server.mcp_url, provider, log) as client:
        assert client.protocol_version == "2025-11-25"
        tools = await client.list_tools()
        assert {t.name for t in tools.tools} >= MEMORY_TOOLS
        hit = await save_and_find(client, FACT, "beagle")

    assert set(hit) == {"id", "text", "tags", "created_at", "score"}
    # The whole OAuth dance, in order, before the first MCP message got through.
    assert log.paths()[:6] == [
        ("POST", "/mcp", 401),
        ("GET", "/.well-known/oauth-protected-resource/mcp", 200),
        ("GET", "/.well-known/oauth-authorization-server", 200),
        ("POST", "/oauth/register", 201),
        ("POST", "/oauth/token", 200),
        ("POST", "/mcp", 200),
    ]
    assert log.grants() == [("authorization_code", 200)]
    assert browser.pages == ["login", "consent"]
    # The SDK itself rejected any callback whose state, or iss (RFC 9207: we advertise it), was wrong.

    [opened] = browser.opened
    assert opened.startswith(f"{server.base_url}/oauth/authorize?")
    params = query_of(opened)
    assert params["resource"] == server.mcp_url
    assert params["redirect_uri"] == SDK_REDIRECT_URI
    assert params["code_challenge_method"] == "S256"
    assert storage.client_info is not None and params["client_id"] == storage.client_info.client_id
    expected_method = auth_method or "client_secret_basic"
    assert storage.client_info.token_endpoint_auth_method == expected_method
    assert (storage.client_info.client_secret is None) == (expected_method == "none")

    assert storage.tokens is not None
    assert storage.tokens.refresh_token
    assert "memory" in (storage.tokens.scope or "").split()
    assert storage.tokens.expires_in == server.settings.access_token_seconds


@pytest.mark.anyio
async def test_sdk_client_refreshes_an_expired_access_token(
    server: RunningServer, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the access token expires, the SDK uses its stored refresh token (no person involved),
    stores the rotated pair, and the next tool call goes through on the same connection."""
    sdk_follows_shared_clock(monkeypatch)
    storage, log = MemoryTokenStorage(), WireLog()
    provider = sdk_provider(server.mcp_url, storage, browser)

    async with sdk_client(server.mcp_url, provider, log) as client:
        await save_and_find(client, FACT, "beagle")
        before = storage.tokens
        assert before is not None and before.refresh_token

        clock.advance(server.settings.access_token_seconds + 5)
        # The server really refuses the old token now; it is not only the SDK's opinion.
        stale = await list_tools_raw(server, before.access_token)
        assert stale.status_code == 401
        assert 'error="invalid_token"' in stale.headers["www-authenticate"]
        log.clear()

        hit = await save_and_find(client, "My sister lives in Lisbon", "sister")

    assert hit["text"] == "My sister lives in Lisbon"
    assert log.grants() == [("refresh_token", 200)]
    assert ("POST", "/mcp", 401) not in log.paths()  # refreshed before sending, never bounced
    assert len(browser.opened) == 1  # the person was asked once, at the start
    after = storage.tokens
    assert after is not None
    assert after.access_token != before.access_token
    assert after.refresh_token and after.refresh_token != before.refresh_token  # rotated (OAuth 2.1 §4.3.1)
    assert after.scope == before.scope


@pytest.mark.anyio
async def test_sdk_client_restarted_with_stored_tokens_reauthorizes_instead_of_refreshing(
    server: RunningServer, browser: Browser
) -> None:
    """What mcp 2.3.0 does when its storage already holds an expired token at start-up.

    A new provider loads tokens from `TokenStorage` but not their expiry (`OAuthToken` keeps
    only the relative `expires_in`), so it sends the stale token; on our 401 it runs discovery
    and a fresh authorization - it never tries the stored refresh token on a 401
    (modelcontextprotocol/python-sdk#3250). Driving a refresh from stored tokens is therefore
    not possible through the SDK's public API. This pins what does happen: the reconnect still
    succeeds without a second sign-in because the person's browser is still signed in (the SDK's
    prompt=consent brings the consent page back), and the refresh token the SDK left unused is one our server would have honoured.
    """
    storage, log = MemoryTokenStorage(), WireLog()
    async with sdk_client(server.mcp_url, sdk_provider(server.mcp_url, storage, browser), log) as client:
        await save_and_find(client, FACT, "beagle")
    stored = storage.tokens
    assert stored is not None and stored.refresh_token and storage.client_info is not None

    clock.advance(server.settings.access_token_seconds + 5)
    log.clear()
    restarted = sdk_provider(server.mcp_url, storage, browser)  # same storage, same browser
    async with sdk_client(server.mcp_url, restarted, log) as client:
        hit = await save_and_find(client, "My sister lives in Lisbon", "sister")

    assert hit["text"] == "My sister lives in Lisbon"
    assert log.paths()[0] == ("POST", "/mcp", 401)
    assert log.grants() == [("authorization_code", 200)]  # not refresh_token
    assert len(browser.opened) == 2
    # The SDK asks for offline_access with prompt=consent (OIDC Core §11), so the person is asked
    # to approve again, though still signed in.
    assert browser.pages == ["login", "consent", "consent"]
    assert storage.tokens is not None and storage.tokens.access_token != stored.access_token

    # The refresh token the SDK could have used still works at our token endpoint.
    info = storage.client_info
    async with httpx.AsyncClient(timeout=15) as http:
        data = {"grant_type": "refresh_token", "refresh_token": stored.refresh_token, "client_id": info.client_id}
        auth = (info.client_id, info.client_secret) if info.client_secret else None
        refreshed = await http.post(f"{server.base_url}/oauth/token", data=data, auth=auth)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] != stored.refresh_token
