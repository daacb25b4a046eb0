"""How the demo CLIP's weights start before `demo_train` trains them from scratch.

A released CLIP's own init is never seen (a checkpoint overwrites it); from scratch at the demo's small widths it
decides whether shapes are learned within the step budget at all, so it gets a module: OpenAI's width-scaled init,
sine-cosine position embeddings, and mimetic attention (docs/demo.md has the measurements).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from clipedge.export.model.clip import CLIPEncoder

__all__ = ["mimetic_init_", "openai_init_"]


def openai_init_(model: CLIPEncoder, seed: int) -> None:
    """Re-draw the weights as openai/CLIP `clip/model.py` `CLIP.initialize_parameters` does (MIT licence).

    The model's own init (std 0.02 everywhere) exists to be overwritten by a checkpoint. From scratch at these small
    widths it leaves the residual branches and position embeddings ~4x weaker than OpenAI's width-scaled init, and
    the ViT then learns colour but no shape within the step budget."""
    rng = np.random.default_rng([seed, 7])

    def normal(variable: tf.Variable, std: float) -> None:
        variable.assign(rng.normal(0.0, std, size=variable.shape).astype(np.float32))

    for tower, prefix in ((model.vision_model, "vision_model"), (model.text_model, "text_model")):
        width = tower.config.hidden_size
        layers = tower.config.num_hidden_layers
        attn_std, fc_std = width**-0.5, (2 * width) ** -0.5
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for key, (variable, _) in tower.variables_by_key(prefix).items():
            if key.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
                normal(variable, attn_std)
            elif key.endswith(("out_proj.weight", "fc2.weight")):
                normal(variable, proj_std)
            elif key.endswith("fc1.weight"):
                normal(variable, fc_std)
            elif key.endswith(("visual_projection.weight", "text_projection.weight")):
                normal(variable, width**-0.5)
            elif key.endswith("class_embedding"):
                normal(variable, width**-0.5)  # OpenAI: scale * randn, scale = width ** -0.5
            elif key.endswith("vision_model.embeddings.position_embedding.weight"):
                variable.assign(_sincos_positions(variable.shape, width**-0.5, rng))
    # Unchanged: token embedding (std 0.02), text position embedding (0.01), patch conv, LayerNorms 1/0, biases 0.


def mimetic_init_(model: CLIPEncoder, seed: int, qk: tuple[float, float] = (0.7, 0.7),
                  vo: tuple[float, float] = (0.4, 0.4)) -> None:
    """Mimetic initialization of the image tower's attention (Trockman & Kolter 2023): each head's W_q W_k^T starts
    near a * Z + b * I and the layer's W_v W_o near a * Z - b * I (Z Gaussian with variance 1 / width), the
    structure trained ViTs show. With the sine-cosine positions, a head then starts out attending to tokens like its
    own, i.e. its neighbours, a convolution-like prior that a from-scratch ViT otherwise spends thousands of steps
    finding (the plateau in docs/demo.md)."""
    rng = np.random.default_rng([seed, 11])
    width = model.vision_model.config.hidden_size
    for block in model.vision_model.encoder.layers:
        attention = block.self_attn
        dh = attention.head_dim
        q = np.zeros((width, width), np.float32)
        k = np.zeros((width, width), np.float32)
        for h in range(attention.heads):
            u, s, vt = np.linalg.svd(qk[0] * rng.normal(0, width**-0.5, (width, width)) + qk[1] * np.eye(width))
            q[:, h * dh : (h + 1) * dh] = u[:, :dh] * np.sqrt(s[:dh])
            k[:, h * dh : (h + 1) * dh] = vt[:dh].T * np.sqrt(s[:dh])
        u, s, vt = np.linalg.svd(vo[0] * rng.normal(0, width**-0.5, (width, width)) - vo[1] * np.eye(width))
        attention.q_proj.weight.assign(q)
        attention.k_proj.weight.assign(k)
        attention.v_proj.weight.assign((u * np.sqrt(s)).astype(np.float32))
        attention.out_proj.weight.assign((np.sqrt(s)[:, None] * vt).astype(np.float32))


def _sincos_positions(shape: tf.TensorShape, std: float, rng: np.random.Generator) -> np.ndarray:
    """The patch rows as 2-D sine-cosine features of (row, column) (MAE, He et al. 2022), the class row random; scaled
    to OpenAI's std. A smooth spatial code from step 0: neighbouring patches start out similar, which a
    from-scratch ViT otherwise has to learn before it can relate a shape's parts."""
    rows, width = int(shape[0]), int(shape[1])
    grid = math.isqrt(rows - 1)
    quarter = width // 4
    omega = 1.0 / 10000 ** (np.arange(quarter) / quarter)
    y, x = np.mgrid[0:grid, 0:grid].reshape(2, -1).astype(np.float64)
    features = [f(a[:, None] * omega[None, :]) for a in (y, x) for f in (np.sin, np.cos)]
    table = np.zeros((rows, width))
    table[1:, : 4 * quarter] = np.concatenate(features, axis=1)
    table[1:] *= std / table[1:].std()
    table[0] = rng.normal(0.0, std, width)
    return table.astype(np.float32)
