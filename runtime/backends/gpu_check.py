"""The export's check of a gpu variant on LiteRT's real GPU accelerator, in a child process
(`python -m clipedge.runtime.backends.gpu_check`): the exporting process has TensorFlow loaded, next to which LiteRT's
GPU setup crashes on Mesa's llvmpipe (clipedge.runtime.backends.litert_gpu), and a GPU that cannot take a model may
crash too; the child's death is then the check's result, not the export's end. numpy and the runtime only, like the
device.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from typing import Any

import numpy as np

from clipedge.runtime.backends.litert_gpu import GPU_PRECISION_ENV, GPU_PRECISIONS
from clipedge.runtime.errors import BackendError

__all__ = ["gpu_check"]


def gpu_check(path: str | os.PathLike[str], feeds: dict[str, np.ndarray], signature: str | None = None,
              timeout: float = 600) -> dict[str, Any]:
    """Open `path` on LiteRT's GPU accelerator in a fresh process (no TensorFlow: see the module docstring), once per
    GPU precision; run `feeds` (the file's own inputs, batch-major) there and on the CPU. Returns {"status": "ran",
    "adapter", "ops_on_cpu", "ops_on_gpu", "unsupported", "fully_delegated", "cosine_to_cpu": {precision: {"min",
    "mean"}}}, {"status": "unavailable", "reason"} (no GPU here), {"status": "timed-out", "reason"} or {"status":
    "failed", "reason"} (the child died: LiteRT crashed on the file).

    The feeds go in on stdin and the result comes back on a pipe of its own (LiteRT prints on stdout): no temporary
    file to leave behind if the export is killed, and the child dies with it."""
    buffer = io.BytesIO()
    np.savez(buffer, **feeds)
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "clipedge.runtime.backends.gpu_check", os.fspath(path), "--result-fd",
               str(write_end),
               "--parent", str(os.getpid())] + (["--signature", signature] if signature else [])
    try:
        try:
            done = subprocess.run(command, input=buffer.getvalue(), capture_output=True, timeout=timeout,
                                  pass_fds=(write_end,), env={**os.environ, "CLIPEDGE_LOG": "warning"})
        finally:
            os.close(write_end)
        with os.fdopen(read_end, "rb") as result:
            read_end = -1
            text = result.read().decode()
    except subprocess.TimeoutExpired:  # a slow (software) GPU, not a verdict on the model
        return {"status": "timed-out", "reason": f"the GPU check took over {timeout:.0f} s"}
    finally:
        if read_end >= 0:
            os.close(read_end)
    if done.returncode == 0 and text:
        return json.loads(text)
    how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit status {done.returncode}"
    tail = " ".join(done.stderr.decode(errors="replace").strip().splitlines()[-2:])[-300:]
    return {"status": "failed", "reason": f"LiteRT's GPU accelerator stopped the check process ({how}): {tail}"}


def _cosines(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    a = ours.reshape(len(ours), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"min": float(cos.min()), "mean": float(cos.mean())}


def _check_child(path: str, feeds: dict[str, np.ndarray], signature: str | None) -> dict[str, Any]:
    # Unprobed: this process is the one allowed to crash (gpu_check reads its death as the result).
    from clipedge.runtime.backends.open import open_unprobed

    cpu = open_unprobed(path, signature=signature, prefer="litert-compiled", accelerator="cpu")
    reference = cpu.run(feeds)[cpu.outputs[0].name]
    result: dict[str, Any] = {"status": "ran", "cosine_to_cpu": {}}
    for precision in GPU_PRECISIONS:
        os.environ[GPU_PRECISION_ENV] = precision
        try:
            gpu = open_unprobed(path, signature=signature, prefer="litert-compiled", accelerator="gpu")
        except BackendError as err:
            return {"status": "unavailable", "reason": str(err).splitlines()[0]}
        placement = gpu.placement
        result.update(adapter=placement.label, ops_on_cpu=placement.cpu_ops, ops_on_gpu=placement.gpu_ops,
                      unsupported=list(placement.unsupported), fully_delegated=gpu.info.fully_accelerated)
        result["cosine_to_cpu"][precision] = _cosines(gpu.run(feeds)[gpu.outputs[0].name], reference)
        del gpu
    return result


def _die_with_parent(parent: int) -> None:
    """A check left running after its export was killed would hold a GPU and a model for nothing."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if parent and os.getppid() != parent:  # the parent died before the prctl: the signal will never come
        os._exit(3)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipedge.runtime.backends.gpu_check",
                                     description="internal: the child process of the export's GPU check")
    parser.add_argument("model")
    parser.add_argument("--result-fd", type=int, required=True)
    parser.add_argument("--parent", type=int, default=0)
    parser.add_argument("--signature")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    with np.load(io.BytesIO(sys.stdin.buffer.read())) as data:
        feeds = {name: data[name] for name in data.files}
    result = _check_child(args.model, feeds, args.signature)
    with os.fdopen(args.result_fd, "w") as out:
        out.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
