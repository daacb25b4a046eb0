"""Tower specs: what goes in and out of each model file, one class per variant (`spec.TowerSpec` is the default
variant; `gpu.GpuTowerSpec`, `mobile.MobileTowerSpec`). A new variant is a subclass registered in `VARIANT_SPECS`:
the pipeline asks the spec and never branches on the variant."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.towers.gpu import GpuTowerSpec
from clipedge.export.towers.mobile import MobileTowerSpec
from clipedge.export.towers.spec import TOWER_NAMES, TowerSpec, eot_pool, normalize_uint8
from clipedge.runtime.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

__all__ = ["VARIANTS", "VARIANT_SPECS", "TowerSpec", "eot_pool", "normalize_uint8", "tower_spec"]

VARIANT_SPECS: dict[str, type[TowerSpec]] = {cls.variant: cls for cls in (TowerSpec, GpuTowerSpec, MobileTowerSpec)}
VARIANTS = tuple(VARIANT_SPECS)


def tower_spec(model: CLIPEncoder, tower: str, variant: str = "default",
               label_embeddings: np.ndarray | None = None, mean: Sequence[float] = OPENAI_CLIP_MEAN,
               std: Sequence[float] = OPENAI_CLIP_STD, labels: Sequence[str] | None = None,
               template: str | None = None) -> TowerSpec:
    """The spec of one tower in one variant. `label_embeddings` ([L, D] unit text embeddings) are given for, and
    only for, the classifier; `mean`/`std` are the checkpoint's, applied inside the mobile variant's graph."""
    if tower not in TOWER_NAMES:
        raise ValueError(f"unknown tower {tower!r}")
    if variant not in VARIANT_SPECS:
        raise ValueError(f"unknown variant {variant!r}")
    if (tower == "classifier") != (label_embeddings is not None):
        raise ValueError("label_embeddings are given for, and only for, the classifier")
    signature, output = TOWER_NAMES[tower]
    return VARIANT_SPECS[variant](tower, signature, output, model, label_embeddings, tuple(mean), tuple(std),
                                  tuple(labels) if labels is not None else None, template)
