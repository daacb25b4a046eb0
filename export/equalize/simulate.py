"""The errors an equalisation is chosen on, each a linear map's output against the float output:

  linear_error       input quantized per tensor, weights per output channel: the harshest of the 8-bit schemes
                     (ONNX Runtime's: one 8-bit range for the whole activation tensor, weights at 7 bits,
                     reduce_range), so a choice that helps there helps the per-row (TFLite dynamic) and 16-bit
                     activation schemes too;
  weight_only_error  float input, weights 4-bit in blocks of 32 along the input (int4's MatMulNBits and
                     ai-edge-quantizer's blockwise recipe): moving an activation's range into the weights is free
                     for the activations there and can only cost the weights' blocks (AWQ, Lin et al. 2024, searches
                     the same scales the other way round).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ACTIVATION_LEVELS", "INT4_BLOCK", "WEIGHT_LEVELS", "linear_error", "product_error", "weight_only_error"]

ACTIVATION_LEVELS = 255  # uint8
WEIGHT_LEVELS = 127  # int8 at 7 bits, symmetric: -63..63
INT4_LEVELS = 15  # symmetric int4: -7..7
INT4_BLOCK = 32


def _fake_quantize(values: np.ndarray, absmax: np.ndarray | float, levels: int) -> np.ndarray:
    step = 2.0 * np.maximum(absmax, 1e-30) / levels
    return np.round(values / step) * step


def linear_error(rows: np.ndarray, in_absmax: np.ndarray, weight: np.ndarray, scale: np.ndarray) -> float:
    """Relative mean square error of (rows / scale) @ (weight * scale) under int8 quantization; `weight` is
    [in, out], `in_absmax` the input's full calibration range per channel (the sampled rows may miss the peak)."""
    x = rows / scale
    w = weight * scale[:, None]
    x_q = _fake_quantize(x, float((in_absmax / scale).max()), ACTIVATION_LEVELS)
    w_q = _fake_quantize(w, np.abs(w).max(axis=0, keepdims=True), WEIGHT_LEVELS)
    return _relative(x_q @ w_q, rows @ weight)


def _relative(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.square(approx - exact).mean() / max(np.square(exact).mean(), 1e-30))


def weight_only_error(rows: np.ndarray, weight: np.ndarray, scale: np.ndarray) -> float:
    """Relative mean square error of (rows / scale) @ (weight * scale) with the weights at 4 bits in blocks of
    INT4_BLOCK input channels per output channel (a partial last block is padded with zeros)."""
    w = weight * scale[:, None]
    pad = -w.shape[0] % INT4_BLOCK
    blocks = np.pad(w, ((0, pad), (0, 0))).reshape(-1, INT4_BLOCK, w.shape[1])
    w_q = _fake_quantize(blocks, np.abs(blocks).max(axis=1, keepdims=True), INT4_LEVELS)
    w_q = w_q.reshape(-1, w.shape[1])[:w.shape[0]]
    return _relative((rows / scale) @ w_q, rows @ weight)


def product_error(q_absmax: np.ndarray, q_square: np.ndarray, k_absmax: np.ndarray, k_square: np.ndarray,
                  ratio: np.ndarray) -> float:
    """Expected noise of the attention scores q.k with q and k each quantized per tensor, after q's channel j is
    multiplied by ratio_j and k's divided by it: each step^2/12 times the other side's mean square, summed (a
    relative figure, for comparing ratios)."""
    q_step = float((q_absmax * ratio).max()) * 2 / ACTIVATION_LEVELS
    k_step = float((k_absmax / ratio).max()) * 2 / ACTIVATION_LEVELS
    k_noise = q_step ** 2 * float((k_square / ratio ** 2).sum())
    q_noise = k_step ** 2 * float((q_square * ratio ** 2).sum())
    return (k_noise + q_noise) / 12
