"""Full-int8 TFLite (issue #4): fidelity of the shipped demo CLIP against the float TF model on held-out samples,
integer-only graphs, and the int8 formulation's float equivalence.

Before the fix (TF's calibrator ranges, -100 causal mask, class row and pre_layrnorm through int8 arithmetic) this
demo measured min cosine 0.517 (image) / 0.521 (text); after it 0.992 / 0.990 (32 held-out samples, 64 calibration
samples).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

CHECKPOINT = Path(__file__).resolve().parents[2] / "export" / "demo" / "demo_checkpoint"
# (min, mean) cosine floors: measured minus a small margin. Measured on the 224-px demo: image 0.9919, 0.9988; text
# 0.9896, 0.9984. On the demo retrained for issue #19: text 0.9760, 0.9973 (its text tower only ever saw the demo's
# caption words; the held-out captions are general English, whose untrained token rows make the worst case); on the
# one retrained with the attention term: text 0.9565, 0.9955 (p5 0.977); on the one trained with token dropping:
# image 0.9878, 0.9978, text 0.9281, 0.9938 (p5 0.964). On the demo's own 40 prompts, where its text tower is trained,
# that text tower measures min 0.9983 (PROMPT_FLOOR).
FLOORS = {"image": (0.985, 0.997), "text": (0.92, 0.99)}
PROMPT_FLOOR = 0.995


@pytest.fixture(scope="module")
def demo():
    from clipedge.export import CLIPModel
    from clipedge.export.pipeline.samples import build_samples
    from clipedge.runtime.preprocess import PreprocessConfig
    from clipedge.runtime.tokenizer import Tokenizer

    model = CLIPModel.from_pretrained(CHECKPOINT)
    size, context = model.config.vision.image_size, model.config.text.max_position_embeddings
    samples = build_samples(size, context, PreprocessConfig(image_size=size, crop_size=size),
                            Tokenizer.from_files(CHECKPOINT, context_length=context), samples=64)
    return model, samples


def float_tensors_inside(model_bytes: bytes) -> list[str]:
    """Ops other than the input QUANTIZE and output DEQUANTIZE that read or write a float tensor."""
    from clipedge.export.formats.tflite.flatbuffer import input_names, operators, output_names

    inputs, outputs = input_names(model_bytes), output_names(model_bytes)
    bad = []
    for op in operators(model_bytes):
        if op.name == "QUANTIZE" and set(op.inputs) <= inputs:
            continue
        if op.name == "DEQUANTIZE" and set(op.outputs) <= outputs:
            continue
        if {"FLOAT32", "FLOAT16"} & set(op.input_types + op.output_types):
            bad.append(op.name)
    return bad


@pytest.mark.parametrize("tower", ["image", "text"])
@pytest.mark.slow
def test_demo_full_int8_fidelity(demo, tower, tmp_path):
    from clipedge.export.formats.tflite.convert import convert_tflite
    from clipedge.export.pipeline.job import Job
    from clipedge.export.pipeline.verify import describe, run_file
    from clipedge.export.towers import tower_spec
    from clipedge.runtime.metrics import cosine_stats

    model, s = demo
    calibration = {"input_ids": s.calibration_ids} if tower == "text" else {"pixel_values": s.calibration_pixels}
    data = convert_tflite(model, tower, "int8", calibration=calibration)
    assert float_tensors_inside(data) == []
    inputs = s.eval_ids if tower == "text" else s.eval_pixels
    reference = (model.encode_text(inputs) if tower == "text" else model.encode_image(inputs)).numpy()
    path = tmp_path / f"{tower}.tflite"
    path.write_bytes(data)
    spec = tower_spec(model, tower)
    artifact = describe(spec, Job(tower, "tflite", "int8"), 1, path, {}, {})
    stats = cosine_stats(run_file(path, artifact, spec, inputs), reference)
    floor_min, floor_mean = FLOORS[tower]
    assert stats["cosine_min"] >= floor_min and stats["cosine_mean"] >= floor_mean, stats
    if tower == "text":
        from clipedge.export.demo.data import class_prompts
        from clipedge.runtime.tokenizer import Tokenizer

        ids = Tokenizer.from_files(CHECKPOINT, context_length=inputs.shape[1])(class_prompts())
        prompts = cosine_stats(run_file(path, artifact, spec, ids), model.encode_text(ids).numpy())
        assert prompts["cosine_min"] >= PROMPT_FLOOR, prompts


def test_int8_graph_keeps_float_outputs(small_hf_clip):
    """The int8 formulation (constant class row, pre_layrnorm as L2 normalization, smaller causal mask) changes
    float outputs only at rounding level (the L2 form's epsilon differs by eps / (2 var); demo: 7e-7 relative)."""
    from clipedge.export import CLIPModel
    from tests.conftest import random_ids

    _, directory = small_hf_clip
    model = CLIPModel.from_pretrained(directory)
    rng = np.random.default_rng(5)
    pixels = rng.normal(size=(2, 64, 64, 3)).astype(np.float32)
    ids = random_ids(rng, [0, 5, 40, 75]).astype(np.int32)
    image, text = model.encode_image(pixels).numpy(), model.encode_text(ids).numpy()
    with model.int8_graph():
        image8, text8 = model.encode_image(pixels).numpy(), model.encode_text(ids).numpy()
    assert not model.vision_model.int8_graph and not model.text_model.int8_graph
    np.testing.assert_allclose(image8, image, rtol=0, atol=1e-5 * np.abs(image).max())
    np.testing.assert_allclose(text8, text, rtol=0, atol=1e-6 * np.abs(text).max())
