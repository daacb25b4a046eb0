"""The MLP activations HF's CLIP accepts (`ACT2FN[config.hidden_act]` in CLIPMLP), each written with ops both
converters take, in the formulation each file format needs.

Why formulations: TensorFlow's exact GELU lowers to `Erfc`, which tf2onnx 1.17 does not convert ("No Op registered
for Erfc"), while TFLite has no ERF builtin at all (the converter fuses x·Φ(x) into its GELU op, but a bare erf
fails). So the ONNX graph writes exact GELU and the Laplace activation with `tf.math.erf`, and the TFLite graph
keeps `tf.nn.gelu` (one builtin GELU op) and a polynomial erf for Laplace. The reference (float TF model, training)
uses the TFLite form. `traced_for("onnx")` selects the ONNX form while a graph is traced (TowerSpec.function).

softplus is written max(x, 0) + log(1 + exp(-|x|)): TFLite lowers `tf.nn.softplus` to EXP/ADD/LOG, which overflows
to inf above x = 88 where the true value is x.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from clipedge.export.model.config import ACTIVATIONS

__all__ = ["Activation", "traced_for"]

_SQRT2 = math.sqrt(2.0)
_FORMAT = {"name": "tflite"}  # the format being traced; tracing is single-threaded


@contextlib.contextmanager
def traced_for(fmt: str) -> Iterator[None]:
    """Trace activations in the formulation of `fmt` ("tflite" | "onnx") inside this block."""
    previous = _FORMAT["name"]
    _FORMAT["name"] = fmt
    try:
        yield
    finally:
        _FORMAT["name"] = previous


def _erf(x: tf.Tensor) -> tf.Tensor:
    if _FORMAT["name"] == "onnx":
        return tf.math.erf(x)
    # Abramowitz & Stegun 7.1.26, absolute error under 1.5e-7: TFLite has no ERF op.
    t = 1.0 / (1.0 + 0.3275911 * tf.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return tf.sign(x) * (1.0 - poly * tf.exp(-x * x))


def _softplus(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.relu(x) + tf.math.log(1.0 + tf.exp(-tf.abs(x)))


def gelu(x: tf.Tensor) -> tf.Tensor:
    """Exact erf GELU (torch.nn.GELU(), OpenCLIP's default): TFLite's builtin GELU, or x·Φ(x) with Erf in ONNX."""
    if _FORMAT["name"] == "onnx":
        return 0.5 * x * (1.0 + tf.math.erf(x / _SQRT2))
    return tf.nn.gelu(x, approximate=False)


def _gelu_tanh(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.gelu(x, approximate=True)  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))


# Parameter-free activations, by HF's name. gelu_new, gelu_fast, gelu_accurate and the two tanh GELUs are one
# function up to float32 rounding (gelu_fast writes sqrt(2/pi) as 0.7978845608).
_PLAIN: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "quick_gelu": lambda x: x * tf.sigmoid(1.702 * x),  # OpenAI CLIP's QuickGELU
    "gelu": gelu,
    "gelu_python": gelu,
    "gelu_10": lambda x: tf.clip_by_value(gelu(x), -10.0, 10.0),
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_tanh,
    "gelu_accurate": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_python_tanh": _gelu_tanh,
    "relu": tf.nn.relu,
    "relu2": lambda x: tf.square(tf.nn.relu(x)),
    "relu6": tf.nn.relu6,
    "leaky_relu": lambda x: tf.nn.leaky_relu(x, alpha=0.01),  # torch.nn.LeakyReLU()'s default slope
    "sigmoid": tf.sigmoid,
    "tanh": tf.tanh,
    "silu": lambda x: x * tf.sigmoid(x),
    "swish": lambda x: x * tf.sigmoid(x),
    "mish": lambda x: x * tf.tanh(_softplus(x)),
    "hardswish": lambda x: x * tf.nn.relu6(x + 3.0) / 6.0,
    "laplace": lambda x: 0.5 * (1.0 + _erf((x - 0.707107) / (0.282095 * _SQRT2))),  # HF's mu and sigma
    "sqrtsoftplus": lambda x: tf.sqrt(_softplus(x)),
    "linear": tf.identity,
}
# Activations with learned parameters (HF stores them under `mlp.activation_fn.*`): name -> (key, shape, init).
_LEARNED: dict[str, tuple[tuple[str, tuple[int, ...], float], ...]] = {
    "prelu": (("weight", (1,), 0.25),),  # torch.nn.PReLU(): one slope
    # XIELU: softplus-parametrized slopes, HF's initial values (alpha_p 0.8, alpha_n 0.8 - beta, beta 0.5, eps -1e-6).
    # HF keeps these in bfloat16 unless the model is cast, and then rounds the slopes to bfloat16; ours are float32.
    "xielu": (("alpha_p", (1,), math.log(math.expm1(0.8))), ("alpha_n", (1,), math.log(math.expm1(0.3))),
              ("beta", (), 0.5), ("eps", (), -1e-6)),
}
assert set(_PLAIN) | set(_LEARNED) == set(ACTIVATIONS), "config.ACTIVATIONS and the implementations must agree"


class Activation(tf.Module):
    """One MLP's activation; holds the learned parameters of prelu and xielu (none for the others)."""

    def __init__(self, name: str) -> None:
        super().__init__(name="activation_fn")
        self.kind = name
        self.params = {key: tf.Variable(np.full(shape, init, np.float32), name=key)
                       for key, shape, init in _LEARNED.get(name, ())}

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        if self.kind == "prelu":
            return tf.nn.relu(x) + self.params["weight"] * tf.minimum(x, 0.0)
        if self.kind == "xielu":  # HF's XIELUActivation._xielu_python
            p = self.params
            alpha_p, alpha_n = _softplus(p["alpha_p"]), p["beta"] + _softplus(p["alpha_n"])
            negative = (tf.exp(tf.minimum(x, p["eps"])) - 1.0 - x) * alpha_n + p["beta"] * x
            return tf.where(x > 0, alpha_p * x * x + p["beta"] * x, negative)
        return _PLAIN[self.kind](x)

    def variables_by_key(self, prefix: str) -> dict[str, tuple[tf.Variable, str]]:
        return {f"{prefix}.{key}": (variable, "as_is") for key, variable in self.params.items()}
