"""With JEAN_MEMORY_LLM_* set, the save step lets the model decide ADD / UPDATE / SUPERSEDE /
IGNORE against the closest existing memories (issue 15 item 4, the third way), and falls back to
the local detector when the model fails or answers out of shape.

The model is an outside service, so it is a small OpenAI-compatible HTTP server on loopback
answering scripted JSON; everything else is real (database, local embedding model, job handler)."""

import json

import pytest
import sqlalchemy as sa
from bench.people import ensure_people

from jean_memory import clock
from jean_memory.db.tables import memories
from jean_memory.memory import history
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.extraction import LlmExtractor
from jean_memory.memory.indexing import Indexer
from jean_memory.memory.service import MemoryService
from tests.support.chat_model import chat_model_server

USER = "u"


@pytest.fixture
def model():
    with chat_model_server(answer=(500, "no answer scripted")) as server:
        yield server


@pytest.fixture(scope="module")
def embedder() -> LocalOnnxEmbedder:
    return LocalOnnxEmbedder()


@pytest.fixture
def service(engine, embedder, model) -> MemoryService:
    ensure_people(engine, USER)
    extractor = LlmExtractor(f"http://127.0.0.1:{model.server_port}/v1", "test-model", timeout_seconds=10)
    return MemoryService(engine, embedder, extractor=extractor)


def facts(*texts: str) -> tuple[int, str]:
    return (200, json.dumps({"facts": list(texts)}))


def decisions(*items: dict) -> tuple[int, str]:
    return (200, json.dumps({"decisions": list(items)}))


def save(service: MemoryService, message: str) -> None:
    Indexer(service).save_facts_job(USER, {"facts": [message], "message": message, "client": "claude"})


def rows(service: MemoryService) -> dict[str, sa.Row]:
    with service.engine.connect() as conn:
        return {r.text: r for r in conn.execute(sa.select(memories).where(memories.c.user_id == USER))}


def existing(service: MemoryService, *texts: str) -> list[str]:
    ids = [service.add(USER, text, [], "claude").saved[0].id for text in texts]
    clock.advance(86400)
    return ids


def shown_to_model(model) -> dict:
    """The EXISTING MEMORIES and NEW FACTS of the decision request (the second call)."""
    return json.loads(model.requests[1]["messages"][-1]["content"])


def test_supersede_marks_the_old_memory_replaced(service, model):
    berlin, _ = existing(service, "I live in Berlin", "I am learning to play the cello")
    model.script = [
        facts("The user moved to Lisbon last month"),
        decisions({"fact": 0, "event": "SUPERSEDE", "id": "0"}),
    ]
    save(service, "I moved to Lisbon last month")
    request = shown_to_model(model)
    assert request["NEW FACTS"] == [{"fact": 0, "text": "The user moved to Lisbon last month"}]
    assert request["EXISTING MEMORIES"][0]["text"] == "I live in Berlin"
    assert request["EXISTING MEMORIES"][0]["saved"]  # the date, so the model can tell old from new
    stored = rows(service)
    new = stored["The user moved to Lisbon last month"]
    assert stored["I live in Berlin"].superseded_by == new.id
    assert stored["I am learning to play the cello"].superseded_by is None
    assert history.SUPERSEDED in [e.kind for e in service.history(USER, berlin)]


def test_update_rewrites_through_the_update_path_with_history(service, model):
    [dog] = existing(service, "My dog Max is 3 years old")
    model.script = [
        facts("The user's dog Max turned 4"),
        decisions({"fact": 0, "event": "UPDATE", "id": "0", "text": "My dog Max is 4 years old"}),
    ]
    save(service, "Max turned 4 today!")
    stored = rows(service)
    assert set(stored) == {"My dog Max is 4 years old"}  # rewritten in place, nothing added
    assert stored["My dog Max is 4 years old"].id == dog
    updated = [e for e in service.history(USER, dog) if e.kind == history.UPDATED]
    assert updated and updated[0].text_before == "My dog Max is 3 years old"
    assert service.search(USER, "how old is Max", 1)[0].text == "My dog Max is 4 years old"  # re-embedded


def test_ignore_saves_nothing_and_add_saves(service, model):
    existing(service, "I am vegetarian")
    model.script = [
        facts("The user is vegetarian", "The user's sister is called Ana"),
        decisions({"fact": 0, "event": "IGNORE"}, {"fact": 1, "event": "ADD"}),
    ]
    save(service, "As a vegetarian, I cook for my sister Ana")
    assert set(rows(service)) == {"I am vegetarian", "The user's sister is called Ana"}


@pytest.mark.parametrize(
    "answer",
    [
        (200, "not json {"),
        (500, "overloaded"),
        (200, '{"decisions": "ADD"}'),
        (200, '{"decisions": [{"fact": 0, "event": "MERGE", "id": "0"}]}'),
        (200, '{"decisions": [{"fact": 0, "event": "SUPERSEDE", "id": "7"}]}'),  # an id it was not given
        (200, '{"decisions": [{"fact": 0, "event": "UPDATE", "id": "0"}]}'),  # no rewritten text
        (200, '{"decisions": [{"fact": 3, "event": "IGNORE"}]}'),
    ],
    ids=["not-json", "http-500", "not-a-list", "unknown-event", "unknown-id", "update-without-text", "bad-fact"],
)
def test_a_malformed_answer_falls_back_to_the_local_detector(service, model, answer):
    """The fact is saved as without a model, and the local detector marks what it replaces
    (it catches this pair: a change word and a new place, close in meaning)."""
    existing(service, "I live in Berlin")
    model.script = [facts("I no longer live in Berlin, I live in Lisbon now"), answer]
    save(service, "I no longer live in Berlin, I live in Lisbon now")
    stored = rows(service)
    new = stored["I no longer live in Berlin, I live in Lisbon now"]
    assert stored["I live in Berlin"].superseded_by == new.id
    assert len(model.requests) == 2  # the model was asked, and its answer was not used


def test_a_fact_the_answer_leaves_out_is_still_saved(service, model):
    existing(service, "I work as a nurse")
    model.script = [
        facts("The user works night shifts", "The user plays padel on Fridays"),
        decisions({"fact": 1, "event": "ADD"}),
    ]
    save(service, "Night shifts again as a nurse; padel on Friday keeps me sane")
    assert {"The user works night shifts", "The user plays padel on Fridays"} <= set(rows(service))


def test_through_a_server_with_the_llm_settings(database_url, tmp_path, model):
    """JEAN_MEMORY_LLM_BASE_URL set on a real server: jean_memory's queued save asks the model,
    which supersedes the old home; a read-only connection's jean_memory never asks it."""
    from jean_memory.accounts.users import create_user
    from jean_memory.memory.jobs import pending_count
    from tests.support.oauth import PASSWORD, McpHttp, new_flow, parse_form, redirect_params
    from tests.support.servers import threaded_server

    base_url = f"http://127.0.0.1:{model.server_port}/v1"
    with threaded_server(database_url, tmp_path / "data", llm_base_url=base_url, llm_model="m") as server:
        alice = create_user(server.engine, "alice@example.com", PASSWORD)
        flow = new_flow(server.base_url)
        flow.register()
        mcp = McpHttp(server.mcp_url, flow.tokens(alice.email)["access_token"])
        berlin = mcp.call_tool("add_memories", {"text": "I live in Berlin"})["structuredContent"]["saved"][0]["id"]
        clock.advance(86400)
        mcp = McpHttp(server.mcp_url, flow.tokens(alice.email)["access_token"])  # a day on: a fresh token
        model.script = [
            facts("The user moved to Lisbon last month"),
            decisions({"fact": 0, "event": "SUPERSEDE", "id": "0"}),
        ]
        mcp.call_tool(
            "jean_memory", {"user_message": "By the way, I moved to Lisbon last month", "is_new_conversation": False}
        )
        wait_until(lambda: pending_count(server.engine) == 0 and len(model.requests) == 2)
        listed = mcp.call_tool("list_memories", {"limit": 10})["structuredContent"]["results"]
        by_text = {m["text"]: m for m in listed}
        assert by_text["I live in Berlin"]["superseded_by"] == by_text["The user moved to Lisbon last month"]["id"]
        context = mcp.call_tool("jean_memory", {"user_message": "Where do I live?", "is_new_conversation": True})
        assert "- earlier: I live in Berlin" in context["content"][0]["text"]
        assert berlin == by_text["I live in Berlin"]["id"]

        # A read-only grant (allow_write unchecked): context, and nothing queued or asked.
        asked = len(model.requests)
        page = flow.authorize(prompt="consent")
        form = parse_form(page.text)
        fields = {k: v for k, v in form["fields"].items() if k != "allow_write"}
        response = flow.http.post(server.base_url + form["action"], data={**fields, "decision": "approve"})
        reader = McpHttp(server.mcp_url, flow.exchange(redirect_params(response)["code"]).json()["access_token"])
        answer = reader.call_tool(
            "jean_memory",
            {
                "user_message": "Remember that I started a new job at Stripe as an engineer",
                "is_new_conversation": False,
            },
        )
        assert "Saving" not in answer["content"][0]["text"] and "Checking" not in answer["content"][0]["text"]
        assert pending_count(server.engine) == 0 and len(model.requests) == asked


def wait_until(condition, deadline_seconds: float = 30) -> None:
    import time

    deadline = time.monotonic() + deadline_seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        time.sleep(0.05)
