"""CLIP's scoring on embeddings: L2 normalization, cosine similarity, temperature-scaled softmax.

Kept out of the model graphs on purpose: GPU delegates lack L2_NORMALIZATION, and a bundle's image embeddings can be
scored against a stored text index from another precision.
"""

from __future__ import annotations

import numpy as np

__all__ = ["l2_normalize", "cosine_similarity", "softmax", "zero_shot_probabilities"]


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """float32 unit vectors; an all-zero row stays zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, eps)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[A, D] x [B, D] -> [A, B] cosines (inputs need not be normalized)."""
    return l2_normalize(np.atleast_2d(a)) @ l2_normalize(np.atleast_2d(b)).T


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)  # max-subtracted: no overflow at logit_scale 100
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def zero_shot_probabilities(image_embeds: np.ndarray, text_embeds: np.ndarray, logit_scale: float) -> np.ndarray:
    """CLIP's zero-shot classifier: softmax over labels of logit_scale * cosine (logit_scale = exp of the stored
    log temperature, 100 for released models)."""
    return softmax(logit_scale * cosine_similarity(image_embeds, text_embeds), axis=-1)
