"""What every embedding provider is: the protocol the memory service calls, the errors it may
raise, and the input and output rules all providers share.

Every provider names its vector space in :attr:`Embedder.model_name`. Callers store that name
next to each vector: vectors from different models are not comparable, so a changed name is
the signal to re-embed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = [
    "Embedder",
    "EmbeddingError",
    "EmbeddingModelError",
    "EmbeddingServiceError",
    "check_texts",
    "normalise_rows",
]


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


def check_texts(texts: Sequence[str]) -> list[str]:
    # A bare string is a Sequence[str] too; embedding it character by character is a silent,
    # expensive bug, so refuse it.
    if isinstance(texts, str):
        raise TypeError("embed() takes a list of strings; use embed_query() for a single text")
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"embed() takes strings, got {type(text).__name__}")
    return texts


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit rows let the store score with a plain dot product, whatever the provider returned."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
