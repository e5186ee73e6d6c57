"""Embeddings from any OpenAI-compatible ``POST /embeddings`` endpoint.

People who already pay for a hosted model, or run one locally (Ollama, vLLM, LM Studio), can
point the ``openai`` provider here instead of the local model (embeddings.py).
"""

from __future__ import annotations

import threading

import numpy as np

from jean_memory.memory.embedder import EmbeddingServiceError, check_texts, normalise_rows

__all__ = ["DEFAULT_OPENAI_BASE_URL", "DEFAULT_OPENAI_MODEL", "OpenAICompatibleEmbedder"]

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "text-embedding-3-small"
_OPENAI_BATCH_SIZE = 64


class OpenAICompatibleEmbedder:
    """Any server that speaks OpenAI's ``POST /embeddings`` (OpenAI, Azure-style proxies, Ollama,
    vLLM, LM Studio, LiteLLM).

    ``dimensions`` is only what we expect back, never sent: many compatible servers reject the
    parameter, and a mismatch is then caught here instead of corrupting the index. When it is
    not given, the first call learns it from the server.
    """

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_OPENAI_BASE_URL,
        api_key: str | None = None,
        model: str = DEFAULT_OPENAI_MODEL,
        dimensions: int | None = None,
        timeout: float = 30.0,
        batch_size: int = _OPENAI_BATCH_SIZE,
    ) -> None:
        import httpx

        if not base_url:
            raise ValueError("base_url is required for OpenAI-compatible embeddings")
        if not model:
            raise ValueError("model is required for OpenAI-compatible embeddings")
        if dimensions is not None and dimensions < 1:
            raise ValueError("dimensions must be positive")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._url = base_url.rstrip("/") + "/embeddings"
        self._model = model
        self._dimensions = dimensions
        self._batch_size = batch_size
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # One pooled client: httpx.Client is thread-safe and reusing connections saves a TLS
        # handshake per memory saved.
        self._client = httpx.Client(headers=headers, timeout=timeout)
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return f"openai:{self._model}"

    @property
    def dimensions(self) -> int:
        """Asks the server once when not configured, since callers may size storage before the
        first memory is embedded."""
        if self._dimensions is None:
            self.embed(["dimension probe"])
        assert self._dimensions is not None
        return self._dimensions

    def close(self) -> None:
        self._client.close()

    def _request(self, batch: list[str]) -> np.ndarray:
        import httpx

        try:
            response = self._client.post(self._url, json={"model": self._model, "input": batch})
        except httpx.HTTPError as exc:
            raise EmbeddingServiceError(f"Embeddings request to {self._url} failed: {exc!r}") from exc
        if response.status_code != 200:
            body = response.text[:500].strip()
            raise EmbeddingServiceError(
                f"Embeddings request to {self._url} failed with HTTP {response.status_code}: {body or '(empty body)'}"
            )
        try:
            data = response.json()["data"]
            rows = sorted(data, key=lambda item: item.get("index", 0))
            vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EmbeddingServiceError(
                f"Embeddings response from {self._url} is not in OpenAI format: {exc!r}"
            ) from exc
        if vectors.ndim != 2 or vectors.shape[0] != len(batch):
            raise EmbeddingServiceError(
                f"Embeddings response from {self._url} has {vectors.shape[0] if vectors.ndim else 0} "
                f"vectors for {len(batch)} inputs"
            )
        if not np.all(np.isfinite(vectors)):
            raise EmbeddingServiceError(f"Embeddings response from {self._url} contains NaN or infinite values")
        with self._lock:
            if self._dimensions is None:
                self._dimensions = int(vectors.shape[1])
        if vectors.shape[1] != self._dimensions:
            raise EmbeddingServiceError(
                f"Embeddings from {self._url} (model {self._model!r}) have {vectors.shape[1]} dimensions, "
                f"expected {self._dimensions}"
            )
        return normalise_rows(vectors)

    def embed(self, texts: list[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self._dimensions or 0), dtype=np.float32)
        parts = [self._request(texts[i : i + self._batch_size]) for i in range(0, len(texts), self._batch_size)]
        return np.concatenate(parts, axis=0)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]
