"""`auto` precision: the smallest, fastest model that meets a fidelity target, chosen layer by layer.

Full-int8 CLIP loses accuracy in a few places (measured here: the LayerNorm chains around the embeddings and the
head, and individual layers when their activations have outliers); quantizing the rest costs almost nothing. So:

1. TFLite: calibrate once (the converter's calibrate-only mode), then re-quantize that calibrated model many times with
   `mlir_quantize(denylisted_ops=...)` (a fraction of a second each). The groups searched are op types (ADD, MEAN,
   SQUARED_DIFFERENCE, FULLY_CONNECTED, ...): per-layer groups (`node_groups`, from the models' name scopes) were
   the plan, but TF 2.21's quantizer does not honour node denylists through reshapes and fused ops (see _quantize).
   Measured on a small CLIP: int8 of only the matmul types kept 0.9997 cosine, int8 of the LayerNorm arithmetic
   alone cost the most.
2. Sensitivity: for every group, the cosine to the float model when *only that group* is int8: a readable table
   (group, ops, cosine) written to the bundle.
3. Search: starting from everything int8, keep the most sensitive group in float until the target is met on the
   search samples, then try putting each kept group back to int8 (pruning). Candidates built are counted.
4. Choice: the mixed model competes with the fixed precisions (dynamic-int8, int8, int16x8, int4; fp16 and fp32 as the
   fallback) on the same samples: among those meeting the target, the lowest measured latency wins, then the smallest.
   If a fixed precision wins, `auto` is that file and the recipe says so. ONNX: the fixed ONNX precisions compete.
"""

from __future__ import annotations

import logging
import re
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from clipedge.export.towers import TowerSpec
from clipedge.runtime.errors import ExportError

__all__ = ["AutoResult", "Candidate", "node_groups", "auto_tflite", "auto_onnx", "DEFAULT_TARGET_COSINE"]

log = logging.getLogger(__name__)

DEFAULT_TARGET_COSINE = 0.995
FIXED_TFLITE = ("dynamic-int8", "int8", "int16x8", "int4", "fp16", "fp32")
FIXED_ONNX = ("dynamic-int8", "int8", "int4", "fp16", "fp32")
# Ops the quantizer never turns int8 on their own (quantize/dequantize markers, index math on int32 ids).
_NOT_QUANTIZED = {"QUANTIZE", "DEQUANTIZE", "CUSTOM", "ARG_MAX", "CAST", "EQUAL"}
_SCOPE = re.compile(r"(?:^|/)(layer_\d+|embeddings|pooling|pre_layrnorm|post_layernorm|final_layer_norm|"
                    r"visual_projection|text_projection)(?:/|;|$)")


@dataclass
class Candidate:
    name: str  # "fixed:int8", "mixed:layer_3,post_layernorm"
    data: bytes
    cosine_min: float
    cosine_mean: float
    latency_ms: float = float("nan")

    @property
    def bytes(self) -> int:
        return len(self.data)


@dataclass
class AutoResult:
    chosen: Candidate
    recipe: dict[str, Any]
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)

    def table(self) -> str:
        lines = ["| group | ops | cosine when only this group is int8 | chosen precision |", "|---|---|---|---|"]
        kept = set(self.recipe.get("float_groups", []))
        for row in self.sensitivity:
            precision = "float" if row["group"] in kept else "int8"
            lines.append(f"| {row['group']} | {row['ops']} | {row['cosine_min']:.6f} | {precision} |")
        lines += ["", "| candidate | bytes | min cosine | latency ms |", "|---|---|---|---|"]
        for c in self.candidates:
            mark = " (chosen)" if c is self.chosen else ""
            lines.append(f"| {c.name}{mark} | {c.bytes} | {c.cosine_min:.6f} | {c.latency_ms:.2f} |")
        return "\n".join(lines)


def node_groups(tensor_names: list[str]) -> dict[str, list[str]]:
    """Group TFLite tensor (node) names by the model's name scopes, plus "io" for the graph's input and output;
    other names (constants) are left out and stay as the converter makes them."""
    groups: dict[str, list[str]] = {}
    # A fused op's tensor is named "a;b;c" after the TF ops it came from; denylisting matches those op names.
    parts = {part for name in tensor_names for part in name.split(";") if part}
    for name in sorted(parts):
        match = _SCOPE.search(name)
        if match:
            groups.setdefault(match.group(1), []).append(name)
        elif name.startswith(("encode_", "classify_")) or name.startswith("StatefulPartitionedCall"):
            groups.setdefault("io", []).append(name)  # the graph's input and output (their quantize steps)
    return groups


def _calibrated(spec: TowerSpec, batch: int, calibration: Mapping[str, np.ndarray]) -> bytes:
    function = spec.function("tflite", batch)
    samples = [{k: v[i : i + 1] for k, v in calibration.items()} for i in range(len(next(iter(calibration.values()))))]
    with tempfile.TemporaryDirectory(prefix="clipedge-savedmodel-") as saved:
        tf.saved_model.save(spec.module, saved, signatures={spec.signature: function.get_concrete_function()})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[spec.signature])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: iter(samples)
        converter.experimental_mlir_quantizer = True
        converter._experimental_calibrate_only = True  # noqa: SLF001 (the documented QuantizationDebugger path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return converter.convert()


def _quantize(calibrated: bytes, float_nodes: list[str]) -> bytes:
    """Re-quantize the calibrated model with these op types kept in float. (Per-node denylisting by name was tried
    first: with TF 2.21's MLIR quantizer, reshapes/transposes and fused ops inherit int8 from their neighbours, so
    keeping every named layer in float still left the model at full-int8 fidelity. Op types work.)"""
    from tensorflow.lite.python import convert

    return convert.mlir_quantize(calibrated, fully_quantize=False, denylisted_ops=float_nodes)


def _latency_ms(path: Path, feeds: dict[str, np.ndarray], repeats: int = 7) -> float:
    from clipedge.runtime.backends import open_backend

    backend = open_backend(path)
    one = {k: v[:1] for k, v in feeds.items()}
    backend.run(one)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.run(one)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


Evaluate = Callable[[bytes, str], tuple[float, float]]  # (model bytes, suffix) -> (min cosine, mean cosine)


def _choose(candidates: list[Candidate], target: float, feeds: dict[str, np.ndarray], suffix: str,
            tmp: Path) -> Candidate:
    meeting = [c for c in candidates if c.cosine_min >= target]
    if not meeting:  # nothing meets it: the most faithful one, said loudly by the caller
        return max(candidates, key=lambda c: c.cosine_min)
    for i, c in enumerate(meeting):
        path = tmp / f"candidate{i}{suffix}"
        path.write_bytes(c.data)
        c.latency_ms = _latency_ms(path, feeds)
    fastest = min(c.latency_ms for c in meeting)
    # Latencies within 5% are a tie on a shared machine: the smaller file wins.
    close = [c for c in meeting if c.latency_ms <= fastest * 1.05]
    return min(close, key=lambda c: (c.bytes, c.latency_ms))


def auto_tflite(spec: TowerSpec, batch: int, calibration: Mapping[str, np.ndarray], evaluate: Evaluate,
                fixed: Callable[[str], bytes], feeds: dict[str, np.ndarray],
                target: float = DEFAULT_TARGET_COSINE, progress: Callable[[str], None] | None = None) -> AutoResult:
    """`evaluate(bytes, ".tflite")` scores a candidate on the search samples; `fixed(precision)` builds a fixed
    precision; `feeds` are runtime inputs for timing."""
    say = progress or (lambda message: None)
    from clipedge.export.tflite import op_names

    calibrated = _calibrated(spec, batch, calibration)
    # Groups are op types (each "group" lists itself): the granularity the quantizer honours, see _quantize.
    groups = {op: [op] for op in sorted(set(op_names(calibrated))) if op not in _NOT_QUANTIZED}
    if not groups:
        raise ExportError("auto: the calibrated model has no quantizable ops")
    all_nodes = [n for members in groups.values() for n in members]
    built = 0

    def mixed(float_groups: list[str]) -> Candidate:
        nonlocal built
        float_nodes = [n for g in float_groups for n in groups[g]]
        data = _quantize(calibrated, float_nodes)
        built += 1
        lo, mean = evaluate(data, ".tflite")
        return Candidate("mixed:" + (",".join(float_groups) or "all-int8"), data, lo, mean)

    sensitivity = []
    for group, members in groups.items():
        say(f"sensitivity {group}")
        only = _quantize(calibrated, [n for n in all_nodes if n not in set(members)])
        built += 1
        lo, mean = evaluate(only, ".tflite")
        sensitivity.append({"group": group, "ops": len(members), "cosine_min": lo, "cosine_mean": mean})
    sensitivity.sort(key=lambda row: row["cosine_min"])

    current = mixed([])
    kept: list[str] = []
    for row in sensitivity:  # most sensitive first
        if current.cosine_min >= target:
            break
        kept.append(row["group"])
        say(f"search: float {','.join(kept)}")
        current = mixed(kept)
    for group in list(reversed(kept)):  # prune: put back to int8 what the target does not need
        if current.cosine_min < target:
            break
        trial = [g for g in kept if g != group]
        say(f"prune: try int8 {group}")
        candidate = mixed(trial)
        if candidate.cosine_min >= target:
            kept, current = trial, candidate
    candidates = [current]
    for precision in FIXED_TFLITE:
        say(f"fixed {precision}")
        data = fixed(precision)
        built += 1
        lo, mean = evaluate(data, ".tflite")
        candidates.append(Candidate(f"fixed:{precision}", data, lo, mean))
    with tempfile.TemporaryDirectory(prefix="clipedge-auto-") as tmp:
        chosen = _choose(candidates, target, feeds, ".tflite", Path(tmp))
    recipe = {"method": "tflite-selective-int8" if chosen is current else "fixed",
              "precision": chosen.name.split(":", 1)[1] if chosen is not current else "mixed-int8",
              "float_groups": kept if chosen is current else [], "target_cosine_min": target,
              "candidates_built": built, "met_target": chosen.cosine_min >= target,
              "calibration_samples": len(next(iter(calibration.values())))}
    return AutoResult(chosen, recipe, sensitivity, candidates)


def auto_onnx(evaluate: Evaluate, fixed: Callable[[str], bytes], feeds: dict[str, np.ndarray],
              target: float = DEFAULT_TARGET_COSINE, progress: Callable[[str], None] | None = None) -> AutoResult:
    """ONNX: the fixed precisions compete (ONNX Runtime's int8 already quantizes only MatMul/Conv)."""
    say = progress or (lambda message: None)
    candidates = []
    for precision in FIXED_ONNX:
        say(f"fixed {precision}")
        data = fixed(precision)
        lo, mean = evaluate(data, ".onnx")
        candidates.append(Candidate(f"fixed:{precision}", data, lo, mean))
    with tempfile.TemporaryDirectory(prefix="clipedge-auto-") as tmp:
        chosen = _choose(candidates, target, feeds, ".onnx", Path(tmp))
    recipe = {"method": "fixed", "precision": chosen.name.split(":", 1)[1], "float_groups": [],
              "target_cosine_min": target, "candidates_built": len(candidates),
              "met_target": chosen.cosine_min >= target}
    return AutoResult(chosen, recipe, [], candidates)
