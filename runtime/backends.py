"""One small interface over the interpreters that can run a clipedge model file.

`open_backend(path)` picks an interpreter from the file suffix and returns a `Backend`: `inputs` / `outputs`
(`TensorSpec`s), `info` (`BackendInfo`: which interpreter, which accelerator, why it fell back) and
`run(feeds) -> outputs`, where feeds and outputs are dicts keyed by the model's *signature* names
(`pixel_values`, `input_ids`, `image_embeds`, ...), never by internal tensor names.

`.tflite` is tried, in order, on:
  1. `litert-compiled`: `ai_edge_litert.compiled_model.CompiledModel`, LiteRT's current API, the only one here that
     reaches LiteRT's GPU accelerator without a delegate library;
  2. `litert-interpreter`: `ai_edge_litert.interpreter.Interpreter` (e.g. dtypes CompiledModel buffers lack, int64);
  3. `tflite-runtime`: `tflite_runtime.interpreter.Interpreter` (stopped at 2.14: no numpy 2, no newer op versions);
  4. `tensorflow-lite`: TensorFlow's deprecated `tf.lite.Interpreter`, imported only here, as the last resort
     (its default XNNPACK gave worse full-int8 accuracy than LiteRT on our models; see docs/architecture.md).
`.onnx` runs on `onnxruntime`. `prefer=` forces one of these names.

Behaviour shared by every backend, so callers never care which one they got:
  - Batch: any batch size B is accepted. When the model's batch axis is fixed (TFLite exports are batch 1), the rows
    are run in chunks of the model's batch and the outputs concatenated; a dynamic batch axis is resized instead.
    Fixed-batch models are never resized: a graph with the batch baked into a reshape would fail or, worse, mix rows.
    Every input and output is taken to be batch-major (axis 0).
  - Feeds are checked before anything runs (names, dtype, shape, one batch size) and `InputError` names the input,
    what was expected and what came. Dtypes: a float array is cast to the input's float dtype (float64 from numpy
    defaults -> float32; overflow to inf is refused) and an integer array to the input's integer dtype when every value
    fits (int64 ids -> int32); any other mismatch (int <-> float, bool) is refused, because it is a bug upstream
    (e.g. uint8 pixels fed to a normalized float input), not a representation detail.
  - Output dtypes are the model's, exactly.

Accelerators: "cpu"; "gpu" (LiteRT's GPU accelerator with CPU fallback for unsupported ops, a GPU delegate library on
the Interpreter paths, or an onnxruntime GPU execution provider; `BackendError` when none works); "auto" (try "gpu",
else run on the CPU with one `logging` warning and the reason in `info.note`).

Nothing is imported at module import beyond numpy: interpreters are imported by the function that opens them, so a
Raspberry Pi with only `ai_edge_litert` installed never loads onnxruntime or TensorFlow.

This module is the interface and the fallback order; the shared checks and batching are in `backend_base`, the
interpreters in `backend_litert` (.tflite) and `backend_onnxruntime` (.onnx).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from clipedge.runtime.backend_base import Backend, BackendInfo, TensorSpec, Unavailable, one_line
from clipedge.runtime.backend_litert import GPU_DELEGATE_ENV, open_compiled, open_interpreter
from clipedge.runtime.backend_onnxruntime import open_onnxruntime
from clipedge.runtime.errors import BackendError, InputError

__all__ = [
    "ACCELERATORS",
    "GPU_DELEGATE_ENV",
    "ONNX_BACKENDS",
    "TFLITE_BACKENDS",
    "Backend",
    "BackendInfo",
    "TensorSpec",
    "open_backend",
]

logger = logging.getLogger(__name__)

TFLITE_BACKENDS = ("litert-compiled", "litert-interpreter", "tflite-runtime", "tensorflow-lite")
ONNX_BACKENDS = ("onnxruntime",)
ACCELERATORS = ("cpu", "gpu", "auto")


def open_backend(
    path: str | os.PathLike[str],
    *,
    signature: str | None = None,
    threads: int | None = None,
    accelerator: str = "cpu",
    prefer: str | None = None,
    gpu_delegate: str | os.PathLike[str] | None = None,
) -> Backend:
    """Load a `.tflite` or `.onnx` model and return a `Backend` for one signature.

    Args:
        path: the model file; its suffix picks the format.
        signature: TFLite signature to run (e.g. "encode_image"); default the model's first. ONNX files hold one
            graph, so it is ignored there.
        threads: CPU threads (CompiledModel CPU option, Interpreter `num_threads`, onnxruntime
            `intra_op_num_threads`); None leaves the library's default.
        accelerator: "cpu", "gpu" or "auto" (GPU if it works, else CPU with a logged warning and `info.note`).
        prefer: force one interpreter (a name from `TFLITE_BACKENDS` or `ONNX_BACKENDS`) instead of the fallback order.
        gpu_delegate: a TFLite GPU delegate library for the Interpreter paths (default `$CLIPEDGE_GPU_DELEGATE`).

    Raises:
        BackendError: unknown suffix, missing or damaged file, no interpreter installed, or no GPU when "gpu" was asked.
        InputError: an argument that cannot be right (accelerator, threads, a signature the model lacks).
    """
    path = Path(path)
    if accelerator not in ACCELERATORS:
        raise InputError(f"accelerator={accelerator!r}: expected one of {list(ACCELERATORS)}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InputError(f"threads={threads!r}: expected a positive int, or None for the library default")

    suffix = path.suffix.lower()
    if suffix == ".tflite":
        known = TFLITE_BACKENDS
    elif suffix == ".onnx":
        known = ONNX_BACKENDS
    else:
        raise BackendError(f"{path}: unknown model format {suffix or '(no suffix)'!r}; expected .tflite or .onnx")
    if prefer is not None and prefer not in known:
        raise BackendError(f"prefer={prefer!r} cannot run {suffix} files such as {path}; use one of {list(known)}")
    candidates = (prefer,) if prefer else known

    if not path.is_file():
        raise BackendError(f"model file not found: {path}")
    if suffix == ".tflite":
        _check_tflite_header(path)

    delegate = None
    if accelerator != "cpu":
        delegate = os.fspath(gpu_delegate) if gpu_delegate else os.environ.get(GPU_DELEGATE_ENV) or None
    options = {"signature": signature, "threads": threads, "delegate": delegate}

    if accelerator == "cpu":
        return _open_first(path, candidates, gpu=False, **options)
    if accelerator == "gpu":
        return _open_first(path, candidates, gpu=True, **options)
    try:
        return _open_first(path, candidates, gpu=True, **options)
    except BackendError as err:
        reason = one_line(err)
    logger.warning("no GPU for %s, running on the CPU: %s", path.name, reason)
    backend = _open_first(path, candidates, gpu=False, **options)
    note = f"GPU not used: {reason}"
    backend.info = replace(backend.info, note=f"{note}; {backend.info.note}" if backend.info.note else note)
    return backend


def _open_first(
    path: Path, candidates: tuple[str, ...], *, gpu: bool, signature: str | None, threads: int | None,
    delegate: str | None,
) -> Backend:
    """Open with the first candidate that works; the reasons the others did not go into `info.note` or the error."""
    reasons: dict[str, list[str]] = {}  # reason -> the candidates that gave it, so a repeated reason is said once
    last: Exception | None = None
    for name in candidates:
        try:
            if name == "onnxruntime":
                backend = open_onnxruntime(path, threads=threads, gpu=gpu)
            elif name == "litert-compiled":
                backend = open_compiled(path, signature=signature, threads=threads, gpu=gpu)
            else:
                backend = open_interpreter(name, path, signature=signature, threads=threads, gpu=gpu,
                                           delegate=delegate)
        except (Unavailable, BackendError) as err:
            reasons.setdefault(one_line(err), []).append(name)
            last = err
            logger.debug("%s cannot open %s: %s", name, path, err)
            continue
        if name == "tensorflow-lite" and len(candidates) > 1:
            logger.warning("running %s on TensorFlow's deprecated tf.lite.Interpreter (less accurate on int8 models); "
                           "install ai-edge-litert", path.name)
        if reasons:
            backend.info = replace(backend.info, note=_reasons_text(reasons))
        return backend
    where = "the GPU" if gpu else "the CPU"
    raise BackendError(f"no interpreter could open {path} on {where}: {_reasons_text(reasons)}") from last


def _reasons_text(reasons: dict[str, list[str]]) -> str:
    return "; ".join(f"{', '.join(names)}: {reason}" for reason, names in reasons.items())


def _check_tflite_header(path: Path) -> None:
    """Reject a file that is not a TFLite flatbuffer up front, with its path, instead of four backends' errors."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as err:
        raise BackendError(f"cannot read model file {path}: {err}") from err
    # Flatbuffer layout: 4-byte root offset, then the 4-byte file identifier; TFLite writes "TFL3".
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise BackendError(f"{path} is not a TFLite model (no 'TFL3' flatbuffer identifier); "
                           "the file is damaged or of another format")
