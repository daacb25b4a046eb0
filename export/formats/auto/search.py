"""The format-independent search of `auto`: per-group sensitivity, greedy keep-in-float, pruning, lower levels for
the kept groups, then the choice against the fixed precisions by measured latency. A format plugs in through the
small `GroupQuantizer` protocol (clipedge.export.formats.auto.tflite_groups,
clipedge.export.formats.auto.onnx_groups)."""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clipedge.export.formats.auto.target import Target

__all__ = ["Candidate", "AutoResult", "GroupQuantizer", "Evaluate", "LEVELS", "GROUP_RULE", "search",
           "fixed_candidates"]

# Per group: int8 weights and activations; int8 matmuls with the other ops (LayerNorm, softmax, GELU, adds) float;
# int8 weights with int16 activations; float.
LEVELS = ("int8", "int8-matmul", "int16", "float")
TIE = 1.05  # latencies within 5% are a tie on a shared machine: the smaller file wins
# A group is the model's name scope that an op's (or node's) name carries; the projection, which writes the graph's
# output, forms "output" (TFLite).
GROUP_RULE = re.compile(r"(?:^|/)(layer_\d+|embeddings|pooling|pre_layrnorm|post_layernorm|final_layer_norm|"
                        r"visual_projection|text_projection)(?:/|;|$)")

# (model bytes, suffix) -> (min cosine, mean cosine, top-1 drop in points or None)
Evaluate = Callable[[bytes, str], tuple[float, float, float | None]]


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


class GroupQuantizer(Protocol):
    """One float model, calibrated once, re-quantized per mix of group levels."""

    method: str  # the recipe's name for how mixes are made
    base: str  # the level of every group not raised
    suffix: str  # ".tflite" | ".onnx"
    groups: dict[str, list[str]]  # group -> its ops (names or scopes), in graph order
    raise_to: tuple[str, ...]  # levels tried, after the search, for the groups kept float

    def quantize(self, levels: Mapping[str, str]) -> bytes: ...

    def rebuild(self, levels: Mapping[str, str]) -> dict[str, Any]:
        """What the recipe stores so that the mix can be rebuilt from the fp32 file and the calibration samples."""

    def measure(self, data: bytes, levels: Mapping[str, str]) -> dict[str, dict[str, int]]:
        """What a file computes per group: {group: {output type: op count}}; raises if it is not the mix asked."""

    def keeps(self, mix: Candidate) -> bool:
        """Whether a mix is a candidate of its own (not a fixed precision under another name)."""

    def close(self) -> None: ...


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


def fixed_candidates(precisions: tuple[str, ...], build: Callable[[str], bytes], evaluate: Evaluate, suffix: str,
                     say: Callable[[str], None]) -> list[Candidate]:
    out = []
    for precision in precisions:
        say(f"fixed {precision}")
        data = build(precision)
        lo, mean, drop = evaluate(data, suffix)
        out.append(Candidate(f"fixed:{precision}", data, lo, mean, top1_drop=drop))
    return out


def _latency_ms(path: Path, feeds: dict[str, np.ndarray], repeats: int = 7) -> float:
    from clipedge.runtime.backends.open import open_backend

    backend = open_backend(path)
    one = {k: v[:1] for k, v in feeds.items()}
    backend.run(one)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        backend.run(one)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _choose(candidates: list[Candidate], target: Target, feeds: dict[str, np.ndarray], suffix: str) -> Candidate:
    """Among the candidates meeting the target, the fastest (ties: the smallest); none meeting it: the most
    faithful, said loudly by the caller."""
    meeting = [c for c in candidates if target.meets(c)]
    if not meeting:
        return max(candidates, key=lambda c: c.cosine_min)
    with tempfile.TemporaryDirectory(prefix="clipedge-auto-") as tmp:
        for i, c in enumerate(meeting):
            path = Path(tmp) / f"candidate{i}{suffix}"
            path.write_bytes(c.data)
            c.latency_ms = _latency_ms(path, feeds)
    fastest = min(c.latency_ms for c in meeting)
    close = [c for c in meeting if c.latency_ms <= fastest * TIE]
    return min(close, key=lambda c: (c.bytes, c.latency_ms))


def _mix_name(levels: Mapping[str, str]) -> str:
    raised = [f"{g}={p}" for g, p in levels.items() if p != "int8"]
    return "mixed:" + (",".join(raised) or "all-int8")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))  # the recipe's enums are str enums: their values


class _Mixes:
    """Builds and scores mixes once each (a mix asked twice is the same file)."""

    def __init__(self, quantizer: GroupQuantizer, evaluate: Evaluate) -> None:
        self.quantizer, self.evaluate, self.built = quantizer, evaluate, 0
        self._cache: dict[tuple, Candidate] = {}

    def __call__(self, levels: Mapping[str, str]) -> Candidate:
        key = tuple(sorted((g, p) for g, p in levels.items() if p != "int8"))
        if key not in self._cache:
            data = self.quantizer.quantize(levels)
            self.built += 1
            lo, mean, drop = self.evaluate(data, self.quantizer.suffix)
            self._cache[key] = Candidate(_mix_name(levels), data, lo, mean, levels=dict(levels), top1_drop=drop)
        return self._cache[key]


def _sensitivity(groups: Mapping[str, list[str]], mixed: _Mixes, say: Callable[[str], None]) -> list[dict]:
    """Per group, the score when only that group is int8: the most sensitive first."""
    rows = []
    for group, members in groups.items():
        say(f"sensitivity {group}")
        only = mixed({g: ("int8" if g == group else "float") for g in groups})
        rows.append({"group": group, "ops": len(members), "cosine_min": only.cosine_min,
                     "cosine_mean": only.cosine_mean})
    return sorted(rows, key=lambda row: row["cosine_min"])


def _keep_and_prune(groups: Mapping[str, list[str]], sensitivity: list[dict], mixed: _Mixes, target: Target,
                    say: Callable[[str], None]) -> Candidate:
    """From everything int8, keep the most sensitive group in float until the target is met; then put each kept
    group back to int8 where the target allows."""
    levels = {g: "int8" for g in groups}
    current = mixed(levels)
    kept: list[str] = []
    for row in sensitivity:
        if target.meets(current):
            break
        kept.append(row["group"])
        levels[row["group"]] = "float"
        say(f"search: float {','.join(kept)}")
        current = mixed(levels)
    for group in reversed(kept):
        if not target.meets(current):
            break
        say(f"prune: try int8 {group}")
        trial = mixed({**current.levels, group: "int8"})
        if target.meets(trial):
            current = trial
    return current


def _lowered(current: Candidate, level: str, mixed: _Mixes, target: Target, say: Callable[[str], None]) -> Candidate:
    """The float groups of `current` at `level` where the target allows (smaller than float, not always faster)."""
    lowered = current
    for group in [g for g, p in current.levels.items() if p == "float"]:
        if not target.meets(lowered):
            break
        say(f"prune: try {level} {group}")
        trial = mixed({**lowered.levels, group: level})
        if target.meets(trial):
            lowered = trial
    return lowered


def _recipe(chosen: Candidate, mixes: list[Candidate], quantizer: GroupQuantizer | None, target: Target,
            built: int, extra: dict[str, Any]) -> dict[str, Any]:
    is_mix = chosen.levels is not None
    search_record = None
    if mixes:
        best = chosen if is_mix else max(mixes, key=lambda c: (target.meets(c), -c.bytes))
        search_record = {"layers": best.levels, "cosine_min": best.cosine_min, "top1_drop": best.top1_drop,
                         "bytes": best.bytes, "rebuild": _jsonable(quantizer.rebuild(best.levels))}
    raised = {g: p for g, p in (chosen.levels or {}).items() if p != "int8"}
    return {"method": quantizer.method if is_mix else "fixed", "chosen": chosen.name,  # its row in `candidates`
            "precision": "mixed" if is_mix else chosen.name.split(":", 1)[1],
            "base": quantizer.base if is_mix else None,
            "layers": raised,  # groups not int8 in the chosen file (all others are int8)
            "float_groups": [g for g, p in raised.items() if p == "float"],
            "int16_groups": [g for g, p in raised.items() if p == "int16"],
            "int8_matmul_groups": [g for g, p in raised.items() if p == "int8-matmul"],
            "group_rule": GROUP_RULE.pattern, "search": search_record, "target_cosine_min": target.cosine_min,
            "target_top1_drop": target.top1_drop, "top1_drop": chosen.top1_drop,
            "candidates_built": built, "met_target": target.meets(chosen), **extra}


def search(quantizer: GroupQuantizer | None, fixed: list[Candidate], evaluate: Evaluate, target: Target,
           feeds: dict[str, np.ndarray], suffix: str, say: Callable[[str], None], extra: dict[str, Any]) -> AutoResult:
    """Mixes of `quantizer`'s groups (none without a quantizer) compete with the `fixed` candidates: the fastest
    file meeting `target` wins. `feeds` are runtime inputs for timing; `extra` goes into the recipe."""
    sensitivity: list[dict[str, Any]] = []
    mixes: list[Candidate] = []
    built = 0
    if quantizer is not None and quantizer.groups:
        mixed = _Mixes(quantizer, evaluate)
        sensitivity = _sensitivity(quantizer.groups, mixed, say)
        current = _keep_and_prune(quantizer.groups, sensitivity, mixed, target, say)
        mixes = [current] + [m for level in quantizer.raise_to
                             if (m := _lowered(current, level, mixed, target, say)) is not current]
        mixes = [m for m in mixes if quantizer.keeps(m)]
        built = mixed.built
    say("time candidates")
    chosen = _choose(mixes + fixed, target, feeds, suffix)
    result = AutoResult(chosen, _recipe(chosen, mixes, quantizer, target, built + len(fixed), extra), sensitivity,
                        mixes + fixed)
    if chosen.levels is not None:
        result.measured = quantizer.measure(chosen.data, chosen.levels)
    return result

