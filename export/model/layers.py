"""The transformer pieces both CLIP towers share, as `tf.Module`s holding plain `tf.Variable`s.

Why not Keras layers: Keras 3 layers inside a tf.Module leave VAR_HANDLE ops in the .tflite (NaN under XNNPACK),
and explicit variables keep the checkpoint mapping 1:1. Every module exposes `variables_by_key(prefix)`, which maps
HuggingFace state-dict keys to (variable, layout) pairs; `layout` says how the PyTorch tensor is rearranged for TF.

Shapes: B batch, N tokens, D width, H heads, Dh = D / H.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import tensorflow as tf

from clipedge.export.model.activations import Activation

__all__ = ["Layout", "VariableMap", "LayerNorm", "Linear", "Attention", "MLP", "ResidualBlock", "Transformer",
           "int8_layer_norms", "observing_linears"]

# "as_is": same array; "linear": PyTorch [out, in] -> TF [in, out]; "conv": [D, C, p, p] -> [p, p, C, D].
Layout = Literal["as_is", "linear", "conv"]
VariableMap = dict[str, tuple[tf.Variable, Layout]]


_INT8 = {"on": False}  # LayerNorm's full-int8 formulation while tracing (int8_layer_norms); tracing is single-threaded


@contextlib.contextmanager
def int8_layer_norms() -> Iterator[None]:
    """Trace every LayerNorm in its full-int8 formulation inside this block (CLIPEncoder.int8_graph)."""
    previous = _INT8["on"]
    _INT8["on"] = True
    try:
        yield
    finally:
        _INT8["on"] = previous


# Called with (linear, 2-D input, 2-D output) on every Linear call inside observing_linears (eager runs only).
_OBSERVERS: list[Callable[[Linear, tf.Tensor, tf.Tensor], None]] = []


@contextlib.contextmanager
def observing_linears(observer: Callable[[Linear, tf.Tensor, tf.Tensor], None]) -> Iterator[None]:
    """Show every Linear's input and output to `observer` inside this block: what the quantization-side
    equalisation (clipedge.export.equalize) measures on the calibration samples."""
    _OBSERVERS.append(observer)
    try:
        yield
    finally:
        _OBSERVERS.remove(observer)


def _init(shape: tuple[int, ...], rng: np.random.Generator, std: float = 0.02) -> tf.Variable:
    return tf.Variable(rng.normal(0.0, std, size=shape).astype(np.float32), trainable=True)


class LayerNorm(tf.Module):
    def __init__(self, width: int, eps: float, name: str | None = None) -> None:
        super().__init__(name=name)
        self.eps = eps
        self.weight = tf.Variable(tf.ones([width]), name="weight")
        self.bias = tf.Variable(tf.zeros([width]), name="bias")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        if _INT8["on"]:
            return self._int8_form(x)
        mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mean) * tf.math.rsqrt(variance + self.eps) * self.weight + self.bias

    def _int8_form(self, x: tf.Tensor) -> tf.Tensor:
        """The same float values as __call__ (tf.nn.moments squares x - mean too), written so that the full-int8
        file squares with MUL, which LiteRT's XNNPACK delegate runs in int8: tf.nn.moments becomes
        SQUARED_DIFFERENCE, which it does not, and each one split the graph off XNNPACK twice per LayerNorm onto
        LiteRT's reference kernel (0.24 ms of a [50, 768] tensor, 4x an int8 768x768 FULLY_CONNECTED). Measured,
        ViT-B/32 width, 2 layers, 1 thread: int8 image 5.6 -> 4.7 ms, text 4.1 -> 3.1 ms; min cosine unchanged."""
        centered = x - tf.reduce_mean(x, axis=-1, keepdims=True)
        variance = tf.reduce_mean(centered * centered, axis=-1, keepdims=True)
        return centered * tf.math.rsqrt(variance + self.eps) * self.weight + self.bias

    def l2_form(self, x: tf.Tensor) -> tf.Tensor:
        """The same normalization as sqrt(D) * l2_normalize(x - mean), which TFLite runs as its L2_NORMALIZATION
        kernel: in int8 it sums the squares of the int8 inputs exactly in int32, where the usual form stores the
        per-token variance as one more int8 tensor, whose single scale cannot hold both the smallest and the
        largest variances when they differ by 100x (the image tower's pre_layrnorm). Output steps are fixed at
        1/128 of the unit vector, coarse for wide tokens: measured, it helps pre_layrnorm and costs every other
        LayerNorm (ViT-B/32, 2 layers, all LayerNorms: min cosine image 0.9991 -> 0.9978, text 0.9967 -> 0.9935).
        Epsilon differs: LayerNorm divides by sqrt(var + eps), this by sqrt(var) (max(sum x^2, 1e-12)): relative
        difference eps / (2 var), 6e-6 at the demo's smallest patch variance 0.8. The [-1, D] reshape keeps the
        converter from fusing the centering into SQUARED_DIFFERENCE (which would leave no L2_NORMALIZATION)."""
        width = x.shape[-1]
        shape = [-1, *x.shape[1:]]
        centered = tf.reshape(x - tf.reduce_mean(x, axis=-1, keepdims=True), [-1, width])
        unit = tf.reshape(tf.math.l2_normalize(centered, axis=-1), shape)
        return unit * (math.sqrt(width) * self.weight) + self.bias

    def variables_by_key(self, prefix: str) -> VariableMap:
        return {f"{prefix}.weight": (self.weight, "as_is"), f"{prefix}.bias": (self.bias, "as_is")}


class Linear(tf.Module):
    """y = x W + b on the last axis. Inputs are flattened to 2-D so TFLite gets FULLY_CONNECTED (which its
    quantizers handle per channel) instead of BATCH_MATMUL."""

    def __init__(self, d_in: int, d_out: int, rng: np.random.Generator, bias: bool = True,
                 name: str | None = None) -> None:
        super().__init__(name=name)
        self.d_out = d_out
        self.weight = _init((d_in, d_out), rng)  # [in, out]
        self.bias = tf.Variable(tf.zeros([d_out]), name="bias") if bias else None

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        # Only static dims go into reshapes (batch as -1): no SHAPE/STRIDED_SLICE ops for the GPU delegate.
        tokens = x.shape[1] if x.shape.rank == 3 else None
        flat = tf.reshape(x, [-1, self.weight.shape[0]])
        y = tf.matmul(flat, self.weight)  # [B*N, D_in] -> [B*N, D_out]
        if self.bias is not None:
            y = y + self.bias
        for observer in _OBSERVERS:
            observer(self, flat, y)
        return y if tokens is None else tf.reshape(y, [-1, tokens, self.d_out])

    def variables_by_key(self, prefix: str) -> VariableMap:
        out: VariableMap = {f"{prefix}.weight": (self.weight, "linear")}
        if self.bias is not None:
            out[f"{prefix}.bias"] = (self.bias, "as_is")
        return out


class Attention(tf.Module):
    """Multi-head self-attention with separate q/k/v projections (HF's layout; OpenCLIP's fused in_proj is
    split at load time)."""

    def __init__(self, width: int, heads: int, rng: np.random.Generator, name: str | None = None) -> None:
        super().__init__(name=name)
        self.heads = heads
        self.head_dim = width // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.q_proj = Linear(width, width, rng, name="q_proj")
        self.k_proj = Linear(width, width, rng, name="k_proj")
        self.v_proj = Linear(width, width, rng, name="v_proj")
        self.out_proj = Linear(width, width, rng, name="out_proj")

    def _split_heads(self, x: tf.Tensor, tokens: int) -> tf.Tensor:
        x = tf.reshape(x, [-1, tokens, self.heads, self.head_dim])  # B N D -> B N H Dh
        return tf.transpose(x, [0, 2, 1, 3])  # B N H Dh -> B H N Dh

    def __call__(self, x: tf.Tensor, additive_mask: tf.Tensor | None = None) -> tf.Tensor:
        tokens, width = x.shape[1], x.shape[2]
        q = self._split_heads(self.q_proj(x) * self.scale, tokens)
        k = self._split_heads(self.k_proj(x), tokens)
        v = self._split_heads(self.v_proj(x), tokens)
        scores = tf.matmul(q, k, transpose_b=True)  # B H N N
        if additive_mask is not None:
            scores = scores + additive_mask
        weights = tf.nn.softmax(scores, axis=-1)
        context = tf.transpose(tf.matmul(weights, v), [0, 2, 1, 3])  # B H N Dh -> B N H Dh
        return self.out_proj(tf.reshape(context, [-1, tokens, width]))

    def variables_by_key(self, prefix: str) -> VariableMap:
        out: VariableMap = {}
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out.update(getattr(self, name).variables_by_key(f"{prefix}.{name}"))
        return out


class MLP(tf.Module):
    def __init__(self, width: int, hidden: int, act: str, rng: np.random.Generator, name: str | None = None) -> None:
        super().__init__(name=name)
        self.fc1 = Linear(width, hidden, rng, name="fc1")
        self.fc2 = Linear(hidden, width, rng, name="fc2")
        self.activation_fn = Activation(act)

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))

    def variables_by_key(self, prefix: str) -> VariableMap:
        return {**self.fc1.variables_by_key(f"{prefix}.fc1"), **self.fc2.variables_by_key(f"{prefix}.fc2"),
                **self.activation_fn.variables_by_key(f"{prefix}.activation_fn")}


class ResidualBlock(tf.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)) (HF calls the norms layer_norm1/2)."""

    def __init__(self, width: int, heads: int, hidden: int, act: str, eps: float, rng: np.random.Generator,
                 name: str | None = None) -> None:
        super().__init__(name=name)
        self.layer_norm1 = LayerNorm(width, eps, name="layer_norm1")
        self.self_attn = Attention(width, heads, rng, name="self_attn")
        self.layer_norm2 = LayerNorm(width, eps, name="layer_norm2")
        self.mlp = MLP(width, hidden, act, rng, name="mlp")

    # Op names carry "layer_i/" (auto precision keeps whole layers in float by name). Only this level opens a
    # module scope: tf.Module scopes are fixed at construction, so nested ones would not nest.
    @tf.Module.with_name_scope
    def __call__(self, x: tf.Tensor, additive_mask: tf.Tensor | None = None) -> tf.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), additive_mask)
        return x + self.mlp(self.layer_norm2(x))

    def variables_by_key(self, prefix: str) -> VariableMap:
        return {
            **self.layer_norm1.variables_by_key(f"{prefix}.layer_norm1"),
            **self.self_attn.variables_by_key(f"{prefix}.self_attn"),
            **self.layer_norm2.variables_by_key(f"{prefix}.layer_norm2"),
            **self.mlp.variables_by_key(f"{prefix}.mlp"),
        }


class Transformer(tf.Module):
    def __init__(self, width: int, layers: int, heads: int, hidden: int, act: str, eps: float,
                 rng: np.random.Generator, name: str | None = None) -> None:
        super().__init__(name=name)
        self.layers = [ResidualBlock(width, heads, hidden, act, eps, rng, name=f"layer_{i}") for i in range(layers)]

    def __call__(self, x: tf.Tensor, additive_mask: tf.Tensor | None = None) -> tf.Tensor:
        for block in self.layers:
            x = block(x, additive_mask)
        return x

    def variables_by_key(self, prefix: str) -> VariableMap:
        out: VariableMap = {}
        for i, block in enumerate(self.layers):
            out.update(block.variables_by_key(f"{prefix}.layers.{i}"))
        return out
