"""The `.onnx` backend: an onnxruntime InferenceSession behind the same `Backend` interface as the TFLite ones.

Its own module because it shares nothing with the TFLite side but the base class: a device that only runs `.tflite`
never needs to read it, and onnxruntime itself is imported only when an `.onnx` file is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.backends.base import Backend, BackendBase, BackendInfo, TensorSpec, Unavailable, one_line
from clipedge.runtime.errors import BackendError

__all__ = ["open_onnxruntime"]

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


def open_onnxruntime(path: Path, *, threads: int | None, gpu: bool) -> Backend:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise Unavailable(f"onnxruntime is not installed ({err}); pip install 'clipedge[onnx]'") from err
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
        raise BackendError(f"onnxruntime could not load {path}: {one_line(err)}") from err
    if gpu and providers[0] not in session.get_providers():
        # onnxruntime falls back to the CPU silently (a log line) when e.g. the CUDA libraries do not load.
        raise BackendError(f"onnxruntime could not start {providers[0]} for {path}; it logged why "
                           f"(session providers: {', '.join(session.get_providers())})")
    return _OrtBackend(session, path, gpu=gpu)


class _OrtBackend(BackendBase):
    """An onnxruntime InferenceSession; outputs come back in graph order and are keyed by their names."""

    _run_errors = (Exception,)  # onnxruntime's error classes have no common base below Exception
    _serialized = False  # InferenceSession.run is documented thread-safe: concurrent calls run in parallel

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
