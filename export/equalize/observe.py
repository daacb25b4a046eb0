"""What the equalisation measures: every Linear's input and output ranges per channel on the calibration samples,
from eager runs of the float model (clipedge.export.model.layers.observing_linears), plus a sample of input rows
for the linears whose quantization error is simulated."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from clipedge.export.model.layers import Linear, observing_linears

__all__ = ["LinearStats", "observe"]


@dataclass
class LinearStats:
    in_absmax: np.ndarray  # [D_in] largest |x| per input channel
    out_absmax: np.ndarray  # [D_out]
    out_square: np.ndarray  # [D_out] sum of y^2 (mean square after dividing by `rows`)
    rows: int = 0
    in_rows: list[np.ndarray] = field(default_factory=list)  # sampled input rows (only for `sampled` linears)

    def sampled_inputs(self) -> np.ndarray:
        return np.concatenate(self.in_rows) if self.in_rows else np.zeros((0, self.in_absmax.size), np.float32)


def observe(run_batches: Iterable[object], sampled: set[int], rows_per_call: int,
            seed: int = 0) -> dict[int, LinearStats]:
    """{id(linear): LinearStats} over every call made while iterating `run_batches` (each step runs the float model
    on one calibration batch); `sampled` holds the ids of the linears whose input rows are kept, `rows_per_call` of
    them per call."""
    rng = np.random.default_rng(seed)
    stats: dict[int, LinearStats] = {}

    def record(linear: Linear, x: tf.Tensor, y: tf.Tensor) -> None:
        x, y = x.numpy(), y.numpy()
        s = stats.get(id(linear))
        if s is None:
            s = stats[id(linear)] = LinearStats(np.zeros(x.shape[1], np.float32), np.zeros(y.shape[1], np.float32),
                                                np.zeros(y.shape[1], np.float64))
        np.maximum(s.in_absmax, np.abs(x).max(axis=0), out=s.in_absmax)
        np.maximum(s.out_absmax, np.abs(y).max(axis=0), out=s.out_absmax)
        s.out_square += np.square(y, dtype=np.float64).sum(axis=0)
        s.rows += x.shape[0]
        if id(linear) in sampled:
            s.in_rows.append(x[rng.choice(x.shape[0], size=min(rows_per_call, x.shape[0]), replace=False)])

    with observing_linears(record):
        for _ in run_batches:
            pass
    return stats
