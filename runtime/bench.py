"""Latency, throughput and memory of bundle models on the machine that runs them (`clipedge bench`, and the
measuring half of `clipedge report`).

Device-side on purpose: numpy, the standard library and the runtime's own backends only (no TensorFlow, torch or
matplotlib), so the numbers can be taken where they matter, on the phone-class box or the Pi itself.

A `gpu` variant is timed on LiteRT's GPU accelerator when this machine has one (else on the CPU, and the row says
why), and its row names the adapter LiteRT selected ("llvmpipe (LLVM 15.0.6, 256 bits), software; fp32 compute"):
a software Vulkan device proves the variant runs, but its latency is a CPU's, not a phone GPU's.

What is timed is the model call, `Backend.run(feeds)`, on synthetic inputs of the right shapes and dtypes (plausible
token ids, standard-normal pixels, the GPU text variant's real token-table lookup): preprocessing and tokenization
are not in it. A TFLite model exported with a fixed batch of 1 answers a batch of 8 with 8 calls (see backends.py);
`BenchRow.model_batch` says so, and its throughput will not scale with the batch.

Peak memory is taken in a fresh process (`python -m clipedge.runtime.bench --peak-memory ...`) that opens one
model and runs it once: its own peak resident set (VmHWM, else `getrusage(RUSAGE_SELF).ru_maxrss`), and the resident
set just before the model is opened (Python + numpy + the interpreter library), so the model's own share shows.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.backends.open import usable_cores
from clipedge.runtime.defaults import default_precision
from clipedge.runtime.errors import BackendError, BundleError, InputError
from clipedge.runtime.manifest import MANIFEST_NAME, Artifact, Manifest
from clipedge.runtime.metrics import median_interval

__all__ = [
    "BenchRow",
    "Latency",
    "LIBRARIES",
    "bench",
    "bench_table",
    "machine_info",
    "measure_latency",
    "peak_memory",
    "resolve_target",
    "synthetic_feeds",
    "usable_cores",
]

# Distributions whose versions a benchmark states (read from package metadata: nothing is imported).
LIBRARIES = ("numpy", "pillow", "ai-edge-litert", "tflite-runtime", "onnxruntime")
MODEL_SUFFIXES = (".tflite", ".onnx")


@dataclass(frozen=True)
class Latency:
    """Wall-clock milliseconds of `runs` timed calls (after the warm-up calls, which are not counted).

    `median_low_ms`/`median_high_ms`: the 95% confidence interval of the median (metrics.median_interval, from the
    order statistics, no distribution assumed), so a comparison of two medians can tell a difference from the noise
    (metrics.latencies_tied). Left out (a Latency made by hand, or read from an older report.json), it is the median
    itself: nothing known about the noise."""

    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    runs: int
    median_low_ms: float | None = None
    median_high_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("median_low_ms", "median_high_ms"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.median_ms)

    @classmethod
    def from_samples(cls, ms: Sequence[float] | np.ndarray) -> Latency:
        """The statistics of timed calls, in milliseconds."""
        ms = np.asarray(ms, dtype=np.float64)
        if ms.size == 0:
            raise InputError("no timed calls to summarize")
        low, high = median_interval(ms)
        return cls(float(np.median(ms)), float(np.percentile(ms, 90)), float(ms.min()), float(ms.mean()), int(ms.size),
                   low, high)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Latency:
        """A `to_dict` back, older ones (without the median's interval) included."""
        return cls(data["median_ms"], data["p90_ms"], data["min_ms"], data["mean_ms"], data["runs"],
                   data.get("median_low_ms"), data.get("median_high_ms"))

    @property
    def median_interval(self) -> tuple[float, float]:
        return float(self.median_low_ms), float(self.median_high_ms)  # type: ignore[arg-type]  # set in post_init

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def manifest_record(self) -> dict[str, float]:
        """The manifest's form (an artifact's `extra.latency_batch_1_ms`, clipedge.runtime.defaults): the median
        and its 95% interval, ms."""
        low, high = self.median_interval
        return {"median": round(self.median_ms, 4), "low": round(low, 4), "high": round(high, 4), "runs": self.runs}


@dataclass(frozen=True)
class BenchRow:
    file: str
    tower: str
    format: str
    precision: str
    variant: str
    backend: str
    threads: int | None  # None: the interpreter's own default
    batch: int
    model_batch: int | None  # the model's fixed batch axis (TFLite exports: 1); None when dynamic
    latency: Latency
    accelerator: str = "cpu"  # what ran it: "cpu" or "gpu"
    device: str = ""  # the GPU adapter LiteRT selected and its compute precision; "" on the CPU
    note: str = ""  # why it is not on the accelerator asked for, when it is not

    @property
    def items_per_second(self) -> float:
        return self.batch / (self.latency.median_ms / 1000.0) if self.latency.median_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "latency"}
        return {**out, "latency": self.latency.to_dict(), "items_per_second": round(self.items_per_second, 3)}


def measure_latency(fn: Callable[[], Any], repeats: int = 20, warmup: int = 2) -> Latency:
    """Call `fn` `warmup` times untimed (first-call allocation, XNNPACK packing, caches), then `repeats` times timed,
    with the garbage collector paused."""
    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise InputError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        fn()
    times = np.empty(repeats)
    collecting = gc.isenabled()
    gc.disable()  # as timeit does: no collector pauses inside the timed calls
    try:
        for i in range(repeats):
            start = time.perf_counter()
            fn()
            times[i] = time.perf_counter() - start
    finally:
        if collecting:
            gc.enable()
    return Latency.from_samples(times * 1000.0)


# ---- inputs -------------------------------------------------------------------------------------------------------
def synthetic_feeds(inputs: Sequence[Any], batch: int, artifact: Artifact | None = None,
                    manifest: Manifest | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Feeds for one call at `batch`, shaped and typed like `inputs` (the backend's `TensorSpec`s).

    Token ids are SOT, 12 random BPE ids, EOT, padding (a typical caption); float inputs are standard normal (what
    normalized pixels look like). With the bundle's artifact: integer-I/O inputs are quantized as the runtime does,
    and the GPU text variant gets the runtime's own token-table lookup (its real on-device work)."""
    from clipedge.runtime.runner import gpu_text_feeds, quantize

    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    rng = np.random.default_rng(seed)
    tokenizer = manifest.data.get("tokenizer", {}) if manifest is not None else {}
    sot, eot = int(tokenizer.get("sot_token_id", 49406)), int(tokenizer.get("eot_token_id", 49407))
    context = int(tokenizer.get("context_length", 77))

    def ids(length: int) -> np.ndarray:
        out = np.zeros((batch, length), np.int32)
        n = min(12, length - 2)
        out[:, 0] = sot
        out[:, 1 : n + 1] = rng.integers(256, 49000, size=(batch, n))
        out[:, n + 1] = eot
        return out

    precomputed: dict[str, np.ndarray] = {}
    if artifact is not None and manifest is not None and "token_table" in artifact.extra:
        entry = artifact.extra["token_table"]
        table = np.load(manifest.verified_file(entry["file"], entry["sha256"]), allow_pickle=False)
        precomputed = gpu_text_feeds(ids(context), table, artifact.extra["pool"])
    quantization = {spec["name"]: spec.get("quantization") for spec in (artifact.inputs if artifact else [])}

    feeds = {}
    for spec in inputs:
        shape = (batch, *[d if d > 0 else context for d in spec.shape[1:]])
        dtype = np.dtype(spec.dtype)
        if spec.name in precomputed:
            value = precomputed[spec.name]
        elif dtype.kind == "f" or quantization.get(spec.name):
            value = rng.standard_normal(shape).astype(np.float32)
            value = quantize(value, quantization.get(spec.name)) if dtype.kind != "f" else value.astype(dtype)
        elif dtype.kind in "iu" and len(shape) == 2:
            value = ids(shape[1]).astype(dtype)
        else:
            value = np.zeros(shape, dtype)
        feeds[spec.name] = value
    return feeds


# ---- what to bench -----------------------------------------------------------------------------------------------
def resolve_target(target: str | os.PathLike[str], tower: str | None = None, fmt: str | None = None,
                   precision: str | None = None, variant: str = "default"
                   ) -> tuple[Manifest | None, Artifact | None, Path]:
    """A bundle directory (+ tower/format/precision/variant to pick one artifact), or one model file (inside a
    bundle, its manifest entry is used; a bare .tflite/.onnx file works too). Returns (manifest, artifact, path)."""
    path = Path(target)
    if path.is_dir():
        manifest = Manifest.read(path)
        artifact = manifest.find(tower or "image", fmt, precision, variant)
        if precision is None:  # the bundle's default for that format, as `load` runs it (clipedge.runtime.defaults)
            default = default_precision(manifest, artifact.format, variant)
            artifact = manifest.find(tower or "image", artifact.format, default, variant) if default else artifact
        return manifest, artifact, manifest.verified_path(artifact)
    if path.is_file():
        if path.suffix.lower() not in MODEL_SUFFIXES:
            raise InputError(f"{path} is neither a bundle directory nor a model file (.tflite, .onnx)")
        chosen = {"--tower": tower, "--format": fmt, "--precision": precision}
        given = [name for name, value in chosen.items() if value] + (["--variant"] if variant != "default" else [])
        if given:
            raise InputError(f"{', '.join(given)} pick a model inside a bundle directory; {path} is already one "
                             "model file: pass the bundle directory instead, or drop them")
        if (path.parent / MANIFEST_NAME).is_file():
            manifest = Manifest.read(path.parent)
            for artifact in manifest.artifacts:
                if artifact.file == path.name:
                    return manifest, artifact, manifest.verified_path(artifact)
        return None, None, path
    raise BundleError(f"{path} does not exist: pass a bundle directory or a .tflite/.onnx model file")


def bench(target: str | os.PathLike[str], *, tower: str | None = None, fmt: str | None = None,
          precision: str | None = None, variant: str = "default", batches: Sequence[int] = (1,),
          threads: Sequence[int | None] = (None,), repeats: int = 20, warmup: int = 2,
          accelerator: str | None = None) -> list[BenchRow]:
    """Latency of one model at every (threads, batch): the model is opened once per thread count. `accelerator`
    None: "auto" for a gpu variant (the GPU when there is one), "cpu" for everything else."""
    from clipedge.runtime.backends.open import open_backend

    if not batches or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
        raise InputError(f"batch sizes must be positive integers, got {list(batches)}")
    if not threads or any(t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1)
                          for t in threads):
        raise InputError(f"thread counts must be positive integers, got {list(threads)}")
    manifest, artifact, path = resolve_target(target, tower, fmt, precision, variant)
    if accelerator is None:
        accelerator = "auto" if artifact is not None and artifact.variant == "gpu" else "cpu"
    rows = []
    for n_threads in threads:
        backend = open_backend(path, signature=artifact.signature if artifact else None, threads=n_threads,
                               accelerator=accelerator)
        fixed = next((s.shape[0] for s in backend.inputs if s.shape and s.shape[0] > 0), None)
        for batch in batches:
            feeds = synthetic_feeds(backend.inputs, batch, artifact, manifest)
            latency = measure_latency(lambda b=backend, f=feeds: b.run(f), repeats=repeats, warmup=warmup)
            rows.append(BenchRow(
                file=path.name, tower=artifact.tower if artifact else "?",
                format=artifact.format if artifact else path.suffix.lstrip("."),
                precision=artifact.precision if artifact else "?", variant=artifact.variant if artifact else "?",
                backend=backend.info.backend, threads=n_threads, batch=batch, model_batch=fixed, latency=latency,
                accelerator=backend.info.accelerator, device=backend.info.device,
                note=backend.info.note if accelerator != "cpu" else ""))
        del backend
    return rows


def bench_table(rows: Sequence[BenchRow]) -> str:
    """A plain-text table, one line per (threads, batch)."""
    if not rows:
        return "(no measurements)"
    first = rows[0]
    head = (f"{first.file}  ({first.tower}, {first.format}, {first.precision}"
            + ("" if first.variant in ("default", "?") else f", {first.variant}") + f"; {first.backend})")
    if first.accelerator == "gpu":
        head += f"\non LiteRT's GPU accelerator: {first.device}" + (
            " (a software GPU: its latency is a CPU's, not a phone GPU's)" if "software" in first.device else "")
    elif first.note:
        head += f"\non the CPU: {first.note}"
    if first.model_batch is not None and any(r.batch > first.model_batch for r in rows):
        head += (f"\nmodel batch fixed at {first.model_batch}: larger batches run as repeated calls "
                 "(export with --batch dynamic, or use the ONNX model, for real batching)")
    header = f"{'threads':>7} {'batch':>5} {'median ms':>10} {'p90 ms':>9} {'ms/item':>8} {'items/s':>9}"
    lines = [head, header, "-" * len(header)]
    for r in rows:
        lines.append(f"{'default' if r.threads is None else r.threads:>7} {r.batch:>5} {r.latency.median_ms:>10.2f} "
                     f"{r.latency.p90_ms:>9.2f} {r.latency.median_ms / r.batch:>8.2f} {r.items_per_second:>9.1f}")
    return "\n".join(lines)


# ---- the machine ---------------------------------------------------------------------------------------------------
def _cpuinfo() -> tuple[str, list[str]]:
    """CPU model name and the instruction-set extensions that change interpreter speed a lot."""
    model, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    interesting = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "asimddp", "sve", "i8mm")
    return model or platform.processor() or platform.machine(), [f for f in interesting if f in flags]


def _memory_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info(extra_libraries: Sequence[str] = ()) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, OS, Python, library versions, load average."""
    model, isa = _cpuinfo()
    versions = {}
    for name in (*LIBRARIES, *extra_libraries):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "cpu": model, "isa": isa, "machine": platform.machine(), "cores": os.cpu_count(),
        "usable_cores": usable_cores(), "memory_mb": _memory_total_mb(), "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}", "libraries": versions,
        "load_average": load,
    }


# ---- peak memory in a fresh process --------------------------------------------------------------------------------
def _rss_mb() -> float | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> tuple[float | None, str]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "VmHWM"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None, "unavailable"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 1024), "ru_maxrss"  # bytes on macOS, KiB on Linux


def peak_memory(bundle: str | os.PathLike[str], file: str, threads: int | None = None,
                timeout: float = 900) -> dict[str, Any]:
    """Peak resident memory (MB) of a fresh Python process that opens the bundle's `file` and runs it once at batch 1.

    Returns {"peak_rss_mb", "before_load_rss_mb", "model_rss_mb" (the difference), "method"}."""
    command = [sys.executable, "-m", "clipedge.runtime.bench", "--peak-memory", os.fspath(bundle), file]
    if threads:
        command += ["--threads", str(threads)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as err:
        raise BackendError(f"measuring the memory of {file} took over {timeout:.0f} s") from err
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = " ".join((done.stderr or "").strip().splitlines()[-3:])
        raise BackendError(f"the memory probe for {file} failed (exit {done.returncode}): {tail}")
    return json.loads(lines[-1])


def _peak_memory_child(bundle: str, file: str, threads: int | None) -> dict[str, Any]:
    from clipedge.runtime.backends.open import open_backend

    manifest = Manifest.read(bundle)
    artifact = next((a for a in manifest.artifacts if a.file == file), None)
    if artifact is None:
        raise BundleError(f"{bundle} lists no artifact {file!r}")
    path = manifest.verified_path(artifact)
    # Load the interpreter library first, so "before_load" is Python + numpy + the library and the rest is the model.
    try:
        if path.suffix == ".onnx":
            import onnxruntime  # noqa: F401
        else:
            import ai_edge_litert.compiled_model  # noqa: F401
    except ImportError:
        pass
    before = _rss_mb()
    backend = open_backend(path, signature=artifact.signature, threads=threads)
    backend.run(synthetic_feeds(backend.inputs, 1, artifact, manifest))
    peak, method = _peak_rss_mb()
    out = {"peak_rss_mb": None if peak is None else round(peak, 1),
           "before_load_rss_mb": None if before is None else round(before, 1), "method": method}
    out["model_rss_mb"] = None if peak is None or before is None else round(peak - before, 1)
    return out


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipedge.runtime.bench",
                                     description="internal: the fresh process of clipedge's memory measurement")
    parser.add_argument("--peak-memory", nargs=2, metavar=("BUNDLE", "FILE"), required=True)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    print(json.dumps(_peak_memory_child(*args.peak_memory, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
