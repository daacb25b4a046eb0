"""`auto` precision: a layer made sensitive on purpose is the one kept at higher precision (in the recipe and in the
file itself); the recipe, the sensitivity table and the choice against fixed precisions are recorded in the bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clipedge.export.formats.auto.onnx_groups import onnx_group_precisions
from clipedge.export.formats.auto.tflite_groups import EdgeGroupQuantizer, group_precisions, node_groups
from clipedge.export.formats.tflite.flatbuffer import operators
from clipedge.export.pipeline.export_bundle import export_bundle
from clipedge.export.settings import ExportSettings
from clipedge.runtime.clip_runtime import load
from clipedge.runtime.manifest import Manifest
from tests.conftest import SMALL_TEXT, SMALL_VISION


@pytest.fixture(scope="module")
def planted_checkpoint(tmp_path_factory):
    """HF's own init (small weights, int8-friendly) with outlier channels planted in vision layer 1's MLP: three
    hidden units scaled up 200x (fc1) and back down (fc2). The per-tensor int8 range then spans the outliers and the
    other units lose their resolution: the pattern that breaks int8 ViTs (LLM.int8(), Dettmers et al. 2022). The
    other units' fc2 weights are 4x HF's init so that this MLP matters to the output: measured, int8 of layer 1 alone
    gives min cosine 0.76, int8 of any other group alone 0.99 or more."""
    from transformers import CLIPConfig, CLIPModel

    directory = tmp_path_factory.mktemp("planted")
    vision = {**SMALL_VISION, "num_hidden_layers": 3}
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=SMALL_TEXT, vision_config=vision, projection_dim=32)).eval()
    with torch.no_grad():
        mlp = model.vision_model.encoder.layers[1].mlp
        outliers = [3, 50, 97]
        mlp.fc1.weight[outliers] *= 200.0
        mlp.fc1.bias[outliers] = 5.0
        mlp.fc2.weight[:, outliers] /= 200.0
        others = [i for i in range(mlp.fc2.weight.shape[1]) if i not in outliers]
        mlp.fc2.weight[:, others] *= 4.0
    model.save_pretrained(directory)
    return directory


@pytest.mark.slow
def test_auto_keeps_exactly_the_planted_layer_at_higher_precision(planted_checkpoint, tmp_path):
    """Only full int8 competes (fixed dynamic-int8 would meet the target and win on size: a right answer, but not
    the search under test)."""
    out = tmp_path / "bundle"
    export_bundle(out, checkpoint=planted_checkpoint, formats=["tflite"], precisions=["auto"], towers=["image"],
                  gpu=False, target_cosine=0.95, progress=False, auto_candidates=["int8"])
    artifact = Manifest.read(out).find("image", "tflite", "auto")
    recipe, candidates = artifact.extra["recipe"], artifact.extra["candidates"]
    assert recipe["method"] == "ai-edge-quantizer-per-layer", candidates
    assert list(recipe["layers"]) == ["layer_1"] and recipe["layers"]["layer_1"] in ("float", "int16"), recipe
    assert recipe["met_target"] and recipe["candidates_built"] > 5
    assert [c for c in candidates if c["name"] == "fixed:int8"][0]["cosine_min"] < 0.95  # why a mix is needed
    assert recipe["search"]["rebuild"]["edge_quantizer_recipe"]  # rebuilds the file from fp32 + calibration
    assert artifact.fidelity["cosine_min"] >= 0.95  # on held-out samples, not the search ones
    # the file itself: layer_1 computes at its recipe's precision, every other layer in int8
    measured = group_precisions((out / artifact.file).read_bytes())
    expected = {"float": "FLOAT32", "int16": "INT16"}[recipe["layers"]["layer_1"]]
    assert set(measured["layer_1"]) == {expected}, measured
    for group in ("embeddings", "layer_0", "layer_2", "post_layernorm"):
        assert set(measured[group]) == {"INT8"}, (group, measured)
    table = (out / artifact.extra["sensitivity_table"]).read_text()
    assert "| layer_1 |" in table and "(chosen)" in table
    rows = {row.split("|")[1].strip(): row.split("|") for row in table.splitlines() if row.startswith("| ")}
    sensitivity = {g: float(r[3]) for g, r in rows.items() if g.startswith(("layer_", "embeddings", "post_"))}
    assert min(sensitivity, key=sensitivity.get) == "layer_1"
    assert rows["layer_1"][4].strip() == recipe["layers"]["layer_1"] and rows["layer_0"][4].strip() == "int8"
    runtime = load(out, precision="auto")
    assert runtime.encode_images([np.full((64, 64, 3), 128, np.uint8)]).shape == (1, 32)


def test_group_levels_are_what_the_file_computes(planted_checkpoint):
    """Each per-group level of the TFLite search, read back op by op from the quantized file."""
    from clipedge.export.checkpoint.loader import CLIPModel
    from clipedge.export.formats.tflite.convert import convert_tflite
    from clipedge.export.towers import tower_spec

    spec = tower_spec(CLIPModel.from_pretrained(planted_checkpoint), "image")
    pixels = np.random.default_rng(0).normal(size=(8, 64, 64, 3)).astype(np.float32)
    quantizer = EdgeGroupQuantizer(convert_tflite(spec, precision="fp32"), spec.signature, {"pixel_values": pixels})
    data = quantizer.quantize({"layer_0": "float", "layer_1": "int8-matmul", "layer_2": "int16"})
    kinds: dict[str, set[tuple[str, str]]] = {}
    for op in operators(data):
        group = op.scope.split("/")[0]
        if op.name not in ("QUANTIZE", "DEQUANTIZE"):
            kinds.setdefault(group, set()).add((op.name in ("FULLY_CONNECTED", "BATCH_MATMUL"), op.output_types[0]))
    assert {kind for _, kind in kinds["layer_0"]} == {"FLOAT32"}
    assert kinds["layer_1"] == {(True, "INT8"), (False, "FLOAT32")}
    assert {kind for _, kind in kinds["layer_2"]} == {"INT16", "FLOAT32"}  # no int16 SQUARED_DIFFERENCE: float
    assert {kind for _, kind in kinds["embeddings"]} == {"INT8"}
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=data).get_signature_runner(spec.signature)
    assert runner.get_input_details()["pixel_values"]["dtype"] == np.float32  # float in/out whatever the mix


@pytest.mark.slow
def test_auto_onnx_keeps_exactly_the_planted_layer_in_float(planted_checkpoint, tmp_path):
    """ONNX: the int8 precision searched layer by layer through ONNX Runtime's nodes_to_exclude."""
    out = tmp_path / "bundle"
    export_bundle(out, checkpoint=planted_checkpoint, formats=["onnx"], precisions=["auto"], towers=["image"],
                  target_cosine=0.95, progress=False, auto_candidates=["int8"])
    artifact = Manifest.read(out).find("image", "onnx", "auto")
    recipe = artifact.extra["recipe"]
    assert recipe["method"] == "onnxruntime-nodes-to-exclude", artifact.extra["candidates"]
    assert recipe["layers"] == {"layer_1": "float"} and recipe["met_target"]
    excluded = recipe["search"]["rebuild"]["nodes_to_exclude"]
    assert excluded and all(name.startswith("layer_1/") for name in excluded)
    assert artifact.fidelity["cosine_min"] >= 0.95
    measured = onnx_group_precisions((out / artifact.file).read_bytes())
    assert set(measured["layer_1"]) == {"FLOAT32"}, measured
    assert all(set(measured[g]) == {"INT8"} for g in ("embeddings", "layer_0", "layer_2")), measured


@pytest.mark.slow
def test_auto_tflite_searches_layers_and_records_the_table(small_hf_clip, tmp_path):
    out = tmp_path / "bundle"
    export_bundle(out, checkpoint=small_hf_clip[1], formats=["tflite"], precisions=["auto"], towers=["image"],
                  gpu=False, target_cosine=0.999, progress=False)
    artifact = Manifest.read(out).find("image", "tflite", "auto")
    recipe, candidates = artifact.extra["recipe"], artifact.extra["candidates"]
    table = (out / artifact.extra["sensitivity_table"]).read_text()
    for group in ("embeddings", "layer_0", "layer_1", "post_layernorm", "output"):
        assert f"| {group} |" in table
    assert recipe["candidates_built"] >= len(candidates) and recipe["met_target"]
    meeting = [c for c in candidates if c["cosine_min"] >= 0.999]
    chosen = [c for c in candidates if c["name"] == recipe["chosen"]]  # the file is bigger: it describes itself
    assert chosen and chosen[0] in meeting
    # no fixed precision meeting the target is both faster (beyond the 5% tie band) and smaller
    fast, small = chosen[0]["latency_ms"] / 1.05, chosen[0]["bytes"]
    assert not [c for c in meeting if c["latency_ms"] < fast and c["bytes"] < small]
    assert artifact.fidelity["cosine_min"] >= 0.995  # held-out samples


@pytest.mark.slow
def test_auto_picks_a_fixed_precision_when_it_is_the_optimum(small_hf_clip, tmp_path):
    """ONNX int8 already meets a loose target: auto says which fixed precision it is."""
    out = tmp_path / "bundle"
    export_bundle(out, checkpoint=small_hf_clip[1], formats=["onnx"], precisions=["auto"], towers=["image"],
                  target_cosine=0.99, progress=False)
    artifact = Manifest.read(out).find("image", "onnx", "auto")
    recipe = artifact.extra["recipe"]
    assert recipe["method"] == "fixed" and recipe["precision"] in ("dynamic-int8", "int8", "int4", "fp16", "fp32")
    chosen = [c for c in artifact.extra["candidates"] if c["name"] == f"fixed:{recipe['precision']}"][0]
    meeting = [c for c in artifact.extra["candidates"] if c["cosine_min"] >= 0.99]
    assert chosen in meeting
    assert chosen["latency_ms"] <= 1.05 * min(c["latency_ms"] for c in meeting)
    assert json.loads((out / "manifest.json").read_text())["export"]["target_cosine"] == 0.99


def test_node_groups_follow_name_scopes():
    names = ["layer_0/q_proj/MatMul", "layer_11/mlp/fc1/add", "pre_layrnorm/moments/mean", "embeddings/Conv2D",
             "encode_image_pixel_values:0", "visual_projection/MatMul", "arith.constant"]
    groups = node_groups(names)
    assert set(groups) == {"layer_0", "layer_11", "pre_layrnorm", "embeddings", "visual_projection", "io"}


@pytest.mark.slow
def test_auto_meets_a_top1_drop_target_on_the_labelled_folder(tmp_path):
    """The trained demo CLIP on its shipped labelled folder: auto's recorded top-1 drop is what the runtime gets with
    the chosen file (recomputed here through the runtime's own preprocessing), and it is within the target."""
    from clipedge.export.checkpoint.loader import CLIPModel
    from clipedge.export.pipeline.export_bundle import default_checkpoint
    from clipedge.runtime.datasets import read_eval_folder, shipped_data_dir
    from clipedge.runtime.metrics import top1_accuracy, zero_shot_predictions

    out = tmp_path / "bundle"
    export_bundle(out, formats=["tflite"], precisions=["auto"], towers=["image"], gpu=False, target_top1_drop=1.0,
                  progress=False, auto_candidates=["int8", "dynamic-int8"])  # a short search: CI time
    artifact = Manifest.read(out).find("image", "tflite", "auto")
    recipe = artifact.extra["recipe"]
    assert recipe["target_top1_drop"] == 1.0 and recipe["target_cosine_min"] is None
    assert recipe["met_target"] and recipe["top1_drop"] <= 1.0
    assert "top-1 drop" in (out / artifact.extra["sensitivity_table"]).read_text()

    labelled = read_eval_folder(shipped_data_dir() / "eval")
    runtime = load(out, precision="auto", format="tflite")
    tf_model = CLIPModel.from_pretrained(default_checkpoint())
    prompts = tf_model.encode_text(runtime.tokenize([f"a photo of a {c}." for c in labelled.classes])).numpy()
    float_top1 = top1_accuracy(zero_shot_predictions(
        tf_model.encode_image(runtime.preprocess(labelled.files)).numpy(), prompts), labelled.truth)
    ours = top1_accuracy(zero_shot_predictions(runtime.encode_images(labelled.files), prompts), labelled.truth)
    assert recipe["top1_drop"] == pytest.approx(100 * (float_top1 - ours), abs=1e-6)


def test_auto_targets_are_checked_before_work(tmp_path):
    from clipedge.runtime.errors import ExportError

    with pytest.raises(ExportError, match="top-1 drop is in percentage points"):
        export_bundle(tmp_path / "a", checkpoint="unused", precisions=["auto"], target_top1_drop=-1)
    with pytest.raises(ExportError, match="eval folder .* does not exist"):
        export_bundle(tmp_path / "b", checkpoint="unused", precisions=["auto"], target_top1_drop=1,
                      eval_dir=tmp_path / "missing")
    assert not list(tmp_path.iterdir())


def test_auto_alone_still_plans_the_gpu_variant():
    """`clipedge export --precisions auto` (gpu variant on by default) used to fail sorting the fp32 gpu jobs."""
    from clipedge.export.pipeline.plan import plan_jobs

    jobs = plan_jobs(ExportSettings(formats=["tflite", "onnx"], precisions=["auto"], towers=["image", "text"]))
    assert [j.file for j in jobs] == ["image_auto.tflite", "text_auto.tflite", "image_gpu_fp32.tflite",
                                      "text_gpu_fp32.tflite", "image_auto.onnx", "text_auto.onnx"]
