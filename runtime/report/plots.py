"""report.png of a `clipedge report`: accuracy (or fidelity) vs size and vs latency of the image+text pairs with
their 95% intervals and Pareto frontiers, and latency vs size of every model. Needs matplotlib (the `report` extra),
imported only when a figure is drawn: without it `plot_report` raises ImportError and the md and json are still
written (render.write_report).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from clipedge.runtime.report.analysis import top1_interval

__all__ = ["plot_report", "report_figure", "FORMAT_MARKERS", "TOWER_COLOURS", "FORMAT_COLOURS"]

FORMAT_MARKERS = {"tflite": "o", "onnx": "s"}
TOWER_COLOURS = {"image": "tab:blue", "text": "tab:orange", "classifier": "tab:green"}
FORMAT_COLOURS = {"tflite": "tab:blue", "onnx": "tab:red"}


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
