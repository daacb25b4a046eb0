"""Quantization on checkpoints with trained-like outlier channels (tests/stress_checkpoints.py): every precision held
to its floor against transformers, and the equalisation (clipedge.export.equalize) shown to be what holds it.

The checkpoints: HF's own random init (transformers' `CLIPModel(config)`, saved by `save_pretrained`), then outlier
LayerNorm channels 20-40x the rest in every layer of both towers, query/key and value/output dimensions up to 8x
wider, all by exact reparametrisations. Floors are issue #32's for trained-like checkpoints
(dynamic-int8 0.999, full int8 0.995, int16x8 0.999, int4 0.98) where this tiny model can meet them at all (FLOORS),
and the plain checkpoint's files must lose nothing to the equalisation (the ViT-B/32-size figures:
tests/scripts/stress_quantization.py, docs/precisions.md); without equalisation the same files fall far
below them (measured here: ONNX dynamic-int8 text ~0.9, TFLite int8 text ~0.95), which the last test checks so that
this file fails if the equalisation stops being applied.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipedge.export.pipeline.export_bundle import export_bundle
from tests.stress_checkpoints import Stress, make_stressed_clip
from tests.transformers_reference import cosine_min, measured, transformers_features

pytestmark = pytest.mark.slow

TOWER = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2)
PRECISIONS = ("dynamic-int8", "int8", "int16x8", "int4")
# The floors, except int16x8, which these tiny text towers miss without any outliers (plain, without
# equalisation: 0.9984); at ViT-B/32 size the issue's own hold (docs/precisions.md). ONNX dynamic-int8 meets 0.999
# through its u8-weights fallback (formats/onnx/convert.py: s8 at 7 bits gave 0.9979-0.9985 on these text towers).
# Without equalisation the stressed files fall to 0.84-0.95 (last tests).
FLOORS = {("tflite", "dynamic-int8"): 0.999, ("onnx", "dynamic-int8"): 0.999, ("tflite", "int8"): 0.995,
          ("onnx", "int8"): 0.995, ("tflite", "int16x8"): 0.998, ("tflite", "int4"): 0.98, ("onnx", "int4"): 0.98}
NOTHING_LOST = 0.0005  # plain checkpoint, equalised vs not


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from transformers import CLIPConfig, CLIPModel

    root = tmp_path_factory.mktemp("outliers")
    config = CLIPConfig(text_config=TOWER, vision_config={**TOWER, "image_size": 96, "patch_size": 16},
                        projection_dim=64)
    torch.manual_seed(0)
    plain = CLIPModel(config).eval()
    plain.save_pretrained(root / "plain")
    stressed, directory = make_stressed_clip(root / "stress", plain, Stress(strength=40.0, qk=8.0, vo=8.0))
    return root, plain, stressed, directory


def test_the_stress_checkpoint_computes_what_the_plain_one_does(checkpoints):
    """The construction is exact: transformers gives the same embeddings for both, while the LayerNorm outputs of
    the stressed model carry channels tens of times larger than the rest."""
    _, plain, stressed, _ = checkpoints
    rng = np.random.default_rng(0)
    inputs = {"image": rng.normal(size=(4, 96, 96, 3)).astype(np.float32),
              "text": np.array([[49406, 320, 1125, 539, 320, 1929, 49407] + [0] * 70] * 2, np.int32)}
    ours, reference = transformers_features(stressed, inputs), transformers_features(plain, inputs)
    for tower in ("image", "text"):
        assert cosine_min(ours[tower], reference[tower]) > 0.999999
    captured = []
    hook = stressed.vision_model.encoder.layers[1].layer_norm1.register_forward_hook(
        lambda module, args, out: captured.append(out))
    with torch.no_grad():
        stressed.get_image_features(pixel_values=torch.from_numpy(inputs["image"].transpose(0, 3, 1, 2).copy()))
    hook.remove()
    per_channel = captured[0].abs().amax(dim=(0, 1)).numpy()
    assert per_channel.max() > 15 * np.median(per_channel)


@pytest.fixture(scope="module")
def equalized(checkpoints):
    root, _, stressed, directory = checkpoints
    bundle = root / "bundle"
    result = export_bundle(bundle, checkpoint=directory, precisions=("fp32", *PRECISIONS), gpu=False, samples=32,
                           progress=False)
    print("\n" + result.table())
    return measured(bundle, stressed)


def test_every_precision_meets_its_floor_on_outliers(equalized):
    manifest, measured = equalized
    print({k: round(v, 5) for k, v in sorted(measured.items())})
    problems = []
    for artifact in manifest.artifacts:
        floor = 0.99999 if artifact.precision == "fp32" else FLOORS[(artifact.format, artifact.precision)]
        if measured[artifact.file] < floor:
            problems.append(f"{artifact.file}: {measured[artifact.file]:.5f} < {floor}")
        assert abs(measured[artifact.file] - artifact.fidelity["cosine_min"]) < 1e-4, artifact.file
    assert not problems, "; ".join(problems)


def test_the_manifest_records_the_equalisation(equalized):
    manifest, _ = equalized
    record = manifest.data["export"]["equalization"]
    layers = 2 * TOWER["num_hidden_layers"]
    assert record["rescales"]["norm-linear"] >= 2 * layers  # both LayerNorms of every layer carry outliers
    assert record["rescales"]["query-key"] == layers
    for entry in record["details"]:
        before, after = entry["simulated_int8_error"]
        assert after < before


def test_without_equalisation_the_same_files_fall_below_their_floors(checkpoints, equalized):
    root, _, stressed, directory = checkpoints
    bundle = root / "bundle-no-eq"
    export_bundle(bundle, checkpoint=directory, precisions=("dynamic-int8", "int8"), formats=("onnx",),
                  towers=("text",), gpu=False, samples=32, equalize=False, progress=False)
    manifest, without = measured(bundle, stressed)
    assert not manifest.data["export"]["equalization"]["details"]
    _, with_equalisation = equalized
    for name, cosine in without.items():
        assert cosine < 0.99 < with_equalisation[name], (name, cosine, with_equalisation[name])


def test_plain_checkpoints_lose_nothing_to_the_equalisation(checkpoints):
    """The same files of the plain checkpoint, exported with and without equalisation: where the simulation finds
    nothing to gain it changes nothing, and what it changes must not cost fidelity."""
    root, plain, _, _ = checkpoints
    cosines = {}
    for equalize in (False, True):
        bundle = root / f"bundle-plain-{equalize}"
        export_bundle(bundle, checkpoint=root / "plain", precisions=("fp32", *PRECISIONS), gpu=False, samples=32,
                      equalize=equalize, progress=False)
        cosines[equalize] = measured(bundle, plain)[1]
    before, after = cosines[False], cosines[True]
    print({name: (round(before[name], 5), round(after[name], 5)) for name in sorted(before)})
    lost = {name: round(before[name] - after[name], 5) for name in before if after[name] < before[name] - NOTHING_LOST}
    assert not lost, lost


# Other strengths, places and architectures, the 8-bit files only (the int16x8 and int4 recipes do not depend on the
# activation function or head layout): (hidden_act, heads, patch size, image size, Stress).
VARIANTS = {
    "quickgelu-3heads-patch14-strength100": ("quick_gelu", 3, 14, 112, Stress(strength=100.0, qk=16.0, vo=16.0,
                                                                              channels=2, seed=1)),
    "gelu-image-only-strength10": ("gelu", 4, 32, 128, Stress(strength=10.0, qk=4.0, vo=1.0, channels=8,
                                                              towers=("vision",), seed=2)),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_other_outliers_and_architectures_meet_the_8bit_floors(name, tmp_path):
    from transformers import CLIPConfig, CLIPModel

    act, heads, patch, size, stress = VARIANTS[name]
    tower = {**TOWER, "hidden_size": 32 * heads, "num_attention_heads": heads, "hidden_act": act}
    torch.manual_seed(1)
    plain = CLIPModel(CLIPConfig(text_config=tower, vision_config={**tower, "image_size": size, "patch_size": patch},
                                 projection_dim=48)).eval()
    stressed, directory = make_stressed_clip(tmp_path / "stress", plain, stress)
    export_bundle(tmp_path / "bundle", checkpoint=directory, precisions=("dynamic-int8", "int8"), gpu=False,
                  samples=32, progress=False)
    _, cosines = measured(tmp_path / "bundle", stressed)
    print(name, {k: round(v, 5) for k, v in sorted(cosines.items())})
    low = {file: round(c, 5) for file, c in cosines.items()
           if c < FLOORS[(file.rsplit(".", 1)[1], file.split("_", 1)[1].rsplit(".", 1)[0])]}
    assert not low, low
