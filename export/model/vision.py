"""CLIP's image tower: a pre-LN ViT with a class token (Radford et al. 2021, section 2.4; openai/CLIP clip/model.py
VisionTransformer), written for TFLite's builtin ops.

Input `pixel_values` is NHWC float32 [B, S, S, 3], already normalized (TFLite's native layout; the ONNX exporter adds
the NCHW transpose). Output is the projected, *unnormalized* image embedding [B, P]: GPU delegates have no
L2_NORMALIZATION, so the runtime normalizes.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from clipedge.export.model.config import CLIPImageConfig
from clipedge.export.model.layers import LayerNorm, Linear, Transformer, VariableMap, _init

__all__ = ["CLIPImageEncoder"]


class CLIPImageEncoder(tf.Module):
    def __init__(self, config: CLIPImageConfig, seed: int = 0, name: str | None = "vision_model") -> None:
        super().__init__(name=name)
        self.config = config
        rng = np.random.default_rng(seed)
        c = config
        width, patch = c.hidden_size, c.patch_size
        self.class_embedding = _init((width,), rng)
        self.patch_embedding = _init((patch, patch, c.num_channels, width), rng)  # conv kernel, no bias
        self.position_embedding = _init((c.num_patches + 1, width), rng)
        self.pre_layrnorm = LayerNorm(width, c.layer_norm_eps, name="pre_layrnorm")  # HF's spelling of ln_pre
        self.encoder = Transformer(width, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size,
                                   c.hidden_act, c.layer_norm_eps, rng, name="encoder")
        self.post_layernorm = LayerNorm(width, c.layer_norm_eps, name="post_layernorm")  # ln_post
        self.visual_projection = Linear(width, c.projection_dim, rng, bias=False, name="visual_projection")
        # Set while tracing for full-int8 conversion (CLIPEncoder.int8_graph): pre_layrnorm of the class row is
        # precomputed as a constant, the patch rows' pre_layrnorm is LayerNorm.l2_form; see _int8_embeddings().
        self.int8_graph = False
        self.fold_constants = False  # set while tracing an export (CLIPEncoder.export_graph): see _token_offsets

    def __call__(self, pixel_values: tf.Tensor) -> tf.Tensor:
        width = self.config.hidden_size
        x = self.tokens(pixel_values)
        with tf.name_scope("pooling"):
            pooled = tf.reshape(x[:, :1, :], [-1, width])  # class token; a slice without shrink_axis (GPU-friendly)
        return self.project(pooled)

    def tokens(self, pixel_values: tf.Tensor) -> tf.Tensor:
        """The transformer's output for every token, [B, 1 + patches, D], class token first. Training reads the
        patch tokens too (the demo's token-level loss); inference pools the class token."""
        return self.encoder(self.embed(pixel_values))

    def embed(self, pixel_values: tf.Tensor) -> tf.Tensor:
        """The encoder's input, [B, 1 + patches, D]: patch and class embeddings, positions, pre-LayerNorm. Apart
        from `tokens` so that the demo's training can read a middle layer's tokens."""
        c = self.config
        width, grid = c.hidden_size, c.image_size // c.patch_size
        if self.int8_graph:
            return self._int8_embeddings(pixel_values)
        with tf.name_scope("embeddings"):
            x = tf.nn.conv2d(pixel_values, self.patch_embedding, strides=c.patch_size, padding="VALID")  # B g g D
            x = tf.reshape(x, [-1, grid * grid, width])  # B g g D -> B N D (row-major, as torch's flatten(2))
            # The class token enters as a zero row plus (position_embedding[0] + class_embedding): a PAD of the
            # patch rows and an ADD of one constant, instead of a batch-sized tile/concat.
            x = tf.pad(x, [[0, 0], [1, 0], [0, 0]])  # B N D -> B N+1 D
            x = x + self._token_offsets()
        with tf.name_scope("pre_layrnorm"):
            return self.pre_layrnorm(x)

    def _token_offsets(self) -> tf.Tensor:
        """[N+1, D]: position_embedding with class_embedding added to row 0. In a frozen graph (`fold_constants`,
        set while tracing an export) it is computed here, eagerly, and enters as one constant: the converter does
        not fold ops on frozen variables, and LiteRT's GPU accelerator refused the PAD of the class embedding left
        in the file ("PAD: Expected 1 runtime input tensor(s), but node has 0"), running it on the CPU. Training
        keeps the ops, so gradients reach both variables. Same float32 sums either way."""
        grid = self.config.image_size // self.config.patch_size
        if not self.fold_constants:
            return self.position_embedding + tf.pad(self.class_embedding[None, :], [[0, grid * grid], [0, 0]])
        with tf.init_scope():  # eager, even while tracing
            offsets = self.position_embedding.numpy().copy()
            offsets[0] += self.class_embedding.numpy()
        return tf.constant(offsets)

    def _int8_embeddings(self, pixel_values: tf.Tensor) -> tf.Tensor:
        """Embeddings + pre_layrnorm for full int8. The class row (class_embedding + position_embedding[0]) is
        image-independent and far narrower than the patch rows (the demo checkpoint on calibration images: variance
        0.017 vs 0.8..105 across the row), so the one int8 scale of the tensor rounds it to noise before LayerNorm
        amplifies it (measured: min cosine 0.52 on the demo image tower). LayerNorm is per token, so the normalized
        class row is computed here once, in float, and enters after pre_layrnorm as a constant (same outputs up to
        float rounding). The patch rows' variances still span 0.8..105 there: pre_layrnorm runs as L2_NORMALIZATION
        (LayerNorm.l2_form). Demo image tower, min cosine over held-out samples: 0.517 before, 0.934 with the
        constant class row, 0.992 with l2_form too."""
        c = self.config
        width, grid = c.hidden_size, c.image_size // c.patch_size
        with tf.init_scope():  # eager, even while tracing: a plain constant in the graph
            row = (self.class_embedding + self.position_embedding[0])[None, None, :]
            class_row = self.pre_layrnorm(row).numpy()[0]  # 1 D
        with tf.name_scope("embeddings"):
            x = tf.nn.conv2d(pixel_values, self.patch_embedding, strides=c.patch_size, padding="VALID")  # B g g D
            x = tf.reshape(x, [-1, grid * grid, width]) + self.position_embedding[1:]  # B N D, patches only
        with tf.name_scope("pre_layrnorm"):
            x = tf.pad(self.pre_layrnorm.l2_form(x), [[0, 0], [1, 0], [0, 0]])  # B N D -> B N+1 D, zero class row
            return x + tf.constant(np.pad(class_row, [[0, grid * grid], [0, 0]]))

    def project(self, x: tf.Tensor) -> tf.Tensor:
        """post_layernorm then visual_projection, on pooled [B, D] or per-token [B, N, D] features."""
        with tf.name_scope("post_layernorm"):
            x = self.post_layernorm(x)
        with tf.name_scope("visual_projection"):
            return self.visual_projection(x)

    def variables_by_key(self, prefix: str = "vision_model") -> VariableMap:
        emb = f"{prefix}.embeddings"
        return {
            f"{emb}.class_embedding": (self.class_embedding, "as_is"),
            f"{emb}.patch_embedding.weight": (self.patch_embedding, "conv"),
            f"{emb}.position_embedding.weight": (self.position_embedding, "as_is"),
            **self.pre_layrnorm.variables_by_key(f"{prefix}.pre_layrnorm"),
            **self.encoder.variables_by_key(f"{prefix}.encoder"),
            **self.post_layernorm.variables_by_key(f"{prefix}.post_layernorm"),
            **self.visual_projection.variables_by_key("visual_projection"),
        }
