"""The child side of `clipedge.runtime.backends.probe`: open one model file as `open_backend` would, run a batch of
zeros, print the outcome as one JSON line. If the interpreter crashes, this process dies instead of the caller.

Run as `python -m clipedge.runtime.backends.probe_child` with the request as JSON on stdin. It dies with its parent: a
probe left running after its caller was killed would hold a model's memory for nothing.
"""

from __future__ import annotations

import json
import os
import sys


def _die_with_parent(parent: int) -> None:
    """PR_SET_PDEATHSIG, then check the parent is still the one that started us: if it died before the prctl, the
    signal would never come (we were already re-parented)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if parent and os.getppid() != parent:
        os._exit(3)


def _zeros(spec) -> object:
    import numpy as np

    shape = [1 if d < 0 else d for d in spec.shape]
    return np.zeros(shape, np.dtype(spec.dtype))


def _verify_flatbuffer(path: str) -> dict | None:
    """LiteRT's Interpreter runs the flatbuffer verifier, CompiledModel does not: a file the verifier rejects never
    reaches CompiledModel, where a damaged offset read out of bounds (a segfault, or std::bad_alloc, run to run)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    try:
        Interpreter(model_path=path)
    except ValueError as err:
        if "flatbuffer" in str(err).lower():
            return {"status": "error", "error_class": "BundleError",
                    "detail": f"{path} is not a valid TFLite flatbuffer (LiteRT's verifier: {str(err)[:200]}); "
                              "re-export or re-copy the model file"}
    return None


def _probe(request: dict) -> dict:
    from clipedge.runtime.backends.open import open_unprobed
    from clipedge.runtime.errors import ClipEdgeError

    if request["path"].lower().endswith(".tflite") and request.get("prefer") in (None, "litert-compiled"):
        refused = _verify_flatbuffer(request["path"])
        if refused:
            return refused
    try:
        backend = open_unprobed(request["path"], accelerator=request["accelerator"], prefer=request.get("prefer"),
                                signature=request.get("signature"), gpu_delegate=request.get("gpu_delegate"))
        backend.run({spec.name: _zeros(spec) for spec in backend.inputs})
    except ClipEdgeError as err:  # the parent raises it again, without opening the file itself
        return {"status": "error", "error_class": type(err).__name__, "detail": str(err)}
    except Exception as err:  # MemoryError, an interpreter's own type
        return {"status": "failed", "detail": f"{type(err).__name__}: {str(err)[:500]}"}
    return {"status": "ok", "backend": backend.info.backend}


def main() -> int:
    request = json.loads(sys.stdin.read())
    _die_with_parent(int(request.get("parent") or 0))
    # Interpreters print to fd 1 (LiteRT's GPU setup): the result gets its own copy of stdout, fd 1 goes to stderr.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    outcome = _probe(request)
    sys.stdout.flush()
    with os.fdopen(result_fd, "w", encoding="utf-8") as out:
        out.write("\n" + json.dumps(outcome) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
