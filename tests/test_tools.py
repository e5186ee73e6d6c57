"""The MCP tools through the real endpoint: behaviour, bad input, profiles, and isolation between
people (by every tool and by the legacy route)."""

import json

import numpy as np
import pytest

from jean_memory.accounts.api_keys import create_api_key
from tests.support.oauth import McpHttp, new_flow


def connect(server, user, registration=None) -> McpHttp:
    tokens = new_flow(server.base_url, registration).tokens(user.email)
    return McpHttp(server.mcp_url, tokens["access_token"])


@pytest.fixture
def alice_mcp(server, alice) -> McpHttp:
    return connect(server, alice)


@pytest.fixture
def bob_mcp(server, bob) -> McpHttp:
    return connect(server, bob)


def tool_names(mcp: McpHttp) -> set[str]:
    return {t["name"] for t in mcp.rpc("tools/list", {}).json()["result"]["tools"]}


def test_add_search_list_delete(alice_mcp):
    saved = alice_mcp.call_tool("add_memories", {"text": "Allergic to peanuts", "tags": ["Health"]})
    memory_id = saved["structuredContent"]["saved"][0]["id"]
    hit = alice_mcp.call_tool("search_memory", {"query": "peanuts"})["structuredContent"]["results"][0]
    assert hit["id"] == memory_id and hit["tags"] == ["health"] and "score" in hit
    assert hit["created_at"].endswith("Z")
    listed = alice_mcp.call_tool("list_memories", {"limit": 10})
    assert [m["id"] for m in listed["structuredContent"]["results"]] == [memory_id]
    assert "next_cursor" not in listed["structuredContent"]
    assert alice_mcp.call_tool("delete_memory", {"memory_id": memory_id})["isError"] is False
    assert alice_mcp.call_tool("search_memory", {"query": "peanuts"})["structuredContent"]["results"] == []


def test_structured_content_equals_text_content(alice_mcp):
    alice_mcp.call_tool("add_memories", {"text": "Works at a bakery"})
    result = alice_mcp.call_tool("search_memory", {"query": "bakery"})
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]


def test_exact_duplicate_returns_the_existing_id(alice_mcp):
    first = alice_mcp.call_tool("add_memories", {"text": "Prefers  tea over coffee"})["structuredContent"]
    second = alice_mcp.call_tool("add_memories", {"text": "prefers tea over COFFEE"})["structuredContent"]
    assert second["saved"] == []
    assert second["similar"][0]["id"] == first["saved"][0]["id"]


def test_list_pages_with_a_cursor(alice_mcp):
    for i in range(5):
        alice_mcp.call_tool("add_memories", {"text": f"Fact number {i}"})
    seen, cursor = [], None
    while True:
        args = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = alice_mcp.call_tool("list_memories", args)["structuredContent"]
        seen += [m["text"] for m in page["results"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == [f"Fact number {i}" for i in reversed(range(5))]


@pytest.mark.parametrize("query", ['"unbalanced', "a - b", "col:value", "NEAR(a b)", "*", "AND OR NOT", "(((", "^x"])
def test_search_syntax_never_raises(alice_mcp, query):
    alice_mcp.call_tool("add_memories", {"text": "col value a b x"})
    result = alice_mcp.call_tool("search_memory", {"query": query})
    assert result["isError"] is False


@pytest.mark.parametrize(
    ("tool", "arguments", "hint"),
    [
        ("add_memories", {"text": "   "}, "text is empty"),
        ("add_memories", {"text": "x" * 1_000_000}, "store_document"),
        ("search_memory", {"query": "x", "limit": 0}, "limit must be"),
        ("search_memory", {"query": "x", "limit": 10_000}, "limit must be"),
        ("search_memory", {"query": ""}, "query is empty"),
        ("list_memories", {"limit": 0}, "limit must be"),
        ("list_memories", {"limit": 5, "cursor": "@@garbage@@"}, "cursor"),
        ("delete_memory", {"memory_id": "does-not-exist"}, "no memory with id"),
        ("jean_memory", {"user_message": "", "is_new_conversation": False}, "user_message is empty"),
    ],
)
def test_bad_input_is_a_tool_error_a_person_can_act_on(alice_mcp, tool, arguments, hint):
    result = alice_mcp.call_tool(tool, arguments)
    assert result["isError"] is True
    assert hint in result["content"][0]["text"]


@pytest.mark.parametrize(
    "raw",
    ["[1, Infinity]", "[NaN, 1]", "[1, 1e30]", "[1, 99999999999999999999999]", "[1, -1]", "[" * 3000 + "]" * 3000],
)
def test_a_tampered_cursor_gets_the_cursor_message(alice_mcp, raw):
    """Found by review: a pk beyond 64 bits (or a non-finite date) passed decoding and failed in
    the database, so the person saw "Error executing tool" instead of what to do."""
    import base64

    alice_mcp.call_tool("add_memories", {"text": "Fact one about me"})
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    result = alice_mcp.call_tool("list_memories", {"limit": 5, "cursor": cursor})
    assert result["isError"] is True
    assert "cursor is not one this server handed out" in result["content"][0]["text"]


def test_jean_memory_gives_profile_then_relevant_context(alice_mcp):
    alice_mcp.call_tool("add_memories", {"text": "My daughter Ana plays the violin"})
    alice_mcp.call_tool("add_memories", {"text": "I work as a nurse in Porto"})
    profile = alice_mcp.call_tool("jean_memory", {"user_message": "hi", "is_new_conversation": True})
    text = profile["content"][0]["text"]
    assert "violin" in text and "nurse" in text
    relevant = alice_mcp.call_tool(
        "jean_memory", {"user_message": "Any ideas for Ana's violin recital?", "is_new_conversation": False}
    )["content"][0]["text"]
    assert "violin" in relevant


def test_user_b_cannot_reach_user_a_memories_by_any_tool(alice_mcp, bob_mcp):
    memory_id = alice_mcp.call_tool("add_memories", {"text": "Secret diary entry about Lisbon"})["structuredContent"][
        "saved"
    ][0]["id"]
    assert bob_mcp.call_tool("search_memory", {"query": "Lisbon diary"})["structuredContent"]["results"] == []
    assert bob_mcp.call_tool("list_memories", {"limit": 100})["structuredContent"]["results"] == []
    assert bob_mcp.call_tool("delete_memory", {"memory_id": memory_id})["isError"] is True
    context = bob_mcp.call_tool("jean_memory", {"user_message": "Lisbon", "is_new_conversation": False})
    assert "Lisbon" not in context["content"][0]["text"]
    assert alice_mcp.call_tool("search_memory", {"query": "Lisbon"})["structuredContent"]["results"]


def test_tool_arguments_cannot_choose_the_user(alice_mcp, bob_mcp, bob):
    bob_mcp.call_tool("add_memories", {"text": "Bob's bank PIN hint"})
    result = alice_mcp.call_tool("search_memory", {"query": "PIN", "user_id": bob.id})
    assert result.get("structuredContent", {}).get("results", []) == []


def test_profiles_select_the_tool_list(server, alice):
    claude = connect(server, alice)
    chatgpt = connect(
        server,
        alice,
        {"client_name": "ChatGPT", "redirect_uris": ["https://chatgpt.com/connector_platform_oauth_redirect"]},
    )
    other = connect(
        server,
        alice,
        {
            "client_name": "Cursor",
            "redirect_uris": ["cursor://anysphere.cursor-mcp/oauth/callback"],
            "token_endpoint_auth_method": "none",
        },
    )
    assert {"jean_memory", "add_memories", "search_memory", "list_memories", "delete_memory"} <= tool_names(claude)
    assert tool_names(chatgpt) == {"search", "fetch"}
    assert tool_names(other) == tool_names(claude)
    # A tool outside the profile is unknown there: the protocol error of the tools spec (-32602),
    # not a tool result the model would take for that tool failing.
    for mcp, name in ((claude, "search"), (chatgpt, "add_memories"), (claude, "no_such_tool")):
        error = mcp.rpc("tools/call", {"name": name, "arguments": {}}).json()["error"]
        assert error["code"] == -32602 and "Unknown tool" in error["message"], (name, error)


def test_chatgpt_search_and_fetch(server, alice):
    claude = connect(server, alice)
    memory_id = claude.call_tool("add_memories", {"text": "Favourite band is Radiohead"})["structuredContent"]["saved"][
        0
    ]["id"]
    chatgpt = connect(server, alice, {"client_name": "ChatGPT", "redirect_uris": ["https://chatgpt.com/cb"]})
    hits = chatgpt.call_tool("search", {"query": "band"})["structuredContent"]["results"]
    assert hits[0]["id"] == memory_id and hits[0]["url"].startswith(server.settings.issuer)
    document = chatgpt.call_tool("fetch", {"id": memory_id})["structuredContent"]
    assert document["text"] == "Favourite band is Radiohead"
    assert chatgpt.call_tool("fetch", {"id": "nope"})["isError"] is True


def legacy(server, client: str, user_id: str, key: str | None) -> McpHttp:
    mcp = McpHttp(f"{server.base_url}/mcp/v2/{client}/{user_id}", None)
    if key:
        mcp.http.headers["X-Api-Key"] = key
    return mcp


def test_legacy_route_needs_the_named_users_api_key(server, alice, bob, alice_mcp):
    alice_mcp.call_tool("add_memories", {"text": "Alice plays chess on Sundays"})
    alice_key = create_api_key(server.engine, alice.id)
    bob_key = create_api_key(server.engine, bob.id)
    unauthenticated = legacy(server, "claude", alice.id, None).initialize()
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"] == 'ApiKey header="X-Api-Key"'  # RFC 9110 §15.5.2
    assert legacy(server, "claude", alice.id, "jm_sk_wrong").initialize().status_code == 401
    assert legacy(server, "claude", alice.id, bob_key).initialize().status_code == 403  # seed's hole, closed
    own = legacy(server, "claude", alice.id, alice_key)
    assert own.initialize().status_code == 200
    hits = own.call_tool("search_memory", {"query": "chess"})["structuredContent"]["results"]
    assert hits[0]["text"] == "Alice plays chess on Sundays"
    bobs = legacy(server, "claude", bob.id, bob_key)
    assert bobs.call_tool("search_memory", {"query": "chess"})["structuredContent"]["results"] == []


def wait_for(predicate, timeout: float = 30.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_store_document_then_find_a_passage(alice_mcp):
    content = "# Trip\n\n" + "\n\n".join(f"Day {i}: museums and long walks around the old town." for i in range(60))
    content += "\n\nOur hotel booking reference is ZX-4471 at the Hotel Miramar."
    stored = alice_mcp.call_tool("store_document", {"title": "Porto trip", "content": content})
    assert stored["isError"] is False and stored["structuredContent"]["document_id"]
    hit = wait_for(
        lambda: alice_mcp.call_tool("search_memory", {"query": "hotel booking reference"})["structuredContent"][
            "results"
        ]
    )
    assert "ZX-4471" in hit[0]["text"] and hit[0]["title"] == "Porto trip"


def test_jean_memory_saves_statements_in_the_background_and_says_so(alice_mcp):
    answer = alice_mcp.call_tool(
        "jean_memory",
        {"user_message": "I just moved to Berlin and I work as a data engineer.", "is_new_conversation": False},
    )["content"][0]["text"]
    assert "Saving to memory: I just moved to Berlin" in answer
    found = wait_for(lambda: alice_mcp.call_tool("search_memory", {"query": "Berlin"})["structuredContent"]["results"])
    assert found[0]["tags"] == ["auto"]
    question = alice_mcp.call_tool(
        "jean_memory", {"user_message": "Where do I live now?", "is_new_conversation": False}
    )["content"][0]["text"]
    assert "Berlin" in question and "Saving to memory" not in question


def test_lexical_only_server_works(database_url, tmp_path):
    from jean_memory.accounts.users import create_user
    from tests.support.oauth import PASSWORD
    from tests.support.servers import threaded_server

    with threaded_server(database_url, tmp_path / "d", embeddings="none") as running:
        user = create_user(running.engine, "lex@example.com", PASSWORD)
        mcp = connect(running, user)
        mcp.call_tool("add_memories", {"text": "I adopted a beagle, Max"})
        assert mcp.call_tool("search_memory", {"query": "beagle"})["structuredContent"]["results"]


def test_tools_list_is_what_clients_were_shown_before(tmp_path):
    """Names, descriptions (each tool's docstring), schemas and annotations, per profile, as the
    SDK's own client lists them, byte for byte against tests/golden/tools_list.json: that file
    was written from the tools as they were before they became methods (commit 3b866c8). A change
    to what the model reads shows up here; regenerate the file only on purpose."""
    from pathlib import Path

    import anyio
    from mcp import Client

    from jean_memory.db.engine import create_engine
    from jean_memory.mcp_server.endpoint import ProfileServer
    from jean_memory.mcp_server.profiles import PROFILE_TOOLS
    from jean_memory.mcp_server.tools import ToolSet
    from jean_memory.memory.service import MemoryService
    from jean_memory.observability.metrics import Metrics

    tools = ToolSet(
        MemoryService(create_engine(f"sqlite:///{tmp_path / 'x.db'}"), None), "https://memory.example", Metrics()
    )

    async def listed() -> dict[str, list[dict]]:
        out = {}
        for profile, names in PROFILE_TOOLS.items():
            server = ProfileServer(tools.tools(names))
            async with Client(server) as client:
                result = await client.list_tools()
            out[profile] = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in result.tools]
        return out

    golden = Path(__file__).parent / "golden" / "tools_list.json"
    assert json.dumps(anyio.run(listed), indent=1, sort_keys=True, ensure_ascii=False) + "\n" == golden.read_text()


def test_each_app_s_tools_call_its_own_service_though_their_schemas_are_built_once(tmp_path):
    """The SDK's tool schemas are derived once per process and copied for every app (a tenth of
    a second per app before): each copy must still call its own app's service and count in its
    own metrics. Two apps on two databases in one process, as the test suite runs them."""
    import anyio

    from jean_memory.db.engine import create_engine
    from jean_memory.db.migrate import upgrade
    from jean_memory.mcp_server.principal import Principal, current_principal
    from jean_memory.mcp_server.tools import ToolSet
    from jean_memory.memory.service import MemoryService
    from jean_memory.oauth.scopes import MEMORY_SCOPE
    from jean_memory.observability.metrics import Metrics
    from tests.conftest import person

    names = ("add_memories", "list_memories")
    apps = []
    for name in ("first", "second"):
        engine = create_engine(f"sqlite:///{tmp_path / name}.db")
        upgrade(engine)
        user_id = person(engine, "me@example.com").id
        apps.append((ToolSet(MemoryService(engine, None), "https://memory.example", Metrics()), engine))
    (first, first_engine), (second, second_engine) = apps
    first_tools, second_tools = first.tools(names), second.tools(names)
    assert [t.parameters for t in first_tools] == [t.parameters for t in second_tools]
    assert all(a.fn_metadata is b.fn_metadata for a, b in zip(first_tools, second_tools, strict=True))

    async def save(tools, text: str) -> None:
        token = current_principal.set(Principal(user_id, "me@example.com", "default", "client-1", (MEMORY_SCOPE,)))
        try:
            await tools[0].fn(text=text)
        finally:
            current_principal.reset(token)

    anyio.run(save, second_tools, "I keep bees")
    assert MemoryService(second_engine, None).list(user_id, limit=5)[0][0].text == "I keep bees"
    assert MemoryService(first_engine, None).list(user_id, limit=5)[0] == []
    assert second._metrics.tool_calls.labels("add_memories", "ok")._value.get() == 1
    assert first._metrics.tool_calls.labels("add_memories", "ok")._value.get() == 0
    for engine in (first_engine, second_engine):
        engine.dispose()


def test_the_cached_tool_schemas_keep_no_app_alive(tmp_path, monkeypatch):
    """Found by review: the cache held the first app's function, and through it that app's
    service, engine and model, for the life of the process."""
    import gc
    import weakref

    from jean_memory.db.engine import create_engine
    from jean_memory.mcp_server import tools as tools_module
    from jean_memory.mcp_server.tools import ToolSet
    from jean_memory.memory.service import MemoryService
    from jean_memory.observability.metrics import Metrics

    monkeypatch.setattr(tools_module, "_SCHEMAS", {})  # this test's set builds them
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    first = ToolSet(MemoryService(engine, None), "https://memory.example", Metrics())
    assert first.tools(("add_memories", "search_memory"))
    gone = weakref.ref(first)
    del first
    gc.collect()
    assert gone() is None
    assert len(tools_module._SCHEMAS) == 2
    engine.dispose()


def test_results_are_what_the_sdk_makes_of_the_model():
    """search_memory and list_memories build their CallToolResult from the memories' dicts (a
    shortcut for speed, issue 17): it must equal what the SDK makes of a MemoryResults model,
    text and structured content, with and without the fields that do not always apply."""
    from mcp.server.mcpserver.utilities.func_metadata import func_metadata

    from jean_memory.mcp_server.tools import MemoryItem, MemoryResults, _results
    from jean_memory.memory.records import Memory

    memories = [
        Memory(id="a" * 32, text="Ich wohne in Köln", tags=["home"], created_at=1_700_000_000.5, score=0.12345),
        Memory(
            id="b" * 32,
            text="Garden notes: prune in March",
            tags=[],
            created_at=1_700_000_100.0,
            updated_at=1_700_090_000.0,
            title="Garden notes",
            superseded_by="c" * 32,
        ),
        # Scores computed with numpy, and one that is not a number: the SDK made a float of the
        # first and left the second out (json would have had to write NaN, which is not JSON).
        Memory(id="d" * 32, text="Lives in Lisbon", tags=[], created_at=1_700_000_200.0, score=np.float32(0.5)),
        Memory(id="e" * 32, text="Likes figs", tags=[], created_at=1_700_000_300.0, score=float("nan")),
    ]

    def from_model() -> MemoryResults: ...

    sdk = func_metadata(from_model)
    for cursor in (None, "next-page"):
        model = MemoryResults(results=[MemoryItem(**m.as_dict()) for m in memories], next_cursor=cursor)
        expected = sdk.convert_result(model)
        assert _results(memories, cursor).model_dump() == expected.model_dump()
