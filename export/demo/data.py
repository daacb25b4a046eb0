"""Synthetic captioned images for the demo CLIP: one coloured shape on a varied background.

40 classes: 8 colours x 5 shapes ("red circle" ... "black cross"). Each image is drawn from its own random stream,
`numpy.random.default_rng([seed, stream, index])`, so image `index` of a (seed, stream) pair is the same bytes on
every machine and in any order or process (the training run generates in parallel). Streams keep sets apart for any
seed: `TRAIN_STREAM` feeds `clipedge demo train`, `EVAL_STREAM` the shipped `calibration_data/eval/` set and
`HELD_OUT_STREAM` the larger accuracy check in the model card.

Backgrounds: a solid colour, a two-colour gradient, coloured noise, or a crop of one of the shipped photos
(`calibration_data/photos/`). The shape is kept visible: solid, gradient and noise colours are drawn at least
`MIN_CONTRAST` (RGB distance) away from the shape's colour, and a photo crop is rejected when more than
`MAX_SIMILAR` of the pixels under the shape are that close to it (after a few rejected crops the photo is blended
towards a contrasting colour). Then random size, position and rotation, a slight colour jitter, sometimes a blur,
and always a JPEG round trip (quality 60-95) so training sees the same artefacts as the shipped .jpg files.

Regenerate the shipped evaluation set (3 images per class, 120 files):
    python -m clipedge.export.demo.data --out calibration_data/eval --per-class 3 --seed 0
"""

from __future__ import annotations

import argparse
import functools
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from clipedge.runtime.errors import InputError
from clipedge.runtime.prompts import DEFAULT_TEMPLATE

__all__ = [
    "COLOURS",
    "SHAPES",
    "CLASSES",
    "IMAGE_SIZE",
    "TRAIN_STREAM",
    "EVAL_STREAM",
    "HELD_OUT_STREAM",
    "Sample",
    "label_of",
    "class_prompts",
    "make_sample",
    "generate",
    "write_eval_set",
    "read_eval_set",
]

IMAGE_SIZE = 112  # what the demo CLIP sees (an 8 x 8 grid of 14-px patches); larger images are resized to it

# Nominal RGB of each colour name (what captions and contrast checks mean by it), and the shades drawn for it: paint
# programs, web colours and print all say "red" for different RGBs, so each image picks one anchor and jitters it by
# up to +-COLOUR_JITTER per channel.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "green": (35, 165, 55),
    "blue": (35, 70, 220),
    "yellow": (245, 220, 35),
    "orange": (245, 135, 25),
    "purple": (135, 45, 175),
    "white": (248, 248, 248),
    "black": (12, 12, 12),
}
SHADES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "red": ((220, 30, 35), (250, 10, 10), (195, 15, 45), (235, 55, 40)),
    "green": ((35, 165, 55), (20, 200, 30), (10, 128, 20), (60, 185, 90)),
    "blue": ((35, 70, 220), (15, 25, 250), (40, 110, 215), (60, 70, 190)),
    "yellow": ((245, 220, 35), (252, 245, 10), (240, 205, 20), (250, 235, 80)),
    "orange": ((245, 135, 25), (252, 165, 10), (250, 115, 30), (235, 140, 50)),
    "purple": ((135, 45, 175), (128, 10, 130), (160, 70, 165), (115, 40, 200)),
    "white": ((248, 248, 248), (255, 255, 255), (232, 232, 236)),
    "black": ((12, 12, 12), (0, 0, 0), (38, 36, 40)),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
CLASSES: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)  # colour-major order
COLOUR_JITTER = 18
MIN_CONTRAST = 140.0  # RGB distance between the shape colour and a drawn background colour
MAX_SIMILAR = 0.2  # at most this share of the pixels under the shape may be within MIN_CONTRAST / 2 of its colour
BACKGROUNDS = ("solid", "gradient", "noise", "photo")
# The shape's size: its outer diameter (the circle through its outermost points) as a fraction of the image side,
# drawn uniformly over the 10%..80% the model card promises. Anywhere in the frame (whole, never cut),
# any rotation, filled or outlined, its proportions varied (star depth, cross arm width, a slight stretch).
SIZE_RANGE = (0.10, 0.80)
OUTLINE_SHARE = 0.4  # this share of the shapes is drawn as an outline
STROKE_RANGE = (0.03, 0.16)  # outline width as a fraction of the diameter (at least 1.5 px)
STAR_DEPTH = (0.33, 0.58)  # inner / outer radius of the 5-pointed star
CROSS_ARM = (0.22, 0.44)  # half the arm width of the plus sign, as a fraction of its half span
STRETCH = 0.1  # one axis scaled by up to +-10% before rotation
# Photos whose index (in sorted order) is a multiple of HELD_OUT_PHOTO_EVERY are never drawn here: the second
# renderer's evaluation set (calibration_data/make_drawn_eval.py) puts its shapes on those.
HELD_OUT_PHOTO_EVERY = 4

TRAIN_STREAM, EVAL_STREAM, HELD_OUT_STREAM = 0, 1, 2

# What a shape's outline is made of, locally: the training's per-patch part labels (see demo_pool.part_maps). Every
# class is a different mix (circle: curve only; square: right-angle corners; triangle: sharp corners; star: tips and
# inner corners; cross: right-angle corners and inner corners), and each part is visible inside one patch.
PARTS = ("right_corner", "triangle_corner", "star_tip", "star_inner", "cross_inner", "curve", "straight_edge")
_VERTEX_PARTS = {
    "square": ("right_corner",) * 4,
    "triangle": ("triangle_corner",) * 3,
    "star": ("star_tip", "star_inner") * 5,
    "cross": ("right_corner", "right_corner", "cross_inner") * 4,
}

# The background words captions use.
_BACKGROUND_WORDS = {"solid": "plain", "gradient": "gradient", "noise": "noisy", "photo": "photo"}
_SUPERSAMPLE = 3  # the shape mask is drawn this much larger and box-filtered down: anti-aliased edges


@dataclass(frozen=True)
class Sample:
    """One generated image and what it shows. `image` is RGB, IMAGE_SIZE square, already JPEG round-tripped."""

    image: Image.Image
    colour: str
    shape: str
    caption: str
    background: str  # one of BACKGROUNDS
    radius: float  # the shape's outer radius as a fraction of the image side
    center: tuple[float, float]  # (x, y) in pixels
    mask: Image.Image  # mode "L", the shape's anti-aliased coverage (255 = paint) before blur and JPEG
    filled: bool  # False: drawn as an outline
    vertices: tuple[tuple[float, float, str], ...]  # (x, y, part) of each polygon corner in pixels; none for a circle

    @property
    def label(self) -> str:
        return label_of(self.colour, self.shape)

    @property
    def class_index(self) -> int:
        return CLASSES.index((self.colour, self.shape))


def label_of(colour: str, shape: str) -> str:
    """The class label, "red circle"; eval folders spell it with an underscore ("red_circle")."""
    return f"{colour} {shape}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def class_prompts(template: str = DEFAULT_TEMPLATE) -> list[str]:
    """The 40 zero-shot prompts in CLASSES order. The default is `clipedge classify`'s own template, which keeps
    "a" before "orange": the demo model is trained on both articles so it reads either."""
    return [template.format(label_of(c, s)) for c, s in CLASSES]


# ---- drawing ------------------------------------------------------------------------------------------------------
def _jitter(rgb: Sequence[int], rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    out = np.clip(np.asarray(rgb) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return (int(out[0]), int(out[1]), int(out[2]))


def _distance(a: np.ndarray, b: Sequence[int]) -> np.ndarray:
    return np.sqrt(((a.astype(np.float32) - np.asarray(b, np.float32)) ** 2).sum(axis=-1))


def _contrasting_colour(rng: np.random.Generator, avoid: Sequence[int]) -> np.ndarray:
    """A random RGB colour at least MIN_CONTRAST away from `avoid` (any colour at all, named or not)."""
    while True:
        candidate = rng.integers(0, 256, size=3)
        if _distance(candidate, avoid) >= MIN_CONTRAST:
            return candidate.astype(np.float32)


@functools.cache
def photo_files(held_out: bool = False) -> tuple[Path, ...]:
    """The shipped photos this generator draws on (`held_out=False`), or those kept for the second renderer."""
    from clipedge.runtime.datasets import IMAGE_SUFFIXES, shipped_data_dir

    root = shipped_data_dir()
    if root is None or not (root / "photos").is_dir():
        return ()
    files = sorted(p for p in (root / "photos").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return tuple(p for i, p in enumerate(files) if (i % HELD_OUT_PHOTO_EVERY == 0) == held_out)


@functools.lru_cache(maxsize=128)
def _photo(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image = image.convert("RGB")
    scale = 320 / min(image.size)  # the shipped photos are mostly 320 x 240; bound the big ones' crop cost
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
    return image


def _photo_crop(rng: np.random.Generator, size: int) -> np.ndarray | None:
    files = photo_files()
    if not files:
        return None
    photo = _photo(files[int(rng.integers(len(files)))])
    side = int(rng.integers(min(photo.size) // 3, min(photo.size) + 1))
    left = int(rng.integers(0, photo.width - side + 1))
    top = int(rng.integers(0, photo.height - side + 1))
    crop = photo.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    return np.asarray(crop, dtype=np.float32)


def _background(kind: str, rng: np.random.Generator, size: int, avoid: Sequence[int]) -> np.ndarray:
    """float32 [size, size, 3] in 0..255 (photo crops are checked against the shape later)."""
    if kind == "photo":
        crop = _photo_crop(rng, size)
        if crop is not None:
            return crop
        kind = "noise"  # no photos installed (a runtime-only tree): noise instead
    a = _contrasting_colour(rng, avoid)
    if kind == "solid":
        return np.broadcast_to(a, (size, size, 3)).copy()
    if kind == "gradient":
        b = _contrasting_colour(rng, avoid)
        angle = rng.uniform(0, 2 * math.pi)
        y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
        t = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle)
        t = ((t - t.min()) / (t.max() - t.min()))[..., None]
        return a * (1 - t) + b * t
    # Noise: a low-resolution random field around the base colour, upsampled (blotches), plus fine grain.
    cells = int(rng.integers(3, 24))
    field = rng.normal(0, rng.uniform(15, 45), size=(cells, cells, 3)).astype(np.float32)
    field = np.asarray(Image.fromarray(np.clip(field + 128, 0, 255).astype(np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC), dtype=np.float32) - 128
    grain = rng.normal(0, rng.uniform(2, 14), size=(size, size, 1)).astype(np.float32)
    return np.clip(a + field + grain, 0, 255)


def _unit_outline(shape: str, rng: np.random.Generator) -> list[tuple[float, float]]:
    """The shape's vertices inside the unit circle (outermost ones on it), proportions drawn from `rng`."""
    if shape == "square":
        return [(math.cos(t), math.sin(t)) for t in np.arange(4) * math.pi / 2 + math.pi / 4]
    if shape == "triangle":
        return [(math.cos(t), math.sin(t)) for t in np.arange(3) * 2 * math.pi / 3 - math.pi / 2]
    if shape == "star":
        depth = rng.uniform(*STAR_DEPTH)
        return [((1.0 if k % 2 == 0 else depth) * math.cos(t), (1.0 if k % 2 == 0 else depth) * math.sin(t))
                for k, t in enumerate(np.arange(10) * math.pi / 5 - math.pi / 2)]
    if shape == "cross":  # a plus sign, scaled so its corners touch radius 1
        w = rng.uniform(*CROSS_ARM)
        s = 1 / math.hypot(1, w)
        outline = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w),
                   (-1, -w), (-w, -w)]
        return [(x * s, y * s) for x, y in outline]
    raise InputError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float, angle: float, rng: np.random.Generator,
                stroke: float | None) -> tuple[Image.Image, tuple[tuple[float, float, str], ...]]:
    """Mode "L" [size, size] coverage (255 = paint), anti-aliased, and the corners as (x, y, part); `stroke`
    (pixels) draws an outline instead."""
    s = _SUPERSAMPLE
    big = size * s
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    width = 0 if stroke is None else max(1, round(stroke * s))
    sx = 1 + rng.uniform(-STRETCH, STRETCH)  # a slightly stretched shape (an ellipse for the circle)
    if shape == "circle":
        rx, ry = r * min(1.0, sx), r * min(1.0, 1 / sx)
        box = [(cx - rx) * s, (cy - ry) * s, (cx + rx) * s, (cy + ry) * s]
        draw.ellipse(box, fill=255 if stroke is None else 0, outline=255, width=width)
        return mask.resize((size, size), Image.Resampling.BOX).rotate(math.degrees(angle), center=(cx, cy)), ()
    cos, sin = math.cos(angle), math.sin(angle)
    kx, ky = min(1.0, sx), min(1.0, 1 / sx)
    points = [(x * kx, y * ky) for x, y in _unit_outline(shape, rng)]
    xy = [(cx + r * (x * cos - y * sin), cy + r * (x * sin + y * cos)) for x, y in points]
    draw.polygon([(x * s, y * s) for x, y in xy], fill=255 if stroke is None else 0, outline=255, width=width)
    vertices = tuple((x, y, part) for (x, y), part in zip(xy, _VERTEX_PARTS[shape], strict=True))
    return mask.resize((size, size), Image.Resampling.BOX), vertices


def _caption(rng: np.random.Generator, colour: str, shape: str, background: str, radius: float, filled: bool,
             blur: float) -> str:
    """One of several caption templates, filled with what the image really shows."""
    # Mostly grammatical "an orange", but also "a orange": `clipedge classify`'s template is "a photo of a {}.".
    article = _article(colour) if rng.random() < 0.6 else "a"
    thing = f"{colour} {shape}"
    size = "small" if 2 * radius < 0.25 else "large" if 2 * radius > 0.55 else None
    where = _BACKGROUND_WORDS[background]
    options = [
        f"a photo of {article} {thing}",
        f"a photo of {article} {thing}",  # twice: the zero-shot prompt's own form
        f"{article} {thing}",
        f"a picture of {article} {thing}",
        f"an image of {article} {thing}",
        f"{article} {thing} shape",
        f"{article} {thing} on a {where} background" if where != "photo" else f"{article} {thing} in front of a photo",
        f"a drawing of {article} {thing}",
    ]
    if size:
        options += [f"a {size} {thing}", f"a photo of a {size} {thing}"]
    options.append(f"a {thing} outline" if not filled else f"a filled {thing}")
    if blur > 0.5:
        options.append(f"a blurry photo of {article} {thing}")
    text = options[int(rng.integers(len(options)))]
    return text + "." if rng.random() < 0.5 else text


def make_sample(seed: int, index: int, stream: int = TRAIN_STREAM, size: int = IMAGE_SIZE,
                class_index: int | None = None) -> Sample:
    """Image `index` of stream `stream` under `seed`; `class_index` (into CLASSES) fixes the class, else random."""
    if size < 32:
        raise InputError(f"image size must be at least 32 pixels, got {size}")
    rng = np.random.default_rng([int(seed), int(stream), int(index)])
    k = int(rng.integers(len(CLASSES))) if class_index is None else int(class_index)
    if not 0 <= k < len(CLASSES):
        raise InputError(f"class_index must be in 0..{len(CLASSES) - 1}, got {class_index}")
    colour, shape = CLASSES[k]
    shades = SHADES[colour]
    rgb = _jitter(shades[int(rng.integers(len(shades)))], rng, COLOUR_JITTER)

    radius = float(rng.uniform(*SIZE_RANGE)) / 2
    r = radius * size
    cx, cy = (float(rng.uniform(r + 1, size - r - 1)) for _ in range(2))
    angle = float(rng.uniform(0, 2 * math.pi))
    filled = bool(rng.random() >= OUTLINE_SHARE)
    stroke = None if filled else max(1.5, float(rng.uniform(*STROKE_RANGE)) * 2 * r)
    mask, vertices = _shape_mask(shape, size, cx, cy, r, angle, rng, stroke)

    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    background = _background(kind, rng, size, rgb)
    if kind == "photo":
        inside = np.asarray(mask) > 127
        for _ in range(4):
            if (_distance(background[inside], rgb) < MIN_CONTRAST / 2).mean() <= MAX_SIMILAR:
                break
            background = _background("photo", rng, size, rgb)
        else:  # still too similar: pull the crop halfway towards a contrasting colour
            background = 0.5 * background + 0.5 * _contrasting_colour(rng, rgb)

    image = Image.fromarray(np.clip(background + 0.5, 0, 255).astype(np.uint8))
    image.paste(rgb, mask=mask)  # alpha-blends the anti-aliased edge
    blur = float(rng.uniform(0.3, 1.0)) if rng.random() < 0.3 else 0.0
    if blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(50, 96)))
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    caption = _caption(rng, colour, shape, kind, radius, filled, blur)
    return Sample(image=image, colour=colour, shape=shape, caption=caption, background=kind, radius=radius,
                  center=(cx, cy), mask=mask, filled=filled, vertices=vertices)


def generate(n: int, seed: int = 0, stream: int = TRAIN_STREAM, start: int = 0,
             size: int = IMAGE_SIZE) -> Iterator[Sample]:
    """Samples `start .. start + n - 1` of a stream, classes drawn at random."""
    for index in range(start, start + n):
        yield make_sample(seed, index, stream, size)


# ---- the shipped evaluation set -----------------------------------------------------------------------------------
def write_eval_set(out: str | Path, per_class: int = 3, seed: int = 0, stream: int = EVAL_STREAM,
                   quality: int = 90) -> list[Path]:
    """`per_class` images of each class as `out/<colour>_<shape>/<nn>.jpg` (classes balanced, not drawn)."""
    if per_class < 1:
        raise InputError(f"per_class must be >= 1, got {per_class}")
    out = Path(out)
    written = []
    for k, (colour, shape) in enumerate(CLASSES):
        folder = out / f"{colour}_{shape}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            sample = make_sample(seed, k * per_class + i, stream, class_index=k)
            path = folder / f"{i:02d}.jpg"
            sample.image.save(path, format="JPEG", quality=quality)
            written.append(path)
    return written


def read_eval_set(root: str | Path) -> tuple[list[Path], list[int]]:
    """Image files under `root/<colour>_<shape>/` and their class indices into CLASSES: the shared eval-folder
    reader (clipedge.runtime.datasets), with the demo's own class order."""
    from clipedge.runtime.datasets import read_eval_folder

    labelled = read_eval_folder(root)
    index = {f"{colour} {shape}": k for k, (colour, shape) in enumerate(CLASSES)}
    unknown = sorted(set(labelled.classes) - set(index))
    if unknown:
        raise InputError(f"{root} has folders that are not demo classes: {', '.join(unknown)}")
    return list(labelled.files), [index[labelled.classes[t]] for t in labelled.truth]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipedge.export.demo.data",
                                     description="write the demo's labelled evaluation images")
    parser.add_argument("--out", required=True, help="directory to fill with <colour>_<shape>/NN.jpg")
    parser.add_argument("--per-class", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = write_eval_set(args.out, per_class=args.per_class, seed=args.seed)
    print(f"wrote {len(written)} images to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
