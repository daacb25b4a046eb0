"""`Rescale`: one exact reparametrisation of the float model (a channel's values divided by s where they are made,
and the weights that read them multiplied by s), stored as keys and a scale vector so that a conversion process can
apply it to its own freshly loaded model (clipedge.export.pipeline.child_process). No TensorFlow: a plain value."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["KINDS", "Rescale", "apply_rescales"]

KINDS = ("norm-linear", "query-key", "value-output")


@dataclass(frozen=True)
class Rescale:
    """Divide the `divided` variables and multiply the `multiplied` ones by `scale` along the given axis.

    Keys are the model's own (`CLIPEncoder.variables_by_key`, HF names); axes index the TF layout (Linear weights
    are [in, out]: axis 0 is an input channel, axis 1 an output channel)."""

    kind: str  # one of KINDS
    where: str  # e.g. "vision layer 3 layer_norm1 -> q/k/v"
    scale: np.ndarray  # [channels] float32, > 0
    divided: tuple[tuple[str, int], ...]
    multiplied: tuple[tuple[str, int], ...]
    choice: str  # how the scale was chosen, e.g. "alpha 0.5"
    error_before: float  # the simulated int8 error this rescale was chosen on (relative mean square)
    error_after: float
    int4_error_before: float | None = None  # the simulated int4 weight error, where the rescale changes it
    int4_error_after: float | None = None

    def summary(self) -> dict[str, object]:
        out = {"kind": self.kind, "where": self.where, "choice": self.choice,
               "largest_scale_ratio": round(float(self.scale.max() / self.scale.min()), 2),
               "simulated_int8_error": [round(self.error_before, 6), round(self.error_after, 6)]}
        if self.int4_error_before is not None and self.int4_error_after is not None:
            out["simulated_int4_error"] = [round(self.int4_error_before, 6), round(self.int4_error_after, 6)]
        return out


def _along(scale: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = scale.size
    return scale.reshape(shape)


def apply_rescales(model, rescales: Iterable[Rescale]) -> None:
    """Fold `rescales` into `model`'s variables in place (a CLIPEncoder: the float function is unchanged up to
    float32 rounding)."""
    variables = {key: variable for key, (variable, _) in model.variables_by_key().items()}
    for rescale in rescales:
        for keys, operation in ((rescale.divided, np.divide), (rescale.multiplied, np.multiply)):
            for key, axis in keys:
                value = variables[key].numpy()
                variables[key].assign(operation(value, _along(rescale.scale, axis, value.ndim)).astype(value.dtype))
