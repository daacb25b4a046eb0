"""The `.tflite` backends: LiteRT's CompiledModel, and the SignatureRunner Interpreters (LiteRT, tflite-runtime,
TensorFlow's tf.lite) that `open_backend` falls back to, in the order `clipedge.runtime.backends.open` explains.

Kept apart from the ONNX backend because each side carries its own library quirks (LiteRT's buffer dtypes, its
aarch64 CPU-feature crash, the GPU delegate libraries). Every interpreter is imported inside the function that opens
it, never at module import, so a device with only one of them installed never loads the others.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.backends.base import (
    Backend,
    BackendBase,
    BackendInfo,
    TensorSpec,
    Unavailable,
    one_line,
    pick_signature,
)
from clipedge.runtime.errors import BackendError

__all__ = ["GPU_DELEGATE_ENV", "open_compiled", "open_interpreter"]

# A TFLite GPU delegate library for the Interpreter paths (Android: libtensorflowlite_gpu_delegate.so, a Pi build of
# it, ...). CompiledModel does not need it: LiteRT ships its own GPU accelerator.
GPU_DELEGATE_ENV = "CLIPEDGE_GPU_DELEGATE"

# Dtypes LiteRT's TensorBuffer can read and write (ai_edge_litert 2.3 tensor_buffer.py); a signature with any other
# (int64, int16, ...) goes to the Interpreter, which has no such limit.
_LITERT_BUFFER_DTYPES = frozenset({"float32", "float16", "int32", "int8", "uint8", "bool"})


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


def open_compiled(path: Path, *, signature: str | None, threads: int | None, gpu: bool) -> Backend:
    missing = _aarch64_missing_features()
    if missing:  # it would kill the process, not raise: go straight to the Interpreter
        raise Unavailable(f"this CPU lacks {', '.join(missing)}, which LiteRT's CompiledModel needs on aarch64")
    try:
        from ai_edge_litert.compiled_model import CompiledModel, CpuOptions, HardwareAccelerator, Options
    except ImportError as err:
        raise Unavailable(f"ai_edge_litert is not installed ({err})") from err
    from clipedge.runtime.backends.litert_gpu import foreign_llvm, gpu_precision, native_output, parse_placement

    if gpu and foreign_llvm():  # it would segfault inside from_file on Mesa's llvmpipe (litert_gpu's docstring)
        raise BackendError(f"LiteRT's GPU accelerator cannot open {path} in this process: TensorFlow (or another "
                           "library exporting LLVM) is loaded, and Mesa's LLVM-based Vulkan drivers crash on it; "
                           "use the GPU from a process that does not import TensorFlow")
    # GPU | CPU: ops the GPU lacks run on the CPU instead of failing the whole model; LiteRT's log says how many.
    accel = HardwareAccelerator.GPU | HardwareAccelerator.CPU if gpu else HardwareAccelerator.CPU
    # Always pass Options: `from_file` without them pins the CPU to 1 thread; num_threads=0 means "LiteRT decides".
    cpu = CpuOptions(num_threads=threads) if threads else None
    options = Options(hardware_accelerators=accel, cpu_options=cpu)
    precision = gpu_precision() if gpu else None
    if precision == "fp32":  # LiteRT's default is fp16 compute: below the fp32 files' floor (litert_gpu)
        try:
            from ai_edge_litert.compiled_model import GpuOptions
        except ImportError as err:
            raise BackendError(f"cannot open {path} on the GPU at fp32 compute: this ai_edge_litert has no "
                               f"GpuOptions ({err}); set CLIPEDGE_GPU_PRECISION=fp16 or upgrade it") from err
        options = Options(hardware_accelerators=accel, cpu_options=cpu, gpu_options=GpuOptions(enforce_f32=True))
    try:
        with native_output() as log:  # LiteRT prints to stdout while it sets up a GPU; its log names the adapter
            model = CompiledModel.from_file(str(path), options=options)
    except Exception as err:  # pybind raises RuntimeError; translate whatever it is, with the path
        if gpu:
            raise BackendError(
                f"LiteRT could not set up its GPU accelerator for {path} ({one_line(err)}); the cause is on "
                "LiteRT's stderr log ('No adapters found': no usable GPU driver, e.g. Vulkan/OpenCL)") from err
        raise BackendError(f"LiteRT could not load {path}: {one_line(err)}") from err
    backend = _CompiledModelBackend(model, path, signature=signature, gpu=gpu)
    if gpu:
        backend.placement = placement = parse_placement(log.text)
        backend.info = replace(backend.info, fully_accelerated=backend.info.fully_accelerated and not placement.cpu_ops,
                               device=f"{placement.label}; {precision} compute")
    return backend


class _CompiledModelBackend(BackendBase):
    """LiteRT's CompiledModel: tensor buffers are created once and reused; re-created only after a resize."""

    def __init__(self, model: Any, path: Path, *, signature: str | None, gpu: bool) -> None:
        self._model, self._path = model, path
        keys = [model.get_signature_by_index(i)["key"] for i in range(model.get_num_signatures())]
        self._key = pick_signature(path, keys, signature)
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


def open_interpreter(
    name: str, path: Path, *, signature: str | None, threads: int | None, gpu: bool, delegate: str | None
) -> Backend:
    # Check the GPU route before importing anything: no reason to load TensorFlow only to find there is no delegate.
    if gpu and not delegate:
        raise Unavailable(f"no GPU delegate library (pass gpu_delegate= or set ${GPU_DELEGATE_ENV})")
    if gpu and os.sep in delegate and not os.path.isfile(delegate):
        raise BackendError(f"GPU delegate library not found: {delegate}")
    interpreter_cls, load_delegate = _import_interpreter(name)

    delegates = None
    if gpu:
        try:
            delegates = [load_delegate(delegate)]
        except (OSError, ValueError, RuntimeError) as err:
            raise BackendError(f"cannot load GPU delegate {delegate}: {one_line(err)}") from err
    try:
        with warnings.catch_warnings():
            # tf.lite.Interpreter warns that it is deprecated; backends._open_first logs that once, in our words.
            warnings.simplefilter("ignore", UserWarning)
            interpreter = interpreter_cls(model_path=str(path), num_threads=threads, experimental_delegates=delegates)
    except Exception as err:  # ValueError for bad files or failed delegation; translate with the path
        raise BackendError(f"{name} could not load {path}: {one_line(err)}") from err
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
        raise Unavailable(f"not installed ({err})") from err
    return Interpreter, load_delegate


class _InterpreterBackend(BackendBase):
    """A TFLite Interpreter through its SignatureRunner, which resizes inputs to the feed shapes on every call."""

    def __init__(
        self, interpreter: Any, path: Path, *, signature: str | None, name: str, gpu: bool, providers: tuple[str, ...]
    ) -> None:
        self._path = path
        names = interpreter.get_signature_list()
        self._key = pick_signature(path, list(names), signature)
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
