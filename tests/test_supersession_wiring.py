"""The supersession detector wired into saving (issue 15, item 4): a new memory that replaces an
older one marks it superseded in the same transaction, with a history event; the replaced one is
left out of the profile, shown as "earlier: ... (until <date>)" in jean_memory's context, ranked
after current facts in search, and named (dated, marked) in add_memories' `similar`. On both
databases with the real local model; the tools through a real server and MCP client."""

import pytest
from bench.people import ensure_people

from jean_memory import clock
from jean_memory.memory.context import context_for
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.service import MemoryService
from jean_memory.memory.trash import DAY_SECONDS
from tests.support.oauth import McpHttp, new_flow

ALICE = "alice-id"
OTHERS = [
    "The quarterly tax report is due in April",
    "I prefer window seats on long flights",
    "I am learning to play the cello",
    "We bought a new sofa last weekend",
]
OLD = "I live in Berlin"
# The detector's thresholds come from bench/knowledge_updates.py; "I moved to Lisbon last month"
# alone is at cosine 0.42 to OLD with the local model, under the 0.50 a change word needs, so it
# is (rightly, by the bench's choice) not taken as a replacement: see the report of this change.
NEW = "I moved from Berlin to Lisbon last month"


@pytest.fixture
def engine(engine):
    """The shared fixture's database, with accounts for the people these tests save for."""
    ensure_people(engine, ALICE)
    return engine


@pytest.fixture(scope="module")
def embedder() -> LocalOnnxEmbedder:
    return LocalOnnxEmbedder()


@pytest.fixture
def service(engine, embedder) -> MemoryService:
    return MemoryService(engine, embedder)


def test_a_moved_home_supersedes_the_old_one_everywhere_it_is_read(service):
    for text in OTHERS:
        service.add(ALICE, text)
    berlin = service.add(ALICE, OLD, None, "claude").saved[0]
    clock.advance(30 * DAY_SECONDS)
    result = service.add(ALICE, NEW, None, "chatgpt")
    lisbon = result.saved[0]

    old = service.get(ALICE, berlin.id)
    assert old is not None and old.superseded_by == lisbon.id and old.superseded_at is not None
    assert old.text == OLD  # kept, not rewritten
    assert result.similar[0].id == berlin.id and result.similar[0].superseded_by == lisbon.id
    assert [(e.kind, e.client) for e in service.history(ALICE, berlin.id)] == [
        ("created", "claude"),
        ("superseded", "chatgpt"),
    ]
    assert [e.kind for e in service.history(ALICE, lisbon.id)] == ["created"]

    hits = service.search(ALICE, "where do I live", 10)
    assert hits[0].id == lisbon.id
    assert [h.id for h in hits].index(berlin.id) > 0
    assert hits[[h.id for h in hits].index(berlin.id)].as_dict()["superseded_by"] == lisbon.id
    # Searching for the old place itself still puts the current fact first.
    assert service.search(ALICE, "Berlin", 10)[0].id == lisbon.id
    listed = {m.id: m.as_dict() for m in service.list(ALICE, 20)[0]}
    assert listed[berlin.id]["superseded_by"] == lisbon.id and "superseded_by" not in listed[lisbon.id]

    context = context_for(service, ALICE, "where do I live", True, True, "claude").text()
    assert f"- {OLD} (" not in context  # never presented as a current fact
    profile = context.split("\n\n")[0]
    assert OLD not in profile and NEW in profile
    lines = context.splitlines()
    earlier = [line for line in lines if OLD in line and NEW not in line]
    assert earlier and all(line.startswith(f"- earlier: {OLD} (") and ", until " in line for line in earlier)
    assert lines.index(earlier[0]) > next(i for i, line in enumerate(lines) if NEW in line)


def test_unrelated_and_additive_memories_never_supersede(service, engine):
    texts = [
        *OTHERS,
        OLD,
        "My sister lives in Madrid",  # another person
        "I also have a flat in Lisbon",  # a second fact of the same kind
        "I switched to oat milk in my coffee",  # a change, about something else
        "Our team moved the standup to 10am",
    ]
    for text in texts:
        result = service.add(ALICE, text)
        assert all(m.superseded_by is None for m in result.similar), text
        clock.advance(DAY_SECONDS)
    assert all(m.superseded_by is None for m in service.list(ALICE, 50)[0])


def test_a_superseded_memory_is_replaced_once_and_update_leaves_the_mark(service):
    berlin = service.add(ALICE, OLD).saved[0]
    clock.advance(DAY_SECONDS)
    lisbon = service.add(ALICE, NEW).saved[0]
    clock.advance(DAY_SECONDS)
    service.add(
        ALICE, "I no longer live in Berlin, I moved to Lisbon"
    )  # may replace Lisbon's memory, not Berlin's again
    assert service.get(ALICE, berlin.id).superseded_by == lisbon.id
    assert [e.kind for e in service.history(ALICE, berlin.id)].count("superseded") == 1
    service.update(ALICE, berlin.id, "I lived in Berlin until 2025")
    assert service.get(ALICE, berlin.id).superseded_by == lisbon.id  # update clears nothing else


def test_through_the_tools(server, alice):
    tokens = new_flow(server.base_url).tokens(alice.email)
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    berlin = mcp.call_tool("add_memories", {"text": OLD})["structuredContent"]["saved"][0]["id"]
    saved = mcp.call_tool("add_memories", {"text": NEW})["structuredContent"]
    lisbon = saved["saved"][0]["id"]
    assert saved["similar"][0]["id"] == berlin and saved["similar"][0]["superseded_by"] == lisbon
    assert saved["similar"][0]["text"] == OLD and saved["similar"][0]["created_at"].endswith("Z")

    results = mcp.call_tool("search_memory", {"query": "where do I live"})["structuredContent"]["results"]
    assert [r["id"] for r in results] == [lisbon, berlin]
    assert results[1]["superseded_by"] == lisbon and "superseded_by" not in results[0]
    context = mcp.call_tool(
        "jean_memory", {"user_message": "where do I live", "is_new_conversation": False, "needs_context": True}
    )["content"][0]["text"]
    assert f"- earlier: {OLD} (" in context and f"- {OLD} (" not in context
    assert context.index(NEW) < context.index(f"earlier: {OLD}")
