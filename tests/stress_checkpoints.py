"""Checkpoints with the activation statistics of trained CLIPs, built from any HF `CLIPModel` by exact
reparametrisations: the float function is unchanged (transformers' own outputs agree to float rounding), the
activations carry the outliers that break quantizers.

Trained ViTs and CLIPs show (FQ-ViT, Lin et al. 2022; SmoothQuant, Xiao et al. 2023; RepQ-ViT, Li et al. 2023):
  - a few "systematic" channels whose LayerNorm outputs are tens of times larger than the rest, the same channels
    in every layer: here LayerNorm's weight and bias on those channels times `strength`, and the rows of the linear
    maps that read them (q/k/v after layer_norm1, fc1 after layer_norm2, the projection after the final LayerNorm)
    divided by it;
  - query and key dimensions with wide ranges: q's output channel times r, k's same channel divided by r (q.k is
    unchanged per head);
  - value dimensions with wide ranges: v's output channel times r, out_proj's input row divided by r (attention
    mixes tokens per channel, so the context carries the same factor).
A reparametrisation whose scale the quantizer-side fix can estimate is the case this construction can make; a
trained model's outliers are not always matched by small weights, which is why docs/precisions.md says what this
construction does and does not prove.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Stress:
    """How strong and where: `strength` for the LayerNorm channels, `qk` and `vo` for the attention dimensions
    (the largest factor; others are drawn log-uniform between 1 and it); `channels` outlier channels per tower."""

    strength: float = 40.0
    qk: float = 8.0
    vo: float = 8.0
    channels: int = 4
    towers: tuple[str, ...] = ("vision", "text")
    seed: int = 0


def _tower_modules(model, tower: str):
    if tower == "vision":
        return model.vision_model, model.vision_model.post_layernorm, model.visual_projection
    return model.text_model, model.text_model.final_layer_norm, model.text_projection


def _scale_norm_channels(norm, readers, channels: np.ndarray, factor: np.ndarray) -> None:
    import torch

    f = torch.from_numpy(factor.astype(np.float32))
    norm.weight[channels] *= f
    norm.bias[channels] *= f
    for linear in readers:  # torch Linear weight is [out, in]: the input channels are columns
        linear.weight[:, channels] /= f


def _scale_attention(attn, rng: np.random.Generator, qk: float, vo: float) -> None:
    import torch

    width = attn.q_proj.weight.shape[0]
    if qk > 1:
        r = torch.from_numpy(np.exp(rng.uniform(0, np.log(qk), width)).astype(np.float32))
        attn.q_proj.weight *= r[:, None]
        attn.q_proj.bias *= r
        attn.k_proj.weight /= r[:, None]
        attn.k_proj.bias /= r
    if vo > 1:
        r = torch.from_numpy(np.exp(rng.uniform(0, np.log(vo), width)).astype(np.float32))
        attn.v_proj.weight *= r[:, None]
        attn.v_proj.bias *= r
        attn.out_proj.weight /= r[None, :]


def add_outliers_(model, stress: Stress = Stress()) -> None:
    """Give an HF `CLIPModel` (in place) the outlier statistics of a trained one; its outputs stay the same."""
    import torch

    rng = np.random.default_rng(stress.seed)
    with torch.no_grad():
        for tower in stress.towers:
            transformer, final_norm, projection = _tower_modules(model, tower)
            width = final_norm.weight.shape[0]
            channels = rng.choice(width, size=min(stress.channels, width), replace=False)  # systematic: every layer
            for layer in transformer.encoder.layers:
                factor = stress.strength * rng.uniform(0.5, 1.0, len(channels))
                attn = layer.self_attn
                _scale_norm_channels(layer.layer_norm1, [attn.q_proj, attn.k_proj, attn.v_proj], channels, factor)
                factor = stress.strength * rng.uniform(0.5, 1.0, len(channels))
                _scale_norm_channels(layer.layer_norm2, [layer.mlp.fc1], channels, factor)
                _scale_attention(attn, rng, stress.qk, stress.vo)
            _scale_norm_channels(final_norm, [projection], channels,
                                 stress.strength * rng.uniform(0.5, 1.0, len(channels)))


def make_stressed_clip(directory: Path, model, stress: Stress = Stress()):
    """Save a copy of `model` with outliers (add_outliers_) to `directory`; returns (stressed model, directory)."""
    import copy

    stressed = copy.deepcopy(model).eval()
    add_outliers_(stressed, stress)
    stressed.save_pretrained(directory)
    return stressed, directory
