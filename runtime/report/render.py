"""Writing a `clipedge report`: report.json (every number), report.md (tables sorted by size, the recommendations)
and report.png (drawn by `report.plots`: accuracy vs size and vs latency with their Pareto frontiers, latency vs
size; needs matplotlib, the `report` extra)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.metrics import TIE_MARGIN
from clipedge.runtime.report.analysis import top1_interval
from clipedge.runtime.report.plots import plot_report, report_figure  # report_figure: re-exported

__all__ = ["write_report", "render_markdown", "plot_report", "report_figure", "PNG_HINT"]

log = logging.getLogger(__name__)

PNG_HINT = "pip install 'clipedge[report]' (matplotlib) and rerun to get report.png"


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


def _noise_sentence(base: dict[str, Any]) -> str:
    """What to compare on a loaded machine: the ratios to PyTorch when it ran in this report, else this run's
    latencies with each other, and why there is no baseline."""
    if base.get("status") == "ran":
        return ("on a loaded machine latencies are noisy, and the ratios to PyTorch (measured in the same run) are the "
                "numbers to compare.")
    return ("on a loaded machine latencies are noisy: compare this run's latencies with each other, not with another "
            f"run's. No ratios to PyTorch: its baseline did not run ({base.get('reason') or 'no reason recorded'}).")


def _selection_lines(data: dict[str, Any]) -> list[str]:
    """--precisions / --formats: what was asked, and the fp32 files measured only as the reference."""
    selection = data.get("selection")
    if not selection:
        return []
    asked = [f"{what} {', '.join(selection[what])}" for what in ("precisions", "formats") if selection.get(what)]
    line = f"Only {' and '.join(asked)} asked for (`--precisions`, `--formats`)."
    if selection.get("reference_files"):
        line += (" fp32 measured as the reference only (every fidelity and the accuracy rule are against it; never "
                 f"recommended): {', '.join(f'`{f}`' for f in selection['reference_files'])}.")
    return [line, ""]


def render_markdown(data: dict[str, Any]) -> str:
    machine, settings, base = data["machine"], data["settings"], data["baseline"]
    libs = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items() if v)
    big = max(settings["batches"])
    model = data["model"].get("name") or Path(data["bundle"]).name
    source = data["model"].get("source")
    lines = [f"# clipedge report: {model}", ""]
    if data.get("note"):
        lines += [f"> {data['note']}", ""]
    lines += [
        f"Bundle `{data['bundle']}`" + (f" (model `{source}`)" if source else "") + f", measured {data['started']} "
        f"on **{machine['cpu']}** ({machine['usable_cores']} usable of {machine['cores']} cores"
        + (f", {', '.join(machine['isa'])}" if machine.get("isa") else "") + f"), {machine['os']}, "
        f"{machine['python']}; {libs}.",
        "",
        f"Threads {settings['threads']}; latency = median (p90) of {settings['repeats']} timed model calls after "
        f"{settings['warmup']} warm-up calls, synthetic inputs, preprocessing and tokenization not included. "
        f"Load average {machine.get('load_average')} at the start, {machine.get('load_average_end')} at the end: "
        + _noise_sentence(base),
        "",
        f"Command: `{data.get('command', '')}`",
        "",
    ]
    lines += _selection_lines(data)
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


def _tie_note(pair: dict[str, Any]) -> str:
    others = [name for name in pair.get("tied") or () if name != _name(pair)]
    return (f"tied within the timing noise with {', '.join(others)}; the smallest of them is picked" if others
            else "")


def _no_gpu(data: dict[str, Any]) -> str:
    """Why there is no "best GPU": the bundle has no gpu variant, or --precisions / --formats left it out."""
    selection = data.get("selection") or {}
    precisions, formats = selection.get("precisions") or ["fp32"], selection.get("formats") or ["tflite"]
    if "fp32" not in precisions or "tflite" not in formats:
        return "not measured: the `gpu` variant is fp32 TFLite, which `--precisions`/`--formats` left out"
    return "the bundle has no `gpu` variant (exported with --no-gpu?)"


def _recommendations(data: dict[str, Any]) -> list[str]:
    rec = data["recommendations"]
    margin = (data.get("settings") or {}).get("tie_margin", TIE_MARGIN)  # a report from before ties: the default
    lines = ["## Recommended", "", f"Rule for \"as accurate as fp32\": {rec['rule']}. \"Fastest\" is by image + "
             "text batch-1 median; pairs tied with the fastest within the timing noise (95% intervals of the medians "
             f"overlap, or medians within {100 * margin:g}%: load shifts a whole run) go to the smallest of them, so "
             "a rerun does not flip the pick.", ""]
    rows = []

    def pair_row(goal: str, pair: dict | None, note: str = "") -> None:
        if pair is None:
            rows.append([goal, "none passes the rule", "–", "–", "–", note])
            return
        note = "; ".join(part for part in (_tie_note(pair), note) if part)
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
        rows.append(["best GPU", _no_gpu(data), "–", "–", "–", ""])
    header = ["goal", "choice", "MB", "zero-shot top-1", "ms (image + text, batch 1)", "note"]
    excluded = rec.get("excluded") or {}
    named = [f"`{name}` ({', '.join(flags)})" for name, flags in sorted(excluded.items())]
    note = [f"Never recommended, flagged by export's verification: {'; '.join(named)}.", ""] if named else []
    return lines + _table(header, rows) + [""] + note


def _models(data: dict[str, Any], big: int) -> list[str]:
    rows = []
    references = set((data.get("selection") or {}).get("reference_files") or ())
    for r in sorted(data["artifacts"], key=lambda r: (r["bytes"], r["file"])):
        b1, bn = r["latency"]["batch_1"], r["latency"].get(f"batch_{big}", {})
        fixed = r["latency"].get("model_batch")
        fid, torch_fid = r.get("fidelity_vs_fp32") or {}, r.get("fidelity_vs_torch") or {}
        memory = r.get("memory") or {}
        ratio = r.get("latency_ratio_to_torch")
        rows.append([
            f"`{r['file']}`", r["tower"], r["format"], r["precision"] + ("" if r["variant"] == "default"
                                                                         else f" ({r['variant']})")
            + ("‡" if r.get("accelerator") == "gpu" else "") + (" (reference)" if r["file"] in references else ""),
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
