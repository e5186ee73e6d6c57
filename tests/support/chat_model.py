"""A small OpenAI-compatible chat endpoint on loopback for the LLM tests: the model is an
outside service, so a scripted stand-in is fair; everything of ours stays real."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _ChatCompletions(BaseHTTPRequestHandler):
    """Answers each /chat/completions with the next (status, content) of `server.script`, or
    `server.answer` once the script is used up; records every call."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        self.server.calls.append((self.path, self.headers.get("Authorization")))
        status, content = self.server.script.pop(0) if self.server.script else self.server.answer
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def chat_model_server(answer: tuple[int, str]) -> Iterator[ThreadingHTTPServer]:
    """The running endpoint (`server_port`; `script`, `answer`, `requests` bodies and `calls`
    as (path, Authorization) to read and set)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatCompletions)
    server.requests, server.calls, server.script, server.answer = [], [], [], answer
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
