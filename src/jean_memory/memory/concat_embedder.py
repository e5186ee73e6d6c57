"""Two local models as one: each memory's vector is the two models' unit vectors side by side,
each scaled by the square root of its weight, so a cosine in this space is the weighted mean of
the two models' cosines (``JEAN_MEMORY_LOCAL_MODEL=minilm+use``).

all-MiniLM-L6-v2 is the better model for English (LoCoMo), USE multilingual v3 the one that
finds a memory in another language or from another language's question (bench/README.md);
together they keep most of each, for both models' query cost (about 3.8 ms of CPU) and one
stored vector per memory: the index, the vector cache and the re-embedding work unchanged.
"""

from __future__ import annotations

import numpy as np

from jean_memory.memory.embedder import Embedder, check_texts

__all__ = ["ConcatEmbedder"]


class ConcatEmbedder:
    """`parts` are (embedder, weight) pairs, the weights summing to 1."""

    def __init__(self, parts: list[tuple[Embedder, float]], name: str | None = None) -> None:
        if not parts or abs(sum(w for _, w in parts) - 1.0) > 1e-9 or any(w <= 0 for _, w in parts):
            raise ValueError("ConcatEmbedder needs positive weights that sum to 1")
        self._parts = parts
        # The space changes with either model or a weight: all three are in the name.
        self.model_name = name or "+".join(f"{p.model_name}*{w:g}" for p, w in parts)
        self.dimensions = sum(p.dimensions for p, _ in parts)

    def load(self) -> None:
        for part, _ in self._parts:
            load = getattr(part, "load", None)
            if load is not None:
                load()

    def embed(self, texts: list[str]) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.hstack([part.embed(texts) * np.float32(np.sqrt(w)) for part, w in self._parts]).astype(np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return np.hstack([part.embed_query(text) * np.float32(np.sqrt(w)) for part, w in self._parts]).astype(
            np.float32
        )
