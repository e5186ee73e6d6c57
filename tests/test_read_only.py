"""Read-only connections (CONTRACT "Scopes", issue 14 item 5): `memory:read` and `memory:write`,
`memory` meaning both; the consent page's `allow_write` checkbox; a read-only grant lists only
the tools that read, refuses a writing one as an unknown tool (-32602), and `jean_memory` saves
nothing. Through the real MCP SDK client and a real server, on both databases."""

from __future__ import annotations

import time

import httpx
import pytest
import sqlalchemy as sa
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS

from jean_memory import clock
from jean_memory.accounts.api_keys import create_api_key
from jean_memory.accounts.users import User
from jean_memory.db.tables import memories
from jean_memory.memory.jobs import pending_count
from jean_memory.memory.triage import facts_worth_keeping
from jean_memory.oauth.scopes import grantable_scope, is_subset, read_only
from tests.support.oauth import McpHttp, new_flow, parse_form, redirect_params
from tests.support.sdk_client import Browser, MemoryTokenStorage, WireLog, sdk_client, sdk_provider
from tests.support.servers import RunningServer
from tests.test_sdk_client import sdk_follows_shared_clock

READ_TOOLS = {"jean_memory", "search_memory", "list_memories"}
WRITE_TOOLS = {"add_memories", "update_memory", "delete_memory", "store_document"}
FACT = "I keep bees on the roof of my flat in Porto"
MESSAGE = "Remember that I work as a nurse at the Porto children hospital"


def memory_count(server: RunningServer, user_id: str) -> int:
    with server.engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).select_from(memories).where(memories.c.user_id == user_id)
        ).scalar_one()


def wait_for_empty_queue(server: RunningServer, deadline_seconds: float = 30) -> None:
    deadline = time.monotonic() + deadline_seconds
    while pending_count(server.engine) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pending_count(server.engine) == 0, "the job queue did not drain"


def save_with_api_key(server: RunningServer, user: User, text: str) -> None:
    """The legacy API-key route stays full access: it can save (and sees every tool)."""
    mcp = McpHttp(f"{server.base_url}/mcp/v2/claude/{user.id}", None)
    mcp.http.headers["X-Api-Key"] = create_api_key(server.engine, user.id)
    assert mcp.initialize().status_code == 200
    names = {t["name"] for t in mcp.rpc("tools/list", {}).json()["result"]["tools"]}
    assert names == READ_TOOLS | WRITE_TOOLS
    assert mcp.call_tool("add_memories", {"text": text})["structuredContent"]["saved"]


def test_scope_strings() -> None:
    assert grantable_scope("claudeai") == "memory"
    assert grantable_scope("memory:read offline_access") == "memory:read offline_access"
    assert read_only("memory offline_access") == "memory:read offline_access"
    assert read_only("memory:read memory:write") == "memory:read"
    assert is_subset("memory:read", "memory") and is_subset("memory:write", "memory")
    assert not is_subset("memory", "memory:read") and not is_subset("memory:write", "memory:read offline_access")


@pytest.mark.anyio
async def test_read_only_grant_through_the_sdk(
    server: RunningServer, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The person unchecks `allow_write`: the SDK's token says memory:read, tools/list shows only
    the reading tools, add_memories is an unknown tool, jean_memory answers with context and
    queues nothing, and a refresh keeps the grant read-only."""
    save_with_api_key(server, alice, FACT)
    assert facts_worth_keeping(MESSAGE)  # a full grant's jean_memory would queue this
    sdk_follows_shared_clock(monkeypatch)
    storage, log = MemoryTokenStorage(), WireLog()
    async with httpx.AsyncClient(timeout=15) as http:
        browser = Browser(http=http, email=alice.email, allow_write=False)
        async with sdk_client(server.mcp_url, sdk_provider(server.mcp_url, storage, browser), log) as client:
            assert browser.pages == ["login", "consent"]
            assert storage.tokens is not None
            scopes = set((storage.tokens.scope or "").split())
            assert "memory:read" in scopes and not scopes & {"memory", "memory:write"}, scopes
            assert {t.name for t in (await client.list_tools()).tools} == READ_TOOLS
            for name in sorted(WRITE_TOOLS):
                with pytest.raises(MCPError) as refused:
                    await client.call_tool(name, {"text": "I moved to Lisbon", "memory_id": "x"})
                assert refused.value.error.code == INVALID_PARAMS, (name, refused.value.error)
                assert "Unknown tool" in refused.value.error.message
            before = memory_count(server, alice.id)
            answer = await client.call_tool(
                "jean_memory", {"user_message": MESSAGE + " on the roof with bees", "is_new_conversation": True}
            )
            assert not answer.is_error
            text = answer.content[0].text  # type: ignore[union-attr]
            assert FACT in text and "Saving to memory" not in text and "Checking" not in text
            wait_for_empty_queue(server)
            assert memory_count(server, alice.id) == before == 1
            found = await client.call_tool("search_memory", {"query": "bees"})
            assert found.structured_content and found.structured_content["results"][0]["text"] == FACT

            clock.advance(server.settings.access_token_seconds + 5)
            log.clear()
            assert {t.name for t in (await client.list_tools()).tools} == READ_TOOLS
            assert log.grants() == [("refresh_token", 200)]
            assert set((storage.tokens.scope or "").split()) == scopes  # the refresh kept the scope


def consent_page(flow, email: str, **params: str | None) -> httpx.Response:  # type: ignore[no-untyped-def]
    page = flow.authorize(**params)
    if 'name="password"' in page.text:
        page = flow.sign_in(page, email)
    assert page.status_code == 200 and 'value="approve"' in page.text, page.text[:300]
    return page


def test_consent_without_allow_write_grants_memory_read_and_is_remembered_so(server: RunningServer, alice: User):
    """Unchecked, the token's scope is memory:read; the remembered consent is read-only too, so a
    later silent approval stays read-only and a request for more shows the page again."""
    metadata = httpx.get(f"{server.base_url}/.well-known/oauth-protected-resource/mcp").json()
    assert {"memory", "memory:read", "memory:write"} <= set(metadata["scopes_supported"])
    flow = new_flow(server.base_url)
    flow.register()
    page = consent_page(flow, alice.email)
    assert 'name="allow_write"' in page.text and "Allow saving and changing memories" in page.text
    fields = {k: v for k, v in parse_form(page.text)["fields"].items() if k != "allow_write"}
    assert parse_form(page.text)["fields"]["allow_write"]  # checked by default: the parser sends it
    response = flow.http.post(server.base_url + parse_form(page.text)["action"], data={**fields, "decision": "approve"})
    tokens = flow.exchange(redirect_params(response)["code"]).json()
    assert tokens["scope"] == "memory:read"
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    assert mcp.initialize().status_code == 200
    assert {t["name"] for t in mcp.rpc("tools/list", {}).json()["result"]["tools"]} == READ_TOOLS
    refused = mcp.rpc("tools/call", {"name": "add_memories", "arguments": {"text": FACT}}).json()["error"]
    assert refused["code"] == -32602
    # A refresh may not widen it.
    widened = flow.refresh(tokens["refresh_token"], scope="memory")
    assert widened.status_code == 400 and widened.json()["error"] == "invalid_scope"

    # Connecting again (same browser, same app): approved without a page, and still read-only.
    again = flow.exchange(flow.get_code(alice.email)["code"]).json()
    assert again["scope"] == "memory:read"
    # Asking for consent again and leaving the box checked: the full grant.
    page = consent_page(flow, alice.email, prompt="consent")
    full = flow.exchange(redirect_params(flow.consent(page))["code"]).json()
    assert full["scope"] == "memory"
    mcp = McpHttp(server.mcp_url, full["access_token"])
    assert mcp.initialize().status_code == 200
    assert {t["name"] for t in mcp.rpc("tools/list", {}).json()["result"]["tools"]} == READ_TOOLS | WRITE_TOOLS
