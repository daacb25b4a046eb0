"""What every backend shares, so that `open_backend` can hand out any of them and callers never tell them apart.

The spec and info types, the `Backend` protocol, and `BackendBase`: the feed checks, dtype casts and fixed-batch
chunking that `clipedge.runtime.backends.open` documents, written once instead of once per interpreter. It lives apart
from `backends.py` so that the interpreter modules (`backend_litert`, `backend_onnxruntime`) and `backends.py`,
which picks among them, all import it without importing each other. numpy only, like every backend module at
import time.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from clipedge.runtime.errors import BackendError, InputError
from clipedge.runtime.logs import quiet_first_call, release_quietly

__all__ = [
    "Backend",
    "BackendBase",
    "BackendInfo",
    "TensorSpec",
    "Unavailable",
    "one_line",
    "pick_signature",
]


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
        op), and on its GPU also no op left on the CPU in LiteRT's log (is_fully_accelerated() alone missed one);
        elsewhere, where nothing reports it, True on the CPU (no placement to fall back from) and False on a GPU
        (unsupported ops may silently run on the CPU).
    providers: what the graph runs on: LiteRT accelerator names ("GPU", "CPU"), "delegate:<library>", or the
        onnxruntime session's execution providers.
    note: why it is not the first choice, e.g. the reason the GPU was not used; "" when nothing to say.
    device: the GPU adapter LiteRT selected, as a report names it ("llvmpipe (LLVM 15.0.6, 256 bits), software",
        so that nobody reads a software GPU's latency as a phone's) and its compute precision; "" on the CPU.
    """

    backend: str
    accelerator: str
    fully_accelerated: bool
    providers: tuple[str, ...]
    note: str = ""
    device: str = ""


@runtime_checkable
class Backend(Protocol):
    """A loaded model signature: feeds by input name in, outputs by output name out (numpy arrays)."""

    info: BackendInfo
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Unavailable(Exception):
    """An interpreter that cannot be used here at all (not installed, no route to the GPU): try the next one."""


def one_line(err: BaseException | str) -> str:
    """Collapse multi-line library messages (LiteRT's are tree-drawn over several lines) to one log line."""
    return " ".join(str(err).replace("└", " ").split())


def pick_signature(path: Path, available: list[str], signature: str | None) -> str:
    """Default to the first signature so a one-signature export needs no name; an unknown name is the caller's bug."""
    if not available:
        raise BackendError(f"{path} has no signatures; re-export it with clipedge (signatures name inputs/outputs)")
    if signature is None:
        return available[0]
    if signature not in available:
        raise InputError(f"signature {signature!r} is not in {path}; it has {available}")
    return signature


# -------------------------------------------------------------------------------------------------------------------
# Shared run logic: feed checks and batching


class BackendBase:
    """Validation and batching for every backend; subclasses only `_invoke` one model-shaped batch."""

    info: BackendInfo
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    _path: Path
    # Errors the interpreter raises while running, translated to BackendError with the model's name.
    _run_errors: tuple[type[BaseException], ...] = (RuntimeError, ValueError)
    # One call at a time per loaded model: LiteRT's CompiledModel reuses its tensor buffers and an Interpreter its
    # tensors, so two threads' calls mixed their inputs (wrong embeddings, silently: 22 of 9,837 fp32 calls from 4
    # threads). onnxruntime's `InferenceSession.run` is thread-safe and sets this to False.
    _serialized = True

    def __repr__(self) -> str:
        ins = ", ".join(f"{s.name}{list(s.shape)}:{s.dtype}" for s in self.inputs)
        return f"<{type(self).__name__} {self._path.name} [{ins}] on {self.info.backend}/{self.info.accelerator}>"

    def __del__(self) -> None:
        release_quietly(self.__dict__)  # LiteRT logs its accelerators' teardown when the model goes

    @quiet_first_call  # LiteRT sets up, and logs, an environment on a model's first run
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run any batch size; `clipedge.runtime.backends.open` documents the dtype casts and batching rules."""
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
        # setdefault: atomic under the GIL, so two threads' first calls get the same lock
        lock = self.__dict__.setdefault("_run_lock", threading.Lock()) if self._serialized else nullcontext()
        try:
            with lock:
                return self._invoke(arrays)
        except self._run_errors as err:
            raise BackendError(f"{self.info.backend} failed to run {self._path}: {one_line(err)}") from err

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
