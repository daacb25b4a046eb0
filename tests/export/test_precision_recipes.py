"""int16x8 and int4 (issue #18): the files hold what their recipes say, and `clipedge report` never recommends a file
that export flagged for missing its fidelity.

On a small random HF CLIP (2 layers; ViT-B/32 numbers are tests/scripts/fidelity_precisions.py's): int4 keeps the
first quarter of the layers (here layer_0) and the projection at 8-bit weights, every other matmul 4-bit in blocks of
32, the token table int8, in TFLite and ONNX; int16x8 runs every op in int16 but the two named float ones, with
ranges covering every calibration sample.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipedge.runtime.metrics import cosine_stats
from tests.conftest import SMALL_TEXT, SMALL_VISION, make_hf_clip, random_ids

VISION = dict(SMALL_VISION, num_hidden_layers=4)  # 4 layers: the first quarter is exactly layer_0


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(model, {tower: (spec, fp32 .tflite, calibration feeds, held-out feeds), "raw": (NHWC pixels, ids)})."""
    from clipedge.export import CLIPModel
    from clipedge.export.formats.tflite.convert import convert_tflite
    from clipedge.export.towers import tower_spec

    _, directory = make_hf_clip(tmp_path_factory.mktemp("precisions"), text=SMALL_TEXT, vision=VISION, seed=3)
    model = CLIPModel.from_pretrained(directory)
    rng = np.random.default_rng(0)
    size = VISION["image_size"]
    pixels = rng.normal(0, 1, (24, size, size, 3)).astype(np.float32)
    ids = random_ids(rng, list(rng.integers(3, 20, 24))).astype(np.int32)
    towers = {}
    for tower in ("image", "text"):
        spec = tower_spec(model, tower)
        feeds = spec.feeds("tflite", pixels, ids)
        towers[tower] = (spec, convert_tflite(spec, tower, "fp32"), {k: v[:16] for k, v in feeds.items()},
                         {k: v[16:] for k, v in feeds.items()})
    towers["raw"] = (pixels, ids)
    return model, towers


def _run(model_bytes: bytes, signature: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=model_bytes).get_signature_runner(signature)
    count = len(next(iter(feeds.values())))
    return np.concatenate([next(iter(runner(**{k: v[i : i + 1] for k, v in feeds.items()}).values())).reshape(1, -1)
                           for i in range(count)])


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return cosine_stats(a, b)["cosine_min"]


# ---- int4 ------------------------------------------------------------------------------------------------------------
def test_kept_8bit_rule():
    from clipedge.export.formats.int4 import kept_8bit

    layers = [f"layer_{i}" for i in range(12)]
    assert kept_8bit(layers + ["text_projection", "embeddings"]) == ["layer_0", "layer_1", "layer_2",
                                                                       "text_projection"]
    assert kept_8bit([f"layer_{i}" for i in range(5)] + ["projection"]) == ["layer_0", "layer_1", "projection"]
    assert kept_8bit(["layer_10", "layer_9", "layer_2", "layer_1"]) == ["layer_1"]  # numeric order, not text
    assert kept_8bit(layers, first=5) == [f"layer_{i}" for i in range(5)]


def test_choose_kept_grows_the_8bit_prefix_until_the_target():
    from clipedge.export.formats.int4 import TARGET_COSINE, choose_kept

    groups = [f"layer_{i}" for i in range(12)] + ["text_projection"]
    built = []

    def build(kept):
        built.append(sum(g.startswith("layer_") for g in kept))
        return bytes([built[-1]])

    # the score a file reaches with its first n layers at 8 bits: the target is met at 5
    score = lambda data: TARGET_COSINE - 0.001 * (5 - data[0]) if data[0] < 5 else TARGET_COSINE  # noqa: E731
    data, kept = choose_kept(groups, build, score)
    assert built == [3, 4, 5] and data == bytes([5]) and kept[-1] == "text_projection" and len(kept) == 6
    built.clear()
    data, kept = choose_kept(groups, build, lambda data: 0.5)  # never met: stops at the first half
    assert built == [3, 4, 5, 6] and len(kept) == 7
    built.clear()
    assert choose_kept(groups, build, None)[0] == bytes([3]) and built == [3]  # no samples: the first quarter


def _check_kept(bits: dict[str, dict[str, int]], layers: int, projection: str) -> list[str]:
    """The 8-bit groups are the projection and a prefix layer_0..layer_k-1, k between a quarter and a half of the
    layers (rounded up); every other layer is 4-bit in blocks of 32. Returns the 8-bit layers."""
    eight = [f"layer_{i}" for i in range(layers) if set(bits[f"layer_{i}"]) == {"int8"}]
    four = [f"layer_{i}" for i in range(layers) if set(bits[f"layer_{i}"]) == {"int4-b32"}]
    assert eight + four == [f"layer_{i}" for i in range(layers)], bits  # a prefix, nothing else mixed in
    assert math.ceil(layers / 4) <= len(eight) <= math.ceil(layers / 2), bits
    assert set(bits[projection]) == {"int8"}
    return eight


@pytest.mark.parametrize("tower", ["image", "text"])
def test_int4_tflite_blocks_and_kept_layers(small, tower):
    from clipedge.export.formats.int4 import int4_tflite_recipe, quantize_int4_tflite, tflite_weight_bits

    _, towers = small
    spec, fp32, calibration, held_out = towers[tower]
    data = quantize_int4_tflite(fp32, spec.signature, calibration)
    assert int4_tflite_recipe(fp32)[1] == ["layer_0", "projection"]  # the first quarter: where the search starts
    bits = tflite_weight_bits(data)
    layers = 4 if tower == "image" else SMALL_TEXT["num_hidden_layers"]
    assert {f"layer_{i}" for i in range(layers)} | {"projection", "embeddings"} == set(bits)
    _check_kept(bits, layers, "projection")
    assert set(bits["embeddings"]) == {"int8"}
    if tower == "text":  # without calibration samples: the first quarter at 8 bits, the token table float
        fallback = tflite_weight_bits(quantize_int4_tflite(fp32, spec.signature, None))
        assert set(fallback["embeddings"]) == {"float32"} and set(fallback["layer_0"]) == {"int8"}
    # the patch conv (image) / token table (text) is what "embeddings" holds
    table = 49408 * SMALL_TEXT["hidden_size"] if tower == "text" else 3 * 16 * 16 * VISION["hidden_size"]
    assert bits["embeddings"]["int8"] == table
    # text: the token table is 3.2 of the 3.4 M weights, int8 now (float32 before: the file was 0.96 of fp32)
    assert len(data) / len(fp32) < (0.27 if tower == "text" else 0.25), len(data) / len(fp32)
    reference = _run(fp32, spec.signature, held_out)
    assert _min_cosine(_run(data, spec.signature, held_out), reference) > 0.97


@pytest.mark.parametrize("tower", ["image", "text"])
@pytest.mark.slow
def test_int4_onnx_blocks_and_kept_layers(small, tower):
    import onnx
    import onnxruntime as ort

    from clipedge.export.formats.int4 import onnx_weight_bits
    from clipedge.export.formats.onnx.convert import convert_onnx

    model, towers = small
    spec = towers[tower][0]
    fp32 = convert_onnx(spec, tower, "fp32")
    pixels, ids = towers["raw"]
    calibration = spec.feeds("onnx", pixels[:16], ids[:16])
    data = convert_onnx(spec, tower, "int4", calibration=calibration, fp32_model=fp32)
    bits = onnx_weight_bits(onnx.load_from_string(data))
    layers = 4 if tower == "image" else SMALL_TEXT["num_hidden_layers"]
    projection = f"{'visual' if tower == 'image' else 'text'}_projection"
    _check_kept(bits, layers, projection)
    if tower == "text":
        assert bits["embeddings"] == {"int8": 49408 * SMALL_TEXT["hidden_size"]}  # the token table
        assert len(data) / len(fp32) < 0.27, len(data) / len(fp32)
    # runs on ONNX Runtime's CPU provider and stays close to fp32
    rng = np.random.default_rng(5)
    if tower == "text":
        feeds = {"input_ids": random_ids(rng, [5, 12, 30]).astype(np.int32)}
    else:
        feeds = {"pixel_values": rng.normal(0, 1, (3, 3, 64, 64)).astype(np.float32)}
    run = lambda b: ort.InferenceSession(b, providers=["CPUExecutionProvider"]).run(None, feeds)[0]  # noqa: E731
    assert _min_cosine(run(data), run(fp32)) > 0.97


# ---- int16x8 ---------------------------------------------------------------------------------------------------------
def test_int16x8_ops_are_int16_but_the_named_float_ones(small):
    from clipedge.export.formats.tflite.flatbuffer import operators
    from clipedge.export.formats.tflite.int16x8 import quantize_int16x8

    _, towers = small
    spec, fp32, calibration, held_out = towers["image"]
    data = quantize_int16x8(fp32, spec.signature, calibration)
    float_ops = sorted({(op.name, op.scope.split("/")[0]) for op in operators(data)
                        if op.name not in ("QUANTIZE", "DEQUANTIZE") and "FLOAT32" in op.output_types})
    # SQUARED_DIFFERENCE has no int16 kernel in LiteRT; pre_layrnorm's RSQRT is float by the recipe
    assert {name for name, _ in float_ops} == {"SQUARED_DIFFERENCE", "RSQRT"}
    assert [scope for name, scope in float_ops if name == "RSQRT"] == ["pre_layrnorm"]
    quantized = {t for op in operators(data) for t in op.output_types if op.name not in ("QUANTIZE", "DEQUANTIZE")}
    assert "INT8" not in quantized  # no activation fell back to int8
    assert _min_cosine(_run(data, spec.signature, held_out), _run(fp32, spec.signature, held_out)) > 0.999


def test_int16x8_ranges_cover_every_calibration_sample(small):
    """ai-edge-quantizer's own calibration averages each sample's min/max (the last samples weigh most): a wide first
    sample would saturate. calibrate_min_max keeps the union."""
    from clipedge.export.formats.tflite.edge_quantizer import calibrate_min_max, per_sample_feeds
    from clipedge.export.formats.tflite.int16x8 import int16x8_recipe

    _, towers = small
    spec, fp32, calibration, _ = towers["image"]
    scaled = {k: v.copy() for k, v in calibration.items()}
    scaled["pixel_values"][1:] *= 0.05  # sample 0 is 20x wider than the others
    ranges = calibrate_min_max(fp32, spec.signature, per_sample_feeds(scaled, "int16x8"), int16x8_recipe())
    name = next(n for n in ranges if n.endswith("pixel_values:0") or "pixel_values" in n)
    first = scaled["pixel_values"][0]
    assert float(np.max(ranges[name]["max"])) == pytest.approx(float(first.max()), rel=1e-6)
    assert float(np.min(ranges[name]["min"])) == pytest.approx(float(first.min()), rel=1e-6)


# ---- the report never recommends a flagged file ----------------------------------------------------------------------
def _report_data() -> dict:
    pairs, artifacts = [], []
    for precision, mb, ms, flags in (("fp32", 100, 30, []), ("int8", 25, 10, []), ("int4", 15, 5, ["low-fidelity"]),
                                     ("fp16", 50, 40, ["below-floor"])):
        pairs.append({"format": "tflite", "precision": precision, "variant": "default",
                      "files": [f"image_{precision}.tflite", f"text_{precision}.tflite"], "bytes": int(mb * 2e6),
                      "latency_batch_1_ms": {"image": ms, "text": ms}, "min_cosine_p5_vs_fp32": 0.995})
        for tower in ("image", "text"):
            artifacts.append({"file": f"{tower}_{precision}.tflite", "tower": tower, "format": "tflite",
                              "precision": precision, "variant": "default", "bytes": int(mb * 1e6),
                              "latency": {"batch_1": {"median_ms": ms}}, "fidelity_vs_fp32": {"cosine_p5": 0.995},
                              "flags": [*flags, "gpu-incompatible"]})
    return {"pairs": pairs, "artifacts": artifacts, "cross_precision": []}


def test_report_never_recommends_a_flagged_file():
    from clipedge.runtime.report.analysis import recommend

    data = _report_data()
    rec = recommend(data)
    # int4 is the smallest and fastest pair and passes the cosine stand-in rule: only its flag keeps it out
    assert rec["smallest"]["precision"] == "int8" and rec["fastest"]["precision"] == "int8"
    assert rec["fastest_any"]["precision"] == "int8"
    assert rec["smallest_image"]["file"] == "image_int8.tflite" and rec["smallest_text"]["file"] == "text_int8.tflite"
    assert rec["excluded"] == {"image_int4.tflite": ["low-fidelity"], "text_int4.tflite": ["low-fidelity"],
                               "image_fp16.tflite": ["below-floor"], "text_fp16.tflite": ["below-floor"]}
    for flags in ([], ["gpu-incompatible"]):  # other flags do not exclude
        for record in data["artifacts"]:
            record["flags"] = flags
        assert recommend(data)["smallest"]["precision"] == "int4"


def test_report_says_which_files_it_left_out():
    from clipedge.runtime.report.analysis import recommend
    from clipedge.runtime.report.render import _recommendations

    data = _report_data()
    data["recommendations"] = recommend(data)
    text = "\n".join(_recommendations(data))
    assert "`image_int4.tflite` (low-fidelity)" in text and "`text_fp16.tflite` (below-floor)" in text
    assert "int4" not in text.split("Never recommended")[0]


@pytest.mark.slow
def test_int4_exports_a_tower_whose_width_is_not_a_multiple_of_the_block(tmp_path):
    """A tower 80 wide (issue #33): ai-edge-quantizer refuses blockwise int4 on an 80-wide input ("not divisible by
    block size 32"); those matmuls keep 8-bit weights and the export goes on, in both formats, every file verified."""
    from clipedge.export.pipeline.export_bundle import export_bundle
    from clipedge.runtime.manifest import Manifest

    _, directory = make_hf_clip(tmp_path / "ckpt", text=dict(hidden_size=80, intermediate_size=96,
                                                             num_hidden_layers=2, num_attention_heads=2),
                                vision=dict(hidden_size=80, intermediate_size=96, num_hidden_layers=2,
                                            num_attention_heads=2, image_size=64, patch_size=16), projection_dim=40)
    out = tmp_path / "bundle"
    export_bundle(out, checkpoint=directory, precisions=("fp32", "int4"), gpu=False, samples=8, progress=False)
    manifest = Manifest.read(out)
    int4 = [a for a in manifest.artifacts if a.precision == "int4"]
    assert {(a.tower, a.format) for a in int4} == {(t, f) for t in ("image", "text") for f in ("tflite", "onnx")}
    assert all(a.fidelity["cosine_min"] > 0.95 for a in int4), [(a.file, a.fidelity["cosine_min"]) for a in int4]
