"""The numbers clipedge judges models by, each defined once: export's fidelity floors, `clipedge report` and the tests
all read the same functions. Embeddings are rows; every function normalizes them itself, so callers may pass raw
model outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clipedge.runtime.scoring import l2_normalize

__all__ = ["cosine_stats", "zero_shot_predictions", "top1_accuracy", "recall_at_k"]


def cosine_stats(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Row-wise cosine to the reference rows. The 5th percentile and the min are kept next to the mean because a
    quantized model usually fails on a few inputs, which a mean hides."""
    cos = np.sum(l2_normalize(ours) * l2_normalize(reference), axis=-1)
    return {"cosine_mean": float(cos.mean()), "cosine_p5": float(np.percentile(cos, 5)),
            "cosine_min": float(cos.min()), "samples": int(len(cos))}


def zero_shot_predictions(image_embeds: np.ndarray, label_embeds: np.ndarray) -> np.ndarray:
    """Index of the most similar label per image: the argmax of CLIP's softmax, which logit_scale does not change,
    so no scale is needed."""
    return np.argmax(l2_normalize(image_embeds) @ l2_normalize(label_embeds).T, axis=-1)


def top1_accuracy(predictions: np.ndarray, truth: np.ndarray) -> float:
    """Share of equal entries; also the agreement of two models' predictions when `truth` is the other's."""
    return float(np.mean(np.asarray(predictions) == np.asarray(truth)))


def recall_at_k(text_embeds: np.ndarray, image_embeds: np.ndarray, truth: np.ndarray,
                ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Text-to-image retrieval: the share of texts whose own image (`truth[i]`, a row of `image_embeds`) is among
    the k most similar images. Rank = number of images scoring strictly higher, so ties count in the text's favour
    (a quantized model that collapses two images onto one score is not punished for the order it lists them in)."""
    scores = l2_normalize(text_embeds) @ l2_normalize(image_embeds).T
    own = scores[np.arange(len(truth)), truth]
    rank = (scores > own[:, None]).sum(axis=1)
    return {f"recall@{k}": float(np.mean(rank < k)) for k in ks}
