"""Speed targets: every model of a bundle against HF transformers PyTorch fp32 (eager), measured side by side.

Usage: python tests/scripts/bench_vs_torch.py BUNDLE [--checkpoint DIR] [--threads 2] [--repeats 20] [--json]

Batch 1, the same thread count for LiteRT, ONNX Runtime and `torch.set_num_threads`. PyTorch is timed before and after
the bundle's models (the machine's load drifts during a run); each ratio divides a model's median by the mean of the
two PyTorch medians of its tower (classifiers: the image tower). Ratio < 1 is faster than PyTorch.

PyTorch runs the checkpoint given, else the manifest's model source when it is a local HF directory, else the
manifest's architecture with random weights (speed does not depend on the weights).

The issue's reference, measured earlier on the project's 2-core machine (ViT-B/32, batch 1, 2 threads): PyTorch fp32
eager image 89 ms, text 59 ms. Not a timed test: on a shared machine only the ratios of one run compare.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REFERENCE_MS = {"image": 89.0, "text": 59.0}  # the PyTorch fp32 eager ViT-B/32 numbers (2 cores, 2 threads)


def torch_model(manifest, checkpoint: str | None):
    from transformers import CLIPConfig, CLIPModel

    source = checkpoint or str(manifest.data.get("model", {}).get("source", ""))
    if source and (Path(source) / "config.json").is_file():
        return CLIPModel.from_pretrained(source).eval(), source
    config = CLIPConfig.from_dict(manifest.data["model"]["config"])
    return CLIPModel(config).eval(), "random weights, the manifest's architecture"


def time_torch(model, manifest, threads: int, repeats: int) -> dict[str, float]:
    import torch

    from clipedge.runtime.bench import measure_latency

    torch.set_num_threads(threads)
    size = int(manifest.data["preprocess"].get("crop_size", 224))
    pixels = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32))
    ids = torch.zeros((1, 77), dtype=torch.long)
    ids[0, :14] = torch.tensor([49406, *range(1000, 1012), 49407])
    with torch.inference_mode():
        return {"image": measure_latency(lambda: model.get_image_features(pixel_values=pixels), repeats).median_ms,
                "text": measure_latency(lambda: model.get_text_features(input_ids=ids), repeats).median_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--checkpoint", help="HF checkpoint directory for PyTorch (default: see the module docstring)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from clipedge.runtime.bench import bench, machine_info
    from clipedge.runtime.manifest import Manifest

    manifest = Manifest.read(args.bundle)
    model, source = torch_model(manifest, args.checkpoint)
    before = time_torch(model, manifest, args.threads, args.repeats)
    rows = []
    for artifact in manifest.artifacts:
        row = bench(args.bundle, tower=artifact.tower, fmt=artifact.format, precision=artifact.precision,
                    variant=artifact.variant, batches=[1], threads=[args.threads], repeats=args.repeats)[0]
        rows.append(row)
        print(f"  {artifact.file}: {row.latency.median_ms:.2f} ms", file=sys.stderr, flush=True)
    after = time_torch(model, manifest, args.threads, args.repeats)
    torch_ms = {tower: (before[tower] + after[tower]) / 2 for tower in before}

    results = [{"file": r.file, "tower": r.tower, "format": r.format, "precision": r.precision, "variant": r.variant,
                "backend": r.backend, "median_ms": r.latency.median_ms, "p90_ms": r.latency.p90_ms,
                "ratio_to_torch": r.latency.median_ms / torch_ms["text" if r.tower == "text" else "image"]}
               for r in rows]
    machine = machine_info(extra_libraries=("torch", "transformers"))
    if args.json:
        print(json.dumps({"machine": machine, "threads": args.threads, "torch_source": source,
                          "torch_ms": {"before": before, "after": after}, "models": results}, indent=1))
        return 0
    print(f"{machine['cpu']}, {machine['usable_cores']} usable cores, load average {machine['load_average']}; "
          f"batch 1, {args.threads} threads, median of {args.repeats}")
    print(f"PyTorch fp32 eager ({source}): image {before['image']:.1f} -> {after['image']:.1f} ms, "
          f"text {before['text']:.1f} -> {after['text']:.1f} ms (before -> after the models); the issue's "
          f"reference on its 2-core machine: image {REFERENCE_MS['image']:.0f} ms, text {REFERENCE_MS['text']:.0f} ms")
    header = f"{'model':<34} {'backend':<16} {'median ms':>10} {'p90 ms':>9} {'x torch':>8}"
    print(header + "\n" + "-" * len(header))
    for r in sorted(results, key=lambda r: (r["tower"], r["median_ms"])):
        print(f"{r['file']:<34} {r['backend']:<16} {r['median_ms']:>10.2f} {r['p90_ms']:>9.2f} "
              f"{r['ratio_to_torch']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
