"""Zero-shot top-1 of every (format, precision) of a demo bundle, beside the TF float model's, printed as tables: the
numbers the demo's docs and closing notes quote.

Usage: python tests/scripts/demo_accuracy.py BUNDLE [--images 1000] [--seed 0] [--eval-dir DIR]

Default images: `demo_data.HELD_OUT_STREAM` (never used for training, calibration or the shipped eval set), classes
balanced. `--eval-dir DIR` scores a labelled folder instead (`DIR/<colour>_<shape>/*.jpg`), e.g. the second
renderer's `calibration_data/drawn`. A second table splits top-1 by shape size (fraction of the image width), fill
and background: what each generated image shows, or a folder's `sizes.tsv` (file, size, filled, background).
Prompts are `clipedge classify`'s "a photo of a {}." over the 40 labels. Each runtime model pair (image + text
tower of one format and precision) scores the same images; "agrees" is top-1 agreement with the TF float model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _groups(info: list[tuple[float, bool, str]]) -> dict[str, np.ndarray]:
    """Boolean masks over the images for each size bucket, fill and background, from (size, filled, background)."""
    from clipedge.export.demo.evaluate import size_bucket_masks

    groups = {f"size {name}": mask for name, mask in size_bucket_masks(np.array([i[0] for i in info])).items()}
    filled = np.array([i[1] for i in info])
    groups.update({"filled": filled, "outlined": ~filled})
    for background in sorted({i[2] for i in info}):
        groups[f"background {background}"] = np.array([i[2] == background for i in info])
    return groups


def main() -> int:
    from clipedge.calibration_data.make_drawn_eval import read_sizes
    from clipedge.export import CLIPModel
    from clipedge.export.demo.data import class_prompts, read_eval_set
    from clipedge.export.demo.evaluate import held_out_sample_list, predict_classes
    from clipedge.runtime import load
    from clipedge.runtime.manifest import Manifest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-dir", type=Path, help="a labelled folder instead of generated images")
    args = parser.parse_args()
    manifest = Manifest.read(args.bundle)
    groups: dict[str, np.ndarray] = {}
    if args.eval_dir is None:
        samples = held_out_sample_list(args.images, args.seed)
        images, labels = [s.image for s in samples], [s.class_index for s in samples]
        title = f"{len(images)} held-out generated images (stream 2, seed {args.seed}), 40 classes"
        groups = _groups([(2 * s.radius, s.filled, s.background) for s in samples])
    else:
        images, labels = read_eval_set(args.eval_dir)
        title = f"{len(images)} images of {args.eval_dir}, 40 classes"
        if (args.eval_dir / "sizes.tsv").is_file():
            rows = read_sizes(args.eval_dir)
            groups = _groups([rows[f.relative_to(args.eval_dir).as_posix()] for f in images])
    labels = np.asarray(labels)
    prompts = class_prompts()

    model = CLIPModel.from_pretrained(Path(manifest.data["model"]["source"]))
    reference = predict_classes(model, images)
    results = [("TF float32 (reference)", reference)]
    pairs = sorted({(a.format, a.precision) for a in manifest.artifacts
                    if a.variant == "default" and a.tower in ("image", "text")})
    for fmt, precision in pairs:
        runtime = load(args.bundle, precision=precision, format=fmt)
        results.append((f"{fmt} {precision}",
                        np.argmax(runtime.encode_images(images) @ runtime.encode_texts(prompts).T, axis=1)))
    print(f"{title}\n")
    print("| model | top-1 | agrees with TF float |\n|---|---|---|")
    for name, predicted in results:
        print(f"| {name} | {100 * np.mean(predicted == labels):.1f}% | {100 * np.mean(predicted == reference):.1f}% |")
    if groups:
        print("\n| model | " + " | ".join(f"{g} (n={m.sum()})" for g, m in groups.items()) + " |")
        print("|---" * (len(groups) + 1) + "|")
        for name, predicted in results:
            right = predicted == labels
            print(f"| {name} | " + " | ".join(f"{100 * right[m].mean():.1f}%" for m in groups.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
