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

Before any interpreter in this process sees a file, `clipedge.runtime.backends.probe` opens it in a child process on the
same route (LiteRT's flatbuffer verifier first for .tflite) and runs it once, cached by sha256 and accelerator: a
malformed file that would crash the interpreter is a BundleError, a GPU route that would crash is a BackendError (which
"auto" falls back from). `open_unprobed` is that child's entry, for no one else.

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
from typing import Any

from clipedge.runtime.backends.base import Backend, BackendInfo, TensorSpec, Unavailable, one_line
from clipedge.runtime.backends.litert import GPU_DELEGATE_ENV, open_compiled, open_interpreter
from clipedge.runtime.backends.onnxruntime import open_onnxruntime
from clipedge.runtime.backends.probe import probe_model
from clipedge.runtime.errors import BackendError, BundleError, InputError
from clipedge.runtime.logs import native_logs_hidden

__all__ = [
    "ACCELERATORS",
    "check_threads",
    "usable_cores",
    "GPU_DELEGATE_ENV",
    "ONNX_BACKENDS",
    "TFLITE_BACKENDS",
    "Backend",
    "BackendInfo",
    "TensorSpec",
    "open_backend",
    "open_unprobed",
]

logger = logging.getLogger(__name__)

TFLITE_BACKENDS = ("litert-compiled", "litert-interpreter", "tflite-runtime", "tensorflow-lite")
ONNX_BACKENDS = ("onnxruntime",)
ACCELERATORS = ("cpu", "gpu", "auto")


@native_logs_hidden()  # LiteRT logs its environment, plugins and accelerators on fd 2 while it opens a model
def open_backend(
    path: str | os.PathLike[str],
    *,
    signature: str | None = None,
    threads: int | None = None,
    accelerator: str = "cpu",
    prefer: str | None = None,
    gpu_delegate: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
) -> Backend:
    """Load a `.tflite` or `.onnx` model and return a `Backend` for one signature.

    The file is opened and run once in a child process first (`clipedge.runtime.backends.probe`, cached by sha256 and
    accelerator), because an interpreter can crash the process on a malformed file or a GPU that cannot take it.

    Args:
        path: the model file; its suffix picks the format.
        signature: TFLite signature to run (e.g. "encode_image"); default the model's first. ONNX files hold one
            graph, so it is ignored there.
        threads: CPU threads (CompiledModel CPU option, Interpreter `num_threads`, onnxruntime
            `intra_op_num_threads`); None leaves the library's default.
        accelerator: "cpu", "gpu" or "auto" (GPU if it works, else CPU with a logged warning and `info.note`).
        prefer: force one interpreter (a name from `TFLITE_BACKENDS` or `ONNX_BACKENDS`) instead of the fallback order.
        gpu_delegate: a TFLite GPU delegate library for the Interpreter paths (default `$CLIPEDGE_GPU_DELEGATE`).
        sha256: the file's sha256 when already known (a bundle's, checked), so the probe cache needs no hashing.

    Raises:
        BackendError: unknown suffix, missing or damaged file, no interpreter installed, or no GPU when "gpu" was asked
            (or the GPU route crashes a test process).
        BundleError: the file crashes the interpreter in a test process: malformed.
        InputError: an argument that cannot be right (accelerator, threads, a signature the model lacks).
    """
    path, candidates, options = _prepare(path, accelerator, threads, prefer, signature, gpu_delegate)

    def probed(route: str) -> None:
        _refuse_crashing(path, route, sha256=sha256, prefer=prefer, signature=signature,
                         delegate=options["delegate"] if route == "gpu" else None)

    if accelerator == "cpu":
        probed("cpu")
        return _open_first(path, candidates, gpu=False, **options)
    if accelerator == "gpu":
        probed("gpu")
        return _open_first(path, candidates, gpu=True, **options)
    try:
        probed("gpu")
        return _open_first(path, candidates, gpu=True, **options)
    except BackendError as err:
        reason = one_line(err)
    logger.warning("no GPU for %s, running on the CPU: %s", path.name, reason)
    probed("cpu")
    backend = _open_first(path, candidates, gpu=False, **options)
    note = f"GPU not used: {reason}"
    backend.info = replace(backend.info, note=f"{note}; {backend.info.note}" if backend.info.note else note)
    return backend


def open_unprobed(path: str | os.PathLike[str], *, accelerator: str, prefer: str | None = None,
                  signature: str | None = None, threads: int | None = None,
                  gpu_delegate: str | os.PathLike[str] | None = None) -> Backend:
    """`open_backend` on "cpu" or "gpu" without the child-process probe: what the probe's child itself runs. Only
    for a process that may crash (the probe child); everything else calls `open_backend`."""
    if accelerator not in ("cpu", "gpu"):
        raise InputError(f"accelerator={accelerator!r}: open_unprobed takes 'cpu' or 'gpu'")
    path, candidates, options = _prepare(path, accelerator, threads, prefer, signature, gpu_delegate)
    return _open_first(path, candidates, gpu=accelerator == "gpu", **options)


def _refuse_crashing(path: Path, accelerator: str, *, sha256: str | None, prefer: str | None,
                     signature: str | None, delegate: str | None) -> None:
    """Raise when the probe's child died, hung or failed opening or running the file: in this process it would
    kill, hang or raise past the ClipEdgeError family."""
    result = probe_model(path, accelerator=accelerator, sha256=sha256, prefer=prefer, signature=signature,
                         gpu_delegate=delegate)
    if result.ok:
        return
    if result.status == "error":  # the child's own clean error, raised here without touching the file
        family = {cls.__name__: cls for cls in (BackendError, BundleError, InputError)}
        raise family.get(result.error_class, BackendError)(result.detail)
    what = f"was {result.detail}" if result.crashed else f"raised {result.detail}"
    if accelerator == "gpu":
        raise BackendError(f"the GPU route fails on {path} (a test process opening it {what}); run it on the CPU "
                           "(--accelerator cpu)")
    raise BundleError(f"{path} is malformed or unreadable by this interpreter: a test process opening it {what}; "
                      "re-export or re-copy the model file")


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset), else the machine's count: the
    cap on `threads`, and what `clipedge bench` and `report` time with by default (they import it from here)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_threads(threads: Any) -> int | None:
    """`threads` as given when it is None or 1..the usable cores; else InputError saying the range.

    More threads than cores only make the interpreter's workers fight over them: 10,000 onnxruntime threads on a
    2-core machine ran for minutes with a load average over 1,300 (issue #33), so the cap is refused, not clamped."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise InputError(f"threads={threads!r}: expected a positive int, or None for the library default")
    cores = usable_cores()
    if not 1 <= threads <= cores:
        raise InputError(f"threads={threads}: this machine lets clipedge use {cores} "
                         f"core{'s' if cores != 1 else ''}; give 1..{cores} (or leave it out for the default)")
    return threads


def _prepare(path: str | os.PathLike[str], accelerator: str, threads: int | None, prefer: str | None,
             signature: str | None, gpu_delegate: str | os.PathLike[str] | None,
             ) -> tuple[Path, tuple[str, ...], dict[str, Any]]:
    """Check the arguments and the file before any interpreter sees it: the path, the candidates, their options."""
    path = Path(path)
    if accelerator not in ACCELERATORS:
        raise InputError(f"accelerator={accelerator!r}: expected one of {list(ACCELERATORS)}")
    check_threads(threads)

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
    return path, candidates, {"signature": signature, "threads": threads, "delegate": delegate}


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
            logger.info("%s cannot open %s: %s", name, path, err)  # -v says why an interpreter was skipped
            logger.debug("%s: the error in full", name, exc_info=err)  # -vv: where it came from
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
