"""Facts that change (issue 15): update_memory, every change in the history, the trash and its
purge, "delete all", dates on jean_memory's lines, and history and trash through export/import.
On both databases with the real local model; the tools through a real server."""

import numpy as np
import pytest
import sqlalchemy as sa
from bench.people import ensure_people

from jean_memory import clock
from jean_memory.config import Settings
from jean_memory.db.tables import memories, memory_history, memory_vectors
from jean_memory.maintenance import purge_trash
from jean_memory.memory.context import context_for, format_memories
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.records import Memory, MemoryInputError
from jean_memory.memory.retrieval import Retriever
from jean_memory.memory.service import MemoryService
from jean_memory.memory.transfer import export_user, import_user
from jean_memory.memory.trash import DAY_SECONDS, purge
from tests.support.oauth import McpHttp, new_flow
from tests.support.servers import threaded_server

ALICE, BOB = "alice-id", "bob-id"
OTHERS = [
    "The quarterly tax report is due in April",
    "I prefer window seats on long flights",
    "I am learning to play the cello",
    "We bought a new sofa last weekend",
]


@pytest.fixture
def engine(engine):
    """The shared fixture's database, with accounts for the people these tests save for."""
    ensure_people(engine, ALICE, BOB, "carol-id")
    return engine


@pytest.fixture(scope="module")
def embedder() -> LocalOnnxEmbedder:
    return LocalOnnxEmbedder()


@pytest.fixture
def service(engine, embedder) -> MemoryService:
    return MemoryService(engine, embedder)


def ranked_pks(service: MemoryService, query: str, mode: str) -> list[int]:
    ranker = Retriever(service.engine, service.embedder, vectors=service.vectors)
    return [pk for pk, _ in ranker.rank(ALICE, query, 50, mode=mode)]


def pk_of(engine, memory_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(memories.c.pk).where(memories.c.id == memory_id)).scalar_one()


def test_update_rewrites_reembeds_and_keeps_the_old_text_in_the_history(service, engine, embedder):
    for text in OTHERS:
        service.add(ALICE, text)
    berlin = service.add(ALICE, "I live in Berlin", ["home"], "claude").saved[0]
    assert service.search(ALICE, "Berlin", 1)[0].id == berlin.id  # warms the vector cache
    clock.advance(3 * DAY_SECONDS)
    updated = service.update(ALICE, berlin.id, "I moved to Lisbon in March", None, "chatgpt")
    assert updated is not None and updated.tags == ["home"]  # None keeps the tags

    assert service.search(ALICE, "Lisbon", 1)[0].text == "I moved to Lisbon in March"
    assert all("Berlin" not in hit.text for hit in service.search(ALICE, "Berlin", 10))
    # The stored and the cached vector are the new text's, not the old one's.
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(memory_vectors.c.vector).where(memory_vectors.c.memory_pk == pk_of(engine, berlin.id))
        ).scalar_one()
    new_vector = embedder.embed(["I moved to Lisbon in March"])[0]
    assert float(np.dot(stored, new_vector)) > 0.999
    nearest = service.vectors.nearest(ALICE, embedder.model_name, new_vector, 1)
    assert nearest[0][0] == pk_of(engine, berlin.id) and nearest[0][1] > 0.999

    events = service.history(ALICE, berlin.id)
    assert [(e.kind, e.client, e.text_before) for e in events] == [
        ("created", "claude", None),
        ("updated", "chatgpt", "I live in Berlin"),
    ]
    listed = service.list(ALICE, 1)[0][0].as_dict()
    assert listed["created_at"] != listed["updated_at"]  # shown once it differs
    assert "updated_at" not in service.search(ALICE, "cello", 1)[0].as_dict()  # never changed
    assert service.update(ALICE, berlin.id, "I live in Porto", ["city"]).tags == ["city"]


def test_another_persons_memory_answers_like_an_unknown_id(service):
    mine = service.add(ALICE, "My bank PIN hint is the cat's birthday").saved[0]
    assert service.update(BOB, mine.id, "hijacked") is None
    assert service.update(BOB, "no-such-id", "hijacked") is None
    assert service.delete(BOB, mine.id) is False
    assert service.history(BOB, mine.id) == []
    service.delete(ALICE, mine.id)
    assert service.restore(BOB, mine.id) is None
    assert service.deleted(BOB) == []
    assert service.restore(ALICE, mine.id) is not None
    assert service.get(ALICE, mine.id).text == "My bank PIN hint is the cat's birthday"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"memory_id": "", "text": "x"}, "memory_id is empty"),
        ({"memory_id": "abc", "text": "  "}, "text is empty"),
        ({"memory_id": "a\x00b", "text": "x"}, "NUL"),
        ({"memory_id": "abc", "text": "x", "tags": "work"}, "tags must be a list"),
    ],
)
def test_bad_update_input_says_what_to_change_and_changes_nothing(service, arguments, message):
    mine = service.add(ALICE, "Drinks oat milk").saved[0]
    arguments = {**arguments, "memory_id": arguments["memory_id"].replace("abc", mine.id)}
    with pytest.raises(MemoryInputError, match=message):
        service.update(ALICE, arguments["memory_id"], arguments["text"], arguments.get("tags"))
    assert service.get(ALICE, mine.id).text == "Drinks oat milk"
    assert [e.kind for e in service.history(ALICE, mine.id)] == ["created"]


def test_a_deleted_memory_leaves_search_list_and_context_at_once_and_restore_brings_it_back(service, engine):
    for text in OTHERS:
        service.add(ALICE, text)
    gone = service.add(ALICE, "My dog is a beagle called Max", [], "claude").saved[0]
    pk = pk_of(engine, gone.id)
    other_instance = MemoryService(engine, service.embedder)  # its own vector cache, warmed first
    for searcher in (service, other_instance):
        assert searcher.search(ALICE, "beagle Max", 1)[0].id == gone.id
    assert pk in ranked_pks(service, "beagle Max", "lexical") and pk in ranked_pks(service, "beagle Max", "vector")

    assert service.delete(ALICE, gone.id, "claude") is True
    for searcher in (service, other_instance):
        assert gone.id not in [m.id for m in searcher.search(ALICE, "beagle Max", 10)]
    assert pk not in ranked_pks(service, "beagle Max", "lexical")
    assert pk not in ranked_pks(service, "what is my dog called", "vector")
    assert pk not in ranked_pks(other_instance, "what is my dog called", "vector")
    assert gone.id not in [m.id for m in service.list(ALICE, 100)[0]]
    assert gone.id not in [m.id for m in service.profile(ALICE, 50)]
    assert service.get(ALICE, gone.id) is None and service.count(ALICE) == len(OTHERS)
    context = context_for(service, ALICE, "What is my dog called? Max the beagle?", True, True, "claude").text()
    assert "beagle" not in context
    assert service.delete(ALICE, gone.id) is False  # already in the trash: like an unknown id

    [trashed] = service.deleted(ALICE)
    assert trashed.id == gone.id and trashed.deleted_at is not None
    assert service.restore(ALICE, gone.id, "claude") is not None
    assert service.deleted(ALICE) == []
    for searcher in (service, other_instance):
        assert searcher.search(ALICE, "what is my dog called", 1)[0].id == gone.id
    assert pk in ranked_pks(service, "beagle", "lexical") and pk in ranked_pks(service, "my dog", "vector")
    assert [e.kind for e in service.history(ALICE, gone.id)] == ["created", "deleted", "restored"]


def test_the_trash_lists_the_most_recently_deleted_first(service):
    first, second = (service.add(ALICE, text).saved[0] for text in OTHERS[:2])
    service.delete(ALICE, first.id)
    clock.advance(60)
    service.delete(ALICE, second.id)
    assert [m.id for m in service.deleted(ALICE)] == [second.id, first.id]


def memory_traces(engine, memory_id: str, pk: int) -> dict[str, int]:
    """What is left of a memory: its row, vector, full-text entry and history events."""
    with engine.connect() as conn:
        traces = {
            "row": conn.execute(sa.select(sa.func.count()).where(memories.c.pk == pk)).scalar_one(),
            "vector": conn.execute(sa.select(sa.func.count()).where(memory_vectors.c.memory_pk == pk)).scalar_one(),
            "history": conn.execute(
                sa.select(sa.func.count()).where(memory_history.c.memory_id == memory_id)
            ).scalar_one(),
        }
        if engine.dialect.name == "sqlite":  # asked of the index itself, by a word of the text
            traces["fts"] = conn.execute(
                sa.text("SELECT count(*) FROM memories_fts WHERE memories_fts MATCH 'tangerine' AND rowid = :pk"),
                {"pk": pk},
            ).scalar_one()
        else:  # PostgreSQL's index is a column of the row
            traces["fts"] = traces["row"]
    return traces


def test_the_purge_removes_memory_vector_fulltext_and_history_after_the_trash_days(service, engine):
    kept = service.add(ALICE, "Grows tangerine trees on the terrace, kept").saved[0]
    gone = service.add(ALICE, "Paints tangerine walls in the kitchen").saved[0]
    service.update(ALICE, gone.id, "Paints tangerine walls in the hall")
    pk = pk_of(engine, gone.id)
    service.delete(ALICE, gone.id)
    assert memory_traces(engine, gone.id, pk) == {"row": 1, "vector": 0, "history": 3, "fts": 1}

    clock.advance(29 * DAY_SECONDS)
    assert purge_trash(engine, Settings(trash_days=30)) == 0
    assert service.restore(ALICE, gone.id) is not None  # still restorable on day 29
    service.delete(ALICE, gone.id)
    clock.advance(30 * DAY_SECONDS - 1)
    assert purge(engine, 30) == 0
    clock.advance(2)
    assert purge_trash(engine, Settings(trash_days=30)) == 1
    assert memory_traces(engine, gone.id, pk) == {"row": 0, "vector": 0, "history": 0, "fts": 0}
    assert service.restore(ALICE, gone.id) is None
    assert [m.id for m in service.search(ALICE, "tangerine", 10)] == [kept.id]
    assert [e.kind for e in service.history(ALICE, kept.id)] == ["created"]


def test_delete_all_is_immediate_and_complete_and_touches_nobody_else(service, engine):
    for user in (ALICE, BOB):
        for text in OTHERS:
            service.add(user, text)
    service.delete(ALICE, service.list(ALICE, 1)[0][0].id)
    service.store_document(ALICE, "Notes", "# Cello\n\nPractise scales daily.")
    assert service.search(ALICE, "cello", 1)  # the cache holds Alice's vectors
    counts = service.delete_all(ALICE)
    assert counts["memories"] == len(OTHERS) and counts["documents"] == 1 and counts["jobs"] == 1
    assert service.search(ALICE, "cello", 10) == [] and service.deleted(ALICE) == []
    with engine.connect() as conn:
        for table in (memories, memory_vectors, memory_history):
            left = conn.execute(sa.select(sa.func.count()).select_from(table).where(table.c.user_id == ALICE))
            assert left.scalar_one() == 0, table.name
    assert len(service.list(BOB, 100)[0]) == len(OTHERS) and service.search(BOB, "cello", 1)


def test_a_merge_is_in_the_history_with_its_app_and_an_exact_duplicate_is_not(service):
    first = service.add(ALICE, "I work as a nurse at the city hospital", [], "claude").saved[0]
    reworded = service.add(ALICE, "I work as a nurse at the city hospital.", [], "cursor")
    assert [m.id for m in reworded.saved] == [first.id]  # a rewording (cosine >= 0.95) merged into it
    duplicate = service.add(ALICE, "i work as a NURSE at the city hospital.", [], "cursor")
    assert duplicate.saved == [] and duplicate.similar[0].id == first.id  # the same text: nothing changed
    assert [(e.kind, e.client, e.text_before) for e in service.history(ALICE, first.id)] == [
        ("created", "claude", None),
        ("merged", "cursor", "I work as a nurse at the city hospital"),
    ]
    tagged = service.add(ALICE, "I work as a nurse at the city hospital.", ["work"], "claude")
    assert tagged.similar[0].tags == ["work"]  # a new tag on the same text is a change
    assert [e.kind for e in service.history(ALICE, first.id)] == ["created", "merged", "merged"]


def test_context_lines_say_when_each_fact_was_saved_and_changed():
    day = 1_773_446_400.0  # 2026-03-14
    old = Memory(id="a", text="Lives in Berlin", tags=[], created_at=day, updated_at=day)
    changed = Memory(id="b", text="Works at Acme", tags=[], created_at=day, updated_at=day + 50 * DAY_SECONDS)
    text = format_memories([old, changed], "Known:")
    assert text.splitlines() == [
        "Known:",
        "- Lives in Berlin (saved 2026-03-14)",
        "- Works at Acme (saved 2026-03-14, updated 2026-05-03)",
    ]


def test_export_and_import_carry_history_and_trash_and_old_files_still_import(engine, embedder):
    source = MemoryService(engine, None)
    kept = source.add(ALICE, "I live in Berlin", ["home"], "claude").saved[0]
    source.update(ALICE, kept.id, "I live in Lisbon", None, "chatgpt")
    trashed = source.add(ALICE, "I am vegetarian", [], "claude").saved[0]
    source.delete(ALICE, trashed.id, "claude")
    exported = export_user(engine, ALICE, "alice@example.com")
    assert exported["version"] == 2

    target = MemoryService(engine, embedder)
    assert import_user(target, engine, BOB, exported) == (2, 0)
    assert [m.text for m in target.list(BOB, 10)[0]] == ["I live in Lisbon"]
    assert [m.text for m in target.deleted(BOB)] == ["I am vegetarian"]
    [moved] = target.list(BOB, 10)[0]
    assert [(e.kind, e.client, e.text_before) for e in target.history(BOB, moved.id)] == [
        ("created", "claude", None),
        ("updated", "chatgpt", "I live in Berlin"),
    ]
    again = export_user(engine, BOB, "bob@example.com")
    for field in ("memories",):
        strip = [{k: v for k, v in m.items() if k != "id"} for m in again[field]]
        assert strip == [{k: v for k, v in m.items() if k != "id"} for m in exported[field]]

    old_file = {
        "format": "jean-memory-export",
        "version": 1,
        "memories": [{"text": "Plays the oboe", "tags": [], "client": "claude", "created_at": 1_700_000_000}],
        "documents": [],
    }
    assert import_user(target, engine, "carol-id", old_file) == (1, 0)
    [oboe] = target.list("carol-id", 10)[0]
    assert [(e.kind, e.at, e.client) for e in target.history("carol-id", oboe.id)] == [
        ("created", 1_700_000_000, "claude")
    ]


# --- through the MCP tools -----------------------------------------------------------------------


@pytest.fixture
def running(database_url, tmp_path):
    """In this process, so moving the clock moves the server's."""
    with threaded_server(database_url, tmp_path / "data") as server:
        yield server


def mcp_of(server, email: str) -> McpHttp:
    from jean_memory.accounts.users import create_user
    from tests.support.oauth import PASSWORD

    create_user(server.engine, email, PASSWORD)
    return McpHttp(server.mcp_url, new_flow(server.base_url).tokens(email)["access_token"])


def results(mcp: McpHttp, tool: str, arguments: dict) -> list[dict]:
    answer = mcp.call_tool(tool, arguments)
    assert answer["isError"] is False, answer
    return answer["structuredContent"]["results"]


def test_update_memory_through_mcp(running):
    alice = mcp_of(running, "alice@example.com")
    bob = mcp_of(running, "bob@example.com")
    saved = alice.call_tool("add_memories", {"text": "I work at Initech as a tester", "tags": ["work"]})
    memory_id = saved["structuredContent"]["saved"][0]["id"]
    clock.advance(600)  # well inside the access token's hour

    answer = alice.call_tool("update_memory", {"memory_id": memory_id, "text": "I switched jobs: now at Globex"})
    assert answer["isError"] is False
    assert answer["structuredContent"] == {
        "updated": memory_id,
        "text": "I switched jobs: now at Globex",
        "tags": ["work"],
    }
    hits = results(alice, "search_memory", {"query": "Globex"})
    assert hits[0]["id"] == memory_id and hits[0]["updated_at"] > hits[0]["created_at"]
    assert all("Initech" not in hit["text"] for hit in results(alice, "search_memory", {"query": "Initech tester"}))
    assert results(alice, "list_memories", {"limit": 5})[0]["updated_at"] == hits[0]["updated_at"]
    context = alice.call_tool("jean_memory", {"user_message": "Where do I work?", "is_new_conversation": False})
    assert "Globex" in context["content"][0]["text"] and "Initech" not in context["content"][0]["text"]

    with running.engine.connect() as conn:
        user_id = conn.execute(sa.select(memories.c.user_id).where(memories.c.id == memory_id)).scalar_one()
    memory = MemoryService(running.engine, None)
    [_created, updated] = memory.history(user_id, memory_id)
    assert (updated.kind, updated.text_before, updated.client) == (
        "updated",
        "I work at Initech as a tester",
        "claude",  # the profile of the test flow's client, as add_memories records it
    )

    unknown = alice.call_tool("update_memory", {"memory_id": "0" * 32, "text": "x"})
    foreign = bob.call_tool("update_memory", {"memory_id": memory_id, "text": "hijacked"})
    assert unknown["isError"] is True and foreign["isError"] is True
    assert foreign["content"][0]["text"] == unknown["content"][0]["text"].replace("0" * 32, memory_id)
    assert "list_memories" in foreign["content"][0]["text"]
    empty = alice.call_tool("update_memory", {"memory_id": memory_id, "text": ""})
    assert empty["isError"] is True and "text is empty" in empty["content"][0]["text"]
    assert results(alice, "search_memory", {"query": "Globex"})[0]["text"] == "I switched jobs: now at Globex"


def test_delete_memory_through_mcp_goes_to_the_trash(running):
    alice = mcp_of(running, "alice@example.com")
    memory_id = alice.call_tool("add_memories", {"text": "My sister Ana lives in Lisbon"})["structuredContent"][
        "saved"
    ][0]["id"]
    assert results(alice, "search_memory", {"query": "sister Ana"})[0]["id"] == memory_id
    assert alice.call_tool("delete_memory", {"memory_id": memory_id})["isError"] is False
    assert results(alice, "search_memory", {"query": "sister Ana"}) == []
    assert results(alice, "list_memories", {}) == []
    context = alice.call_tool("jean_memory", {"user_message": "Who is Ana, my sister?", "is_new_conversation": True})
    assert "Lisbon" not in context["content"][0]["text"]
    again = alice.call_tool("delete_memory", {"memory_id": memory_id})
    assert again["isError"] is True and "no memory with id" in again["content"][0]["text"]

    with running.engine.connect() as conn:
        user_id = conn.execute(sa.select(memories.c.user_id).where(memories.c.id == memory_id)).scalar_one()
    memory = MemoryService(running.engine, None)
    assert [m.id for m in memory.deleted(user_id)] == [memory_id]
    assert memory.restore(user_id, memory_id) is not None
    assert results(alice, "search_memory", {"query": "sister Ana"})[0]["id"] == memory_id


@pytest.mark.anyio
async def test_the_sdk_client_sees_and_calls_update_memory(server, browser):
    """The official SDK client, through its own OAuth flow, lists update_memory (not read-only,
    destructive: it overwrites a text) and rewrites a memory with it."""
    from tests.support.sdk_client import MemoryTokenStorage, WireLog, sdk_client, sdk_provider

    provider = sdk_provider(server.mcp_url, MemoryTokenStorage(), browser, None)
    async with sdk_client(server.mcp_url, provider, WireLog()) as client:
        [tool] = [t for t in (await client.list_tools()).tools if t.name == "update_memory"]
        assert tool.annotations.read_only_hint is False and tool.annotations.destructive_hint is True
        saved = await client.call_tool("add_memories", {"text": "My phone is a Pixel 6"})
        memory_id = saved.structured_content["saved"][0]["id"]
        updated = await client.call_tool("update_memory", {"memory_id": memory_id, "text": "My phone is an iPhone 15"})
        assert not updated.is_error and updated.structured_content["updated"] == memory_id
        found = await client.call_tool("search_memory", {"query": "phone"})
        assert [r["text"] for r in found.structured_content["results"]] == ["My phone is an iPhone 15"]
        unknown = await client.call_tool("update_memory", {"memory_id": "f" * 32, "text": "x"})
        assert unknown.is_error and "list_memories shows the ids" in unknown.content[0].text
