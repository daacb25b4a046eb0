"""What `clipedge report` concludes from the measured outputs: the image+text pair rows (zero-shot, retrieval, score
drift), the cross-precision rows (one tower quantized, the other fp32), the baked-classifier rows, the artifact to
pick per goal, and the Pareto frontiers.

Pure numpy and dicts, no model runs: everything here works on the report's json data and the embeddings already
computed, so the rules can be tested (and changed) without a bundle.

Every accuracy is a share of a few dozen or hundred images, so each carries its 95% Wilson interval, and the
frontiers call one pair more accurate than another only when their intervals do not overlap: 88.3% against 87.5% on
120 images is one image, not a win. Latencies likewise: "fastest" is the smallest of the pairs tied with the fastest
within the timing noise (metrics.latencies_tied), so a rerun on a loaded machine does not flip the pick.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from clipedge.runtime.datasets import LabelledImages, Pairs
from clipedge.runtime.manifest import Artifact
from clipedge.runtime.metrics import latencies_tied, recall_at_k, top1_accuracy, zero_shot_predictions
from clipedge.runtime.precisions import FIDELITY_FLAGS

__all__ = [
    "FIDELITY_STAND_IN",
    "Outputs",
    "WITHIN_POINTS",
    "artifact_key",
    "classifier_rows",
    "cross_rows",
    "fastest_pick",
    "median_interval_of",
    "pair_quality",
    "pair_rows",
    "pareto",
    "pareto_front",
    "recommend",
    "top1_interval",
    "wilson_interval",
]

WITHIN_POINTS = 1.0  # "within 1 point of fp32": percentage points of zero-shot top-1
FIDELITY_STAND_IN = 0.99  # without a labelled folder: both towers' 5th-percentile cosine vs fp32 at least this

Outputs = dict[tuple[str, str, str, str], dict[str, np.ndarray]]  # by artifact_key: data set name -> rows
CONFIDENCE_Z = 1.959964  # 95% two-sided


def wilson_interval(successes: float, n: int, z: float = CONFIDENCE_Z) -> tuple[float, float]:
    """The Wilson score interval of a proportion: unlike p ± z·sqrt(p(1-p)/n) it stays inside [0, 1] and does not
    collapse to a point at 0% or 100%, which small eval sets hit."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def top1_interval(result: dict[str, Any]) -> tuple[float, float] | None:
    """A zero-shot or classifier result's interval: the stored one, else from its top-1 and image count (a report
    written before intervals were)."""
    if result.get("top1_interval"):
        low, high = result["top1_interval"]
        return low, high
    if result.get("top1") is None or not result.get("images"):
        return None
    return wilson_interval(round(result["top1"] * result["images"]), result["images"])


def median_interval_of(latency: dict[str, Any]) -> tuple[float, float]:
    """A latency dict's 95% interval of the median; (median, median) for one from an older report.json."""
    median = latency["median_ms"]
    return latency.get("median_low_ms", median), latency.get("median_high_ms", median)


def artifact_key(artifact: Artifact) -> tuple[str, str, str, str]:
    """The four things that tell two manifest entries apart (the file name says the same, less readably)."""
    return artifact.tower, artifact.format, artifact.precision, artifact.variant


# ---- rows ------------------------------------------------------------------------------------------------------------
def _pair_metrics(image: dict[str, np.ndarray], text: dict[str, np.ndarray],
                  ref_image: dict[str, np.ndarray] | None, ref_text: dict[str, np.ndarray] | None,
                  labelled: LabelledImages | None, pair_set: Pairs | None) -> dict[str, Any]:
    """Zero-shot, retrieval and score drift of one image model's embeddings against one text model's: the same
    metrics for a pair and a cross-precision row, so the two tables compare."""
    out: dict[str, Any] = {}
    similarities = image["held_out"] @ text["held_out"].T  # cosines: both are unit rows
    if ref_image is not None and ref_text is not None:
        drift = np.abs(similarities - ref_image["held_out"] @ ref_text["held_out"].T)
        out["similarity_vs_fp32"] = {"mean_abs_diff": float(drift.mean()), "max_abs_diff": float(drift.max())}
    if labelled is not None:
        predictions = zero_shot_predictions(image["eval"], text["prompts"])
        top1 = top1_accuracy(predictions, labelled.truth)
        zero_shot = {"top1": top1, "images": len(labelled.files),
                     "top1_interval": list(wilson_interval(round(top1 * len(labelled.files)), len(labelled.files)))}
        if ref_image is not None and ref_text is not None:
            zero_shot["top1_agreement_fp32"] = top1_accuracy(
                predictions, zero_shot_predictions(ref_image["eval"], ref_text["prompts"]))
        out["zero_shot"] = zero_shot
    if pair_set is not None:
        out["retrieval"] = recall_at_k(text["pairs"], image["pairs"], pair_set.truth)
    return out


def pair_rows(records: list[dict], outputs: Outputs, labelled: LabelledImages | None,
              pair_set: Pairs | None) -> list[dict[str, Any]]:
    """One row per image+text pair of the same format, precision and variant: what an app that ships both gets."""
    by_key = {(r["tower"], r["format"], r["precision"], r["variant"]): r for r in records}
    rows = []
    for (tower, fmt, precision, variant), image_record in by_key.items():
        text_record = by_key.get(("text", fmt, precision, variant))
        if tower != "image" or text_record is None:
            continue
        ref_image = outputs.get(("image", fmt, "fp32", "default"))
        ref_text = outputs.get(("text", fmt, "fp32", "default"))
        row = {"format": fmt, "precision": precision, "variant": variant,
               "files": [image_record["file"], text_record["file"]],
               "bytes": image_record["bytes"] + text_record["bytes"],
               "latency_batch_1_ms": {"image": image_record["latency"]["batch_1"]["median_ms"],
                                      "text": text_record["latency"]["batch_1"]["median_ms"]},
               "latency_batch_1_interval_ms": {
                   "image": list(median_interval_of(image_record["latency"]["batch_1"])),
                   "text": list(median_interval_of(text_record["latency"]["batch_1"]))},
               "min_cosine_p5_vs_fp32": _min_p5(image_record, text_record)}
        ours_image, ours_text = outputs[("image", fmt, precision, variant)], outputs[("text", fmt, precision, variant)]
        row.update(_pair_metrics(ours_image, ours_text, ref_image, ref_text, labelled, pair_set))
        rows.append(row)
    return rows


def _min_p5(*records: dict) -> float | None:
    values = [(r.get("fidelity_vs_fp32") or {}).get("cosine_p5") for r in records]
    return None if any(v is None for v in values) else min(values)


def cross_rows(artifacts: list[Artifact], outputs: Outputs, labelled: LabelledImages | None,
               pair_set: Pairs | None) -> list[dict[str, Any]]:
    """One tower quantized, the other fp32, same format: e.g. a device's int8 image model against an index of fp32
    text embeddings built on a workstation."""
    rows = []
    for fmt in sorted({a.format for a in artifacts}):
        ref_image = outputs.get(("image", fmt, "fp32", "default"))
        ref_text = outputs.get(("text", fmt, "fp32", "default"))
        if ref_image is None or ref_text is None:
            continue
        for precision in dict.fromkeys(a.precision for a in artifacts if a.format == fmt):
            if precision == "fp32":
                continue
            for quantized in ("image", "text"):
                ours = outputs.get((quantized, fmt, precision, "default"))
                if ours is None:
                    continue
                image, text = (ours, ref_text) if quantized == "image" else (ref_image, ours)
                row = {"format": fmt, "image": precision if quantized == "image" else "fp32",
                       "text": precision if quantized == "text" else "fp32"}
                row.update(_pair_metrics(image, text, ref_image, ref_text, labelled, pair_set))
                rows.append(row)
    return rows


def classifier_rows(artifacts: list[Artifact], records: list[dict], outputs: Outputs,
                    labelled: LabelledImages | None) -> list[dict[str, Any]]:
    """Baked classifiers: top-1 only when their labels are the eval folder's classes (else it would measure
    nothing)."""
    rows = []
    for artifact, record in zip(artifacts, records, strict=True):
        if artifact.tower != "classifier":
            continue
        labels = list(artifact.extra.get("labels") or [])
        row: dict[str, Any] = {"file": artifact.file, "format": artifact.format, "precision": artifact.precision,
                               "bytes": artifact.bytes, "labels": len(labels),
                               "template": artifact.extra.get("template"),
                               "latency_batch_1_ms": record["latency"]["batch_1"]["median_ms"],
                               "labels_match_eval": bool(labelled and set(labels) == set(labelled.classes))}
        if row["labels_match_eval"]:
            probabilities = outputs[artifact_key(artifact)]["eval"]
            predicted = np.asarray(labels)[probabilities.argmax(-1)]
            row["top1"] = top1_accuracy(predicted, np.asarray(labelled.classes)[labelled.truth])
            row["images"] = len(labelled.truth)
            row["top1_interval"] = list(wilson_interval(round(row["top1"] * row["images"]), row["images"]))
            reference = outputs.get(("classifier", artifact.format, "fp32", "default"))
            if reference is not None:
                row["top1_agreement_fp32"] = top1_accuracy(probabilities.argmax(-1), reference["eval"].argmax(-1))
        rows.append(row)
    return rows


# ---- recommendations -------------------------------------------------------------------------------------------------
def _fp32_pair(pairs: list[dict], fmt: str) -> dict | None:
    return next((p for p in pairs if p["format"] == fmt and p["precision"] == "fp32" and p["variant"] == "default"),
                None)


def _within(row: dict, reference: dict) -> bool:
    """Zero-shot top-1 at most WITHIN_POINTS below the reference's (a hair of float slack: 0.7 - 0.01 is not 0.69)."""
    return row["zero_shot"]["top1"] >= reference["zero_shot"]["top1"] - WITHIN_POINTS / 100 - 1e-9


def _label(pair: dict) -> str:
    return f"{pair['format']} {pair['precision']}"


def _summed_latency(pair: dict) -> tuple[float, tuple[float, float]]:
    """Image + text batch-1 median and its interval (the ends of the towers' intervals added: a sum lies between the
    sums of the bounds); a pair from an older report.json, without intervals, gets its median as both ends."""
    medians = pair["latency_batch_1_ms"]
    intervals = pair.get("latency_batch_1_interval_ms") or {}
    ends = [intervals.get(tower) or (median, median) for tower, median in medians.items()]
    return sum(medians.values()), (sum(end[0] for end in ends), sum(end[1] for end in ends))


def fastest_pick(pairs: list[dict]) -> dict[str, Any]:
    """The fastest pair, stable from run to run: the pair with the smallest summed image+text median, then, of every
    pair tied with it within the timing noise (metrics.latencies_tied), the smallest by bytes. Which of two tied
    pairs measures faster is the noise's choice; which is smaller is not. `tied`: the labels of the tied pairs,
    smallest first, when there is more than one."""
    fastest = min(pairs, key=lambda p: (_summed_latency(p)[0], p["bytes"], _label(p)))
    median, interval = _summed_latency(fastest)
    tied = sorted((p for p in pairs if latencies_tied(median, interval, *_summed_latency(p))),
                  key=lambda p: (p["bytes"], _summed_latency(p)[0], _label(p)))
    out = _describe(tied[0])
    if len(tied) > 1:
        out["tied"] = [_label(p) for p in tied]
    return out


def _asked(data: dict[str, Any], pair_or_record: dict) -> bool:
    """Not a reference the report measured only because --precisions left it out (fp32, for fidelity and the
    rule): such a file is shown, never recommended."""
    return pair_or_record["precision"] not in (data.get("selection") or {}).get("reference_precisions", ())


def _describe(pair: dict) -> dict[str, Any]:
    return {"format": pair["format"], "precision": pair["precision"], "variant": pair["variant"],
            "files": pair["files"], "bytes": pair["bytes"],
            "top1": pair.get("zero_shot", {}).get("top1"),
            "latency_batch_1_ms": pair["latency_batch_1_ms"]}


def _flagged(data: dict[str, Any]) -> dict[str, list[str]]:
    """{file: its fidelity flags} for the files export's verification flagged (runtime.precisions.FIDELITY_FLAGS:
    a precision that missed its floor): never recommended, whatever rule or goal, "any accuracy" included."""
    out = {}
    for record in data["artifacts"]:
        bad = [flag for flag in record.get("flags", []) if flag in FIDELITY_FLAGS]
        if bad:
            out[record["file"]] = bad
    return out


def recommend(data: dict[str, Any]) -> dict[str, Any]:
    """The artifact (image+text pair of one format and precision) to pick per goal, and the rule that picked it.

    "Within 1 point of fp32": zero-shot top-1 at most 1 percentage point below the fp32 pair of the same format on
    the eval folder; without an eval folder, the stand-in rule is both towers' 5th-percentile cosine vs fp32 >= 0.99.
    A pair or file with a fidelity flag is left out of every goal and listed under "excluded", and so is an fp32
    file measured only as the reference because --precisions left fp32 out. "Fastest" is `fastest_pick`: of the
    pairs tied with the fastest within the timing noise, the smallest.
    """
    flagged = _flagged(data)
    every = [p for p in data["pairs"] if p["variant"] == "default"]
    pairs = [p for p in every if not any(f in flagged for f in p["files"]) and _asked(data, p)]
    with_accuracy = any("zero_shot" in p for p in every)

    def passes(pair: dict) -> bool:
        reference = _fp32_pair(every, pair["format"])
        if with_accuracy:
            return reference is not None and "zero_shot" in pair and _within(pair, reference)
        return (pair["min_cosine_p5_vs_fp32"] or 0.0) >= FIDELITY_STAND_IN

    rule = (f"zero-shot top-1 within {WITHIN_POINTS:g} point of the fp32 pair of the same format" if with_accuracy
            else f"no labelled eval folder: both towers' 5th-percentile cosine vs fp32 >= {FIDELITY_STAND_IN}")
    good = [p for p in pairs if passes(p)]
    out: dict[str, Any] = {"rule": rule, "excluded": flagged}
    if good:
        out["smallest"] = _describe(min(good, key=lambda p: p["bytes"]))
        out["fastest"] = fastest_pick(good)
    else:
        out["smallest"] = out["fastest"] = None
    if pairs:
        out["fastest_any"] = fastest_pick(pairs)
    for tower, other in (("image", "text"), ("text", "image")):
        best = _smallest_single_tower(data, every, tower, other, with_accuracy)
        if best is not None:
            out[f"smallest_{tower}"] = best
    out["gpu"] = _gpu_recommendation(data)
    return out


def _smallest_single_tower(data: dict[str, Any], pairs: list[dict], tower: str, other: str,
                           with_accuracy: bool) -> dict[str, Any] | None:
    """The smallest file of one tower that passes with the other tower kept fp32 (its cross-precision row): what to
    ship when only one side runs on the device, e.g. images embedded on a phone against a server's text index."""
    passing, top1 = [], {}
    flagged = _flagged(data)
    for record in data["artifacts"]:
        if (record["tower"] != tower or record["variant"] != "default" or record["file"] in flagged
                or not _asked(data, record)):
            continue
        if record["precision"] == "fp32":
            passing.append(record)
            continue
        reference = _fp32_pair(pairs, record["format"])
        row = next((r for r in data["cross_precision"] if r["format"] == record["format"]
                    and r[tower] == record["precision"] and r[other] == "fp32"), None)
        if with_accuracy:
            fine = bool(row and reference and "zero_shot" in row and _within(row, reference))
        else:
            fine = (record.get("fidelity_vs_fp32") or {}).get("cosine_p5", 0.0) >= FIDELITY_STAND_IN
        if fine:
            passing.append(record)
            top1[record["file"]] = (row or {}).get("zero_shot", {}).get("top1")
    if not passing:
        return None
    best = min(passing, key=lambda r: r["bytes"])
    if best["precision"] == "fp32":
        top1[best["file"]] = (_fp32_pair(pairs, best["format"]) or {}).get("zero_shot", {}).get("top1")
    return {"file": best["file"], "bytes": best["bytes"], "top1": top1.get(best["file"]),
            "latency_batch_1_ms": best["latency"]["batch_1"]["median_ms"]}


def _gpu_recommendation(data: dict[str, Any]) -> dict[str, Any] | None:
    """The GPU variant pair, said apart: its latency here is a CPU's, so it never competes with the others."""
    gpu = [p for p in data["pairs"] if p["variant"] == "gpu"]
    if not gpu:
        return None
    records = {r["file"]: r for r in data["artifacts"]}
    pair = gpu[0]
    devices = {records[f].get("device") or "" for f in pair["files"] if f in records}
    on_gpu = all(records[f].get("accelerator") == "gpu" for f in pair["files"] if f in records)
    if on_gpu and devices:
        where = f"on LiteRT's GPU accelerator, {' / '.join(sorted(devices))}"
        where += " (a software GPU: proves correctness, not a phone GPU's speed)" if "software" in str(devices) else ""
    else:
        why = next((records[f].get("accelerator_note") for f in pair["files"] if records.get(f, {}).get(
            "accelerator_note")), "")
        where = "on this machine's CPU, not on a GPU" + (f" ({why})" if why else "")
    return {**_describe(pair), "compatible": _gpu_compatible(data, pair["files"]), "devices": sorted(devices),
            "note": f"latency measured {where}",
            "cosine_p5_vs_fp32": {f: records[f].get("fidelity_vs_fp32", {}).get("cosine_p5") for f in pair["files"]}}


def _gpu_compatible(data: dict[str, Any], files: list[str]) -> bool:
    """Export's checks found every op on the GPU: the static analyzer's, and LiteRT's real GPU accelerator's where the
    exporting machine had one (no "gpu-incompatible", "gpu-partial" or "gpu-failed" flag)."""
    flags = {r["file"]: r["flags"] for r in data["artifacts"]}
    bad = ("gpu-incompatible", "gpu-partial", "gpu-failed")
    return not any(flag in flags.get(f, []) for f in files for flag in bad)


# ---- Pareto frontiers ------------------------------------------------------------------------------------------------
def pareto_front(items: list[dict[str, Any]], cost: Callable[[dict], float], quality: Callable[[dict], float],
                 interval: Callable[[dict], tuple[float, float] | None] | None = None) -> list[dict[str, Any]]:
    """The items no other item beats: none is at most as costly and at least as good with one of the two strictly
    better. With `interval`, "better" means better beyond the uncertainty: one quality beats another only when its
    interval lies wholly above the other's, so a cheaper item within the interval of a costlier one beats it. Sorted
    by cost, so the frontier reads as "what each step up in size or time buys"."""

    def better(a: dict, b: dict) -> bool:
        bounds = (interval(a), interval(b)) if interval is not None else (None, None)
        if bounds[0] is None or bounds[1] is None:
            return quality(a) > quality(b)
        return bounds[0][0] > bounds[1][1]

    front = []
    for item in items:
        c = cost(item)
        dominated = any(cost(o) <= c and not better(item, o) and (cost(o) < c or better(o, item)) for o in items)
        if not dominated:
            front.append(item)
    return sorted(front, key=lambda i: (cost(i), -quality(i)))


def pair_quality(pair: dict[str, Any]) -> float | None:
    """The accuracy axis of the frontier: zero-shot top-1 when there is an eval folder, else the worse tower's
    5th-percentile cosine vs fp32."""
    if "zero_shot" in pair:
        return pair["zero_shot"]["top1"]
    return pair.get("min_cosine_p5_vs_fp32")


def pareto(data: dict[str, Any]) -> dict[str, Any]:
    """Accuracy-vs-size and accuracy-vs-latency frontiers over the image+text pairs (both formats together, the
    `auto` pairs included): the precisions worth shipping; everything off the frontier is beaten on both axes."""
    pairs = [p for p in data["pairs"] if p["variant"] == "default" and pair_quality(p) is not None]
    with_accuracy = any("zero_shot" in p for p in pairs)
    axis = "zero-shot top-1" if with_accuracy else "5th-percentile cosine vs fp32"
    interval = (lambda p: top1_interval(p["zero_shot"]) if "zero_shot" in p else None) if with_accuracy else None

    def names(front: list[dict]) -> list[str]:
        return [f"{p['format']} {p['precision']}" for p in front]

    latency = lambda p: sum(p["latency_batch_1_ms"].values())  # noqa: E731
    return {"quality": axis,
            "ties": "accuracies whose 95% Wilson intervals overlap are ties: neither pair wins" if with_accuracy
            else "exact (fidelity is measured on every held-out sample, not sampled)",
            "size": names(pareto_front(pairs, lambda p: p["bytes"], pair_quality, interval)),
            "latency": names(pareto_front(pairs, latency, pair_quality, interval))}
