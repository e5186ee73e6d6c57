"""The int8 model derived from the pinned file (memory/int8_model.py): it embeds like the
source model, is derived once per machine and library versions, and a damaged or unwritable
cache never stops the server from loading it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from jean_memory.memory import embeddings, int8_model
from jean_memory.memory.embeddings import MODEL_SHA256, LocalOnnxEmbedder, default_model_path

SENTENCES = [
    "My sister Ana moved to Lisbon in 2023 and works as a nurse.",
    "I'm allergic to peanuts, so please never suggest satay.",
    "The team standup moved to 9:30 on Tuesdays.",
    "When did Melanie paint the sunrise over the lake?",
    "x",
]


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache directory of this test's own, and no model already loaded in this process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(embeddings, "_CACHE", {})
    return tmp_path / "cache" / "jean-memory" / "models" / int8_model.cached_name(MODEL_SHA256)


def source_vectors(texts: list[str]) -> np.ndarray:
    """The pinned model as it ships (float32 MatMuls), mean-pooled like the embedder."""
    session = ort.InferenceSession(str(default_model_path()), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    tokenizer = LocalOnnxEmbedder()._get().tokenizer
    rows = []
    for encoding in tokenizer.encode_batch(texts):
        ids = np.array([encoding.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        vector = session.run(None, feeds)[0][0].mean(axis=0)
        rows.append(vector / np.linalg.norm(vector))
    return np.stack(rows)


def test_int8_vectors_agree_with_the_source_model() -> None:
    derived = LocalOnnxEmbedder().embed(SENTENCES)
    cosines = (derived * source_vectors(SENTENCES)).sum(axis=1)
    assert cosines.min() > 0.97, cosines


def test_derived_once_then_reused(own_cache: Path) -> None:
    LocalOnnxEmbedder().load()
    assert own_cache.is_file()
    made = own_cache.stat()
    assert not [p for p in own_cache.parent.iterdir() if p != own_cache]  # no partial files left

    embeddings._CACHE.clear()  # as a new process would
    LocalOnnxEmbedder().load()
    again = own_cache.stat()
    assert (again.st_ino, again.st_mtime_ns) == (made.st_ino, made.st_mtime_ns)


def test_damaged_cache_file_is_derived_again(own_cache: Path) -> None:
    own_cache.parent.mkdir(parents=True)
    own_cache.write_bytes(b"not a model")
    vector = LocalOnnxEmbedder().embed_query(SENTENCES[0])
    assert own_cache.stat().st_size > 1_000_000
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, atol=1e-5)


def test_unusable_cache_directory_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(embeddings, "_CACHE", {})
    expected = LocalOnnxEmbedder().embed(SENTENCES)  # derived in a temporary directory
    assert sorted(os.listdir(tmp_path)) == ["not-a-directory"]
    # The same libraries quantise the same way, wherever the file was made.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    embeddings._CACHE.clear()
    np.testing.assert_array_equal(LocalOnnxEmbedder().embed(SENTENCES), expected)


def test_a_failed_derivation_says_why(tmp_path: Path) -> None:
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"\x00" * 1000)
    with pytest.raises(int8_model.DerivationError) as info:
        int8_model.derive_in_child(garbage, tmp_path / "out.onnx")
    assert "\n" not in str(info.value) and str(info.value)
    assert not (tmp_path / "out.onnx").exists()
