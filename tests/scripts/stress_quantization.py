"""What each precision costs on a checkpoint with trained-like outlier channels, with and without equalisation, in
min cosine to transformers on the held-out photos and captions; and the latency of the quantized files side by side.

Usage: python tests/scripts/stress_quantization.py OUT [--size vit-b-32|small] [--precisions ...]
       [--baseline-precisions ...] [--runs ...] [--strength 40] [--repeats 30] [--threads 2]

Builds, under OUT: `plain/` (HF's own random init at the size asked for, saved by transformers) and `stress/` (the
same weights with outliers added by exact reparametrisations, tests/stress_checkpoints.py), then exports each run:
`stress`, `stress-no-eq` (--no-equalize), `plain`, `plain-no-eq`. Prints one table of min cosines (rows: files;
columns: runs) and, for dynamic-int8 and int8, the median latency of each file with and without equalisation, timed
alternately in one process (batch 1). Not a timed test: on a shared machine only the ratios of one run compare.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

SIZES = {  # (text config, vision config, projection_dim)
    "vit-b-32": (dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
                 dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      image_size=224, patch_size=32), 512),
    "small": (dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4),
              dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                   image_size=224, patch_size=32), 128),
}
RUNS = ("stress", "stress-no-eq", "plain", "plain-no-eq")


def build_checkpoints(out: Path, size: str, strength: float):
    import torch
    from transformers import CLIPConfig, CLIPModel

    from tests.stress_checkpoints import Stress, make_stressed_clip

    text, vision, projection_dim = SIZES[size]
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)).eval()
    if not (out / "plain" / "config.json").is_file():
        model.save_pretrained(out / "plain")
        make_stressed_clip(out / "stress", model, Stress(strength=strength))
    return {"plain": CLIPModel.from_pretrained(out / "plain").eval(),
            "stress": CLIPModel.from_pretrained(out / "stress").eval()}


def export_run(out: Path, run: str, precisions: list[str]) -> Path:
    from clipedge.export.pipeline.export_bundle import export_bundle

    bundle = out / f"bundle-{run}"
    if not (bundle / "manifest.json").is_file():
        start = time.time()
        result = export_bundle(bundle, checkpoint=out / run.split("-")[0], precisions=precisions, gpu=False,
                               equalize=not run.endswith("-no-eq"), progress=False)
        print(f"\n{run}: exported in {time.time() - start:.0f} s\n{result.table()}", flush=True)
    return bundle


def latencies(bundles: dict[str, Path], threads: int, repeats: int) -> list[str]:
    """Median ms per file, the runs' files of one name timed alternately (batch 1)."""
    from clipedge.runtime.manifest import Manifest
    from clipedge.runtime.runner import ArtifactRunner

    rows = []
    manifests = {run: Manifest.read(b) for run, b in bundles.items()}
    first = next(iter(manifests.values()))
    for artifact in first.artifacts:
        if artifact.precision not in ("dynamic-int8", "int8"):
            continue
        runners = {run: ArtifactRunner.open(m, m.find(artifact.tower, artifact.format, artifact.precision),
                                            threads=threads) for run, m in manifests.items()}
        feed = (np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32) if artifact.tower == "image"
                else np.array([[49406, 320, 1125, 539, 320, 1929, 49407] + [0] * 70], np.int32))
        times: dict[str, list[float]] = {run: [] for run in runners}
        for _ in range(repeats):
            for run, runner in runners.items():
                start = time.perf_counter()
                runner.run(feed)
                times[run].append((time.perf_counter() - start) * 1e3)
        medians = {run: float(np.median(t[2:])) for run, t in times.items()}
        runs = list(medians)
        rows.append(f"{artifact.file:<28} " + " ".join(f"{medians[r]:>10.2f}" for r in runs)
                    + f" {medians[runs[0]] / medians[runs[1]]:>7.3f}")
    return [f"{'file':<28} " + " ".join(f"{r:>10}" for r in bundles) + "   ratio", *rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", choices=sorted(SIZES), default="vit-b-32")
    parser.add_argument("--precisions", default="fp32,dynamic-int8,int8,int16x8,int4")
    parser.add_argument("--baseline-precisions", default="fp32,dynamic-int8,int8",
                        help="precisions of the -no-eq runs (the latency check needs dynamic-int8 and int8)")
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--strength", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    models = build_checkpoints(args.out, args.size, args.strength)
    runs = args.runs.split(",")
    bundles = {run: export_run(args.out, run, (args.baseline_precisions if run.endswith("-no-eq")
                                                else args.precisions).split(",")) for run in runs}
    from tests.transformers_reference import measured

    table = {run: measured(bundle, models[run.split("-")[0]])[1] for run, bundle in bundles.items()}
    files = sorted({f for t in table.values() for f in t})
    print(f"\nmin cosine to transformers, {args.size}, outlier strength {args.strength}")
    print(f"{'file':<28} " + " ".join(f"{r:>13}" for r in runs))
    for name in files:
        print(f"{name:<28} " + " ".join(f"{table[r].get(name, float('nan')):>13.4f}" for r in runs))
    pairs = [(r, f"{r}-no-eq") for r in ("stress", "plain") if r in bundles and f"{r}-no-eq" in bundles]
    import platform

    for run, baseline in pairs:
        print(f"\nlatency, {run} equalised vs not, batch 1, {args.threads} threads, median of {args.repeats} "
              f"({platform.processor() or platform.machine()}):")
        print("\n".join(latencies({run: bundles[run], baseline: bundles[baseline]}, args.threads, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
