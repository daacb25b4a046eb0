"""What MediaPipe's own preprocessing costs: a bundle's `mobile` models run in MediaPipe Tasks (ImageEmbedder,
ImageClassifier) against clipedge's runtime (same precision, the runtime's CLIP preprocessing) on the shipped photos
and generated demo images, per region-of-interest setting. Needs the `mobile` extra (and TensorFlow for --pixels).

    python tests/scripts/mobile_fidelity.py BUNDLE [--precisions fp32,int8] [--photos N] [--demo N] [--pixels] [--json]

--pixels also measures the pixels MediaPipe feeds the model against clipedge's crop (mean / max |diff| in uint8
steps), through an identity model whose "embedding" is its input: a model-independent view of the same gap.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from clipedge.export.formats.tflite.mediapipe_metadata import ROI_SETTINGS, mediapipe_classify, mediapipe_embed
from clipedge.runtime.clip_runtime import load
from clipedge.runtime.datasets import list_images, shipped_data_dir
from clipedge.runtime.manifest import Manifest
from clipedge.runtime.preprocess import load_image, uint8_pixels
from clipedge.runtime.scoring import l2_normalize


def demo_images(count: int, size: int) -> list:
    from clipedge.export.demo.data import EVAL_STREAM, make_sample

    return [make_sample(seed=0, index=i, stream=EVAL_STREAM, size=size).image for i in range(count)]


def photo_images(count: int | None) -> list:
    files = list_images(shipped_data_dir() / "photos")
    if count is not None:
        files = files[:: max(1, len(files) // count)][:count]
    return [load_image(f) for f in files]


def identity_model(size: int) -> bytes:
    """uint8 [1, size, size, 3] -> float32 [1, size * size * 3]: an 'embedder' that returns what it was fed."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.uint8, name="image")])
    def identity(image):
        return {"pixels": tf.reshape(tf.cast(image, tf.float32), [1, -1])}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([identity.get_concrete_function()])
    return converter.convert()


def measure(bundle: Path, sets: dict[str, list], precisions: list[str] | None, pixels: bool) -> list[dict]:
    manifest = Manifest.read(bundle)
    rows = []
    for artifact in manifest.artifacts:
        if artifact.variant != "mobile" or (precisions and artifact.precision not in precisions):
            continue
        runtime = load(bundle, precision=artifact.precision, format="tflite")
        path = manifest.verified_path(artifact)
        for name, images in sets.items():
            for roi in ROI_SETTINGS:
                row = {"file": artifact.file, "images": name, "count": len(images), "roi": roi}
                if artifact.tower == "image":
                    ours = mediapipe_embed(path, images, roi)
                    cos = np.sum(l2_normalize(ours) * runtime.encode_images(images), axis=-1)
                    row.update(cosine_mean=float(cos.mean()), cosine_min=float(cos.min()))
                else:
                    labels, template = artifact.extra["labels"], artifact.extra["template"]
                    top, _ = mediapipe_classify(path, images, roi)
                    reference = np.array([r.probabilities.argmax() for r in runtime.classify(images, labels,
                                                                                           template)])
                    row.update(top1_agreement=float(np.mean(top == reference)),
                               distinct_top1=int(len(set(reference.tolist()))))
                rows.append(row)
    if pixels:
        size = int(manifest.data["preprocess"]["crop_size"])
        runtime = load(bundle, format="tflite")
        with tempfile.TemporaryDirectory() as tmp:
            model = Path(tmp) / "identity.tflite"
            model.write_bytes(identity_model(size))
            for name, images in sets.items():
                crop = uint8_pixels(runtime.preprocess(images), runtime.preprocess_config.mean,
                                    runtime.preprocess_config.std).reshape(len(images), -1).astype(np.float32)
                for roi in ROI_SETTINGS:
                    diff = np.abs(mediapipe_embed(model, images, roi) - crop)
                    rows.append({"file": "pixels", "images": name, "count": len(images), "roi": roi,
                                 "pixel_mean_abs_diff": float(diff.mean()), "pixel_max_abs_diff": float(diff.max())})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | images | n | ROI | cos mean | cos min | top-1 agreement | pixels mean / max diff |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cos = (f"{r['cosine_mean']:.6f} | {r['cosine_min']:.6f}" if "cosine_mean" in r else " | ")
        top = f"{r['top1_agreement']:.1%} ({r['distinct_top1']} labels)" if "top1_agreement" in r else ""
        pix = (f"{r['pixel_mean_abs_diff']:.2f} / {r['pixel_max_abs_diff']:.0f}" if "pixel_mean_abs_diff" in r
               else "")
        lines.append(f"| {r['file']} | {r['images']} | {r['count']} | {r['roi']} | {cos} | {top} | {pix} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--precisions", help="comma-separated (default: every mobile model in the bundle)")
    parser.add_argument("--photos", type=int, help="how many shipped photos (default: all)")
    parser.add_argument("--demo", type=int, default=24, help="generated demo images (0: none)")
    parser.add_argument("--demo-size", type=int, default=320, help="their side in pixels (resized by both sides)")
    parser.add_argument("--pixels", action="store_true", help="also compare the pixels MediaPipe feeds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sets = {"photos": photo_images(args.photos)}
    if args.demo:
        sets["demo"] = demo_images(args.demo, args.demo_size)
    precisions = args.precisions.split(",") if args.precisions else None
    rows = measure(args.bundle, sets, precisions, args.pixels)
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
