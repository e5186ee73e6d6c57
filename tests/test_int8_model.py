"""The int8 model derived from the pinned file (memory/int8_model.py): it embeds like the
source model, is derived once per machine and library versions, and a damaged or unwritable
cache never stops the server from loading it."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from jean_memory.memory import embeddings, int8_model
from jean_memory.memory.embeddings import LocalOnnxEmbedder
from jean_memory.memory.onnx_encoder import MODEL_SHA256, default_model_path, sha256_of

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


@pytest.fixture(scope="session")
def derived(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model this code derived and checked, as `model_file` hands it out (the machine's cache,
    derived there when missing), copied once per test process with its digest. Tests about what
    happens to a model already in the cache start from a copy instead of deriving their own: a
    derivation is about 3 s, and these tests derive again anyway when the copy must be replaced.
    (Session fixtures are set up before `own_cache` points XDG_CACHE_HOME elsewhere.)"""
    kept = tmp_path_factory.mktemp("derived") / "model.onnx"
    with int8_model.model_file(default_model_path(), MODEL_SHA256) as made:
        shutil.copyfile(made, kept)
        shutil.copyfile(digest_of(made), digest_of(kept))
    return kept


def seed(cache: Path, derived: Path) -> None:
    """Put the derived model and its digest where `model_file` looks, as it leaves them."""
    cache.parent.mkdir(parents=True, mode=0o700)
    shutil.copyfile(derived, cache)
    shutil.copyfile(digest_of(derived), digest_of(cache))


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


def digest_of(model: Path) -> Path:
    return model.with_name(model.name + ".sha256")


def test_int8_vectors_agree_with_the_source_model() -> None:
    derived = LocalOnnxEmbedder().embed(SENTENCES)
    cosines = (derived * source_vectors(SENTENCES)).sum(axis=1)
    assert cosines.min() > 0.97, cosines


def test_derived_once_then_reused(own_cache: Path) -> None:
    LocalOnnxEmbedder().load()
    assert own_cache.is_file()
    made = own_cache.stat()
    # The model and its digest, nothing else: no partial or work files left behind.
    assert sorted(own_cache.parent.iterdir()) == sorted([own_cache, digest_of(own_cache)])
    assert own_cache.parent.stat().st_mode & 0o777 == 0o700
    assert digest_of(own_cache).read_text() == sha256_of(own_cache) + "\n"
    assert (LocalOnnxEmbedder().embed(SENTENCES) * source_vectors(SENTENCES)).sum(axis=1).min() > 0.97

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


def test_unusable_cache_directory_still_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, derived: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(embeddings, "_CACHE", {})
    expected = LocalOnnxEmbedder().embed(SENTENCES)  # derived in a temporary directory
    assert sorted(os.listdir(tmp_path)) == ["not-a-directory"]
    # The same libraries quantise the same way, wherever the file was made (`derived`: by
    # another child process, into the cache).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    seed(tmp_path / "cache" / "jean-memory" / "models" / int8_model.cached_name(MODEL_SHA256), derived)
    embeddings._CACHE.clear()
    np.testing.assert_array_equal(LocalOnnxEmbedder().embed(SENTENCES), expected)


def test_a_failed_derivation_says_why(tmp_path: Path) -> None:
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"\x00" * 1000)
    with pytest.raises(int8_model.DerivationError) as info:
        int8_model.derive_in_child(garbage, tmp_path / "out.onnx")
    assert "\n" not in str(info.value) and str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]  # nothing half-written


def test_a_cached_model_changed_after_it_was_made_is_made_again(own_cache: Path, derived: Path) -> None:
    """Found in review: bytes flipped inside the cached model loaded silently (cosine to the
    real vectors 0.41). The digest recorded when it was made must match on every load."""
    seed(own_cache, derived)
    expected = LocalOnnxEmbedder().embed(SENTENCES)
    good = own_cache.read_bytes()
    with own_cache.open("r+b") as fh:
        fh.seek(len(good) // 2)
        fh.write(bytes(b ^ 0xFF for b in good[len(good) // 2 : len(good) // 2 + 4096]))
    embeddings._CACHE.clear()
    np.testing.assert_array_equal(LocalOnnxEmbedder().embed(SENTENCES), expected)
    assert own_cache.read_bytes() == good


@pytest.mark.parametrize("how", ["owned by another user", "writable by others"])
def test_a_cached_model_others_could_have_written_is_not_used(own_cache: Path, derived: Path, how: str) -> None:
    """Found in review: a model planted in the cache (another local user's, with HOME on a
    shared directory) was loaded as it was."""
    seed(own_cache, derived)
    expected = LocalOnnxEmbedder().embed(SENTENCES)
    if how == "owned by another user":
        os.chown(own_cache, 65534, 65534)
    else:
        own_cache.chmod(0o666)
    embeddings._CACHE.clear()
    np.testing.assert_array_equal(LocalOnnxEmbedder().embed(SENTENCES), expected)
    status = own_cache.stat()  # made again, by this user
    assert status.st_uid == os.geteuid() and not status.st_mode & 0o022


def test_a_cache_directory_of_another_user_is_left_alone(own_cache: Path) -> None:
    directory = own_cache.parent
    directory.mkdir(parents=True)
    os.chown(directory, 65534, 65534)
    planted = directory / "planted.txt"
    planted.write_text("theirs")
    assert LocalOnnxEmbedder().embed_query(SENTENCES[0]).shape == (384,)  # made privately
    assert sorted(os.listdir(directory)) == ["planted.txt"]


def test_a_derivation_that_cannot_finish_in_the_cache_is_made_privately(own_cache: Path) -> None:
    """Found in review: with no room in the cache directory the server refused to start,
    although a temporary directory would have done (a directory standing where the model
    goes fails the final move the same way a full disk fails the write)."""
    own_cache.mkdir(parents=True)
    expected = source_vectors(SENTENCES)
    vectors = LocalOnnxEmbedder().embed(SENTENCES)
    assert (vectors * expected).sum(axis=1).min() > 0.97
    assert own_cache.is_dir()


def test_leftovers_of_killed_derivations_are_swept(own_cache: Path) -> None:
    """Found in review: each derivation killed mid-way (an OOM kill, a stop during the first
    start) left a 58 MB partial model and a 90 MB folded one, never removed."""
    directory = own_cache.parent
    directory.mkdir(parents=True, mode=0o700)
    old_work = directory / ".derive-killed"
    old_work.mkdir()
    (old_work / "folded.onnx").write_bytes(b"x" * 1000)
    old_partial = directory / f".{own_cache.name}.4242.partial"
    old_partial.write_bytes(b"x" * 1000)
    running = directory / ".derive-running"  # another process's, still within its time
    running.mkdir()
    long_ago = time.time() - int8_model.DERIVE_TIMEOUT_SECONDS - 60
    for path in (old_work, old_partial):
        os.utime(path, (long_ago, long_ago))
    LocalOnnxEmbedder().load()
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [".derive-running", own_cache.name, digest_of(own_cache).name]
    )
