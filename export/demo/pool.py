"""The demo CLIP's training images, generated once before training (`clipedge demo train`).

Apart from the training loop because it is the one part that runs in worker processes: those import this module
(numpy, PIL and `demo_data`), not TensorFlow. Image i of a stream is always `make_sample(seed, i, stream)`, so the
pool is the same whatever the number of workers.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from clipedge.export.demo.data import IMAGE_SIZE, PARTS, TRAIN_STREAM, Sample, make_sample

__all__ = ["Pool", "generate_pool", "part_maps"]


@dataclass
class Pool:
    """The training images, generated once: uint8 pixels [n, IMAGE_SIZE, IMAGE_SIZE, 3], int32 class indices [n],
    captions, and float32 [n, g, g] shape coverage of each patch (the token-level loss's weights)."""

    pixels: np.ndarray
    classes: np.ndarray
    captions: list[str]
    coverage: np.ndarray
    parts: np.ndarray  # uint8 [n, g, g, len(PARTS)]: which outline parts each patch holds (part_maps)


def _generate_chunk(args: tuple[int, int, int, int, int]) -> Pool:
    from PIL import Image

    seed, stream, start, count, grid = args
    pool = _empty(count, grid)
    for i in range(count):
        sample = make_sample(seed, start + i, stream)
        pool.pixels[i] = np.asarray(sample.image, dtype=np.uint8)
        pool.classes[i] = sample.class_index
        pool.captions.append(sample.caption)
        pool.coverage[i] = np.asarray(sample.mask.resize((grid, grid), Image.Resampling.BOX), np.float32) / 255
        pool.parts[i] = part_maps(sample, pool.coverage[i])
    return pool


def part_maps(sample: Sample, coverage: np.ndarray) -> np.ndarray:
    """uint8 [g, g, len(PARTS)] multi-hot: the patches holding each corner (by its kind), and the patches the outline
    passes through ("curve" for a circle, "straight_edge" otherwise); `coverage` is the mask's [g, g] patch
    coverage. Every label is decidable from one patch and its neighbours, which a ViT learns far sooner than the
    whole shape: the dense, local signal the training's part loss gives the middle layers."""
    grid = coverage.shape[0]
    out = np.zeros((grid, grid, len(PARTS)), np.uint8)
    cell = IMAGE_SIZE / grid
    for x, y, part in sample.vertices:
        row, col = min(grid - 1, max(0, int(y // cell))), min(grid - 1, max(0, int(x // cell)))
        out[row, col, PARTS.index(part)] = 1
    boundary = (coverage > 0.02) & ((coverage < 0.98) | (not sample.filled))
    out[..., PARTS.index("curve" if sample.shape == "circle" else "straight_edge")] = boundary
    return out


def _empty(n: int, grid: int) -> Pool:
    return Pool(np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), np.empty(n, np.int32), [],
                np.empty((n, grid, grid), np.float32),
                np.empty((n, grid, grid, len(PARTS)), np.uint8))


def generate_pool(n: int, seed: int, stream: int = TRAIN_STREAM, workers: int | None = None,
                  progress: bool = False, grid: int = 8) -> Pool:
    """Images 0..n-1 of `stream` (image i is `make_sample(seed, i, stream)`), generated in parallel processes;
    `grid` is the model's patch grid (image_size // patch_size) for the coverage."""
    from tqdm.auto import tqdm

    workers = workers or min(os.cpu_count() or 1, 8)
    chunk = max(1, min(200, math.ceil(n / workers)))
    jobs = [(seed, stream, start, min(chunk, n - start), grid) for start in range(0, n, chunk)]
    pool = _empty(n, grid)
    bar = tqdm(total=n, desc="generate", unit="img", disable=not progress)
    if workers == 1 or len(jobs) == 1:
        results = map(_generate_chunk, jobs)
        executor = None
    else:
        executor = ProcessPoolExecutor(max_workers=workers)
        results = executor.map(_generate_chunk, jobs)
    try:
        for (_, _, start, count, _), part in zip(jobs, results, strict=True):
            pool.pixels[start : start + count], pool.classes[start : start + count] = part.pixels, part.classes
            pool.coverage[start : start + count] = part.coverage
            pool.parts[start : start + count] = part.parts
            pool.captions += part.captions
            bar.update(count)
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown()
    return pool
