"""The newer of two memories on the same subject first (memory/recency.py, issue 15 item 4):
search moves a newer close memory directly above the older one the question found first, and
jean_memory's context shows the older one as "earlier: ..." without hiding it; unrelated
memories and near misses (a second statement that does not replace the first) are left alone.
On both databases with the real local model; the tools through a real server and MCP client."""

import numpy as np
import pytest
from bench.people import ensure_people

from jean_memory import clock
from jean_memory.memory.context import context_for
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.recency import NEAR_DUPLICATE, NEWER_FIRST_COSINE, newer_first, newer_of, takes_part
from jean_memory.memory.retrieval import SearchConfig
from jean_memory.memory.service import MemoryService
from jean_memory.memory.trash import DAY_SECONDS
from tests.support.oauth import McpHttp, new_flow

ALICE = "alice-id"
OTHERS = [
    "The quarterly tax report is due in April",
    "I am learning to play the cello",
    "We bought a new sofa last weekend",
    "My favourite food is ramen",
    "I prefer window seats on long flights",
]
# From bench/knowledge_updates.json: a replacement the supersession detector does not mark (it
# does not read negation), and that the question's wording finds second.
OLD = "I'm allergic to penicillin."
NEW = "The allergist retested me: I'm not allergic to penicillin after all."
QUESTION = "Am I allergic to penicillin?"
# Near misses of the set (two trips; another person), here one pair below the rule's cosine.
NEAR_FIRST = "I visited Rome in 2019."
NEAR_SECOND = "My brother Pablo lives in Barcelona."


@pytest.fixture
def engine(engine):
    ensure_people(engine, ALICE)
    return engine


@pytest.fixture(scope="module")
def embedder() -> LocalOnnxEmbedder:
    return LocalOnnxEmbedder()


def save_old_then_new(service: MemoryService, old: str, new: str) -> tuple[str, str]:
    for text in OTHERS:
        service.add(ALICE, text)
    first = service.add(ALICE, old).saved[0].id
    clock.advance(30 * DAY_SECONDS)
    second = service.add(ALICE, new).saved[0].id
    return first, second


def test_a_close_newer_memory_comes_first_and_the_older_is_marked_earlier(engine, embedder):
    service = MemoryService(engine, embedder)
    old, new = save_old_then_new(service, OLD, NEW)
    assert service.get(ALICE, old).superseded_by is None  # the detector did not decide it
    plain = MemoryService(engine, embedder, SearchConfig(newer_first=False))
    before = [m.id for m in plain.search(ALICE, QUESTION, 5)]
    assert before.index(old) < before.index(new)  # without the rule the question finds the old first
    after = [m.id for m in service.search(ALICE, QUESTION, 5)]
    assert after.index(new) == before.index(old) and after.index(old) == after.index(new) + 1
    assert [i for i in after if i not in (old, new)] == [i for i in before if i not in (old, new)]

    text = context_for(service, ALICE, QUESTION, False, True, None, save=False).text()
    assert f"- earlier: {OLD} (saved " in text and "a newer memory on this subject" in text
    assert f"- {NEW} (saved " in text  # the newer one is a current fact
    assert f"- {OLD} (" not in text  # the older one is still there, but not as a current fact


def test_unrelated_and_near_miss_pairs_keep_their_order_and_marks(engine, embedder):
    service = MemoryService(engine, embedder)
    save_old_then_new(service, NEAR_FIRST, NEAR_SECOND)
    a, b = embedder.embed([NEAR_FIRST, NEAR_SECOND])
    assert float(np.dot(a, b)) < NEWER_FIRST_COSINE
    plain = MemoryService(engine, embedder, SearchConfig(newer_first=False))
    for query in (NEAR_FIRST, "Where did I travel?", "favourite food"):
        assert [m.id for m in service.search(ALICE, query, 8)] == [m.id for m in plain.search(ALICE, query, 8)]
    text = context_for(service, ALICE, NEAR_FIRST, True, True, None, save=False).text()
    assert "- earlier:" not in text
    assert f"- {NEAR_FIRST} (saved " in text and f"- {NEAR_SECOND} (saved " in text


def test_the_rule_on_keys():
    """Pure: a close newer key moves directly above its best-ranked older one; far, older or
    near-duplicate keys stay; a chain of three ends newest first."""
    x = np.array([1.0, 0.0], dtype=np.float32)
    near = np.array([0.8, 0.6], dtype=np.float32)  # cosine 0.8 to x
    far = np.array([0.0, 1.0], dtype=np.float32)
    day = DAY_SECONDS
    dated = {1: (10 * day, x), 2: (5 * day, far), 3: (20 * day, near), 4: (30 * day, x), 5: (day, near)}
    assert newer_first([1, 2, 3], dated) == [3, 1, 2]
    assert newer_first([3, 1, 2], dated) == [3, 1, 2]  # already newer first
    assert newer_first([2, 1], dated) == [2, 1]  # not close
    assert newer_first([5, 1, 3], dated) == [3, 1, 5]  # 1 above 5, then 3 above 1
    assert newer_first([1, 4], dated) == [1, 4]  # cosine 1.0: a near duplicate, not a pair
    assert NEAR_DUPLICATE <= 1.0
    assert newer_first([1, 6], {**dated, 6: (10 * day + 3600, near)}) == [1, 6]  # the same day: a conversation
    assert takes_part("I live in Berlin.") and not takes_part("Where do you live now?")
    assert not takes_part(" ".join(["word"] * 40))  # long: conversation or several facts
    assert newer_of(["1", "3"], {"1": dated[1], "3": dated[3]}) == {"1": "3"}


def test_through_the_tools(server, alice):
    tokens = new_flow(server.base_url).tokens(alice.email)
    mcp = McpHttp(server.mcp_url, tokens["access_token"])
    for text in OTHERS:
        mcp.call_tool("add_memories", {"text": text})
    old = mcp.call_tool("add_memories", {"text": OLD})["structuredContent"]["saved"][0]["id"]
    clock.advance(30 * DAY_SECONDS)
    mcp = McpHttp(server.mcp_url, new_flow(server.base_url).tokens(alice.email)["access_token"])  # a month on
    new = mcp.call_tool("add_memories", {"text": NEW})["structuredContent"]["saved"][0]["id"]
    results = mcp.call_tool("search_memory", {"query": QUESTION, "limit": 5})["structuredContent"]["results"]
    ids = [r["id"] for r in results]
    assert ids.index(new) + 1 == ids.index(old)
    assert all("superseded_by" not in r for r in results)  # reordered, nothing marked or hidden
    context = mcp.call_tool(
        "jean_memory", {"user_message": QUESTION, "is_new_conversation": False, "needs_context": True}
    )["content"][0]["text"]
    assert f"- earlier: {OLD} (saved " in context and f"- {NEW} (saved " in context
    assert context.index(NEW) < context.index(f"earlier: {OLD}")
