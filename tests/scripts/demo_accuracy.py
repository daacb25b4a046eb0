"""Zero-shot top-1 of every (format, precision) of a demo bundle on held-out generated images, beside the TF float
model's, printed as a table: the numbers the demo's closing note and README quote.

Usage: python tests/scripts/demo_accuracy.py BUNDLE [--images 1000] [--seed 0]

Images come from `demo_data.HELD_OUT_STREAM` (never used for training, calibration or the shipped eval set), classes
balanced; prompts are `clipedge classify`'s "a photo of a {}." over the 40 labels. Each runtime model pair (image +
text tower of one format and precision) scores the same images; "agrees" is top-1 agreement with the TF float model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> int:
    from clipedge.export import CLIPModel
    from clipedge.export.demo_data import class_prompts
    from clipedge.export.demo_train import held_out_samples, predict_classes
    from clipedge.runtime import load
    from clipedge.runtime.manifest import Manifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    manifest = Manifest.read(args.bundle)
    images, labels = held_out_samples(args.images, args.seed)
    labels = np.asarray(labels)
    prompts = class_prompts()

    model = CLIPModel.from_pretrained(Path(manifest.data["model"]["source"]))
    reference = predict_classes(model, images)
    rows = [("TF float32 (reference)", float(np.mean(reference == labels)), 1.0)]
    pairs = sorted({(a.format, a.precision) for a in manifest.artifacts
                    if a.variant == "default" and a.tower in ("image", "text")})
    for fmt, precision in pairs:
        runtime = load(args.bundle, precision=precision, format=fmt)
        predicted = np.argmax(runtime.encode_images(images) @ runtime.encode_texts(prompts).T, axis=1)
        rows.append((f"{fmt} {precision}", float(np.mean(predicted == labels)), float(np.mean(predicted == reference))))
    print(f"{len(images)} held-out generated images (stream 2, seed {args.seed}), 40 classes\n")
    print("| model | top-1 | agrees with TF float |\n|---|---|---|")
    for name, top1, agree in rows:
        print(f"| {name} | {100 * top1:.1f}% | {100 * agree:.1f}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
