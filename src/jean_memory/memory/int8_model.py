"""The local model with its matrix multiplications in int8, derived once from the pinned file.

The pinned file keeps its weights as int8 only to be small: onnxruntime turns them back into
float32 when it loads the file (90 MB in memory) and then multiplies in float32, which is 5 ms of
CPU for a ten-word query. Quantising those MatMuls dynamically (int8 weights per output channel,
activations quantised on each call, onnxruntime's `quantize_dynamic`) makes a query 2.8x cheaper
and the loaded model 85 MB smaller, for a LoCoMo hit@5 of 0.709 instead of 0.711
(bench/README.md). No package ships such a file, so it is derived on first use and cached: the
derivation takes about 2 s, and its result depends only on the source file and the versions of
onnxruntime and onnx that made it, which is what the cached file's name records.

The derivation runs in a child process (``python -m jean_memory.memory.int8_model SRC DST``):
onnx's quantiser logs through the root logger and peaks at about 420 MB, and the check against
the source model (onnx_encoder.py) holds both models at once; none of that belongs in a
long-running server.
The child also checks the result against the source model and records its SHA-256 beside it;
the server loads a cached file only when that digest still matches and only this user (or root)
can write the file and its directory, so a damaged or planted file is made again instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from jean_memory.memory.onnx_encoder import agreement_with_source, sha256_of

__all__ = ["MIN_AGREEMENT", "DerivationError", "cache_dir", "cached_name", "derive", "model_file"]

#: A derivation that takes longer than this is stuck (it takes about 2 s on one core); leftovers
#: of one older than this belong to a process that was killed.
DERIVE_TIMEOUT_SECONDS = 300
#: Lowest cosine between the source and the derived model's vectors of a probe sentence.
#: Per-channel quantisation keeps them at 0.99; a quantiser that broke the model lands far below.
MIN_AGREEMENT = 0.95
_PARTIAL_SUFFIX = ".partial"
_WORK_PREFIX = ".derive-"


class DerivationError(RuntimeError):
    """The int8 model could not be made; the message says why in one line."""


def cache_dir() -> Path:
    """Where derived models are kept: the user's cache directory (XDG), since the file is
    re-creatable at any time and one machine's servers, tools and tests can share it."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jean-memory" / "models"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def cached_name(source_sha256: str) -> str:
    """The file name of the model derived from the source with this digest by the installed
    libraries: another onnxruntime or onnx may quantise differently, so it gets its own file."""
    return (
        f"all-MiniLM-L6-v2.dynamic-int8.{source_sha256[:16]}.ort-{_version('onnxruntime')}.onnx-{_version('onnx')}.onnx"
    )


def _digest_file(model: Path) -> Path:
    return model.with_name(model.name + ".sha256")


def _trusted(path: Path) -> bool:
    """Only this user or root may have written it: nothing another local user could swap."""
    status = path.stat()
    return status.st_uid in (os.geteuid(), 0) and not status.st_mode & 0o022


def _verified(model: Path) -> bool:
    """The cached model is the one a child made and checked, byte for byte."""
    digest = _digest_file(model)
    try:
        if not all(_trusted(p) for p in (model.parent, model, digest)):
            return False
        return digest.read_text().strip() == sha256_of(model)
    except OSError:
        return False


def _usable_directory(directory: Path) -> bool:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.access(directory, os.W_OK) and _trusted(directory)
    except OSError:
        return False


def _sweep_leftovers(directory: Path) -> None:
    """Remove what killed derivations left (a 58 MB partial model, a 90 MB folded one each)."""
    cutoff = time.time() - DERIVE_TIMEOUT_SECONDS
    for entry in directory.iterdir():
        if not (entry.name.startswith(_WORK_PREFIX) or entry.name.endswith(_PARTIAL_SUFFIX)):
            continue
        try:
            if entry.lstat().st_mtime < cutoff:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        except OSError:
            continue  # another process's, or gone already


@contextmanager
def model_file(source: Path, source_sha256: str) -> Iterator[Path]:
    """The int8 model of `source`, ready to load while the context lasts: the cached file, one
    derived into the cache now, or (no usable cache: a read-only home, a full disk) one derived
    into a temporary directory for this process only. Raises DerivationError."""
    directory = cache_dir()
    target = directory / cached_name(source_sha256)
    if _verified(target):
        yield target
        return
    failure: DerivationError | None = None
    if _usable_directory(directory):
        _sweep_leftovers(directory)
        try:
            derive_in_child(source, target)
        except DerivationError as exc:
            failure = exc
    if failure is None and _verified(target):
        yield target
        return
    with tempfile.TemporaryDirectory(prefix="jean-memory-model-") as scratch:
        private = Path(scratch) / target.name
        try:
            derive_in_child(source, private)
        except DerivationError as exc:
            raise (failure or exc) from None
        yield private


def derive(source: Path, target: Path) -> None:
    """Write the dynamically quantised model of `source` to `target` (in this process).

    Step one lets onnxruntime fold the int8-to-float32 conversion of the weights into plain
    float32 constants (its basic graph optimisations), because the quantiser only rewrites
    MatMuls whose weights are constants; step two quantises those MatMuls."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=_WORK_PREFIX) as work:
        folded = Path(work) / "folded.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        options.log_severity_level = 3
        ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
        quantize_dynamic(folded, target, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8)


def derive_checked(source: Path, target: Path) -> None:
    """Derive, check against the source, record the digest, then move the model into place
    (atomically: another process may be reading or deriving the same file)."""
    partial = target.with_name(f".{target.name}.{os.getpid()}{_PARTIAL_SUFFIX}")
    try:
        derive(source, partial)
        agreement = agreement_with_source(source, partial)
        if agreement < MIN_AGREEMENT:
            raise DerivationError(
                f"the int8 model disagrees with the source model (cosine {agreement:.3f} < {MIN_AGREEMENT})"
            )
        digest = _digest_file(partial)
        digest.write_text(sha256_of(partial) + "\n")
        os.replace(digest, _digest_file(target))
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
        _digest_file(partial).unlink(missing_ok=True)


def derive_in_child(source: Path, target: Path) -> None:
    """`derive_checked` in a child process; raises DerivationError with the child's last error line."""
    try:
        done = subprocess.run(  # noqa: S603 (our own module, run by this interpreter, on paths we chose)
            [sys.executable, "-m", __name__, str(source), str(target)],
            capture_output=True,
            text=True,
            timeout=DERIVE_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DerivationError(f"quantising the model took over {DERIVE_TIMEOUT_SECONDS} s") from None
    except OSError as exc:
        raise DerivationError(f"could not start {sys.executable} to quantise the model: {exc}") from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise DerivationError(lines[-1] if lines else f"the quantiser exited with status {done.returncode}")


def _main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m jean_memory.memory.int8_model SOURCE.onnx TARGET.onnx", file=sys.stderr)
        return 2
    try:
        import onnx  # noqa: F401  (the quantiser needs it; say so plainly when it is missing)
    except ImportError:
        print("the 'onnx' package is missing (pip install 'onnx>=1.16,<2')", file=sys.stderr)
        return 1
    try:
        derive_checked(Path(argv[0]), Path(argv[1]))
    except (DerivationError, OSError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
