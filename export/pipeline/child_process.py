"""One conversion per child process, so a big model's export stays within memory.

Why: the TF converter, its MLIR quantizer and tf2onnx do not give memory back. Run one after another in one process
(24 conversions for a ViT-B/32 bundle), the process grew to ~20 GiB. In a child that exits after one conversion, the
memory is returned to the system every time; the parent keeps only the float TF model and the verification.

The child rebuilds the model from the checkpoint (seconds) rather than receiving it: TF objects do not pickle, and a
fresh process is the point. It writes the model file itself and sends back only small results. It dies with its
parent (PR_SET_PDEATHSIG, set first thing, then a check that the parent is still the one that started it: a parent
killed while the child was starting would never send the signal), so a killed export leaves no converter running
on, finishing into a dead export's directory. The request goes in on stdin and the result comes back on a pipe: no
temporary files of ours. What the libraries write there (autograph's generated sources, the converters' scratch
directories) goes into the export's private temp directory, inherited through $TMPDIR
(clipedge.export.pipeline.export_bundle.private_tempdir), which the export removes however it ends.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import resource
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipedge.runtime.errors import ExportError

__all__ = ["ConversionRequest", "ConversionResult", "MMAP_THRESHOLD", "convert_isolated", "map_large_allocations",
           "peak_rss_bytes"]

# Allocations from 1 MiB up get pages of their own, given back to the system when freed (below).
MMAP_THRESHOLD = 1 << 20


@dataclass(frozen=True)
class ConversionRequest:
    """Everything a fresh process needs to build one model file (all picklable)."""

    checkpoint: str  # a local path: the child loads the same weights the parent verified against
    architecture: str | None
    tower: str
    variant: str
    fmt: str
    precision: str
    batch: int | None  # None: a dynamic batch axis
    out_file: str
    calibration: dict[str, np.ndarray] = field(default_factory=dict)
    int8_io: bool = False
    fp32_file: str | None = None  # the tower's fp32 file, for the precisions derived from it
    label_embeddings: np.ndarray | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    rescales: tuple = ()  # clipedge.export.equalize.Rescale, folded in after loading, as in the parent


@dataclass(frozen=True)
class ConversionResult:
    quantization: dict[str, dict[str, float]]  # int8 in/out scales (formats.tflite.convert.io_quantization)
    peak_rss_bytes: int  # the child's own peak resident memory


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def map_large_allocations() -> None:
    """glibc serves an allocation of 128 kB or more with its own pages (mmap) and unmaps them when it is freed, but
    after the first such free it raises that threshold (up to 32 MB) and serves later ones from its heap, which it
    seldom gives back: numpy's temporary weight copies and the converters' buffers, freed, stayed resident. A fixed
    threshold keeps the memory going back (issue #33: a ViT-B/32 full-int8 conversion 3.1 -> 2.5 GiB peak, a text
    fp16 one 2.1 -> 1.9). Conversion processes get it from MALLOC_MMAP_THRESHOLD_ (convert_isolated), the export
    process from mallopt here; nothing happens on other C libraries."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (AttributeError, OSError):  # musl has no mallopt
        pass


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if parent and os.getppid() != parent:  # the parent died before the prctl: nobody is waiting for this
        os._exit(3)


def _convert(request: ConversionRequest, parent: int = 0) -> ConversionResult:
    from clipedge.export.checkpoint.loader import CLIPModel
    from clipedge.export.equalize import apply_rescales
    from clipedge.export.pipeline.convert_job import convert_job
    from clipedge.export.pipeline.job import Job
    from clipedge.export.towers import tower_spec

    model = CLIPModel.from_pretrained(request.checkpoint, architecture=request.architecture)
    apply_rescales(model, request.rescales)
    kwargs = {"mean": request.mean, "std": request.std} if request.mean is not None else {}
    spec = tower_spec(model, request.tower, request.variant, request.label_embeddings, **kwargs)
    fp32 = Path(request.fp32_file).read_bytes() if request.fp32_file else None
    job = Job(request.tower, request.fmt, request.precision, request.variant)
    data, quantization = convert_job(spec, job, request.batch, request.calibration, request.int8_io, fp32)
    out = Path(request.out_file)
    _die_with_parent(parent)  # minutes may have passed: never write into a dead export's directory
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(data)
    partial.replace(out)
    return ConversionResult(quantization, peak_rss_bytes())


def convert_isolated(request: ConversionRequest) -> ConversionResult:
    """Run one conversion in a fresh interpreter; its error comes back as it was raised there.

    A plain `python -m` child rather than multiprocessing: spawn re-imports the caller's __main__, so a user's
    script without an `if __name__ == "__main__"` guard would run its export again in every child."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
           "MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))}
    done = subprocess.run([sys.executable, "-m", __name__, str(os.getpid())], input=pickle.dumps(request),
                          capture_output=True, env=env)
    stdout = done.stdout
    if not stdout.startswith(_RESULT_MARK):
        stderr = done.stderr.decode("utf-8", errors="replace")
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
        raise ExportError(f"the process converting the {request.tower} tower to {request.fmt} "
                          f"{request.precision} died ({how}; out of memory?):\n{tail}")
    outcome = pickle.loads(stdout[len(_RESULT_MARK):])
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


_RESULT_MARK = b"CLIPEDGE-CONVERSION-RESULT\n"


def main(argv: list[str]) -> int:
    """Child side: read the request on stdin, convert, write the result (or the exception) on stdout. Whatever the
    converters print goes to stderr: fd 1 carries the result only."""
    parent = int(argv[0]) if argv and argv[0].isdigit() else 0
    _die_with_parent(parent)
    result_fd = os.dup(1)
    os.dup2(2, 1)
    request = pickle.loads(sys.stdin.buffer.read())
    try:
        outcome: object = _convert(request, parent)
    except Exception as err:  # sent back to the parent, which raises it
        outcome = err if _picklable(err) else ExportError(f"{type(err).__name__}: {err}")
    sys.stdout.flush()
    with os.fdopen(result_fd, "wb") as out:
        out.write(_RESULT_MARK + pickle.dumps(outcome))
    return 0


def _picklable(value: object) -> bool:
    try:
        pickle.loads(pickle.dumps(value))
    except Exception:
        return False
    return True


if __name__ == "__main__":
    # Before the imports below (TensorFlow's take seconds): a parent killed meanwhile must not leave us running.
    _die_with_parent(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 0)
    # Through the imported module, so what is pickled back names clipedge.export.pipeline.child_process, not __main__.
    from clipedge.export.pipeline.child_process import main as _main

    sys.exit(_main(sys.argv[1:]))
