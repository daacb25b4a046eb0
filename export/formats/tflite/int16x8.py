"""The TFLite int16x8 precision: int16 activations, int8 weights (per channel), float in/out, made by
ai-edge-quantizer from the tower's fp32 .tflite (TF's own 16x8 mode fails on these graphs).

Two changes to ai-edge-quantizer's `static_wi8_ai16` recipe, each found by comparing every tensor of the quantized
file with the fp32 file's on the held-out samples (issue #18; ViT-B/32 random weights, min cosine to the float
model: image 0.991 -> 0.99989, text 0.9988 -> 0.9997):

- Ranges are the min/max over all calibration samples. ai-edge-quantizer's calibrator keeps a moving average
  (smoothing 0.95) of each sample's min and max, so a tensor's range is mostly that of the last samples seen and
  any sample beyond it saturates: the samples that lose are exactly the held-out ones with a wider range (the min
  cosine, not the mean, fell). With 16 bits there is no reason to clip: 65536 levels cover the full range finely.
  Demo CLIP text tower 0.970 -> 0.9994; ViT-B/32 image 0.991 -> 0.9958, text 0.9988 -> 0.9997.
- The image tower's first LayerNorm (`pre_layrnorm`) computes its RSQRT in float. LiteRT's int16 RSQRT kernel
  interpolates a lookup table over the input's whole range; the class token's variance at that point is ~100x below
  the patch rows' (the same trap full int8 meets, docs/precisions.md), where 1/sqrt is steep and the table too
  coarse: that one op in float takes ViT-B/32 image 0.9958 -> 0.99989 (demo 0.944 -> 0.9996). It is one op on a
  [batch, tokens, 1] tensor (a DEQUANTIZE/QUANTIZE pair around it); every other op of the graph stays int16 but
  SQUARED_DIFFERENCE (the LayerNorm variance), for which LiteRT has no int16 kernel (ai-edge-quantizer leaves it
  float).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["FLOAT_OPS", "int16x8_recipe", "quantize_int16x8"]

# (op-scope regex, op) kept in float inside the int16 graph (see the module docstring).
FLOAT_OPS = (("(?:^|[/;])pre_layrnorm[/;]", "RSQRT"),)


def int16x8_recipe() -> list[dict]:
    """ai-edge-quantizer recipe: static int16 activations / int8 channelwise weights everywhere, FLOAT_OPS float,
    float input and output."""
    from ai_edge_quantizer import qtyping, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName
    manager = recipe_manager.RecipeManager()
    manager.add_static_config(".*", ops.ALL_SUPPORTED, activation_num_bits=16, weight_num_bits=8)
    for regex, op in FLOAT_OPS:
        manager.add_quantization_config(regex, ops[op], algorithm_key=AlgorithmName.NO_QUANTIZE)
    for op in (ops.INPUT, ops.OUTPUT):
        manager.add_quantization_config(".*", op, algorithm_key=AlgorithmName.NO_QUANTIZE)
    return manager.get_quantization_recipe()


def quantize_int16x8(float_model: bytes, signature: str, calibration: Mapping[str, np.ndarray] | None) -> bytes:
    """The int16x8 .tflite of a float .tflite, calibrated on `calibration` ({input: [N, ...]})."""
    from ai_edge_quantizer import quantizer

    from clipedge.export.formats.tflite.edge_quantizer import calibrate_min_max, per_sample_feeds, quiet_quantizer

    recipe = int16x8_recipe()
    feeds = per_sample_feeds(calibration, "int16x8")
    with quiet_quantizer():
        ranges = calibrate_min_max(float_model, signature, feeds, recipe)
        qt = quantizer.Quantizer(float_model)
        qt.load_quantization_recipe(recipe)
        return bytes(qt.quantize(ranges).quantized_model)
