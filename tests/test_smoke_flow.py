"""The happy path of Claude's connection, in-process, as a quick check that the pieces meet."""

from tests.support.oauth import McpHttp, new_flow


def test_claude_connects_and_calls_tools(server, alice):
    flow = new_flow(server.base_url)
    tokens = flow.tokens(alice.email)
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    init = mcp.initialize()
    assert init.status_code == 200, init.text
    assert init.json()["result"]["protocolVersion"] == "2025-11-25"
    listed = mcp.rpc("tools/list", {}, **{"MCP-Protocol-Version": "2025-11-25"})
    names = {t["name"] for t in listed.json()["result"]["tools"]}
    assert {"jean_memory", "add_memories", "search_memory", "list_memories", "delete_memory"} <= names
    saved = mcp.call_tool("add_memories", {"text": "I adopted a beagle named Max"})
    assert saved["structuredContent"]["saved"][0]["text"] == "I adopted a beagle named Max"
    found = mcp.call_tool("search_memory", {"query": "beagle"})
    assert found["structuredContent"]["results"][0]["text"] == "I adopted a beagle named Max"
