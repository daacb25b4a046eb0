"""`auto` precision: the smallest, fastest model that meets a fidelity target, chosen layer by layer.

Full-int8 CLIP loses accuracy in a few places (a layer whose activations have outlier channels; LayerNorm arithmetic
in int8, measured on the demo CLIP: int8 of its pre-LayerNorm alone gives min cosine 0.79); quantizing the rest costs
almost nothing. So:

1. TFLite groups are the model's layers: every operator of the float .tflite belongs to the name scope its output
   tensor names carry (`embeddings`, `pre_layrnorm`, `layer_0` ... `layer_N`, `pooling`, `post_layernorm`,
   `final_layer_norm`; the projection writes the graph's output and forms `output`). A group's precision is a
   per-scope override in an ai-edge-quantizer recipe over the fp32 .tflite (base `static_wi8_ai8`; per group
   NO_QUANTIZE, int16 activations, or NO_QUANTIZE with the matmuls/convs back at int8). Unlike TF's MLIR quantizer
   (whose node denylists reshapes and fused ops ignore), it honours scopes op by op. Calibrated once; each candidate
   is a re-quantization (a fraction of a second).
2. Sensitivity: for every group, the cosine to the float model when *only that group* is int8: a table (group, ops,
   cosine, chosen precision, op output types measured in the chosen file) written to the bundle.
3. Search: starting from everything int8, keep the most sensitive group in float until the target is met on the
   search samples; put each kept group back to int8 where the target allows (pruning); then, one mix per level, try
   `int8-matmul` (the layer's matmuls int8, its LayerNorm/softmax/GELU float) and `int16` for the groups still float.
   Candidates built are counted.
4. Choice: the mixes compete with the fixed precisions (dynamic-int8, int8, int16x8, int4; fp16 and fp32 as the
   fallback) on the same samples: among those meeting the target, the lowest measured latency wins, then the smallest.
   If a fixed precision wins, `auto` is that file and the recipe says so (the best mix stays in the recipe's `search`).
   The recipe holds what rebuilds the mix (the ai-edge-quantizer recipe; with the fp32 file and the calibration
   samples it gives the same file).

ONNX: the int8 precision (ONNX Runtime static QDQ of STATIC_INT8_OPS) is searched the same way, a group kept float
through `quantize_static(nodes_to_exclude=...)` with one calibration cache; its mixes compete with the fixed ONNX
precisions.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.export.towers import TowerSpec
from clipedge.runtime.errors import ExportError

__all__ = ["AutoResult", "Candidate", "Target", "as_target", "node_groups", "op_groups", "group_precisions",
           "onnx_group_precisions", "auto_tflite", "auto_onnx", "DEFAULT_TARGET_COSINE", "LEVELS"]

log = logging.getLogger(__name__)

DEFAULT_TARGET_COSINE = 0.995
FIXED_TFLITE = ("dynamic-int8", "int8", "int16x8", "int4", "fp16", "fp32")
FIXED_ONNX = ("dynamic-int8", "int8", "int4", "fp16", "fp32")
# Per group: int8 weights and activations; int8 matmuls with the other ops (LayerNorm, softmax, GELU, adds) float;
# int8 weights with int16 activations; float.
LEVELS = ("int8", "int8-matmul", "int16", "float")
_MATMULS = ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D", "DEPTHWISE_CONV_2D")  # static int8 in ai-edge-quantizer
_MARKERS = {"QUANTIZE", "DEQUANTIZE"}  # inserted at precision boundaries; belong to no layer
_SCOPE = re.compile(r"(?:^|/)(layer_\d+|embeddings|pooling|pre_layrnorm|post_layernorm|final_layer_norm|"
                    r"visual_projection|text_projection)(?:/|;|$)")


@dataclass
class Candidate:
    name: str  # "fixed:int8", "mixed:layer_3=float,post_layernorm=int16"
    data: bytes
    cosine_min: float
    cosine_mean: float
    latency_ms: float = float("nan")
    levels: dict[str, str] | None = None  # group -> precision, for mixes
    top1_drop: float | None = None  # zero-shot top-1 points lost on the labelled folder (with a top-1 target)

    @property
    def bytes(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Target:
    """What `auto` must keep, on the search samples: a min cosine to the float model, and/or at most `top1_drop`
    percentage points of zero-shot top-1 lost on a labelled folder (both, when both are given)."""

    cosine_min: float | None = DEFAULT_TARGET_COSINE
    top1_drop: float | None = None

    def __post_init__(self) -> None:
        if self.cosine_min is None and self.top1_drop is None:
            raise ExportError("auto needs a target: a min cosine, a top-1 drop, or both")
        if self.cosine_min is not None and not 0.0 < self.cosine_min <= 1.0:
            raise ExportError(f"target cosine must be in (0, 1], got {self.cosine_min}")
        if self.top1_drop is not None and not 0.0 <= self.top1_drop <= 100.0:
            raise ExportError(f"target top-1 drop is in percentage points, 0..100; got {self.top1_drop}")

    def meets(self, c: Candidate) -> bool:
        if self.cosine_min is not None and c.cosine_min < self.cosine_min:
            return False
        return self.top1_drop is None or (c.top1_drop is not None and c.top1_drop <= self.top1_drop + 1e-9)

    def describe(self) -> str:
        parts = [f"min cosine >= {self.cosine_min}" if self.cosine_min is not None else "",
                 f"top-1 drop <= {self.top1_drop} points" if self.top1_drop is not None else ""]
        return " and ".join(p for p in parts if p)


def as_target(target: float | Target) -> Target:
    return target if isinstance(target, Target) else Target(cosine_min=float(target))


@dataclass
class AutoResult:
    chosen: Candidate
    recipe: dict[str, Any]
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    measured: dict[str, dict[str, int]] = field(default_factory=dict)  # group -> {output dtype: ops} in the file

    def table(self) -> str:
        lines = ["| group | ops | cosine when only this group is int8 | chosen precision | op outputs in the file |",
                 "|---|---|---|---|---|"]
        levels = self.chosen.levels
        for row in self.sensitivity:
            precision = levels.get(row["group"], "int8") if levels else f"{self.recipe['precision']} (whole model)"
            kinds = ", ".join(f"{k.lower()} {n}" for k, n in sorted(self.measured.get(row["group"], {}).items()))
            lines.append(f"| {row['group']} | {row['ops']} | {row['cosine_min']:.6f} | {precision} | {kinds} |")
        lines += ["", "| candidate | bytes | min cosine | top-1 drop (points) | latency ms |", "|---|---|---|---|---|"]
        for c in self.candidates:
            mark = " (chosen)" if c is self.chosen else ""
            drop = "–" if c.top1_drop is None else f"{c.top1_drop:.2f}"
            lines.append(f"| {c.name}{mark} | {c.bytes} | {c.cosine_min:.6f} | {drop} | {c.latency_ms:.2f} |")
        return "\n".join(lines)


def node_groups(tensor_names: list[str]) -> dict[str, list[str]]:
    """Group TFLite tensor (node) names by the model's name scopes, plus "io" for the graph's input and output;
    other names (constants) are left out."""
    groups: dict[str, list[str]] = {}
    # A fused op's tensor is named "a;b;c" after the TF ops it came from.
    parts = {part for name in tensor_names for part in name.split(";") if part}
    for name in sorted(parts):
        match = _SCOPE.search(name)
        if match:
            groups.setdefault(match.group(1), []).append(name)
        elif name.startswith(("encode_", "classify_")) or name.startswith("StatefulPartitionedCall"):
            groups.setdefault("io", []).append(name)  # the graph's input and output (their quantize steps)
    return groups


def _operators(model_bytes: bytes) -> list[tuple[str, str, str]]:
    """(op name, scope, output type) per operator of the main subgraph; the scope is ai-edge-quantizer's: the output
    tensor names joined by ";" with a trailing ";"."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(model_bytes, 0)
    graph = model.subgraphs[0]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    out = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        outputs = [graph.tensors[i] for i in op.outputs if i >= 0]
        tensor_names = [t.name.decode() if isinstance(t.name, bytes) else str(t.name) for t in outputs]
        scope = ";".join(n for n in tensor_names if n) + ";"
        out.append((names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?"), scope,
                    types.get(outputs[0].type, "?") if outputs else "?"))
    return out


def _group_of(scope: str, outputs: set[str]) -> str:
    match = _SCOPE.search(scope)
    if match:
        return match.group(1)
    return "output" if any(part in outputs for part in scope.split(";")) else "other"


def op_groups(model_bytes: bytes) -> dict[str, list[str]]:
    """{group: [op scopes]} of a float .tflite in graph order: a layer's name scope, "output" for the ops writing the
    graph's output tensors (the projection), "other" for ops with no scope in their names."""
    outputs = _output_names(model_bytes)
    groups: dict[str, list[str]] = {}
    for op, scope, _ in _operators(model_bytes):
        if op not in _MARKERS:
            groups.setdefault(_group_of(scope, outputs), []).append(scope)
    return groups


def _output_names(model_bytes: bytes) -> set[str]:
    from ai_edge_litert import schema_py_generated as schema

    graph = schema.ModelT.InitFromPackedBuf(model_bytes, 0).subgraphs[0]
    return {graph.tensors[i].name.decode() if isinstance(graph.tensors[i].name, bytes) else str(graph.tensors[i].name)
            for i in graph.outputs}


def group_precisions(model_bytes: bytes) -> dict[str, dict[str, int]]:
    """What a (quantized) .tflite really computes per group: {group: {output tensor type: op count}}, leaving out the
    QUANTIZE/DEQUANTIZE steps at precision boundaries. A group kept in float shows only FLOAT32; an int8 one INT8
    (plus integer index math such as INT32)."""
    outputs = {name.removesuffix("_dequant") for name in _output_names(model_bytes)}
    out: dict[str, dict[str, int]] = {}
    for op, scope, kind in _operators(model_bytes):
        if op in _MARKERS:
            continue
        counts = out.setdefault(_group_of(scope, outputs), {})
        counts[kind] = counts.get(kind, 0) + 1
    return out


def _regex(group: str, scopes: list[str], all_scopes: list[str]) -> str:
    """A regex over ai-edge-quantizer op scopes matching exactly this group's ops: the scope name when that is exact,
    else the scopes themselves."""
    if group not in ("output", "other"):
        short = rf"(?:^|[/;]){re.escape(group)}[/;]"
        if {s for s in all_scopes if re.search(short, s)} == set(scopes):
            return short
    return "^(?:" + "|".join(re.escape(s) for s in dict.fromkeys(scopes)) + ")$"


class _EdgeQuantizer:
    """ai-edge-quantizer on one float .tflite: calibrated once, re-quantized per mix of group precisions."""

    def __init__(self, float_model: bytes, signature: str, calibration: Mapping[str, np.ndarray]) -> None:
        from ai_edge_quantizer import quantizer

        self.float_model = float_model
        self.groups = op_groups(float_model)
        outputs = _output_names(float_model)
        self.matmuls: dict[str, set[str]] = {}  # group -> its matmul/conv op types (for int8-matmul)
        for op, scope, _ in _operators(float_model):
            if op in _MATMULS:
                self.matmuls.setdefault(_group_of(scope, outputs), set()).add(op)
        all_scopes = [s for scopes in self.groups.values() for s in scopes]
        self.regexes = {g: _regex(g, scopes, all_scopes) for g, scopes in self.groups.items()}
        from clipedge.export.tflite import per_sample_feeds, quiet_quantizer

        samples = per_sample_feeds(calibration, "auto")
        with quiet_quantizer():
            qt = quantizer.Quantizer(float_model)
            qt.load_quantization_recipe(self.recipe({}))
            self.calibration = qt.calibrate({signature: samples}, num_threads=2)

    def recipe(self, levels: Mapping[str, str]) -> list[dict[str, Any]]:
        """The ai-edge-quantizer recipe of a mix: static int8 everywhere, the groups' overrides, float in/out."""
        from ai_edge_quantizer import qtyping, recipe_manager
        from ai_edge_quantizer import recipe as recipes
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

        manager = recipe_manager.RecipeManager()
        manager.load_quantization_recipe(recipes.static_wi8_ai8())
        every = qtyping.TFLOperationName.ALL_SUPPORTED
        for group, level in levels.items():
            if level in ("float", "int8-matmul"):
                manager.add_quantization_config(self.regexes[group], every,
                                                algorithm_key=AlgorithmName.NO_QUANTIZE)
                if level == "int8-matmul":  # op configs after the scope's "all": they win for these op types
                    for op in sorted(self.matmuls.get(group, ())):
                        manager.add_static_config(self.regexes[group], qtyping.TFLOperationName[op],
                                                  activation_num_bits=8, weight_num_bits=8)
            elif level == "int16":
                # Ops with no int16 kernel (SQUARED_DIFFERENCE, the LayerNorm variance) would keep the base int8:
                # float under an equivalent regex first, so that they fall back to it, not to int8.
                manager.add_quantization_config(f"(?:{self.regexes[group]})", every,
                                                algorithm_key=AlgorithmName.NO_QUANTIZE)
                manager.add_static_config(self.regexes[group], every, activation_num_bits=16, weight_num_bits=8)
            elif level != "int8":
                raise ExportError(f"auto: unknown group precision {level!r}; choose from {LEVELS}")
        for op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):  # float in/out, added last so
            manager.add_quantization_config("^.*", op, algorithm_key=AlgorithmName.NO_QUANTIZE)  # it wins over groups
        return manager.get_quantization_recipe()

    def quantize(self, levels: Mapping[str, str]) -> bytes:
        from ai_edge_quantizer import quantizer

        from clipedge.export.tflite import quiet_quantizer

        with quiet_quantizer():
            qt = quantizer.Quantizer(self.float_model)
            qt.load_quantization_recipe(self.recipe(levels))
            return bytes(qt.quantize(self.calibration).quantized_model)


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


# (model bytes, suffix) -> (min cosine, mean cosine, top-1 drop in points or None)
Evaluate = Callable[[bytes, str], tuple[float, float, float | None]]


def _choose(candidates: list[Candidate], target: Target, feeds: dict[str, np.ndarray], suffix: str,
            tmp: Path) -> Candidate:
    meeting = [c for c in candidates if target.meets(c)]
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


def _mix_name(levels: Mapping[str, str]) -> str:
    raised = [f"{g}={p}" for g, p in levels.items() if p != "int8"]
    return "mixed:" + (",".join(raised) or "all-int8")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))  # the recipe's enums are str enums: their values


def _search(groups: Mapping[str, list[str]], quantize: Callable[[dict[str, str]], bytes], evaluate: Evaluate,
            suffix: str, target: Target, say: Callable[[str], None],
            raise_to: tuple[str, ...] = ("int8-matmul", "int16")):
    """Sensitivity per group, greedy keep in float until the target is met, prune back to int8, then lower the kept
    groups to each level of `raise_to` where the target allows (one mix per level: smaller than float, not always
    faster). Returns (sensitivity rows, mixes, candidates built)."""
    built = 0
    cache: dict[tuple, Candidate] = {}

    def mixed(levels: dict[str, str]) -> Candidate:
        nonlocal built
        key = tuple(sorted((g, p) for g, p in levels.items() if p != "int8"))
        if key not in cache:
            data = quantize(levels)
            built += 1
            lo, mean, drop = evaluate(data, suffix)
            cache[key] = Candidate(_mix_name(levels), data, lo, mean, levels=dict(levels), top1_drop=drop)
        return cache[key]

    sensitivity = []
    for group, members in groups.items():
        say(f"sensitivity {group}")
        only = mixed({g: ("int8" if g == group else "float") for g in groups})
        sensitivity.append({"group": group, "ops": len(members), "cosine_min": only.cosine_min,
                            "cosine_mean": only.cosine_mean})
    sensitivity.sort(key=lambda row: row["cosine_min"])

    levels = {g: "int8" for g in groups}
    current = mixed(levels)
    kept: list[str] = []
    for row in sensitivity:  # most sensitive first
        if target.meets(current):
            break
        kept.append(row["group"])
        levels[row["group"]] = "float"
        say(f"search: float {','.join(kept)}")
        current = mixed(levels)
    for group in list(reversed(kept)):  # prune: back to int8 what the target does not need
        if not target.meets(current):
            break
        say(f"prune: try int8 {group}")
        trial = mixed({**levels, group: "int8"})
        if target.meets(trial):
            levels, current = trial.levels, trial
    mixes = [current]
    for level in raise_to:  # e.g. int16 activations where they are enough (smaller than float)
        lowered = current
        for group in [g for g, p in levels.items() if p == "float"]:
            if not target.meets(lowered):
                break
            say(f"prune: try {level} {group}")
            trial = mixed({**lowered.levels, group: level})
            if target.meets(trial):
                lowered = trial
        if lowered is not current:
            mixes.append(lowered)
    return sensitivity, mixes, built


def _result(mixes: list[Candidate], fixed_candidates: list[Candidate], sensitivity: list[dict[str, Any]],
            target: Target, feeds: dict[str, np.ndarray], suffix: str, built: int, say: Callable[[str], None],
            method: str, base: str | None, rebuild: Callable[[dict[str, str]], Any] | None,
            extra: dict[str, Any]) -> AutoResult:
    candidates = mixes + fixed_candidates
    with tempfile.TemporaryDirectory(prefix="clipedge-auto-") as tmp:
        say("time candidates")
        chosen = _choose(candidates, target, feeds, suffix, Path(tmp))
    is_mix = chosen.levels is not None
    search = None
    if mixes:
        best = chosen if is_mix else max(mixes, key=lambda c: (target.meets(c), -c.bytes))
        search = {"layers": best.levels, "cosine_min": best.cosine_min, "top1_drop": best.top1_drop,
                  "bytes": best.bytes}
        if rebuild is not None:
            search["rebuild"] = _jsonable(rebuild(best.levels))
    raised = {g: p for g, p in (chosen.levels or {}).items() if p != "int8"}
    recipe = {"method": method if is_mix else "fixed",
              "precision": "mixed" if is_mix else chosen.name.split(":", 1)[1],
              "base": base if is_mix else None,
              "layers": raised,  # groups not int8 in the chosen file (all others are int8)
              "float_groups": [g for g, p in raised.items() if p == "float"],
              "int16_groups": [g for g, p in raised.items() if p == "int16"],
              "int8_matmul_groups": [g for g, p in raised.items() if p == "int8-matmul"],
              "group_rule": _SCOPE.pattern, "search": search, "target_cosine_min": target.cosine_min,
              "target_top1_drop": target.top1_drop, "top1_drop": chosen.top1_drop,
              "candidates_built": built + len(fixed_candidates), "met_target": target.meets(chosen), **extra}
    return AutoResult(chosen, recipe, sensitivity, candidates)


def _fixed(precisions: tuple[str, ...], fixed: Callable[[str], bytes], evaluate: Evaluate, suffix: str,
           say: Callable[[str], None]) -> list[Candidate]:
    out = []
    for precision in precisions:
        say(f"fixed {precision}")
        data = fixed(precision)
        lo, mean, drop = evaluate(data, suffix)
        out.append(Candidate(f"fixed:{precision}", data, lo, mean, top1_drop=drop))
    return out


def auto_tflite(spec: TowerSpec, batch: int, calibration: Mapping[str, np.ndarray], evaluate: Evaluate,
                fixed: Callable[[str], bytes], feeds: dict[str, np.ndarray],
                target: float | Target = DEFAULT_TARGET_COSINE,
                progress: Callable[[str], None] | None = None) -> AutoResult:
    """`evaluate(bytes, ".tflite")` scores a candidate on the search samples; `fixed(precision)` builds a fixed
    precision (`fixed("fp32")` is also the float model the mixes start from); `feeds` are runtime inputs for
    timing. `batch` is the fp32 file's (kept for the caller's signature)."""
    target = as_target(target)
    say = progress or (lambda message: None)
    say("calibrate")
    quantizer = _EdgeQuantizer(fixed("fp32"), spec.signature, calibration)
    if not quantizer.groups:
        raise ExportError("auto: the float model has no operators to quantize")
    sensitivity, mixes, built = _search(quantizer.groups, quantizer.quantize, evaluate, ".tflite", target, say)
    result = _result(mixes, _fixed(FIXED_TFLITE, fixed, evaluate, ".tflite", say), sensitivity, target, feeds,
                     ".tflite", built, say, "ai-edge-quantizer-per-layer", "static_wi8_ai8",
                     lambda levels: {"edge_quantizer_recipe": quantizer.recipe(levels)},
                     {"calibration_samples": len(next(iter(calibration.values())))})
    if result.chosen.levels is not None:
        result.measured = group_precisions(result.chosen.data)
        _check(result.chosen.levels, result.measured)
    return result


def _check(levels: Mapping[str, str], measured: Mapping[str, Mapping[str, int]]) -> None:
    """The file must compute what the recipe says: float groups in float only, int8/int16 groups with no float op
    (beyond what the quantizer cannot quantize, which it leaves float and we report)."""
    expected = {"float": "FLOAT32", "int8": "INT8", "int16": "INT16", "int8-matmul": "INT8"}
    for group, level in levels.items():
        kinds = measured.get(group, {})
        if level == "float" and set(kinds) - {"FLOAT32", "INT32", "BOOL"}:
            raise ExportError(f"auto: group {group} was to stay float but has {kinds} op outputs")
        if level != "float" and expected[level] not in kinds and kinds:
            log.warning("auto: group %s was to be %s but computes %s", group, level, kinds)


def onnx_group_precisions(model_bytes: bytes) -> dict[str, dict[str, int]]:
    """What an ONNX file computes per group: {group: {"INT8": n, "FLOAT32": m}} over its STATIC_INT8_OPS nodes, INT8
    where an input comes from a DequantizeLinear (QDQ)."""
    import onnx

    from clipedge.export.onnx import STATIC_INT8_OPS

    graph = onnx.load_from_string(model_bytes).graph
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    out: dict[str, dict[str, int]] = {}
    for node in graph.node:
        if node.op_type in STATIC_INT8_OPS:
            match = _SCOPE.search(node.name)
            kind = "INT8" if set(node.input) & dequantized else "FLOAT32"
            counts = out.setdefault(match.group(1) if match else "other", {})
            counts[kind] = counts.get(kind, 0) + 1
    return out


def auto_onnx(evaluate: Evaluate, fixed: Callable[[str], bytes], feeds: dict[str, np.ndarray],
              target: float | Target = DEFAULT_TARGET_COSINE, progress: Callable[[str], None] | None = None,
              calibration: Mapping[str, np.ndarray] | None = None) -> AutoResult:
    """ONNX: with `calibration` (ONNX layout), the int8 precision (ONNX Runtime static QDQ of STATIC_INT8_OPS) is
    searched layer by layer, groups kept float through `nodes_to_exclude`; the mixes and the fixed precisions
    compete."""
    target = as_target(target)
    say = progress or (lambda message: None)
    sensitivity: list[dict[str, Any]] = []
    mixes: list[Candidate] = []
    built, quantizer, groups = 0, None, {}
    if calibration is not None:
        from clipedge.export.onnx import StaticInt8

        say("calibrate")
        quantizer = StaticInt8(fixed("fp32"), calibration)
        for name, _ in quantizer.nodes:
            match = _SCOPE.search(name)
            groups.setdefault(match.group(1) if match else "other", []).append(name)

    def quantize(levels: dict[str, str]) -> bytes:
        return quantizer.quantize([n for g, p in levels.items() if p == "float" for n in groups[g]])

    try:
        if groups:
            sensitivity, mixes, built = _search(groups, quantize, evaluate, ".onnx", target, say, raise_to=())
            mixes = [m for m in mixes if "float" in m.levels.values()]  # all-int8 is the int8 precision itself
        result = _result(mixes, _fixed(FIXED_ONNX, fixed, evaluate, ".onnx", say), sensitivity, target, feeds,
                         ".onnx", built, say, "onnxruntime-nodes-to-exclude", "int8",
                         lambda levels: {"nodes_to_exclude": [n for g, p in levels.items() if p == "float"
                                                              for n in groups[g]]},
                         {"calibration_samples": len(next(iter(calibration.values()))) if calibration else 0})
    finally:
        if quantizer is not None:
            quantizer.close()
    if result.chosen.levels is not None:
        result.measured = onnx_group_precisions(result.chosen.data)
        for group, level in result.chosen.levels.items():
            kinds = result.measured.get(group, {})
            if (level == "float") == ("INT8" in kinds):
                raise ExportError(f"auto: ONNX group {group} was to be {level} but computes {kinds}")
    return result
