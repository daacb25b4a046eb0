"""Near-duplicate groups (issue #35, `clipedge index dupes`): images whose embeddings have a cosine at or above a
threshold, joined into groups by connected components (single linkage: a JPEG copy of a resized copy of a photo
lands in the photo's group even when the two copies are further apart than the threshold).

Memory: every pair is compared, but a block of `block` x `block` cosines at a time (float32, 64 MiB at the default
4096), never the N x N matrix (50,000 photos would be 10 GB). Only the upper triangle of blocks is computed. Pairs
over the threshold are joined with a vectorised union-find (pointer jumping in numpy), so even a low threshold that
links millions of pairs stays a few numpy passes per block instead of a Python loop per pair.
"""

from __future__ import annotations

import numpy as np

from clipedge.runtime.errors import InputError

__all__ = ["DEFAULT_DUPLICATE_COSINE", "near_duplicate_groups"]

# 0.95, chosen by measurement where one was possible and by convention where not (tests/scripts/dupes_threshold.py,
# docs/library.md "Near duplicates" has the table). On the 231 shipped photos with the demo CLIP (a tiny model
# trained on synthetic shapes, embed_dim 64) copies and distinct photos overlap at every threshold: JPEG q60,
# resize 50 %, EXIF-rotated and watermarked copies stay >= 0.975 (min), but a 90 % crop falls to 0.53 and +20 %
# brightness to 0.72, while two different photos reach 0.997 (p99 0.986, median 0.855): no value separates them for
# that model. For real CLIP image towers (ViT-B/32 and up, 512+ dims) distinct photos sit far lower and
# practitioners' guides use 0.95-0.99 for near duplicates; 0.95 is the low, inclusive end of that range, so a
# re-encoded or resized copy is found, and single linkage does not chain unrelated photos together through it.
# A library's users re-measure with their own bundle: `python tests/scripts/dupes_threshold.py --bundle DIR`.
DEFAULT_DUPLICATE_COSINE = 0.95
# float32 dot products of unit vectors are off by up to ~1e-6 (rounding over 512-1024 terms): a pair exactly at
# the threshold (an identical image: cosine 1 computed as 0.99999994) still counts as at it.
_TOLERANCE = 1e-6


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """float32 unit rows; rows of zeros stay zero (cosine 0 with everything: never grouped)."""
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise InputError(f"embeddings must be a 2-D array [N, D], got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"embeddings must be floating point, got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InputError("embeddings hold NaN or infinity; re-embed those images")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.allclose(norms, 1.0, atol=1e-4):
        return x  # already unit vectors, as clipedge writes them: no 100 MB copy for 50,000 x 512
    return x / np.where(norms > 0, norms, 1.0)


def _compress(parent: np.ndarray) -> None:
    """Point every element straight at its root (pointer jumping: log2(depth) passes)."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return
        parent[:] = grand


def _union(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Join the sets of a[k] and b[k] for every k. Each pass hangs the larger root of every pair under the smaller
    (so no cycle can form); when several pairs write the same root one wins, and the rest, whose roots now differ
    less, are joined on the next pass."""
    while a.size:
        _compress(parent)
        ra, rb = parent[a], parent[b]
        apart = ra != rb
        ra, rb = ra[apart], rb[apart]
        if not ra.size:
            return
        hi, lo = np.maximum(ra, rb), np.minimum(ra, rb)
        parent[hi] = lo
        a, b = hi, lo


def near_duplicate_groups(embeddings: np.ndarray, threshold: float = DEFAULT_DUPLICATE_COSINE,
                          block: int = 4096) -> list[list[int]]:
    """Groups of row positions of `embeddings` [N, D] linked by cosine >= `threshold` (connected components),
    each group sorted, groups sorted by their first row; rows with no near duplicate are left out.

    Rows need not be unit vectors (they are normalised; clipedge's own are already). `block`: rows per side of the
    cosine tiles, the memory bound (block^2 x 4 bytes, plus the indices of the pairs a tile finds). Raises
    InputError for a threshold outside (0, 1], a block < 1, or embeddings that are not a finite 2-D float array."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) or not 0 < threshold <= 1:
        raise InputError(f"threshold must be a cosine in (0, 1], got {threshold!r}")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise InputError(f"block must be a positive int, got {block!r}")
    x = _unit_rows(embeddings)
    n = x.shape[0]
    parent = np.arange(n, dtype=np.int64)
    cut = np.float32(threshold - _TOLERANCE)
    for i in range(0, n, block):
        rows = x[i:i + block]
        for j in range(i, n, block):
            tile = rows @ x[j:j + block].T
            r, c = np.nonzero(tile >= cut)
            if j == i:  # the diagonal tile: each pair once, not a row with itself
                upper = c > r
                r, c = r[upper], c[upper]
            if r.size:
                _union(parent, r + i, c + j)
            del tile
    _compress(parent)
    return _groups(parent)


def _groups(roots: np.ndarray) -> list[list[int]]:
    """Components of size >= 2 from each row's root, as sorted lists of row positions."""
    order = np.argsort(roots, kind="stable")  # stable: rows ascending within a component
    sorted_roots = roots[order]
    starts = np.flatnonzero(np.r_[True, sorted_roots[1:] != sorted_roots[:-1]])
    ends = np.r_[starts[1:], roots.size]
    groups = [order[s:e].tolist() for s, e in zip(starts, ends, strict=True) if e - s > 1]
    return sorted(groups)
