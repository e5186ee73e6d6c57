"""The optional LLM fact extraction, against a real OpenAI-compatible HTTP endpoint on loopback."""

import pytest
from bench.people import ensure_people

from jean_memory.db.engine import create_engine
from jean_memory.db.migrate import upgrade
from jean_memory.memory.extraction import LlmExtractor
from jean_memory.memory.indexing import Indexer
from jean_memory.memory.service import MemoryService
from tests.support.chat_model import chat_model_server


@pytest.fixture
def chat_model():
    with chat_model_server(answer=(200, '{"facts": []}')) as server:
        yield server


@pytest.fixture
def service(database_url, chat_model):
    engine = create_engine(database_url)
    upgrade(engine)
    ensure_people(engine, "u")
    extractor = LlmExtractor(f"http://127.0.0.1:{chat_model.server_port}/v1", "test-model", "sk-test")
    yield MemoryService(engine, None, extractor=extractor)
    engine.dispose()


MESSAGE = "Ugh, long day. My partner Sam and I are moving to Porto in June, can you help me pack?"


def texts(service: MemoryService) -> set[str]:
    return {m.text for m in service.list("u", 100)[0]}


def test_the_model_picks_the_facts(service, chat_model):
    chat_model.answer = (200, '```json\n{"facts": ["The user\'s partner is Sam.", "Moving to Porto in June."]}\n```')
    Indexer(service).save_facts_job("u", {"facts": [], "message": MESSAGE, "client": "claude"})
    assert texts(service) == {"The user's partner is Sam.", "Moving to Porto in June."}
    (path, auth), body = chat_model.calls[0], chat_model.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "test-model"
    assert body["messages"][-1]["content"] == MESSAGE


@pytest.mark.parametrize("answer", [(500, "overloaded"), (200, "not json at all"), (200, '{"facts": "Sam"}')])
def test_any_model_error_falls_back_to_the_verbatim_sentences(service, chat_model, answer):
    chat_model.answer = answer
    fallback = ["My partner Sam and I are moving to Porto in June, can you help me pack?"]
    Indexer(service).save_facts_job("u", {"facts": fallback, "message": MESSAGE, "client": "claude"})
    assert texts(service) == set(fallback)
