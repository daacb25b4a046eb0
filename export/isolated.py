"""One conversion per child process, so a big model's export stays within memory.

Why: the TF converter, its MLIR quantizer and tf2onnx do not give memory back. Run one after another in one process
(24 conversions for a ViT-B/32 bundle), the process grew to ~20 GiB. In a child that exits after one conversion, the
memory is returned to the system every time; the parent keeps only the float TF model and the verification.

The child rebuilds the model from the checkpoint (seconds) rather than receiving it: TF objects do not pickle, and a
fresh process is the point. It writes the model file itself and sends back only small results. It dies with its
parent (PR_SET_PDEATHSIG), so a killed export leaves no converter running on.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipedge.runtime.errors import ExportError

__all__ = ["ConversionRequest", "ConversionResult", "convert_isolated", "peak_rss_bytes"]


@dataclass(frozen=True)
class ConversionRequest:
    """Everything a fresh process needs to build one model file (all picklable)."""

    checkpoint: str  # a local path: the child loads the same weights the parent verified against
    architecture: str | None
    tower: str
    variant: str
    fmt: str
    precision: str
    batch: int
    out_file: str
    calibration: dict[str, np.ndarray] = field(default_factory=dict)
    int8_io: bool = False
    fp32_file: str | None = None  # the tower's fp32 file, for the precisions derived from it
    label_embeddings: np.ndarray | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class ConversionResult:
    quantization: dict[str, dict[str, float]]  # int8 in/out scales (see clipedge.export.tflite.io_quantization)
    peak_rss_bytes: int  # the child's own peak resident memory


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _convert(request: ConversionRequest) -> ConversionResult:
    from clipedge.export.checkpoint import CLIPModel
    from clipedge.export.convert import Job, convert_job
    from clipedge.export.towers import tower_spec

    model = CLIPModel.from_pretrained(request.checkpoint, architecture=request.architecture)
    kwargs = {"mean": request.mean, "std": request.std} if request.mean is not None else {}
    spec = tower_spec(model, request.tower, request.variant, request.label_embeddings, **kwargs)
    fp32 = Path(request.fp32_file).read_bytes() if request.fp32_file else None
    job = Job(request.tower, request.fmt, request.precision, request.variant)
    data, quantization = convert_job(spec, job, request.batch, request.calibration, request.int8_io, fp32)
    out = Path(request.out_file)
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(data)
    partial.replace(out)
    return ConversionResult(quantization, peak_rss_bytes())


def convert_isolated(request: ConversionRequest) -> ConversionResult:
    """Run one conversion in a fresh interpreter; its error comes back as it was raised there.

    A plain `python -m` child rather than multiprocessing: spawn re-imports the caller's __main__, so a user's
    script without an `if __name__ == "__main__"` guard would run its export again in every child."""
    with tempfile.TemporaryDirectory(prefix="clipedge-convert-") as tmp:
        request_file, result_file = Path(tmp) / "request.pkl", Path(tmp) / "result.pkl"
        request_file.write_bytes(pickle.dumps(request))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        done = subprocess.run([sys.executable, "-m", __name__, str(request_file), str(result_file)],
                              capture_output=True, text=True, env=env)
        if not result_file.is_file():
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
            raise ExportError(f"the process converting the {request.tower} tower to {request.fmt} "
                              f"{request.precision} died ({how}; out of memory?):\n{tail}")
        outcome = pickle.loads(result_file.read_bytes())
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def main(argv: list[str]) -> int:
    """Child side: read the request, convert, write the result (or the exception) for the parent."""
    _die_with_parent()
    request_file, result_file = Path(argv[0]), Path(argv[1])
    try:
        outcome: object = _convert(pickle.loads(request_file.read_bytes()))
    except Exception as err:  # sent back to the parent, which raises it
        outcome = err if _picklable(err) else ExportError(f"{type(err).__name__}: {err}")
    result_file.write_bytes(pickle.dumps(outcome))
    return 0


def _picklable(value: object) -> bool:
    try:
        pickle.loads(pickle.dumps(value))
    except Exception:
        return False
    return True


if __name__ == "__main__":
    # Through the imported module, so what is pickled back names clipedge.export.isolated, not __main__.
    from clipedge.export.isolated import main as _main

    sys.exit(_main(sys.argv[1:]))
