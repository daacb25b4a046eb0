"""`plan_equalization`: the rescales one model gets before it is quantized, measured on its calibration samples.

Which pairs: in every transformer layer, layer_norm1 -> q/k/v, layer_norm2 -> fc1, query <-> key and value ->
out_proj; after the encoder, the final LayerNorm -> projection. The image tower's pre-LayerNorm feeds the residual
stream, not a linear map, and the MLP's hidden activations pass GELU, which no channel scale commutes with: those
stay as they are (choose.py says how each pair is decided)."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from clipedge.export.equalize.choose import query_key_balance, smoothing
from clipedge.export.equalize.observe import LinearStats, observe
from clipedge.export.equalize.rescale import KINDS, Rescale

__all__ = ["plan_equalization"]

log = logging.getLogger(__name__)

SAMPLED_ROWS = 512  # input rows kept per simulated linear: enough for a stable error, small beside the model
BATCH = 8


def _batches(encode, inputs: np.ndarray):
    for start in range(0, len(inputs), BATCH):
        yield encode(tf.constant(inputs[start:start + BATCH]))


def _layer_rescales(name: str, prefix: str, index: int, block, stats: dict[int, LinearStats]) -> list[Rescale]:
    attn, mlp = block.self_attn, block.mlp
    p = f"{prefix}.encoder.layers.{index}"
    at = f"{name} layer {index}"
    q, k, v, o = (f"{p}.self_attn.{n}_proj" for n in ("q", "k", "v", "out"))
    found = [
        smoothing(stats[id(attn.q_proj)], np.concatenate([attn.q_proj.weight.numpy(), attn.k_proj.weight.numpy(),
                                                          attn.v_proj.weight.numpy()], axis=1),
                  "norm-linear", f"{at} layer_norm1 -> q/k/v",
                  ((f"{p}.layer_norm1.weight", 0), (f"{p}.layer_norm1.bias", 0)),
                  ((f"{q}.weight", 0), (f"{k}.weight", 0), (f"{v}.weight", 0))),
        smoothing(stats[id(mlp.fc1)], mlp.fc1.weight.numpy(), "norm-linear", f"{at} layer_norm2 -> fc1",
                  ((f"{p}.layer_norm2.weight", 0), (f"{p}.layer_norm2.bias", 0)), ((f"{p}.mlp.fc1.weight", 0),)),
        query_key_balance(stats[id(attn.q_proj)], stats[id(attn.k_proj)], f"{at} query <-> key",
                          ((f"{k}.weight", 1), (f"{k}.bias", 0)), ((f"{q}.weight", 1), (f"{q}.bias", 0))),
        smoothing(stats[id(attn.out_proj)], attn.out_proj.weight.numpy(), "value-output", f"{at} v -> out_proj",
                  ((f"{v}.weight", 1), (f"{v}.bias", 0)), ((f"{o}.weight", 0),)),
    ]
    return [r for r in found if r is not None]


def _tower_rescales(name: str, prefix: str, tower, final_norm: str, projection: str,
                    inputs: np.ndarray) -> list[Rescale]:
    """One tower's rescales; `tower` is run on `inputs` and `projection` names both its attribute and its key."""
    blocks = tower.encoder.layers
    project = getattr(tower, projection)
    sampled = {id(project)} | {id(m) for b in blocks for m in (b.self_attn.q_proj, b.mlp.fc1, b.self_attn.out_proj)}
    calls = max(1, -(-len(inputs) // BATCH))
    stats = observe(_batches(tower, inputs), sampled, rows_per_call=max(1, SAMPLED_ROWS // calls))
    rescales = [r for i, block in enumerate(blocks) for r in _layer_rescales(name, prefix, i, block, stats)]
    final = smoothing(stats[id(project)], project.weight.numpy(), "norm-linear", f"{name} {final_norm} -> projection",
                      ((f"{prefix}.{final_norm}.weight", 0), (f"{prefix}.{final_norm}.bias", 0)),
                      ((f"{projection}.weight", 0),))
    return rescales + ([final] if final is not None else [])


def plan_equalization(model, pixels: np.ndarray | None, ids: np.ndarray | None) -> list[Rescale]:
    """The rescales for `model` (a CLIPEncoder) from calibration `pixels` (NHWC, preprocessed) and `ids` (int32);
    a tower without samples gets none. The model itself is not changed (apply_rescales does that)."""
    rescales = []
    if pixels is not None and len(pixels):
        rescales += _tower_rescales("image", "vision_model", model.vision_model, "post_layernorm",
                                    "visual_projection", pixels)
    if ids is not None and len(ids):
        rescales += _tower_rescales("text", "text_model", model.text_model, "final_layer_norm", "text_projection",
                                    ids.astype(np.int32))
    log.info("equalisation: %d rescales (%s)", len(rescales),
             ", ".join(f"{kind} {sum(r.kind == kind for r in rescales)}" for kind in KINDS))
    return rescales
