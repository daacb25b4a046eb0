"""Open a model file in a child process before this process opens it, because some interpreters crash instead of
raising: LiteRT's `CompiledModel.from_file` dies with SIGSEGV on a truncated or edited .tflite (where its Interpreter
raises "not a valid Flatbuffer"), and a GPU driver that cannot place a model can take the process down with it. A
crash in the child is a result here; in this process it would be the end of it (and of a Pi's photo-library run).

The child (`python -m clipedge.runtime.backends.probe_child`) opens the file exactly as `open_backend` would, on the
asked accelerator, and runs one batch of zeros through it. Its outcome is cached by the file's sha256 and the route
(accelerator, forced interpreter, signature), on disk across processes, so a model is probed once per machine and
interpreter version, not once per load:

- `ok`: opened and ran; opening it here is safe.
- `error`: the child raised a ClipEdgeError (no GPU, a signature the file lacks, a file LiteRT's flatbuffer verifier
  rejects, ...): raise the same (`error_class`, `detail`) without opening the file here, because a damaged file
  can fail cleanly in one process and crash the next (LiteRT read one out of bounds: std::bad_alloc, then SIGSEGV).
  Cached in this process only: it can depend on the moment (a driver, a file being copied).
- `failed`: the child raised something else (MemoryError, an interpreter's own exception): not to be replayed here.
- `crashed`: the child died (a signal, an abort) or did not finish in time; opening it here would kill or hang this
  process. Cached on disk for the deterministic signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT), not for a kill
  from outside (out of memory) or a timeout.

The child dies with its parent (PR_SET_PDEATHSIG, and a parent-pid check for the moment before that is set) and
writes no file: the request goes in on stdin, the result comes back on stdout. Cache: $CLIPEDGE_CACHE_DIR, else
$XDG_CACHE_HOME/clipedge, else ~/.cache/clipedge (`probes/`); an unwritable cache only costs a child per process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

__all__ = ["CACHE_ENV", "TIMEOUT_ENV", "ProbeResult", "probe_model", "cache_dir"]

CACHE_ENV = "CLIPEDGE_CACHE_DIR"
TIMEOUT_ENV = "CLIPEDGE_PROBE_TIMEOUT"
DEFAULT_TIMEOUT = 600.0  # a ViT-L fp32 file opened and run once on a Raspberry Pi takes well under this
CHILD_MODULE = "clipedge.runtime.backends.probe_child"  # run with `python -m`; tests point it at a child that crashes
PROTOCOL = 1  # bump when the child's behaviour changes, so old cached outcomes are not trusted
_DETERMINISTIC = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}

_memory: dict[str, ProbeResult] = {}
_memory_lock = threading.Lock()


@dataclass(frozen=True)
class ProbeResult:
    """What opening and running a model file did in a child process."""

    status: str  # "ok" | "error" | "failed" | "crashed"
    accelerator: str  # "cpu" | "gpu"
    backend: str = ""  # the interpreter that opened it in the child ("" when none did)
    detail: str = ""  # the error, or how the child died and the last lines it logged
    cached: bool = False  # from the cache, not a child started now
    error_class: str = ""  # for "error": the ClipEdgeError subclass the child raised, by name

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def crashed(self) -> bool:
        return self.status == "crashed"

    @property
    def unsafe(self) -> bool:
        """Opening the file in this process would crash, hang or raise something that is not a ClipEdgeError."""
        return self.status in ("crashed", "failed")


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clipedge"


@lru_cache(maxsize=1)
def _fingerprint() -> str:
    """The interpreter versions and machine: a new LiteRT may crash where the old one did not, and the reverse."""
    import platform
    from importlib import metadata

    versions = []
    for dist in ("ai-edge-litert", "onnxruntime", "onnxruntime-gpu", "tflite-runtime", "tensorflow", "tensorflow-cpu"):
        try:
            versions.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return f"{PROTOCOL};{platform.machine()};{sys.version_info[:2]};{','.join(versions)}"


def _key(sha256: str, accelerator: str, prefer: str | None, signature: str | None, delegate: str | None) -> str:
    # The child inherits the environment: the CLIPEDGE_GPU_* settings that change how a GPU opens a model are route.
    settings = sorted((k, v) for k, v in os.environ.items() if k.startswith("CLIPEDGE_GPU")) if accelerator == "gpu" \
        else []
    route = json.dumps([prefer, signature, delegate, settings, _fingerprint()])
    return f"{sha256}-{accelerator}-{hashlib.sha256(route.encode()).hexdigest()[:16]}"


def _read_cache(key: str) -> ProbeResult | None:
    with _memory_lock:
        if key in _memory:
            return replace(_memory[key], cached=True)
    try:
        data = json.loads((cache_dir() / "probes" / f"{key}.json").read_text(encoding="utf-8"))
        result = ProbeResult(str(data["status"]), str(data["accelerator"]), str(data["backend"]), str(data["detail"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if result.status not in ("ok", "crashed"):
        return None
    with _memory_lock:
        _memory[key] = result
    return replace(result, cached=True)


def _write_cache(key: str, result: ProbeResult, persist: bool) -> None:
    with _memory_lock:
        _memory[key] = result
    if not persist:
        return
    folder = cache_dir() / "probes"
    record = {"status": result.status, "accelerator": result.accelerator, "backend": result.backend,
              "detail": result.detail}
    with contextlib.suppress(OSError):  # a read-only home: the outcome is kept for this process only
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(record, f)
            os.replace(tmp, folder / f"{key}.json")
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _timeout() -> float:
    try:
        value = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT
    return value if value > 0 else DEFAULT_TIMEOUT


def _died(returncode: int, stderr: str) -> tuple[str, bool]:
    """How the child ended without a result, and whether a rerun would end the same way."""
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip() and not line.startswith(("INFO", "WARNING", "I0000", "W0000"))]
    tail = " | ".join(lines[-4:])  # LiteRT's INFO and WARNING lines say what it registered, never why it died
    if returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        how = f"killed by {name}" + (" (out of memory?)" if number == signal.SIGKILL else "")
        deterministic = number in _DETERMINISTIC
    else:
        how, deterministic = f"exited with status {returncode} without a result", False
    return how + (f"; its last log lines: {tail[-600:]}" if tail else ""), deterministic


def probe_model(path: str | os.PathLike[str], *, accelerator: str = "cpu", sha256: str | None = None,
                prefer: str | None = None, signature: str | None = None, gpu_delegate: str | None = None,
                timeout: float | None = None) -> ProbeResult:
    """Open and run `path` once in a child process on `accelerator` ("cpu" or "gpu"), as `open_backend` would with
    `prefer`, `signature` and `gpu_delegate` (a delegate library for the Interpreter routes); cached by (sha256,
    accelerator, route). `sha256` saves hashing a file whose sum is known (a bundle's, checked already). Never
    raises for what the model does: a crash is `ProbeResult.crashed`."""
    if accelerator not in ("cpu", "gpu"):
        raise ValueError(f"probe accelerator must be 'cpu' or 'gpu', got {accelerator!r}")
    path = Path(path)
    if sha256 is None:
        from clipedge.runtime.manifest import sha256_file

        sha256 = sha256_file(path)
    key = _key(sha256, accelerator, prefer, signature, gpu_delegate)
    cached = _read_cache(key)
    if cached is not None:
        return cached
    request = {"path": os.fspath(path.resolve()), "accelerator": accelerator, "prefer": prefer,
               "signature": signature, "gpu_delegate": gpu_delegate, "parent": os.getpid()}
    command = [sys.executable, "-m", CHILD_MODULE]
    try:
        done = subprocess.run(command, input=json.dumps(request), capture_output=True, text=True,
                              timeout=timeout or _timeout(), errors="replace")
    except subprocess.TimeoutExpired as err:
        result = ProbeResult("crashed", accelerator, detail=f"stopped after {err.timeout:.0f} s, not done "
                                                            f"(${TIMEOUT_ENV} sets the limit)")
        _write_cache(key, result, persist=False)
        return result
    lines = done.stdout.strip().splitlines()
    try:
        data = json.loads(lines[-1]) if lines else None
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("status") in ("ok", "error", "failed"):
        result = ProbeResult(data["status"], accelerator, str(data.get("backend", "")), str(data.get("detail", "")),
                             error_class=str(data.get("error_class", "")))
        _write_cache(key, result, persist=result.ok)
        return result
    detail, deterministic = _died(done.returncode, done.stderr)
    result = ProbeResult("crashed", accelerator, detail=detail)
    _write_cache(key, result, persist=deterministic)
    return result
