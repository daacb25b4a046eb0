"""x86 side of the arm64 check: export small TFLite bundles and write the x86 runtime's outputs as golden .npy files.

Runs on the host in the CI venv (export + test extras). Writes into OUT:
  inputs/            the images and texts both sides use (shipped photos, plus a generated EXIF-rotated JPEG and an
                     RGBA PNG so the JPEG/PNG decoders and EXIF handling are covered too)
  bundles/NAME/      exported bundles: `small` (a random-init HF CLIP, tests/conftest.make_hf_clip) and `demo` (the
                     shipped demo checkpoint, when export/demo/demo_checkpoint/config.json exists)
  golden/*.npy       tokenizer ids, preprocessed pixels, image/text embeddings, classify probabilities
  golden.json        what is where: bundles, precisions, file names, labels, the x86 top-1 per image
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[2]

# Plain captions come from the shipped calibration captions; these exercise ftfy, regex's Unicode classes, HTML
# unescaping, special-token strings and truncation, i.e. the parts of tokenization that could differ on another
# platform's wheels.
TRICKY_TEXTS = [
    "Fish &amp; chips at the caf\u00e9 &lt;3",
    "\ufb01ne \ufb02owers \u2014 \uff26\uff35\uff2c\uff2c\uff37\uff29\uff24\uff34\uff28 text",
    "na\u00efve r\u00e9sum\u00e9, \u00fcber stra\u00dfe, \u0441\u043e\u0431\u0430\u043a\u0430, \u72d7, \u3044\u306c",
    "emoji \U0001f436\U0001f431\U0001f1e9\U0001f1ea and  tabs\tand\nnewlines",
    "<|startoftext|>literal special tokens<|endoftext|> in the text",
    "mojibake: caf\u00c3\u00a9 and \u00e2\u20ac\u0153quotes\u00e2\u20ac\u009d",
    " ".join(["a very long caption that must be truncated"] * 20),
    "",
]
LABELS = ["dog", "cat", "car", "building", "fish", "flower", "tool", "person"]
TEMPLATE = "a photo of a {}."


def pick_photos(n: int = 4) -> list[Path]:
    photos = sorted((REPO / "calibration_data" / "photos").glob("*.webp"))
    if len(photos) < n:
        raise SystemExit(f"need {n} shipped photos in calibration_data/photos, found {len(photos)}")
    step = len(photos) / n
    return [photos[int(i * step)] for i in range(n)]


def synthetic_images(directory: Path, source: Path) -> list[Path]:
    """A JPEG with EXIF orientation 6 (rotated 90 degrees) and an RGBA PNG, made from a shipped photo."""
    from PIL import Image

    base = Image.open(source).convert("RGB")
    jpeg = directory / "exif_rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    base.transpose(Image.Transpose.ROTATE_90).save(jpeg, quality=90, exif=exif.tobytes())
    png = directory / "rgba.png"
    rgba = base.resize((base.width // 2, base.height // 2)).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, rgba.width, dtype=np.uint8), (rgba.height, 1))
    rgba.putalpha(Image.fromarray(alpha))
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    png.write_bytes(buffer.getvalue())
    return [jpeg, png]


def export(out: Path, checkpoint: Path | None, precisions: list[str]) -> float:
    from clipedge.export.pipeline.export_bundle import export_bundle

    start = time.perf_counter()
    export_bundle(out, checkpoint=checkpoint, formats=("tflite",), precisions=tuple(precisions), samples=16,
                  progress=False, force=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    out: Path = args.out
    (out / "inputs").mkdir(parents=True, exist_ok=True)
    (out / "golden").mkdir(exist_ok=True)
    (out / "bundles").mkdir(exist_ok=True)

    import shutil

    from clipedge.runtime.precisions import available

    sys.path.insert(0, str(REPO))
    from tests.conftest import make_hf_clip

    photos = []
    for photo in pick_photos():
        target = out / "inputs" / photo.name
        shutil.copyfile(photo, target)
        photos.append(target)
    photos += synthetic_images(out / "inputs", photos[0])
    captions_file = REPO / "calibration_data" / "captions.txt"
    captions = [line.strip() for line in captions_file.read_text(encoding="utf-8").splitlines() if line.strip()][:6]
    texts = captions + TRICKY_TEXTS

    precisions = ["fp32", "dynamic-int8"] + (["int8"] if "int8" in available("tflite") else [])
    bundles: dict[str, dict] = {}
    small_ckpt = out / "checkpoints" / "small"
    small_ckpt.mkdir(parents=True, exist_ok=True)
    make_hf_clip(small_ckpt, seed=0)
    seconds = export(out / "bundles" / "small", small_ckpt, precisions)
    bundles["small"] = {"export_seconds": round(seconds, 1)}
    print(f"exported small bundle ({', '.join(precisions)}) in {seconds:.1f}s", flush=True)
    demo = REPO / "export" / "demo" / "demo_checkpoint"
    if (demo / "config.json").is_file():
        seconds = export(out / "bundles" / "demo", demo, precisions)
        bundles["demo"] = {"export_seconds": round(seconds, 1)}
        print(f"exported demo bundle ({', '.join(precisions)}) in {seconds:.1f}s", flush=True)
    else:
        print("no export/demo/demo_checkpoint/config.json: checking the small bundle only", flush=True)

    from clipedge.runtime.clip_runtime import load
    from clipedge.runtime.preprocess import PreprocessConfig, preprocess
    from clipedge.runtime.tokenizer import Tokenizer

    golden = out / "golden"

    def save(name: str, array: np.ndarray) -> str:
        np.save(golden / f"{name}.npy", array)
        return f"{name}.npy"

    files: dict[str, str] = {
        "tokenizer_default_ids": save("tokenizer_default_ids", Tokenizer.default()(texts)),
        "pixels_224_nhwc": save("pixels_224_nhwc", preprocess([str(p) for p in photos], PreprocessConfig())),
        "pixels_224_nchw": save("pixels_224_nchw", preprocess([str(p) for p in photos], PreprocessConfig(),
                                                              layout="NCHW")),
    }
    for name, entry in bundles.items():
        entry["path"] = f"bundles/{name}"
        entry["precisions"] = {}
        for precision in precisions:
            runtime = load(out / "bundles" / name, precision=precision, format="tflite")
            prefix = f"{name}_{precision}"
            probs = np.stack([c.probabilities for c in runtime.classify([str(p) for p in photos], LABELS, TEMPLATE)])
            entry["precisions"][precision] = {
                "ids": save(f"{prefix}_ids", runtime.tokenize(texts)),
                "pixels": save(f"{prefix}_pixels", runtime.preprocess([str(p) for p in photos])),
                "image_embeddings": save(f"{prefix}_image", runtime.encode_images([str(p) for p in photos])),
                "text_embeddings": save(f"{prefix}_text", runtime.encode_texts(texts)),
                "probabilities": save(f"{prefix}_probs", probs.astype(np.float32)),
                "top1": [LABELS[int(i)] for i in probs.argmax(axis=1)],
            }
    meta = {
        "created_on": {"machine": os.uname().machine, "python": sys.version.split()[0],
                       "numpy": np.__version__, "pillow": __import__("PIL").__version__,
                       "ai_edge_litert": _version("ai-edge-litert")},
        "photos": [p.name for p in photos],
        "texts": texts,
        "labels": LABELS,
        "template": TEMPLATE,
        "precisions": precisions,
        "bundles": bundles,
        "files": files,
    }
    (out / "golden.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"golden outputs for {', '.join(bundles)} written to {out}", flush=True)
    return 0


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
