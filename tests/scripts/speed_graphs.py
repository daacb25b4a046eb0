"""Issue #18's graph targets: the bundle's ONNX files against the torch.onnx + ONNX Runtime route, and its full-int8
TFLite files against its dynamic-int8 ones, all timed side by side in one run.

Usage: python tests/scripts/speed_graphs.py --checkpoint DIR --bundle DIR [--work DIR] [--baseline DIR]
       [--threads 2] [--repeats 20]

The torch.onnx route ("the optimum route") is built here from the checkpoint, into WORK: transformers' CLIPModel
towers (`get_image_features` / `get_text_features`) exported with `torch.onnx.export` (TorchScript exporter, opset 17,
dynamic batch), then `onnxruntime.quantization.quantize_dynamic(weight_type=QInt8)` with its defaults. Each tower's
models are opened together as `clipedge bench` opens them (the runtime's backends, its synthetic batch-1 inputs, its
`measure_latency`, `threads` threads) and timed in ROUNDS rounds of `repeats` calls, the order reversed every other
round; each row is the median of its round medians: the load of a shared machine drifts during a run, and a ratio of
two rows is only fair when both saw the same drift. `--baseline` adds an earlier bundle
of the same checkpoint (the export before these changes) to the same run.

The issue's reference run (AMD EPYC, 2 threads, batch 1, ViT-B/32 random init), in ISSUE_MS. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

# The issue's numbers (ms): (route, format, precision) -> (image, text)
ISSUE_MS = {
    ("torch.onnx", "onnx", "fp32"): (33.0, 18.2), ("torch.onnx", "onnx", "dynamic-int8"): (14.6, 6.6),
    ("clipedge", "tflite", "fp32"): (27.0, 15.3), ("clipedge", "tflite", "dynamic-int8"): (7.8, 5.2),
    ("clipedge", "tflite", "int8"): (20.7, 20.1), ("clipedge", "onnx", "fp32"): (29.3, 18.4),
    ("clipedge", "onnx", "dynamic-int8"): (10.5, 7.5), ("clipedge", "onnx", "int8"): (11.9, 8.7),
}
PRECISIONS = ("fp32", "dynamic-int8", "int8")
ROUNDS = 4  # per model; rounds alternate the order, so a drift of the machine's load reaches every model alike
TOWERS = ("image", "text")


def torch_onnx_route(checkpoint: Path, work: Path) -> dict[tuple[str, str], Path]:
    """{(tower, precision): file} of the torch.onnx route, fp32 and dynamic-int8, built in `work` (kept for reuse)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import CLIPModel

    work.mkdir(parents=True, exist_ok=True)
    files = {(tower, precision): work / f"torch_{tower}_{precision}.onnx" for tower in TOWERS
             for precision in ("fp32", "dynamic-int8")}
    if all(path.is_file() for path in files.values()):
        return files
    model = CLIPModel.from_pretrained(checkpoint).eval()

    class Tower(torch.nn.Module):  # the model a registered submodule: its weights export as initializers
        def __init__(self, tower: str) -> None:
            super().__init__()
            self.model, self.tower = model, tower

        def forward(self, inputs):
            if self.tower == "image":
                return self.model.get_image_features(pixel_values=inputs)
            return self.model.get_text_features(input_ids=inputs)

    size = model.config.vision_config.image_size
    ids = torch.zeros((1, model.config.text_config.max_position_embeddings), dtype=torch.long)
    ids[0, :3] = torch.tensor([49406, 1000, 49407])
    exports = {"image": (Tower("image"), torch.randn(1, 3, size, size), "pixel_values", "image_embeds"),
               "text": (Tower("text"), ids, "input_ids", "text_embeds")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for tower, (module, example, name, output) in exports.items():
            torch.onnx.export(module, (example,), files[(tower, "fp32")], input_names=[name], output_names=[output],
                              dynamic_axes={name: {0: "batch"}, output: {0: "batch"}}, opset_version=17,
                              dynamo=False)
    for tower in TOWERS:
        quantize_dynamic(files[(tower, "fp32")], files[(tower, "dynamic-int8")], weight_type=QuantType.QInt8)
    return files


def _open(threads: int, target: Path, tower: str | None = None, fmt: str | None = None,
          precision: str | None = None):
    """(backend, batch-1 synthetic feeds) of one model, opened as `clipedge bench` opens it."""
    from clipedge.runtime.backends.open import open_backend
    from clipedge.runtime.bench import resolve_target, synthetic_feeds

    manifest, artifact, path = resolve_target(target, tower, fmt, precision)
    backend = open_backend(path, signature=artifact.signature if artifact else None, threads=threads,
                           accelerator="cpu")
    return backend, synthetic_feeds(backend.inputs, 1, artifact, manifest)


def _same_files(bundle: Path, baseline: Path | None) -> dict[tuple[str, str], bool]:
    """{(tower, precision): the TFLite file is byte for byte the baseline's} (by the manifests' sha256)."""
    if baseline is None:
        return {}
    from clipedge.runtime.manifest import Manifest

    ours, theirs = Manifest.read(bundle), Manifest.read(baseline)
    out = {}
    for tower in TOWERS:
        for precision in ("fp32", "dynamic-int8"):
            a, b = ours.find(tower, "tflite", precision), theirs.find(tower, "tflite", precision)
            out[(tower, precision)] = a.sha256 == b.sha256
    return out


def _targets(rows: dict[tuple[str, str, str], dict[str, float]],
             same: dict[tuple[str, str], bool]) -> list[tuple[str, str, str, bool]]:
    out = []
    for tower in TOWERS:
        ours, theirs = rows[("clipedge", "onnx", "dynamic-int8")][tower], rows[("torch.onnx", "onnx",
                                                                               "dynamic-int8")][tower]
        out.append((f"ONNX dynamic-int8 {tower} vs torch.onnx + ORT dynamic-int8",
                    f"{ours:.1f} vs {theirs:.1f} ms ({ours / theirs:.2f}x)", "<= 1.00x", ours <= theirs))
    for tower in TOWERS:
        full, dynamic = rows[("clipedge", "tflite", "int8")][tower], rows[("clipedge", "tflite",
                                                                           "dynamic-int8")][tower]
        out.append((f"TFLite int8 {tower} vs TFLite dynamic-int8", f"{full:.1f} vs {dynamic:.1f} ms "
                    f"({full / dynamic:.2f}x)", "<= 1.50x", full <= 1.5 * dynamic))
    for precision in ("fp32", "dynamic-int8"):
        for tower in TOWERS:
            now = rows[("clipedge", "tflite", precision)][tower]
            before = rows.get(("baseline", "tflite", precision), {}).get(tower)
            if before is not None and same.get((tower, precision)):
                out.append((f"TFLite {precision} {tower} vs the baseline bundle", f"the same file (sha256); "
                            f"{now:.1f} vs {before:.1f} ms is noise", "<= the baseline", True))
            elif before is not None:
                out.append((f"TFLite {precision} {tower} vs the baseline bundle", f"{now:.1f} vs {before:.1f} ms "
                            f"({now / before:.2f}x)", "<= 1.00x (same run)", now <= before))
            else:
                issue = ISSUE_MS[("clipedge", "tflite", precision)][TOWERS.index(tower)]
                out.append((f"TFLite {precision} {tower} vs the issue's run", f"{now:.1f} vs {issue:.1f} ms",
                            "<= the issue's ms", now <= issue))
    return out


def measure(checkpoint: Path, bundle: Path, work: Path, threads: int = 2, repeats: int = 20,
            baseline: Path | None = None) -> tuple[str, list[tuple[str, str, str, bool]]]:
    """(markdown table: image and text ms per route / format / precision, [(target, measured, goal, holds)])."""
    from clipedge.runtime.bench import machine_info, measure_latency

    torch_files = torch_onnx_route(Path(checkpoint), Path(work))
    jobs = []  # (route, format, precision, tower, bench kwargs)
    for tower in TOWERS:
        for precision in ("fp32", "dynamic-int8"):
            jobs.append(("torch.onnx", "onnx", precision, tower, {"target": torch_files[(tower, precision)]}))
        for sources, route in ((bundle, "clipedge"), (baseline, "baseline")):
            if sources is None:
                continue
            for fmt in ("tflite", "onnx"):
                for precision in PRECISIONS:
                    jobs.append((route, fmt, precision, tower, {"target": sources, "tower": tower, "fmt": fmt,
                                                                "precision": precision}))
    medians: dict[int, list[float]] = {i: [] for i in range(len(jobs))}
    for tower in TOWERS:  # one tower's models open together, timed in interleaved rounds
        mine = [i for i, job in enumerate(jobs) if job[3] == tower]
        opened = {i: _open(threads, **jobs[i][4]) for i in mine}
        for round_ in range(ROUNDS):
            for i in (mine if round_ % 2 == 0 else list(reversed(mine))):
                backend, feeds = opened[i]
                medians[i].append(measure_latency(lambda b=backend, f=feeds: b.run(f), repeats=repeats).median_ms)
        del opened
    rows: dict[tuple[str, str, str], dict[str, float]] = {}
    for i, (route, fmt, precision, tower, _) in enumerate(jobs):
        rows.setdefault((route, fmt, precision), {})[tower] = float(np.median(medians[i]))

    machine = machine_info()
    lines = [f"{machine['cpu']}, {machine['usable_cores']} usable cores, load average {machine['load_average']}; "
             f"batch 1, {threads} threads, median of {ROUNDS} interleaved rounds' medians of {repeats}", "",
             "| route | format | precision | image ms | text ms | issue's run (image / text) |",
             "|---|---|---|---|---|---|"]
    for (route, fmt, precision), ms in rows.items():
        issue = ISSUE_MS.get(("clipedge" if route == "baseline" else route, fmt, precision))
        lines.append(f"| {route} | {fmt} | {precision} | {ms['image']:.1f} | {ms['text']:.1f} | "
                     + (f"{issue[0]:.1f} / {issue[1]:.1f} |" if issue else "|"))
    return "\n".join(lines), _targets(rows, _same_files(Path(bundle), baseline))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="HF CLIP checkpoint directory")
    parser.add_argument("--bundle", type=Path, required=True, help="its clipedge bundle: fp32, dynamic-int8, int8")
    parser.add_argument("--work", type=Path, default=Path("out/speed_graphs"), help="where the torch.onnx route goes")
    parser.add_argument("--baseline", type=Path, default=None, help="an earlier bundle to time in the same run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    table, targets = measure(args.checkpoint, args.bundle, args.work, args.threads, args.repeats, args.baseline)
    print(table + "\n\n| target | measured | goal | holds |\n|---|---|---|---|")
    for name, measured, goal, holds in targets:
        print(f"| {name} | {measured} | {goal} | {'yes' if holds else '**no**'} |")
    return 0 if all(holds for *_, holds in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
