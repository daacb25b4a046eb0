"""Near-duplicate threshold (issue #35): how close does a photo stay to its own edited copies, and how close do two
different photos get? `clipedge index dupes` groups images whose cosine is at least a threshold
(clipedge.runtime.library.dupes.DEFAULT_DUPLICATE_COSINE); this script measures where that threshold can go.

Usage: python tests/scripts/dupes_threshold.py [--bundle DIR] [--photos DIR] [--format onnx] [--precision fp32]
                                               [--limit N] [--json OUT]

For every photo in --photos (default /work/shared/photos, 233 WebP photos) it embeds the photo and edited copies
of it, the edits a photo library really holds twice:
  jpeg-q60      re-encoded as JPEG quality 60 (a messenger or web copy)
  resize-50     halved in each side (Lanczos), a "small" export
  web-copy      halved and JPEG quality 75 together
  crop-90       centre crop keeping 90 % of each side
  exif-rot      pixels stored rotated with an EXIF orientation tag that turns them back (a phone's copy; the runtime
                applies the tag, so this measures that it does)
  bright+20     brightness x 1.2 (ImageEnhance.Brightness)
  watermark     a small semi-transparent text in a corner
  rotate-90     pixels rotated 90 degrees with no tag (an edit, not a copy: CLIP is not rotation invariant, so this
                one is reported but not used to choose the threshold)
and prints, per edit, the min / p5 / median cosine to its original; for the distinct pairs (every two different
originals), max / p99.9 / p99 / median; and the threshold halfway between the lowest copy and the highest distinct
pair when one separates them.

Caveat: the default bundle is the shipped demo CLIP (`clipedge export --out /tmp/dupes-bundle --precisions fp32
--formats onnx`), a tiny model trained on synthetic shapes, not a real CLIP: its numbers say how the script works
and how that model behaves, not how ViT-B/32 does. Rerun it with your own bundle (`--bundle`) before trusting a
threshold for your photos. Not a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

_ORIENTATION = 0x0112


def _jpeg(image: Image.Image, quality: int, exif: bytes | None = None) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return Image.open(io.BytesIO(buffer.getvalue()))


def _half(image: Image.Image) -> Image.Image:
    return image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.LANCZOS)


def _crop90(image: Image.Image) -> Image.Image:
    w, h = image.size
    cw, ch = round(w * 0.9), round(h * 0.9)
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def _exif_rotated(image: Image.Image) -> Image.Image:
    """Pixels stored turned 90 degrees counter-clockwise, tagged orientation 6 ("rotate 90 clockwise to show"), as
    a phone held sideways writes them; an upright reader shows the original."""
    exif = Image.Exif()
    exif[_ORIENTATION] = 6
    return _jpeg(image.transpose(Image.Transpose.ROTATE_90), 95, exif.tobytes())


def _watermark(image: Image.Image) -> Image.Image:
    out = image.convert("RGBA")
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    size = max(8, out.height // 20)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    text = "(c) 2024 J. Doe"
    draw = ImageDraw.Draw(layer)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x, y = out.width - (right - left) - size // 2, out.height - (bottom - top) - size // 2
    draw.text((x, y), text, font=font, fill=(255, 255, 255, 160))
    return Image.alpha_composite(out, layer).convert("RGB")


EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg-q60": lambda im: _jpeg(im, 60),
    "resize-50": _half,
    "web-copy": lambda im: _jpeg(_half(im), 75),
    "crop-90": _crop90,
    "exif-rot": _exif_rotated,
    "bright+20": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
    "watermark": _watermark,
    "rotate-90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
}
NOT_A_COPY = {"rotate-90"}  # reported, not used to pick the threshold
THRESHOLDS = (0.9, 0.95, 0.97, 0.98, 0.99)  # candidate thresholds: share of copies found, of distinct pairs grouped


def _photos(folder: Path, limit: int | None) -> list[Path]:
    from clipedge.runtime.datasets import list_images

    files = list_images(folder)
    return files[:limit] if limit else files


def _same_source(photos: list[Path]) -> set[tuple[int, int]]:
    """Pairs of photos that are one picture twice (the same `source` in the folder's CREDITS.tsv, as the shipped set
    holds the Colosseum at 320 and 1024 px): real duplicates, so not counted as distinct pairs."""
    credits = photos[0].parent / "CREDITS.tsv"
    if not credits.is_file():
        return set()
    rows = [line.split("\t") for line in credits.read_text(encoding="utf-8").splitlines()[1:]]
    source = {row[0]: row[-1] for row in rows if len(row) >= 2}
    keys = [source.get(p.name) for p in photos]
    return {(i, j) for i in range(len(photos)) for j in range(i + 1, len(photos)) if keys[i] and keys[i] == keys[j]}


def _stats(values: np.ndarray, quantiles: list[tuple[str, float]]) -> dict[str, float]:
    return {name: float(np.quantile(values, q)) for name, q in quantiles}


def measure(bundle: str, photos: list[Path], fmt: str | None, precision: str | None) -> dict:
    from clipedge.runtime import load
    from clipedge.runtime.preprocess import load_image

    rt = load(bundle, format=fmt, precision=precision)
    originals = [load_image(p) for p in photos]
    base = rt.encode_images(originals)
    edits: dict[str, dict[str, float]] = {}
    copies: dict[str, np.ndarray] = {}
    for name, edit in EDITS.items():
        emb = rt.encode_images([edit(im) for im in originals])
        cos = np.sum(emb * base, axis=1)
        edits[name] = _stats(cos, [("min", 0.0), ("p5", 0.05), ("median", 0.5)])
        edits[name]["worst"] = photos[int(np.argmin(cos))].name
        copies[name] = cos
    sims = base @ base.T
    rows, cols = np.triu_indices(len(photos), k=1)
    twins = _same_source(photos)
    keep = np.array([(int(i), int(j)) not in twins for i, j in zip(rows, cols, strict=True)], dtype=bool)
    same = [(photos[i].name, photos[j].name, float(sims[i, j])) for i, j in sorted(twins)]
    rows, cols = rows[keep], cols[keep]
    upper = sims[rows, cols]
    distinct = _stats(upper, [("max", 1.0), ("p99.9", 0.999), ("p99", 0.99), ("median", 0.5)])
    top = np.argsort(upper)[::-1][:5]
    closest = [(photos[rows[i]].name, photos[cols[i]].name, float(upper[i])) for i in top]
    rates = {str(t): {**{k: float(np.mean(v >= t)) for k, v in copies.items()}, "distinct": float(np.mean(upper >= t))}
             for t in THRESHOLDS}
    return {"bundle": bundle, "model": rt.manifest.data.get("model", {}).get("name"),
            "photos": len(photos), "pairs": int(upper.size), "edits": edits, "distinct": distinct,
            "closest_distinct": closest, "same_source": same, "rates": rates}


def verdict(result: dict) -> dict:
    """The threshold halfway between the lowest copy (edits that are copies) and the highest distinct pair, or None
    when the two overlap (the model cannot separate them at any threshold)."""
    copies = min(v["min"] for k, v in result["edits"].items() if k not in NOT_A_COPY)
    distinct = result["distinct"]["max"]
    return {"lowest_copy": copies, "highest_distinct": distinct,
            "threshold": (copies + distinct) / 2 if copies > distinct else None}


def report(result: dict, decision: dict) -> str:
    lines = [f"bundle {result['bundle']} (model {result['model']}): {result['photos']} photos, "
             f"{result['pairs']} distinct pairs", "",
             f"{'edit':<12} {'min':>7} {'p5':>7} {'median':>7}  worst photo"]
    for name, s in result["edits"].items():
        note = "  (not a copy: not used)" if name in NOT_A_COPY else ""
        lines.append(f"{name:<12} {s['min']:7.4f} {s['p5']:7.4f} {s['median']:7.4f}  {s['worst']}{note}")
    d = result["distinct"]
    lines += ["", f"{'distinct':<12} max {d['max']:.4f}  p99.9 {d['p99.9']:.4f}  p99 {d['p99']:.4f}  "
              f"median {d['median']:.4f}", "closest distinct pairs:"]
    lines += [f"  {a}  {b}  {c:.4f}" for a, b, c in result["closest_distinct"]]
    lines += ["same picture twice (CREDITS.tsv source; left out of the distinct pairs):"]
    lines += [f"  {a}  {b}  {c:.4f}" for a, b, c in result["same_source"]] or ["  none"]
    names = list(result["edits"]) + ["distinct"]
    lines += ["", "share at or above each threshold (copies: found; distinct: wrongly grouped)",
              f"{'cosine':<7}" + "".join(f"{n:>11}" for n in names)]
    for t, share in result["rates"].items():
        lines.append(f"{t:<7}" + "".join(f"{100 * share[n]:10.1f}%" for n in names))
    lines.append("")
    if decision["threshold"] is None:
        lines.append(f"NOT separable: lowest copy {decision['lowest_copy']:.4f} <= highest distinct pair "
                     f"{decision['highest_distinct']:.4f}")
    else:
        lines.append(f"separable: lowest copy {decision['lowest_copy']:.4f} > highest distinct pair "
                     f"{decision['highest_distinct']:.4f}; midpoint threshold {decision['threshold']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="/tmp/dupes-bundle")
    parser.add_argument("--photos", default="/work/shared/photos")
    parser.add_argument("--format", default=None)
    parser.add_argument("--precision", default=None)
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos (a quick look)")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    photos = _photos(Path(args.photos), args.limit)
    if len(photos) < 2:
        print(f"need at least 2 photos in {args.photos}", file=sys.stderr)
        return 2
    result = measure(args.bundle, photos, args.format, args.precision)
    decision = verdict(result)
    print(report(result, decision))
    if args.json:
        Path(args.json).write_text(json.dumps({**result, **decision}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
