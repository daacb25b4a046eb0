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
     (its default XNNPACK gave worse full-int8 accuracy than LiteRT on our models; see DESIGN.md).
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
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

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

# A TFLite GPU delegate library for the Interpreter paths (Android: libtensorflowlite_gpu_delegate.so, a Pi build of
# it, ...). CompiledModel does not need it: LiteRT ships its own GPU accelerator.
GPU_DELEGATE_ENV = "CLIPEDGE_GPU_DELEGATE"

# Dtypes LiteRT's TensorBuffer can read and write (ai_edge_litert 2.3 tensor_buffer.py); a signature with any other
# (int64, int16, ...) goes to the Interpreter, which has no such limit.
_LITERT_BUFFER_DTYPES = frozenset({"float32", "float16", "int32", "int8", "uint8", "bool"})

# onnxruntime execution providers that put the graph on a GPU, in order of preference. TensorRT is left out: it
# builds an engine on first use (minutes) and needs its own libraries; pass it through onnxruntime directly if wanted.
_ORT_GPU_PROVIDERS = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
)

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature.

    `shape` uses -1 for a dynamic axis (axis 0 is the batch); `dtype` is a numpy dtype name ("float32", "int32").
    """

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class BackendInfo:
    """What actually runs the model, so a caller (or a benchmark report) can say it, and why it is not the GPU.

    backend: "litert-compiled" | "litert-interpreter" | "tflite-runtime" | "tensorflow-lite" | "onnxruntime".
    accelerator: "cpu" | "gpu", what the model was opened on.
    fully_accelerated: LiteRT CompiledModel's `is_fully_accelerated()` (on the CPU it says whether XNNPACK took every
        op); elsewhere, where nothing reports it, True on the CPU (no placement to fall back from) and False on a GPU
        (unsupported ops may silently run on the CPU).
    providers: what the graph runs on: LiteRT accelerator names ("GPU", "CPU"), "delegate:<library>", or the
        onnxruntime session's execution providers.
    note: why it is not the first choice, e.g. the reason the GPU was not used; "" when nothing to say.
    """

    backend: str
    accelerator: str
    fully_accelerated: bool
    providers: tuple[str, ...]
    note: str = ""


@runtime_checkable
class Backend(Protocol):
    """A loaded model signature: feeds by input name in, outputs by output name out (numpy arrays)."""

    info: BackendInfo
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class _Unavailable(Exception):
    """An interpreter that cannot be used here at all (not installed, no route to the GPU): try the next one."""


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
        reason = _one_line(err)
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
                backend = _open_onnxruntime(path, threads=threads, gpu=gpu)
            elif name == "litert-compiled":
                backend = _open_compiled(path, signature=signature, threads=threads, gpu=gpu)
            else:
                backend = _open_interpreter(name, path, signature=signature, threads=threads, gpu=gpu,
                                            delegate=delegate)
        except (_Unavailable, BackendError) as err:
            reasons.setdefault(_one_line(err), []).append(name)
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


def _one_line(err: BaseException | str) -> str:
    """Collapse multi-line library messages (LiteRT's are tree-drawn over several lines) to one log line."""
    return " ".join(str(err).replace("└", " ").split())


def _pick_signature(path: Path, available: list[str], signature: str | None) -> str:
    if not available:
        raise BackendError(f"{path} has no signatures; re-export it with clipedge (signatures name inputs/outputs)")
    if signature is None:
        return available[0]
    if signature not in available:
        raise InputError(f"signature {signature!r} is not in {path}; it has {available}")
    return signature


# -------------------------------------------------------------------------------------------------------------------
# Shared run logic: feed checks and batching


class _BackendBase:
    """Validation and batching for every backend; subclasses only `_invoke` one model-shaped batch."""

    info: BackendInfo
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    _path: Path
    # Errors the interpreter raises while running, translated to BackendError with the model's name.
    _run_errors: tuple[type[BaseException], ...] = (RuntimeError, ValueError)

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}{list(s.shape)}:{s.dtype}" for s in self.inputs)
        return f"<{type(self).__name__} {self._path.name} [{ins}] on {self.info.backend}/{self.info.accelerator}>"

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run any batch size; see the module docstring for the dtype casts and batching rules."""
        arrays, batch = _check_feeds(self.inputs, feeds)
        step = self._fixed_batch()
        if step is None or batch == step:
            return self._invoke_checked(arrays)
        # Fixed batch axis: chunks of `step` rows; the last is padded with copies of its last row, then trimmed.
        parts = []
        for start in range(0, batch, step):
            rows = min(step, batch - start)
            chunk = {name: _take_rows(a, start, step) for name, a in arrays.items()}
            out = self._invoke_checked(chunk)
            parts.append({name: v[:rows] if v.ndim else v for name, v in out.items()})
        return {
            name: np.concatenate([p[name] for p in parts]) if parts[0][name].ndim else parts[0][name]
            for name in parts[0]
        }

    def _fixed_batch(self) -> int | None:
        for spec in self.inputs:
            if spec.shape and spec.shape[0] != -1:
                return spec.shape[0]
        return None

    def _invoke_checked(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self._invoke(arrays)
        except self._run_errors as err:
            raise BackendError(f"{self.info.backend} failed to run {self._path}: {_one_line(err)}") from err

    def _invoke(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


def _check_feeds(specs: list[TensorSpec], feeds: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int]:
    """Return C-contiguous arrays of the model's dtypes and the common batch size, or raise InputError."""
    if not isinstance(feeds, Mapping):
        raise InputError(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
    names = [s.name for s in specs]
    missing = [n for n in names if n not in feeds]
    extra = [n for n in feeds if n not in names]
    if missing or extra:
        raise InputError(f"feeds do not match the model inputs {names}: missing {missing}, unexpected {extra}")
    arrays: dict[str, np.ndarray] = {}
    batch, batch_of = None, ""
    for spec in specs:
        arr = _coerce_dtype(spec, feeds[spec.name])
        ok = arr.ndim == len(spec.shape) and all(
            want in (-1, got) for want, got in zip(spec.shape[1:], arr.shape[1:], strict=True)
        )
        if not ok:
            raise InputError(f"input {spec.name!r}: expected shape {_shape_text(spec.shape)}, got {arr.shape}")
        if arr.ndim:
            if batch is None:
                batch, batch_of = arr.shape[0], spec.name
            elif arr.shape[0] != batch:
                raise InputError(f"input {spec.name!r}: batch {arr.shape[0]} differs from {batch_of!r}'s {batch}")
        arrays[spec.name] = np.ascontiguousarray(arr)
    if batch == 0:
        raise InputError(f"input {batch_of!r}: empty batch (0 rows); pass at least one")
    return arrays, 1 if batch is None else batch


def _coerce_dtype(spec: TensorSpec, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise InputError(f"input {spec.name!r}: not an array ({err})") from err
    want, got = np.dtype(spec.dtype), arr.dtype
    if got == want:
        return arr
    if got.kind == "f" and want.kind == "f":
        with np.errstate(over="ignore"):  # overflow is checked, and reported, just below
            cast = arr.astype(want)
        if np.isfinite(arr).all() and not np.isfinite(cast).all():
            raise InputError(f"input {spec.name!r}: values overflow {want} (got {got} up to {np.abs(arr).max()})")
        return cast
    if got.kind in "iu" and want.kind in "iu":
        lo, hi = np.iinfo(want).min, np.iinfo(want).max
        if arr.size and (arr.min() < lo or arr.max() > hi):
            raise InputError(f"input {spec.name!r}: {got} values in [{arr.min()}, {arr.max()}] do not fit {want} "
                             f"[{lo}, {hi}]")
        return arr.astype(want)
    raise InputError(f"input {spec.name!r}: expected dtype {want}, got {got} "
                     "(only float -> float and in-range int -> int are converted)")


def _shape_text(shape: tuple[int, ...]) -> str:
    dims = ["B" if i == 0 else "?" if d == -1 else str(d) for i, d in enumerate(shape)]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _take_rows(a: np.ndarray, start: int, step: int) -> np.ndarray:
    if a.ndim == 0:
        return a
    rows = a[start : start + step]
    if len(rows) < step:
        rows = np.concatenate([rows, np.repeat(rows[-1:], step - len(rows), axis=0)])
    return np.ascontiguousarray(rows)


# -------------------------------------------------------------------------------------------------------------------
# LiteRT CompiledModel


# CPU features ai_edge_litert 2.3.0's CompiledModel needs on aarch64: it loads libLiteRtWebGpuAccelerator.so even
# for CPU work, and that library aborts the whole process with SIGILL ("compiled with lse enabled ...") on CPUs
# without them: Raspberry Pi 4 (Cortex-A72), Pi 3 / Zero 2 W (Cortex-A53). Found by the arm64 CI check
# (.ci/arm64/); names -> bits of Linux's AT_HWCAP on arm64 (asm/hwcap.h).
_AARCH64_HWCAP_NEEDED = {"aes": 3, "sha2": 6, "crc32": 7, "atomics": 8, "fphp": 9, "asimdhp": 10, "asimdrdm": 12,
                         "lrcpc": 15, "asimddp": 20}


def _aarch64_missing_features() -> list[str]:
    """CPU features CompiledModel needs that this aarch64 Linux CPU lacks ([] elsewhere, or if unknown)."""
    import platform

    if platform.system() != "Linux" or platform.machine() not in ("aarch64", "arm64"):
        return []
    import ctypes

    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return []
    getauxval.restype = ctypes.c_ulong
    hwcap = getauxval(16)  # AT_HWCAP
    return [name for name, bit in _AARCH64_HWCAP_NEEDED.items() if not hwcap & (1 << bit)]


def _open_compiled(path: Path, *, signature: str | None, threads: int | None, gpu: bool) -> Backend:
    missing = _aarch64_missing_features()
    if missing:  # it would kill the process, not raise: go straight to the Interpreter
        raise _Unavailable(f"this CPU lacks {', '.join(missing)}, which LiteRT's CompiledModel needs on aarch64")
    try:
        from ai_edge_litert.compiled_model import CompiledModel, CpuOptions, HardwareAccelerator, Options
    except ImportError as err:
        raise _Unavailable(f"ai_edge_litert is not installed ({err})") from err
    # GPU | CPU: ops the GPU lacks run on the CPU instead of failing the whole model; `is_fully_accelerated()` tells.
    accel = HardwareAccelerator.GPU | HardwareAccelerator.CPU if gpu else HardwareAccelerator.CPU
    # Always pass Options: `from_file` without them pins the CPU to 1 thread; num_threads=0 means "LiteRT decides".
    cpu = CpuOptions(num_threads=threads) if threads else None
    try:
        model = CompiledModel.from_file(str(path), options=Options(hardware_accelerators=accel, cpu_options=cpu))
    except Exception as err:  # pybind raises RuntimeError; translate whatever it is, with the path
        if gpu:
            raise BackendError(
                f"LiteRT could not set up its GPU accelerator for {path} ({_one_line(err)}); the cause is on "
                "LiteRT's stderr log ('No adapters found': no usable GPU driver, e.g. Vulkan/OpenCL)") from err
        raise BackendError(f"LiteRT could not load {path}: {_one_line(err)}") from err
    return _CompiledModelBackend(model, path, signature=signature, gpu=gpu)


class _CompiledModelBackend(_BackendBase):
    """LiteRT's CompiledModel: tensor buffers are created once and reused; re-created only after a resize."""

    def __init__(self, model: Any, path: Path, *, signature: str | None, gpu: bool) -> None:
        self._model, self._path = model, path
        keys = [model.get_signature_by_index(i)["key"] for i in range(model.get_num_signatures())]
        self._key = _pick_signature(path, keys, signature)
        self._index = model.get_signature_index(self._key)
        names = model.get_signature_list()[self._key]
        in_details = model.get_input_tensor_details(self._key)
        out_details = model.get_output_tensor_details(self._key)
        for name, d in [*in_details.items(), *out_details.items()]:
            if d["dtype"] not in _LITERT_BUFFER_DTYPES:
                raise BackendError(f"{path}: tensor {name!r} is {d['dtype']}, which LiteRT tensor buffers cannot hold")
        self._shapes = {n: tuple(in_details[n]["shape"]) for n in names["inputs"]}
        self._out_shapes = {n: tuple(out_details[n]["shape"]) for n in names["outputs"]}

        # CompiledModel reports current shapes only (a dynamic axis shows as 1), so find dynamic axes by trying a
        # strict resize, which LiteRT allows on dynamic axes only.
        self.inputs = [
            TensorSpec(n, self._probe_dynamic(i, self._shapes[n]), in_details[n]["dtype"])
            for i, n in enumerate(names["inputs"])
        ]
        dynamic_batch = any(s.shape and s.shape[0] == -1 for s in self.inputs)
        self.outputs = [
            TensorSpec(n, (-1, *s[1:]) if dynamic_batch and s else s, out_details[n]["dtype"])
            for n, s in self._out_shapes.items()
        ]
        self._make_buffers()
        self.info = BackendInfo(
            backend="litert-compiled",
            accelerator="gpu" if gpu else "cpu",
            fully_accelerated=model.is_fully_accelerated(),
            providers=("GPU", "CPU") if gpu else ("CPU",),
        )

    def _probe_dynamic(self, input_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
        dims = []
        for axis, size in enumerate(shape):
            trial = [*shape[:axis], size + 1, *shape[axis + 1 :]]
            try:
                self._model.resize_input_tensor(input_index, trial, self._index, strict=True)
            except RuntimeError:  # "New shape is not compatible with current shape": a fixed axis
                dims.append(size)
                continue
            self._model.resize_input_tensor(input_index, list(shape), self._index, strict=True)
            dims.append(-1)
        return tuple(dims)

    def _make_buffers(self) -> None:
        self._in_bufs = self._model.create_input_buffers(self._index)
        self._out_bufs = self._model.create_output_buffers(self._index)

    def _invoke(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shapes = {name: a.shape for name, a in arrays.items()}
        if shapes != self._shapes:  # only dynamic axes can differ here (feeds were checked)
            for i, spec in enumerate(self.inputs):
                self._model.resize_input_tensor(i, list(shapes[spec.name]), self._index, strict=True)
            self._shapes = shapes
            details = self._model.get_output_tensor_details(self._key)
            self._out_shapes = {s.name: tuple(details[s.name]["shape"]) for s in self.outputs}
            self._make_buffers()
        for spec, buf in zip(self.inputs, self._in_bufs, strict=True):
            buf.write(arrays[spec.name])
        self._model.run_by_index(self._index, self._in_bufs, self._out_bufs)
        return {
            spec.name: buf.read(int(np.prod(shape)), np.dtype(spec.dtype)).reshape(shape)
            for spec, buf, shape in zip(self.outputs, self._out_bufs, self._out_shapes.values(), strict=True)
        }


# -------------------------------------------------------------------------------------------------------------------
# TFLite Interpreters (ai_edge_litert, tflite_runtime, tf.lite): one class, they share the SignatureRunner API


def _open_interpreter(
    name: str, path: Path, *, signature: str | None, threads: int | None, gpu: bool, delegate: str | None
) -> Backend:
    # Check the GPU route before importing anything: no reason to load TensorFlow only to find there is no delegate.
    if gpu and not delegate:
        raise _Unavailable(f"no GPU delegate library (pass gpu_delegate= or set ${GPU_DELEGATE_ENV})")
    if gpu and os.sep in delegate and not os.path.isfile(delegate):
        raise BackendError(f"GPU delegate library not found: {delegate}")
    interpreter_cls, load_delegate = _import_interpreter(name)

    delegates = None
    if gpu:
        try:
            delegates = [load_delegate(delegate)]
        except (OSError, ValueError, RuntimeError) as err:
            raise BackendError(f"cannot load GPU delegate {delegate}: {_one_line(err)}") from err
    try:
        with warnings.catch_warnings():
            # tf.lite.Interpreter warns that it is deprecated; _open_first logs that once, in our words.
            warnings.simplefilter("ignore", UserWarning)
            interpreter = interpreter_cls(model_path=str(path), num_threads=threads, experimental_delegates=delegates)
    except Exception as err:  # ValueError for bad files or failed delegation; translate with the path
        raise BackendError(f"{name} could not load {path}: {_one_line(err)}") from err
    providers = (f"delegate:{delegate}", "CPU") if gpu else ("CPU",)
    return _InterpreterBackend(interpreter, path, signature=signature, name=name, gpu=gpu, providers=providers)


def _import_interpreter(name: str) -> tuple[type, Callable[..., Any]]:
    try:
        if name == "litert-interpreter":
            from ai_edge_litert.interpreter import Interpreter, load_delegate
        elif name == "tflite-runtime":
            from tflite_runtime.interpreter import Interpreter, load_delegate
        else:
            import tensorflow as tf  # the last resort, and the only place the runtime may import TensorFlow

            Interpreter, load_delegate = tf.lite.Interpreter, tf.lite.experimental.load_delegate
    except ImportError as err:
        raise _Unavailable(f"not installed ({err})") from err
    return Interpreter, load_delegate


class _InterpreterBackend(_BackendBase):
    """A TFLite Interpreter through its SignatureRunner, which resizes inputs to the feed shapes on every call."""

    def __init__(
        self, interpreter: Any, path: Path, *, signature: str | None, name: str, gpu: bool, providers: tuple[str, ...]
    ) -> None:
        self._path = path
        names = interpreter.get_signature_list()
        self._key = _pick_signature(path, list(names), signature)
        self._runner = interpreter.get_signature_runner(self._key)
        in_details, out_details = self._runner.get_input_details(), self._runner.get_output_details()
        self.inputs = [_interp_spec(n, in_details[n]) for n in names[self._key]["inputs"]]
        self.outputs = [_interp_spec(n, out_details[n]) for n in names[self._key]["outputs"]]
        self._interpreter = interpreter  # the runner does not keep its interpreter alive on every version
        self.info = BackendInfo(backend=name, accelerator="gpu" if gpu else "cpu", fully_accelerated=not gpu,
                                providers=providers)

    def _invoke(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._runner(**arrays)
        return {spec.name: np.asarray(out[spec.name]) for spec in self.outputs}


def _interp_spec(name: str, d: dict[str, Any]) -> TensorSpec:
    # shape_signature keeps -1 for dynamic axes; `shape` shows the current (resized) size.
    shape = d.get("shape_signature")
    if shape is None:
        shape = d["shape"]
    return TensorSpec(name, tuple(int(x) for x in shape), np.dtype(d["dtype"]).name)


# -------------------------------------------------------------------------------------------------------------------
# ONNX Runtime


def _open_onnxruntime(path: Path, *, threads: int | None, gpu: bool) -> Backend:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise _Unavailable(f"onnxruntime is not installed ({err}); pip install 'clipedge[onnx]'") from err
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if gpu:
        available = ort.get_available_providers()
        found = [p for p in _ORT_GPU_PROVIDERS if p in available]
        if not found:
            raise BackendError(f"onnxruntime has no GPU execution provider (available: {', '.join(available)}); "
                               "install onnxruntime-gpu for CUDA")
        providers.insert(0, found[0])
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) derive from Exception directly
        raise BackendError(f"onnxruntime could not load {path}: {_one_line(err)}") from err
    if gpu and providers[0] not in session.get_providers():
        # onnxruntime falls back to the CPU silently (a log line) when e.g. the CUDA libraries do not load.
        raise BackendError(f"onnxruntime could not start {providers[0]} for {path}; it logged why "
                           f"(session providers: {', '.join(session.get_providers())})")
    return _OrtBackend(session, path, gpu=gpu)


class _OrtBackend(_BackendBase):
    """An onnxruntime InferenceSession; outputs come back in graph order and are keyed by their names."""

    _run_errors = (Exception,)  # onnxruntime's error classes have no common base below Exception

    def __init__(self, session: Any, path: Path, *, gpu: bool) -> None:
        self._session, self._path = session, path
        self.inputs = [_ort_spec(path, a) for a in session.get_inputs()]
        self.outputs = [_ort_spec(path, a) for a in session.get_outputs()]
        self._names = [s.name for s in self.outputs]
        self.info = BackendInfo(backend="onnxruntime", accelerator="gpu" if gpu else "cpu", fully_accelerated=not gpu,
                                providers=tuple(session.get_providers()))

    def _invoke(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._names, self._session.run(self._names, arrays), strict=True))


def _ort_spec(path: Path, arg: Any) -> TensorSpec:
    if arg.type not in _ORT_DTYPES:
        raise BackendError(f"{path}: {arg.name!r} has type {arg.type}, which clipedge does not feed")
    # Symbolic ("batch", "unk__6") or missing dims are dynamic.
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_DTYPES[arg.type])
