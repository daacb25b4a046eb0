"""LiteRT's GPU accelerator: which adapter it picked, how much of a model it took, in which float precision it
computes (the export's check of a gpu variant on it, in a child process, is `clipedge.runtime.backends.gpu_check`).

Why each piece exists:
- `CompiledModel.is_fully_accelerated()` said True for a model LiteRT had just split ("174 operations will run on
  the GPU, and the remaining 1 operations will run on the CPU"): the placement and the adapter are only in LiteRT's
  native log. `native_output` captures that log (file descriptors 1 and 2) around `from_file`, `parse_placement`
  reads it, and the captured text goes back to fd 2: LiteRT prints one INFO line to *stdout* while it sets up the
  GPU ("Failed to load OpenCL library"), which broke `clipedge ... --json`.
- LiteRT's GPU accelerator computes in fp16 unless told otherwise: the demo image gpu variant on lavapipe gave min
  cosine 0.99933 to the CPU on the shipped photos that way, 0.9999999 with `GpuOptions(enforce_f32=True)`. The fp32
  files' floor is 0.9999, so clipedge asks for fp32 compute; `CLIPEDGE_GPU_PRECISION=fp16` gives LiteRT's faster
  default back (fp16 is the faster path on most phone GPUs).
- With TensorFlow loaded in the process, Mesa's software Vulkan (llvmpipe) segfaults while LiteRT creates its GPU
  device: TensorFlow exports its own copy of LLVM globally, and Mesa's LLVM calls bind to it. `foreign_llvm` sees
  that, so the backend refuses with a `BackendError` instead of dying, and the export checks its gpu files in a
  child process (`clipedge.runtime.backends.gpu_check`) that never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from clipedge.runtime.errors import InputError

__all__ = ["GPU_PRECISION_ENV", "GPU_PRECISIONS", "GpuPlacement", "foreign_llvm", "gpu_precision", "native_output",
           "parse_placement"]

GPU_PRECISION_ENV = "CLIPEDGE_GPU_PRECISION"
GPU_PRECISIONS = ("fp32", "fp16")  # fp32: GpuOptions(enforce_f32=True), clipedge's default; fp16: LiteRT's

# A symbol of LLVM's C++ API that Mesa's llvmpipe calls while it compiles shaders; TensorFlow exports it.
_LLVM_SYMBOL = "_ZN4llvm15FixedVectorType3getEPNS_4TypeEj"


def gpu_precision() -> str:
    """The GPU compute precision: $CLIPEDGE_GPU_PRECISION, else "fp32" (what the fp32 files' floor needs)."""
    value = os.environ.get(GPU_PRECISION_ENV, "").strip().lower() or "fp32"
    if value not in GPU_PRECISIONS:
        raise InputError(f"${GPU_PRECISION_ENV}={value!r}: expected one of {list(GPU_PRECISIONS)}")
    return value


def foreign_llvm() -> bool:
    """Whether some library in this process (TensorFlow) exports LLVM's C++ symbols globally."""
    try:
        getattr(ctypes.CDLL(None), _LLVM_SYMBOL)
    except (AttributeError, OSError):
        return False
    return True


@dataclass(frozen=True)
class GpuPlacement:
    """What LiteRT's log says about one GPU model: the adapter, and how many ops each side runs."""

    adapter: str = ""  # "llvmpipe (LLVM 15.0.6, 256 bits)"
    adapter_type: str = ""  # "CPU / Software", "Discrete GPU", ...
    api: str = ""  # "Vulkan", "Metal", "OpenCL", ...
    gpu_ops: int | None = None  # None: LiteRT did not say (it says only when it splits the model)
    cpu_ops: int = 0
    unsupported: tuple[str, ...] = ()  # LiteRT's reasons, one per refused op kind

    @property
    def software(self) -> bool:
        return "software" in self.adapter_type.lower() or "cpu" in self.adapter_type.lower()

    @property
    def label(self) -> str:
        """The adapter as a report row names it: "llvmpipe (LLVM 15.0.6, 256 bits), software"."""
        if not self.adapter:
            return "GPU (adapter not reported)"
        kind = "software" if self.software else (self.adapter_type or "GPU")
        return f"{self.adapter}, {kind}" + (f", {self.api}" if self.api and not self.software else "")


_ADAPTER = re.compile(r"Selected adapter: (?P<name>.*?), arch=[^,]*, vendor=[^,]*, backend=(?P<api>[^,]*),"
                      r" adapterType=(?P<type>.*)$", re.MULTILINE)
_SPLIT = re.compile(r"(?P<gpu>\d+) operations will run on the GPU, and the remaining (?P<cpu>\d+) operations? will "
                    r"run on the CPU")
_UNSUPPORTED = re.compile(r"^(?P<op>[A-Z_0-9]+): (?P<why>.+)$", re.MULTILINE)


def parse_placement(text: str) -> GpuPlacement:
    adapter = _ADAPTER.search(text)
    split = _SPLIT.search(text)
    unsupported: tuple[str, ...] = ()
    if split:
        section = text[text.find("Following operations are not supported"):split.start()]
        unsupported = tuple(f"{m['op']}: {m['why'].strip()}" for m in _UNSUPPORTED.finditer(section))
    return GpuPlacement(
        adapter=adapter["name"].strip() if adapter else "", adapter_type=adapter["type"].strip() if adapter else "",
        api=adapter["api"].strip() if adapter else "", gpu_ops=int(split["gpu"]) if split else None,
        cpu_ops=int(split["cpu"]) if split else 0, unsupported=unsupported)


class _Captured:
    text = ""


def _flush_c_stdio() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)  # native printf text still in C's buffers belongs to the capture


@contextlib.contextmanager
def native_output() -> Iterator[_Captured]:
    """Native writes to fd 1 and fd 2 inside the block go to a temporary file; afterwards the text is in
    `captured.text` and is written to fd 2 (wherever fd 2 points then: the terminal, or a caller's log capture),
    so nothing an interpreter prints reaches stdout. Python's own sys.stdout is untouched (flushed first)."""
    captured = _Captured()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.flush()
    try:
        sink = tempfile.TemporaryFile(prefix="clipedge-litert-")
        saved = (os.dup(1), os.dup(2))
    except OSError:  # no descriptors to spare: run uncaptured rather than not at all
        yield captured
        return
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        yield captured
    finally:
        _flush_c_stdio()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        sink.seek(0)
        captured.text = sink.read().decode("utf-8", errors="replace")
        sink.close()
        with contextlib.suppress(OSError):
            os.write(saved[1], captured.text.encode("utf-8", errors="replace"))
        os.close(saved[1])
