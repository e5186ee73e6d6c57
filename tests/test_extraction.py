"""The optional LLM fact extraction, against a real OpenAI-compatible HTTP endpoint on loopback."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from bench.people import ensure_people

from jean_memory.db.engine import create_engine
from jean_memory.db.migrate import upgrade
from jean_memory.memory.extraction import LlmExtractor
from jean_memory.memory.indexing import Indexer
from jean_memory.memory.service import MemoryService


class ChatModel(BaseHTTPRequestHandler):
    """Answers /chat/completions with whatever the test put in `server.answer` (status, content)."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((self.path, self.headers.get("Authorization"), body))
        status, content = self.server.answer
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def chat_model():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatModel)
    server.requests, server.answer = [], (200, '{"facts": []}')
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


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
    path, auth, body = chat_model.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "test-model"
    assert body["messages"][-1]["content"] == MESSAGE


@pytest.mark.parametrize("answer", [(500, "overloaded"), (200, "not json at all"), (200, '{"facts": "Sam"}')])
def test_any_model_error_falls_back_to_the_verbatim_sentences(service, chat_model, answer):
    chat_model.answer = answer
    fallback = ["My partner Sam and I are moving to Porto in June, can you help me pack?"]
    Indexer(service).save_facts_job("u", {"facts": fallback, "message": MESSAGE, "client": "claude"})
    assert texts(service) == set(fallback)
