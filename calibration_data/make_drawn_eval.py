"""Write `calibration_data/drawn/`: the demo CLIP's second evaluation set, drawn by a renderer that training never uses.

The training generator (`clipedge.export.demo.data`) draws with Pillow: supersampled, box-filtered masks, its own
star depth and cross width, its own colour shades, linear gradients, blotchy noise. This renderer differs in every
one of those, so that the accuracy it measures is the accuracy on someone else's drawings:

- OpenCV rasterization (`cv2.fillPoly`, `cv2.polylines`, `cv2.ellipse`), aliased (`LINE_8`) or OpenCV's own
  anti-aliasing (`LINE_AA`), at the image's own size (128-224 px, so the runtime resizes it);
- strokes centred on the outline (`cv2.polylines`' thickness), round or square joins by OpenCV's rules;
- proportions of its own: a regular pentagram-based star (inner radius 0.382) or a fat one (0.5), a cross built from
  two overlapping rectangles with arms 0.45-0.6 of the span wide, an equilateral triangle;
- MS Paint's palette for the colour names (red 237,28,36; green 34,177,76; ...), jittered by +-8;
- backgrounds: white paper, a plain colour, a radial gradient, per-pixel uniform noise smoothed by a Gaussian, or a
  crop of every fourth shipped photo (sorted by name: the ones a training generator should leave out);
- OpenCV's Gaussian blur on some, and an OpenCV JPEG encode at quality 50-90 (the file is those bytes).

Shape size is the diameter of the circle through the shape's outermost points as a fraction of the image width,
uniform in 10%..80%, anywhere in the frame (always whole), any rotation, filled or outlined (half each). The size of
each file is recorded in `drawn/sizes.tsv` (file, size, filled, background) for the per-size accuracy table.

    python calibration_data/make_drawn_eval.py --out calibration_data/drawn --per-class 10 --seed 0

Needs opencv-python (installed with the `mobile` extra through mediapipe) and clipedge; the runtime and the tests
only read the files. The output is deterministic for a given OpenCV build; the shipped files are the reference.
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

import numpy as np

PALETTE = {  # MS Paint's basic colours for each name
    "red": (237, 28, 36),
    "green": (34, 177, 76),
    "blue": (63, 72, 204),
    "yellow": (255, 242, 0),
    "orange": (255, 127, 39),
    "purple": (163, 73, 164),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
BACKGROUNDS = ("paper", "solid", "radial", "noise", "photo")
SIZE_RANGE = (0.10, 0.80)
MIN_CONTRAST = 150.0
SHIFT = 4  # OpenCV's fractional bits for vertex coordinates (sub-pixel positions)
# Photo backgrounds: every fourth shipped photo (sorted by name), the ones a training generator must leave out.
HELD_OUT_PHOTO_EVERY = 4


def _contrast(rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    while True:
        colour = rng.integers(0, 256, 3).astype(np.float32)
        if np.linalg.norm(colour - avoid) >= MIN_CONTRAST:
            return colour


def _photo_crop(rng: np.random.Generator, size: int) -> np.ndarray:
    import cv2

    from clipedge.runtime.datasets import list_images

    files = list_images(Path(__file__).resolve().parent / "photos")[::HELD_OUT_PHOTO_EVERY]
    photo = cv2.imread(str(files[int(rng.integers(len(files)))]), cv2.IMREAD_COLOR)[:, :, ::-1]
    side = int(rng.integers(min(photo.shape[:2]) // 2, min(photo.shape[:2]) + 1))
    top = int(rng.integers(0, photo.shape[0] - side + 1))
    left = int(rng.integers(0, photo.shape[1] - side + 1))
    crop = photo[top : top + side, left : left + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def _background(kind: str, rng: np.random.Generator, size: int, shape_rgb: np.ndarray) -> np.ndarray:
    import cv2

    if kind == "photo":
        return _photo_crop(rng, size)
    if kind == "paper":
        paper = np.array([255.0, 255.0, 255.0]) if np.linalg.norm(shape_rgb - 255) >= MIN_CONTRAST else \
            np.array([30.0, 30.0, 30.0])
        return np.broadcast_to(paper, (size, size, 3)).astype(np.float32).copy()
    a = _contrast(rng, shape_rgb)
    if kind == "solid":
        return np.broadcast_to(a, (size, size, 3)).copy()
    if kind == "radial":
        b = _contrast(rng, shape_rgb)
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        cx, cy = rng.uniform(0, size, 2)
        t = np.clip(np.hypot(x - cx, y - cy) / (size * rng.uniform(0.5, 1.2)), 0, 1)[..., None]
        return a * (1 - t) + b * t
    noise = rng.uniform(-60, 60, (size, size, 3)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), float(rng.uniform(0.6, 3.0)))
    return np.clip(a + noise, 0, 255)


def _outline(shape: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Polygons (unit circumradius, unrotated) whose union is the shape."""
    if shape == "square":
        return [np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) / math.sqrt(2)]
    if shape == "triangle":
        return [np.array([[0, -1], [math.sqrt(3) / 2, 0.5], [-math.sqrt(3) / 2, 0.5]])]
    if shape == "star":
        inner = 0.382 if rng.random() < 0.5 else 0.5
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        return [np.stack([r * np.cos(t), r * np.sin(t)], axis=1)]
    if shape == "cross":
        w = rng.uniform(0.45, 0.6) / 2  # half the arm width, as a fraction of the span
        s = 1 / math.hypot(1, w)
        vertical = np.array([[-w, -1], [w, -1], [w, 1], [-w, 1]]) * s
        return [vertical, vertical[:, ::-1].copy()]
    raise ValueError(shape)


def _draw(canvas: np.ndarray, shape: str, rng: np.random.Generator, rgb: tuple[int, ...], cx: float, cy: float,
          r: float, angle: float, stroke: int | None, line: int) -> None:
    import cv2

    colour = tuple(int(c) for c in rgb)
    scale = 1 << SHIFT
    if shape == "circle":
        center = (round(cx * scale), round(cy * scale))
        axes = (round(r * scale), round(r * scale))
        cv2.ellipse(canvas, center, axes, 0, 0, 360, colour, -1 if stroke is None else stroke, line, SHIFT)
        return
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    polygons = [np.round((p @ rotation.T * r + (cx, cy)) * scale).astype(np.int32) for p in _outline(shape, rng)]
    if stroke is None:
        for polygon in polygons:
            cv2.fillPoly(canvas, [polygon], colour, line, SHIFT)
    elif shape == "cross":  # the outline of the union, not of both bars: draw it on a mask and trace its contour
        mask = np.zeros(canvas.shape[:2], np.uint8)
        for polygon in polygons:
            cv2.fillPoly(mask, [polygon], 255, cv2.LINE_8, SHIFT)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.polylines(canvas, contours, True, colour, stroke, line)
    else:
        cv2.polylines(canvas, polygons, True, colour, stroke, line, SHIFT)


def draw(seed: int, index: int, colour: str, shape: str) -> tuple[bytes, dict[str, object]]:
    """One JPEG and what it shows."""
    import cv2

    rng = np.random.default_rng([seed, 19, index])
    size = int(rng.integers(128, 225))
    rgb = np.clip(np.array(PALETTE[colour]) + rng.integers(-8, 9, 3), 0, 255)
    fraction = float(rng.uniform(*SIZE_RANGE))
    r = fraction * size / 2
    filled = bool(rng.random() < 0.5)
    stroke = None if filled else max(1, round(rng.uniform(0.03, 0.12) * 2 * r))
    margin = r + (stroke or 0) / 2 + 1
    cx, cy = (float(rng.uniform(margin, size - margin)) if size > 2 * margin else size / 2 for _ in range(2))
    angle = float(rng.uniform(0, 2 * math.pi))
    line = cv2.LINE_AA if rng.random() < 0.5 else cv2.LINE_8
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    mask = np.zeros((size, size), np.uint8)  # where the shape will be: the photo check's pixels
    _draw(mask, shape, np.random.default_rng([seed, 23, index]), (255,), cx, cy, r, angle, stroke, cv2.LINE_8)
    for _ in range(6):  # a photo crop too close to the shape's colour is drawn again
        background = _background(kind, rng, size, rgb.astype(np.float32))
        canvas = np.ascontiguousarray(np.clip(background + 0.5, 0, 255).astype(np.uint8))
        close = np.linalg.norm(canvas[mask > 0].astype(np.float32) - rgb, axis=1) < MIN_CONTRAST / 2
        if kind != "photo" or close.mean() <= 0.2:
            break
    _draw(canvas, shape, np.random.default_rng([seed, 23, index]), tuple(rgb), cx, cy, r, angle, stroke, line)
    if rng.random() < 0.3:
        canvas = cv2.GaussianBlur(canvas, (0, 0), float(rng.uniform(0.5, 1.8)))
    ok, jpeg = cv2.imencode(".jpg", canvas[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 91))])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return jpeg.tobytes(), {"size": round(fraction, 4), "filled": filled, "background": kind}


SIZES_HEADER = ("file", "size", "filled", "background")


def read_sizes(root: Path) -> dict[str, tuple[float, bool, str]]:
    """`root/sizes.tsv` as {file relative to root: (size, filled, background)}: the one reader of what `write`
    records, for the set's tests and the per-size accuracy table."""
    lines = (Path(root) / "sizes.tsv").read_text(encoding="utf-8").splitlines()
    if tuple(lines[0].split("\t")) != SIZES_HEADER:
        raise ValueError(f"{root}/sizes.tsv: expected the header {SIZES_HEADER}, got {lines[0]!r}")
    return {name: (float(size), filled == "1", background)
            for name, size, filled, background in (line.split("\t") for line in lines[1:])}


def write(out: Path, per_class: int, seed: int) -> int:
    """Replace `out` with `per_class` images of each of the 40 classes, written to a temporary folder first."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rows = ["\t".join(SIZES_HEADER)]
    index = 0
    for colour in PALETTE:
        for shape in SHAPES:
            folder = tmp / f"{colour}_{shape}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                jpeg, info = draw(seed, index, colour, shape)
                name = f"{colour}_{shape}/{i:02d}.jpg"
                (tmp / name).write_bytes(jpeg)
                rows.append(f"{name}\t{info['size']}\t{int(info['filled'])}\t{info['background']}")
                index += 1
    (tmp / "sizes.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return index


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "drawn")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.per_class < 1:
        parser.error(f"--per-class must be at least 1, got {args.per_class}")
    count = write(args.out, args.per_class, args.seed)
    print(f"wrote {count} images to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
