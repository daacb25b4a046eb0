"""The numbers clipedge judges models by, each defined once: export's fidelity floors, `clipedge report` and the tests
all read the same functions. Embeddings are rows; every function normalizes them itself, so callers may pass raw
model outputs.

Latencies are judged here too: the confidence interval of a median (`median_interval`) and when two latencies are
the same within the timing noise (`latencies_tied`), so the report's "fastest" and any later choice by speed (a
bundle's default precision) apply one rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from clipedge.runtime.scoring import l2_normalize

__all__ = ["cosine_stats", "zero_shot_predictions", "top1_accuracy", "recall_at_k", "TIE_MARGIN",
           "median_interval_ranks", "median_interval", "latencies_tied"]

TIE_MARGIN = 0.10
"""Two medians closer than this share of the faster one are tied, whatever their intervals say. One run's samples
show only the noise inside that run; load that comes and goes between runs (another job, a thermal throttle, a
laptop's power plan) shifts a whole run's latencies together, and no interval computed from one run can see that.
On the project's shared 2-core machine, reruns moved medians by 5-10% while each run's own intervals were narrow: a
10% margin keeps such reruns from changing a pick, and is still far below the 2x gaps between precisions that
matter."""


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


# ---- latencies ------------------------------------------------------------------------------------------------------
def median_interval_ranks(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """1-based ranks (j, k) of the sorted samples bounding a distribution-free confidence interval of the median.

    Each of n independent samples falls below the true median with probability 1/2, so the count B below it is
    binomial(n, 1/2), and the median lies in [x_(j), x_(k)) with probability P(j <= B < k). The narrowest symmetric
    pair (k = n + 1 - j) reaching `confidence` is returned (n = 20: ranks 6 and 15, coverage 95.86%). No shape is
    assumed, which matters for latencies: their tail is long and one-sided. Below 6 samples no pair reaches 95%:
    the whole range (1, n) is returned, the best these samples can say."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    total, wanted = 2**n, Fraction(confidence).limit_denominator(10**6)
    below, j = 0, 0  # j: the ranks accepted so far; below: 2^n * P(B <= j), the chance of one tail past x_(j+1)
    while j + 1 <= n - (j + 1):
        below += math.comb(n, j)
        if Fraction(total - 2 * below, total) < wanted:  # P(j+1 <= B <= n-j-1) = 1 - 2 P(B <= j)
            break
        j += 1
    return (j, n + 1 - j) if j >= 1 else (1, n)


def median_interval(samples: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The distribution-free confidence interval of the samples' median (see `median_interval_ranks`)."""
    ordered = np.sort(np.asarray(samples, dtype=np.float64))
    j, k = median_interval_ranks(len(ordered), confidence)
    return float(ordered[j - 1]), float(ordered[k - 1])


def latencies_tied(a_median: float, a_interval: tuple[float, float], b_median: float,
                   b_interval: tuple[float, float], margin: float = TIE_MARGIN) -> bool:
    """Whether two latencies are the same within the timing noise: their medians' confidence intervals overlap (the
    noise one run shows), or the slower median is less than `margin` above the faster (the load between runs, which
    it does not: TIE_MARGIN). Latencies only, no report rows, so any choice by speed can use it."""
    overlap = a_interval[0] <= b_interval[1] and b_interval[0] <= a_interval[1]
    faster, slower = sorted((a_median, b_median))
    return overlap or slower - faster < margin * faster
