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
onnx's quantiser logs through the root logger and peaks at a few hundred MB, and neither belongs
in a long-running server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

__all__ = ["DerivationError", "cache_dir", "cached_name", "derive", "derive_in_child"]

#: A derivation that takes longer than this is stuck (it takes about 2 s on one core).
DERIVE_TIMEOUT_SECONDS = 300


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


def derive(source: Path, target: Path) -> None:
    """Write the dynamically quantised model of `source` to `target` (in this process).

    Step one lets onnxruntime fold the int8-to-float32 conversion of the weights into plain
    float32 constants (its basic graph optimisations), because the quantiser only rewrites
    MatMuls whose weights are constants; step two quantises those MatMuls."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".derive-") as work:
        folded = Path(work) / "folded.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        options.log_severity_level = 3
        ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
        quantize_dynamic(folded, target, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8)


def derive_in_child(source: Path, target: Path) -> None:
    """`derive` in a child process; raises DerivationError with the child's last error line."""
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
    derive(Path(argv[0]), Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
