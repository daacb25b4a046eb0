"""Which rescales to make, chosen on the calibration statistics (observe.py) by the simulated int8 error
(simulate.py); keeping the model as it is always competes, so a plain checkpoint is only changed where the
simulation says it gains.

Three exact reparametrisations, each folded into the exported weights:
  norm -> linear   SmoothQuant (Xiao et al. 2023), RepQ-ViT (Li et al. 2023): a LayerNorm output channel divided by
                   s_j = a_j^alpha / w_j^(1 - alpha) (a: its activation range, w: the range of the weight row that
                   reads it), those rows multiplied by s_j; alpha per layer from ALPHAS.
  query <-> key    q's channel j times r_j, k's divided by r_j, r_j = sqrt(range k_j / range q_j): the scores are
                   unchanged and both per-tensor ranges shrink to the geometric mean.
  value -> output  v's channel j divided by s_j, out_proj's input row j multiplied: softmax mixes tokens per
                   channel, so the context out_proj reads carries the same factor; s_j chosen as for norm -> linear.
"""

from __future__ import annotations

import numpy as np

from clipedge.export.equalize.observe import LinearStats
from clipedge.export.equalize.rescale import Rescale
from clipedge.export.equalize.simulate import linear_error, product_error, weight_only_error

__all__ = ["ALPHAS", "smoothing", "query_key_balance"]

ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MIN_GAIN = 0.9  # a rescale is kept only if it cuts a simulated error by at least 10% and raises none


def _normalized(scale: np.ndarray) -> np.ndarray:
    """Geometric mean 1 (the overall level is the quantizer's business), zero ranges left alone, clipped to 1e4."""
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    scale = scale / np.exp(np.log(scale).mean())
    return np.clip(scale, 1e-4, 1e4).astype(np.float32)


def smoothing(stats: LinearStats, weight: np.ndarray, kind: str, where: str, divided: tuple[tuple[str, int], ...],
              multiplied: tuple[tuple[str, int], ...]) -> Rescale | None:
    """The best migration strength for one activation -> linear pair (`weight` [in, out], all readers side by
    side), or None when keeping the model as it is simulates as well.

    One model serves every precision, so a strength must help the 8-bit activation schemes (linear_error) without
    costing int4's weights (weight_only_error): the candidate with the smallest worse-of-the-two ratio to keeping
    the model as it is wins, if neither ratio exceeds 1 and one is under MIN_GAIN."""
    rows, a = stats.sampled_inputs(), stats.in_absmax
    if rows.shape[0] == 0:
        return None
    w = np.abs(weight).max(axis=1)
    ones = np.ones_like(a)
    before = linear_error(rows, a, weight, ones), weight_only_error(rows, weight, ones)
    best: tuple[float, float, np.ndarray, tuple[float, float]] | None = None
    for alpha in ALPHAS:
        scale = _normalized(np.power(np.maximum(a, 1e-12), alpha) / np.power(np.maximum(w, 1e-12), 1 - alpha))
        errors = linear_error(rows, a, weight, scale), weight_only_error(rows, weight, scale)
        ratios = [e / max(b, 1e-30) for e, b in zip(errors, before, strict=True)]
        if max(ratios) <= 1.0 and min(ratios) <= MIN_GAIN and (best is None or max(ratios) < best[0]):
            best = (max(ratios), alpha, scale, errors)
    if best is None:
        return None
    _, alpha, scale, errors = best
    return Rescale(kind, where, scale, divided, multiplied, f"alpha {alpha}", before[0], errors[0],
                   before[1], errors[1])


def query_key_balance(query: LinearStats, key: LinearStats, where: str, divided: tuple[tuple[str, int], ...],
                      multiplied: tuple[tuple[str, int], ...]) -> Rescale | None:
    """Balance q's and k's per-channel ranges (q multiplied, k divided), or None when that does not cut the
    simulated score noise by MIN_GAIN."""
    q_square, k_square = query.out_square / max(query.rows, 1), key.out_square / max(key.rows, 1)
    ones = np.ones_like(query.out_absmax)
    before = product_error(query.out_absmax, q_square, key.out_absmax, k_square, ones)
    ratio = _normalized(np.sqrt(np.maximum(key.out_absmax, 1e-12) / np.maximum(query.out_absmax, 1e-12)))
    after = product_error(query.out_absmax, q_square, key.out_absmax, k_square, ratio)
    if after > MIN_GAIN * before:
        return None
    return Rescale("query-key", where, ratio, divided, multiplied, "balanced ranges", before, after)  # int4: no change
