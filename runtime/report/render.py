"""Writing a `clipedge report`: report.json (every number), report.md (tables sorted by size, the recommendations)
and report.png (accuracy vs size and vs latency with their Pareto frontiers, latency vs size; needs
matplotlib, the `report` extra)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.report.analysis import top1_interval

__all__ = ["write_report", "render_markdown", "plot_report", "report_figure", "PNG_HINT"]

log = logging.getLogger(__name__)

PNG_HINT = "pip install 'clipedge[report]' (matplotlib) and rerun to get report.png"
FORMAT_MARKERS = {"tflite": "o", "onnx": "s"}
TOWER_COLOURS = {"image": "tab:blue", "text": "tab:orange", "classifier": "tab:green"}
FORMAT_COLOURS = {"tflite": "tab:blue", "onnx": "tab:red"}


def write_report(data: dict[str, Any], out: Path) -> tuple[Path, Path, Path | None]:
    """report.json, report.md and (when matplotlib is installed) report.png in `out`, created if needed."""
    out.mkdir(parents=True, exist_ok=True)
    png: Path | None = out / "report.png"
    try:
        plot_report(data, png)
    except ImportError:
        log.warning("matplotlib is not installed: no report.png (%s)", PNG_HINT)
        png = None
    data["png"] = png.name if png else None
    json_path = out / "report.json"
    json_path.write_text(json.dumps(_plain(data), indent=1) + "\n", encoding="utf-8")
    md_path = out / "report.md"
    md_path.write_text(render_markdown(data), encoding="utf-8")
    return json_path, md_path, png


def _plain(value: Any) -> Any:
    """json-ready: numpy scalars to Python, floats rounded to 6 decimals (NaN to null)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# ---- markdown ------------------------------------------------------------------------------------------------------
_INTERVAL_NOTE = ("Each top-1 is a share of the eval images: the 95% Wilson interval beside it is how far another "
                  "draw of as many images could move it. Two pairs whose intervals overlap are not told apart here.")

def _mb(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.2f}"


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}" if x < 100 else f"{x:.0f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _pct_interval(result: dict[str, Any] | None) -> str:
    """Top-1 with its 95% Wilson interval: 88.3% (81.4-92.9)."""
    result = result or {}
    interval = top1_interval(result)
    if interval is None:
        return _pct(result.get("top1"))
    return f"{_pct(result['top1'])} ({100 * interval[0]:.1f}–{100 * interval[1]:.1f})"


def _cos(x: float | None) -> str:
    return "–" if x is None else f"{x:.6f}" if x > 0.999 else f"{x:.4f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _name(pair: dict[str, Any]) -> str:
    variant = "" if pair.get("variant", "default") == "default" else f" ({pair['variant']} variant)"
    return f"{pair['format']} {pair['precision']}{variant}"


def render_markdown(data: dict[str, Any]) -> str:
    machine, settings, base = data["machine"], data["settings"], data["baseline"]
    libs = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items() if v)
    big = max(settings["batches"])
    model = data["model"].get("name") or Path(data["bundle"]).name
    lines = [f"# clipedge report: {model}", ""]
    if data.get("note"):
        lines += [f"> {data['note']}", ""]
    lines += [
        f"Bundle `{data['bundle']}`, measured {data['started']} on **{machine['cpu']}** "
        f"({machine['usable_cores']} usable of {machine['cores']} cores"
        + (f", {', '.join(machine['isa'])}" if machine.get("isa") else "") + f"), {machine['os']}, "
        f"{machine['python']}; {libs}.",
        "",
        f"Threads {settings['threads']}; latency = median (p90) of {settings['repeats']} timed model calls after "
        f"{settings['warmup']} warm-up calls, synthetic inputs, preprocessing and tokenization not included. "
        f"Load average {machine.get('load_average')} at the start, {machine.get('load_average_end')} at the end: "
        "on a loaded machine latencies are noisy, and the ratios to PyTorch (measured in the same run) are the "
        "numbers to compare.",
        "",
        f"Command: `{data.get('command', '')}`",
        "",
    ]
    lines += _recommendations(data)
    lines += _models(data, big)
    if data.get("skipped"):
        lines += ["Not measured here (no interpreter for them on this install, or they failed to open):", ""]
        lines += [f"- `{s['file']}`: {s['reason']}" for s in data["skipped"]] + [""]
    lines += _pairs(data)
    lines += _pareto(data)
    lines += _cross(data)
    lines += _classifiers(data)
    lines += ["## Baseline: PyTorch fp32", ""]
    if base.get("status") == "ran":
        lat = base["latency"]
        lines += [f"HF `transformers` `CLIPModel` (torch {base['torch']}, eager, fp32, "
                  f"`torch.set_num_threads({base['threads']})`) on `{base['checkpoint']}`, batch 1: image "
                  f"{_ms(lat['image']['median_ms'])} ms (p90 {_ms(lat['image']['p90_ms'])}), text "
                  f"{_ms(lat['text']['median_ms'])} ms (p90 {_ms(lat['text']['p90_ms'])}). The `time / torch` "
                  "column divides each model's batch-1 median by these (classifiers by the image tower's); "
                  "`cos vs torch` compares embeddings with these on the held-out data.", ""]
    else:
        lines += [f"Not run: {base.get('reason')}.", ""]
    held, ev, pairs = data["data"]["held_out"], data["data"]["eval"], data["data"]["pairs"]
    lines += ["## Data", "",
              f"- Fidelity: {held['images']} images and {held['captions']} captions ({held['what']}); cosine of "
              "each embedding with the same input's embedding from the fp32 model of the same format.",
              (f"- Zero-shot: `{ev['dir']}`, {ev['classes']} classes, {ev['images']} images, prompt "
               f"`{settings['template']}`; top-1 = share of images whose most similar prompt is their folder's."
               if ev else "- Zero-shot: no labelled eval folder (`--eval DIR`: one subfolder of images per class)."),
              (f"- Retrieval: `{pairs['file']}`, {pairs['captions']} captions over {pairs['images']} images; recall@k "
               "= share of captions whose image is among the k most similar." if pairs
               else "- Retrieval: no image-caption pairs (`--pairs FILE`, TSV: image path, caption)."), ""]
    if not data.get("png"):
        lines += [f"No plots: {PNG_HINT}.", ""]
    else:
        lines += [f"![accuracy and latency vs size]({data['png']})", ""]
    return "\n".join(lines)


def _recommendations(data: dict[str, Any]) -> list[str]:
    rec = data["recommendations"]
    lines = ["## Recommended", "", f"Rule for \"as accurate as fp32\": {rec['rule']}.", ""]
    rows = []

    def pair_row(goal: str, pair: dict | None, note: str = "") -> None:
        if pair is None:
            rows.append([goal, "none passes the rule", "–", "–", "–", note])
            return
        lat = pair["latency_batch_1_ms"]
        rows.append([goal, f"{_name(pair)}: `{pair['files'][0]}` + `{pair['files'][1]}`", _mb(pair["bytes"]),
                     _pct(pair.get("top1")), f"{_ms(lat['image'])} + {_ms(lat['text'])}", note])

    pair_row("smallest, within the rule", rec.get("smallest"))
    pair_row("fastest, within the rule", rec.get("fastest"))
    if rec.get("fastest_any") and rec.get("fastest_any") != rec.get("fastest"):
        pair_row("fastest, any accuracy", rec["fastest_any"], "check its accuracy below")
    for tower in ("image", "text"):
        best = rec.get(f"smallest_{tower}")
        if best:
            other = "text" if tower == "image" else "image"
            rows.append([f"smallest {tower} model (with an fp32 {other} model)", f"`{best['file']}`",
                         _mb(best["bytes"]), _pct(best.get("top1")), _ms(best["latency_batch_1_ms"]),
                         "top-1 with the other tower in fp32 (cross-precision table)"])
    gpu = rec.get("gpu")
    if gpu:
        compatible = "every op GPU-supported (export's check)" if gpu["compatible"] else "NOT fully GPU-compatible"
        pair_row("best GPU", gpu, f"{compatible}; {gpu.get('note') or 'latency measured on this CPU, not on a GPU'}")
    else:
        rows.append(["best GPU", "the bundle has no `gpu` variant (exported with --no-gpu?)", "–", "–", "–", ""])
    header = ["goal", "choice", "MB", "zero-shot top-1", "ms (image + text, batch 1)", "note"]
    excluded = rec.get("excluded") or {}
    named = [f"`{name}` ({', '.join(flags)})" for name, flags in sorted(excluded.items())]
    note = [f"Never recommended, flagged by export's verification: {'; '.join(named)}.", ""] if named else []
    return lines + _table(header, rows) + [""] + note


def _models(data: dict[str, Any], big: int) -> list[str]:
    rows = []
    for r in sorted(data["artifacts"], key=lambda r: (r["bytes"], r["file"])):
        b1, bn = r["latency"]["batch_1"], r["latency"].get(f"batch_{big}", {})
        fixed = r["latency"].get("model_batch")
        fid, torch_fid = r.get("fidelity_vs_fp32") or {}, r.get("fidelity_vs_torch") or {}
        memory = r.get("memory") or {}
        ratio = r.get("latency_ratio_to_torch")
        rows.append([
            f"`{r['file']}`", r["tower"], r["format"], r["precision"] + ("" if r["variant"] == "default"
                                                                         else f" ({r['variant']})")
            + ("‡" if r.get("accelerator") == "gpu" else ""),
            _mb(r["bytes"]) + ("†" if r.get("companions") else ""), f"{_ms(b1['median_ms'])} ({_ms(b1['p90_ms'])})",
            f"{_ms(bn.get('median_ms'))} ({_ms(bn.get('p90_ms'))})" + ("*" if fixed and fixed < big else ""),
            "–" if ratio is None else f"{ratio:.3g}x",
            "–" if not memory else f"{memory['peak_rss_mb']:.0f} (+{memory['model_rss_mb']:.0f})",
            " / ".join(_cos(fid.get(k)) for k in ("cosine_mean", "cosine_p5", "cosine_min")) if fid else "–",
            _cos(torch_fid.get("cosine_min")) if torch_fid else "–",
            ", ".join(r["flags"]) or "",
        ])
    lines = ["## Models, smallest first", ""]
    lines += _table(["file", "tower", "format", "precision", "MB", "batch 1 ms (p90)", f"batch {big} ms (p90)",
                     "time / torch", "peak RSS MB (+model)", "cos vs fp32: mean / p5 / min", "cos vs torch (min)",
                     "flags"], rows)
    notes = [""]
    if any((r["latency"].get("model_batch") or big) < big for r in data["artifacts"]):
        notes.append(f"\\* fixed model batch (TFLite exports default to 1; `--batch dynamic` batches): "
                     f"batch {big} runs as repeated calls.")
    if any(r.get("companions") for r in data["artifacts"]):
        notes.append("† includes the files it needs beside it (the GPU text variant's token table, looked up by the "
                     "runtime because LiteRT's GPU has no 2-D GATHER).")
    for device in sorted({r.get("device") or "" for r in data["artifacts"] if r.get("accelerator") == "gpu"}):
        notes.append(f"‡ latency and fidelity measured on LiteRT's GPU accelerator: {device}"
                     + (" (software: correctness, not a phone GPU's speed)." if "software" in device else "."))
    notes.append("Peak RSS: a fresh process that opens the model and runs it once (Python, numpy and the interpreter "
                 "included; `+model` is the growth after the interpreter library was imported).")
    return lines + notes + [""]


def _pairs(data: dict[str, Any]) -> list[str]:
    if not data["pairs"]:
        return []
    rows = []
    for p in sorted(data["pairs"], key=lambda p: (p["bytes"], p["format"])):
        zs, rt, drift = p.get("zero_shot") or {}, p.get("retrieval") or {}, p.get("similarity_vs_fp32") or {}
        rows.append([_name(p), _mb(p["bytes"]), _pct_interval(zs), _pct(zs.get("top1_agreement_fp32")),
                     _pct(rt.get("recall@1")), _pct(rt.get("recall@5")),
                     f"{drift['mean_abs_diff']:.4f} / {drift['max_abs_diff']:.4f}" if drift else "–"])
    return ["## Image + text models of one precision, smallest first", ""] + _table(
        ["format, precision", "MB (image + text)", "zero-shot top-1 (95% interval)", "top-1 agreement with fp32",
         "recall@1", "recall@5", "cosine score drift vs fp32: mean / max"], rows) + ["", _INTERVAL_NOTE, ""]


def _pareto(data: dict[str, Any]) -> list[str]:
    front = data.get("pareto")
    if not front or not front["size"]:
        return []
    by_name = {f"{p['format']} {p['precision']}": p for p in data["pairs"] if p["variant"] == "default"}
    zero_shot = front["quality"] == "zero-shot top-1"

    def step(name: str, cost: str) -> str:
        pair = by_name[name]
        quality = _pct_interval(pair["zero_shot"]) if zero_shot else _cos(pair["min_cosine_p5_vs_fp32"])
        value = (_mb(pair["bytes"]) + " MB" if cost == "size"
                 else _ms(sum(pair["latency_batch_1_ms"].values())) + " ms")
        return f"{name} ({value}, {quality})"

    lines = ["## Pareto frontier (image + text pairs, both formats)", "",
             f"Accuracy axis: {front['quality']}. A pair off the frontier is beaten by another that is at most as "
             "big (or fast) and at least as accurate; `auto` pairs compete like the fixed precisions. Ties: "
             f"{front.get('ties', 'exact comparison')}, so a difference inside the intervals (a few images) is no win "
             "and the smaller or faster pair keeps the place.", ""]
    lines.append("- accuracy vs size: " + " → ".join(step(n, "size") for n in front["size"]))
    lines.append("- accuracy vs latency (image + text, batch 1): "
                 + " → ".join(step(n, "latency") for n in front["latency"]))
    return lines + [""]


def _cross(data: dict[str, Any]) -> list[str]:
    if not data["cross_precision"]:
        return []
    rows = []
    for c in data["cross_precision"]:
        zs, rt, drift = c.get("zero_shot") or {}, c.get("retrieval") or {}, c.get("similarity_vs_fp32") or {}
        rows.append([c["format"], c["image"], c["text"], _pct_interval(zs), _pct(zs.get("top1_agreement_fp32")),
                     _pct(rt.get("recall@1")), _pct(rt.get("recall@5")),
                     f"{drift['mean_abs_diff']:.4f} / {drift['max_abs_diff']:.4f}" if drift else "–"])
    header = ["format", "image", "text", "zero-shot top-1 (95% interval)", "agreement with fp32", "recall@1",
              "recall@5", "score drift: mean / max"]
    return ["## Cross-precision: one tower quantized, the other fp32", "",
            "E.g. a device's quantized image model searched against text embeddings computed once in fp32.", ""
            ] + _table(header, rows) + [""]


def _classifiers(data: dict[str, Any]) -> list[str]:
    if not data["classifiers"]:
        return []
    rows = [[f"`{c['file']}`", c["format"], c["precision"], _mb(c["bytes"]), str(c["labels"]),
             "yes" if c["labels_match_eval"] else "no", _pct_interval(c), _pct(c.get("top1_agreement_fp32")),
             _ms(c["latency_batch_1_ms"])]
            for c in sorted(data["classifiers"], key=lambda c: c["bytes"])]
    return ["## Classifiers (labels baked in, image only)", ""] + _table(
        ["file", "format", "precision", "MB", "labels", "labels = eval classes", "top-1 (95% interval)",
         "agreement with fp32",
         "batch 1 ms"], rows) + [""]


# ---- plots -----------------------------------------------------------------------------------------------------------
def _accuracy_panel(axis, data: dict[str, Any], x_of, frontier: list[str],
                    with_accuracy: bool) -> list[tuple[float, float, str]]:
    """Image+text pairs: accuracy (or fidelity) against `x_of(pair)`, with its 95% interval as an error bar, the
    Pareto frontier as a line through them. Returns the points' labels, placed once the figure is laid out."""
    points, labels = {}, []
    for p in data["pairs"]:
        y = (100 * p["zero_shot"]["top1"]) if with_accuracy and "zero_shot" in p else p["min_cosine_p5_vs_fp32"]
        if y is None:
            continue
        x = x_of(p)
        auto = p["precision"] == "auto"
        axis.scatter(x, y, marker="*" if auto else FORMAT_MARKERS.get(p["format"], "^"), s=140 if auto else 55,
                     color=FORMAT_COLOURS.get(p["format"]), edgecolor="black", linewidth=0.5, zorder=3)
        interval = top1_interval(p["zero_shot"]) if with_accuracy and "zero_shot" in p else None
        if interval is not None:
            axis.errorbar(x, y, yerr=[[y - 100 * interval[0]], [100 * interval[1] - y]], fmt="none",
                          ecolor=FORMAT_COLOURS.get(p["format"]), alpha=0.35, linewidth=1, capsize=2, zorder=2)
        gpu = p["variant"] != "default"
        labels.append((x, y, p["precision"] + ("/gpu" if gpu else "")))
        if not gpu:
            points[f"{p['format']} {p['precision']}"] = (x, y)
    line = [points[name] for name in frontier if name in points]
    if line:
        axis.plot(*zip(*line, strict=True), color="black", linestyle="--", linewidth=1, zorder=2,
                  label="Pareto frontier")
    if with_accuracy:
        for p in data["pairs"]:
            if p["precision"] == "fp32" and p["variant"] == "default" and "zero_shot" in p:
                axis.axhline(100 * p["zero_shot"]["top1"] - 1, color=FORMAT_COLOURS.get(p["format"]), linestyle=":",
                             linewidth=1, label=f"{p['format']} fp32 - 1 point")
        axis.set_ylabel("zero-shot top-1 (%)")
    else:
        axis.set_ylabel("5th-percentile cosine vs fp32 (worse tower)")
    return labels


def plot_report(data: dict[str, Any], path: Path) -> None:
    """report.png (see `report_figure`). Raises ImportError without matplotlib."""
    fig, _ = report_figure(data)
    fig.savefig(path)


def report_figure(data: dict[str, Any]) -> tuple[Any, list[Any]]:
    """Three panels: accuracy (or, without an eval folder, fidelity) of image+text pairs vs their size and vs their
    latency, each with its 95% intervals and Pareto frontier; batch-1 latency of every model vs its size, with
    PyTorch fp32 as dashed lines. `auto` pairs are stars. The figure and its point labels (placed without overlaps,
    clipedge.runtime.report.labels)."""
    from matplotlib.figure import Figure  # the object API: no pyplot, no global backend switch
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(20, 5.8), dpi=100, layout="constrained")
    left, middle, right = fig.subplots(1, 3)
    model = data["model"].get("name") or Path(data["bundle"]).name
    machine = data["machine"]
    fig.suptitle(f"clipedge report: {model}  ({machine['cpu']}, {data['settings']['threads']} threads)", fontsize=11)

    with_accuracy = any("zero_shot" in p for p in data["pairs"])
    front = data.get("pareto") or {"size": [], "latency": []}
    what = "accuracy" if with_accuracy else "fidelity"
    left_labels = _accuracy_panel(left, data, lambda p: p["bytes"] / 1e6, front["size"], with_accuracy)
    left.set_title(f"{what} vs size (image + text models)", fontsize=10)
    left.set_xlabel("size of image + text models (MB, log scale)")
    middle_labels = _accuracy_panel(middle, data, lambda p: sum(p["latency_batch_1_ms"].values()), front["latency"],
                                    with_accuracy)
    middle.set_title(f"{what} vs latency (image + text models)", fontsize=10)
    middle.set_xlabel("image + text latency, batch 1, median (ms, log scale)")

    right_labels = []
    for r in data["artifacts"]:
        x, y = r["bytes"] / 1e6, r["latency"]["batch_1"]["median_ms"]
        right.scatter(x, y, marker="*" if r["precision"] == "auto" else FORMAT_MARKERS.get(r["format"], "^"),
                      s=120 if r["precision"] == "auto" else 50, color=TOWER_COLOURS.get(r["tower"]),
                      edgecolor="black", linewidth=0.5, zorder=3)
        right_labels.append((x, y, r["precision"] + ("/gpu" if r["variant"] != "default" else "")))
    base = data["baseline"]
    if base.get("status") == "ran":
        for tower in ("image", "text"):
            right.axhline(base["latency"][tower]["median_ms"], color=TOWER_COLOURS[tower], linestyle="--",
                          linewidth=1, label=f"PyTorch fp32 {tower}")
    right.set_xlabel("size shipped (MB, log scale)")
    right.set_ylabel("batch-1 latency, median (ms, log scale)")
    right.set_yscale("log")
    right.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    right.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
    right.set_title("latency vs size (each model)", fontsize=10)

    from matplotlib.lines import Line2D

    formats = [f for f in FORMAT_MARKERS if any(r["format"] == f for r in data["artifacts"])]
    pair_keys = [Line2D([], [], marker=FORMAT_MARKERS[f], linestyle="", color=FORMAT_COLOURS[f],
                        markeredgecolor="black", label=f) for f in formats]
    if any(r["precision"] == "auto" for r in data["artifacts"]):
        pair_keys.append(Line2D([], [], marker="*", linestyle="", color="lightgrey", markeredgecolor="black",
                                markersize=12, label="auto"))
    right_keys = [Line2D([], [], marker=FORMAT_MARKERS[f], linestyle="", color="lightgrey", markeredgecolor="black",
                         label=f) for f in formats]
    right_keys += [Line2D([], [], marker="o", linestyle="", color=c, markeredgecolor="black", label=f"{t} tower")
                   for t, c in TOWER_COLOURS.items() if any(r["tower"] == t for r in data["artifacts"])]
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 4, 10, 0.5 rather than 4x10^0
    for axis, keys in ((left, pair_keys), (middle, pair_keys), (right, right_keys)):
        axis.set_xscale("log")
        axis.margins(x=0.12)  # room for the labels of the outermost points
        axis.xaxis.set_major_formatter(plain)
        axis.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
        axis.grid(True, which="both", alpha=0.3)
        own_handles, _ = axis.get_legend_handles_labels()
        axis.legend(handles=keys + own_handles, fontsize=8, loc="best")
    from clipedge.runtime.report.labels import place_labels

    annotations = place_labels(fig, [(left, left_labels), (middle, middle_labels), (right, right_labels)])
    return fig, annotations


def _minor_label(value: float, _position: int) -> str:
    """Label the 2s and 5s between the decades of a log axis (0.2, 0.5, 2, 5, 20, ...)."""
    if value <= 0:
        return ""
    leading = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if leading in (2.0, 5.0) else ""
