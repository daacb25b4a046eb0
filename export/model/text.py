"""CLIP's text tower: a causal pre-LN transformer pooled at the end-of-text token (openai/CLIP clip/model.py
encode_text; HF CLIPTextTransformer), written for TFLite's builtin ops.

Input `input_ids` is int32 [B, N] (N = 77 for released models). Output is the projected, *unnormalized* text
embedding [B, P].
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from clipedge.export.model.config import CLIPTextConfig
from clipedge.export.model.layers import LayerNorm, Linear, Transformer, VariableMap, _init

__all__ = ["CLIPTextEncoder", "CAUSAL_MASK_VALUE", "INT8_CAUSAL_MASK_VALUE", "causal_mask"]

# Added to attention scores above the diagonal. Not -inf/-1e9: full-int8 conversion gives the masked-score tensor
# one scale for its whole range, and -1e9 makes that scale ~1e7 per step, wiping out the real scores. exp(-100) is
# below float32's smallest normal number relative to any unmasked score within 80 of the row maximum, so float
# outputs are unchanged (tests/export/test_model_parity.py compares with HF, which uses the dtype minimum).
CAUSAL_MASK_VALUE = -100.0
# The mask of the full-int8 graph (CLIPEncoder.int8_graph). The masked scores share one int8 tensor with the real
# ones, so -100 sets its step to ~0.45 (the demo's scores of +-8 get ~35 levels; softmax errs by up to e^0.22).
# -30 still leaves a masked weight at e^-30 of the row maximum while unmasked scores are within 13 of it (below
# float32 rounding; int8 softmax steps are 1/256). Measured, ViT-B/32 random weights, 2 layers, full-int8 text
# min cosine: 0.9910 with -100, 0.9967 with -30, 0.9969 with -15.
INT8_CAUSAL_MASK_VALUE = -30.0


def causal_mask(tokens: int, value: float = CAUSAL_MASK_VALUE) -> np.ndarray:
    """[1, 1, N, N] additive mask: 0 on and below the diagonal, `value` above (token i sees tokens <= i)."""
    return (np.triu(np.ones((tokens, tokens), np.float32), k=1) * value)[None, None]


class CLIPTextEncoder(tf.Module):
    def __init__(self, config: CLIPTextConfig, seed: int = 1, name: str | None = "text_model") -> None:
        super().__init__(name=name)
        self.config = config
        rng = np.random.default_rng(seed)
        c = config
        width = c.hidden_size
        self.token_embedding = _init((c.vocab_size, width), rng)
        self.position_embedding = _init((c.max_position_embeddings, width), rng, std=0.01)
        self.encoder = Transformer(width, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size,
                                   c.hidden_act, c.layer_norm_eps, rng, name="encoder")
        self.final_layer_norm = LayerNorm(width, c.layer_norm_eps, name="final_layer_norm")  # ln_final
        self.text_projection = Linear(width, c.projection_dim, rng, bias=False, name="text_projection")
        self.int8_graph = False  # set while tracing for full-int8 conversion: INT8_CAUSAL_MASK_VALUE

    def _mask(self, tokens: int) -> tf.Tensor:
        return tf.constant(causal_mask(tokens, INT8_CAUSAL_MASK_VALUE) if self.int8_graph else causal_mask(tokens))

    def eot_index(self, input_ids: tf.Tensor) -> tf.Tensor:
        """[B] position to pool at, by HF's rule: configs with eos_token_id == 2 (written before HF PR #24773)
        take the argmax of the ids (OpenAI's rule, EOT being the largest id); others the first EOT position."""
        if self.config.eos_token_id == 2:
            return tf.argmax(input_ids, axis=-1, output_type=tf.int32)
        is_eot = tf.cast(tf.equal(input_ids, self.config.eos_token_id), tf.int32)
        return tf.argmax(is_eot, axis=-1, output_type=tf.int32)  # argmax returns the first maximum

    def embed_tokens(self, input_ids: tf.Tensor) -> tf.Tensor:
        tokens = input_ids.shape[1]
        with tf.name_scope("embeddings"):
            return tf.gather(self.token_embedding, input_ids) + self.position_embedding[:tokens]  # B N D

    def encode_embeddings(self, x: tf.Tensor, eot_index: tf.Tensor) -> tf.Tensor:
        """Transformer, pooling and projection from token embeddings [B, N, D]: the part every variant keeps in
        the graph (a GPU variant may do the lookup and EOT search outside)."""
        x = self.encoder(x, self._mask(x.shape[1]))
        with tf.name_scope("pooling"):
            pooled = tf.gather(x, eot_index, batch_dims=1)  # B N D -> B D
        with tf.name_scope("final_layer_norm"):
            pooled = self.final_layer_norm(pooled)  # LayerNorm is per token: pool first
        with tf.name_scope("text_projection"):
            return self.text_projection(pooled)

    def __call__(self, input_ids: tf.Tensor) -> tf.Tensor:
        input_ids = tf.cast(input_ids, tf.int32)
        return self.encode_embeddings(self.embed_tokens(input_ids), self.eot_index(input_ids))

    def encode_gpu(self, token_embeddings: tf.Tensor, eot_mask: tf.Tensor) -> tf.Tensor:
        """The GPU variant: LiteRT's GPU accelerator has no 2-D GATHER, so the runtime looks up the token table
        (`token_embeddings` [B, N, D], without positions) and marks the EOT position (`eot_mask` one-hot float
        [B, N]); pooling becomes a [B, 1, N] x [B, N, D] matmul."""
        tokens, width = token_embeddings.shape[1], token_embeddings.shape[2]
        x = token_embeddings + self.position_embedding[:tokens]
        x = self.encoder(x, self._mask(tokens))
        pooled = tf.reshape(tf.matmul(tf.reshape(eot_mask, [-1, 1, tokens]), x), [-1, width])  # B 1 N @ B N D
        return self.text_projection(self.final_layer_norm(pooled))

    def variables_by_key(self, prefix: str = "text_model") -> VariableMap:
        emb = f"{prefix}.embeddings"
        return {
            f"{emb}.token_embedding.weight": (self.token_embedding, "as_is"),
            f"{emb}.position_embedding.weight": (self.position_embedding, "as_is"),
            **self.encoder.variables_by_key(f"{prefix}.encoder"),
            **self.final_layer_norm.variables_by_key(f"{prefix}.final_layer_norm"),
            **self.text_projection.variables_by_key("text_projection"),
        }
