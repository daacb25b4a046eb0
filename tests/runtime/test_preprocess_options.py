"""The preprocessing options of issue #22 in the runtime alone: how they are stored in a manifest, what is refused,
and hostile shapes under each resize mode. Their pixels are compared with the references elsewhere:
CLIPImageProcessor in tests/export/test_checkpoint_preprocess.py, open_clip in tests/export/test_openclip_preprocess.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from clipedge.runtime.errors import BundleError, InputError
from clipedge.runtime.preprocess import PreprocessConfig, preprocess
from clipedge.runtime.resize_modes import crop_axis, longest_size

transformers = pytest.importorskip("transformers")


def test_a_default_config_writes_only_the_original_keys():
    """A bundle that needs nothing new reads in runtimes from before these options."""
    assert set(PreprocessConfig().to_dict()) == {"image_size", "crop_size", "mean", "std", "resample"}
    config = PreprocessConfig(resize_mode="longest", crop_rule="torchvision", fill=(1, 2, 3), rescale_factor=1.0)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["resize_mode"] == "longest" and data["fill"] == [1, 2, 3] and data["rescale_factor"] == 1.0
    assert PreprocessConfig.from_dict(data) == config


@pytest.mark.parametrize("bad", [
    {"resize_mode": "fit"}, {"crop_rule": "opencv"}, {"fill": (0, 0)}, {"fill": (0, 0, 256)}, {"fill": (0.5, 0, 0)},
    {"fill": "red"}, {"rescale_factor": 0}, {"rescale_factor": float("inf")}, {"rescale_factor": "1"},
    {"rescale_factor": True},
])
def test_bad_values_are_refused_by_name(bad):
    with pytest.raises(InputError, match=next(iter(bad))):
        PreprocessConfig(**bad)


def test_the_manifest_check_names_a_bad_option(small_bundle, tmp_path):
    from clipedge.runtime.manifest import Manifest

    data = json.loads((small_bundle / "manifest.json").read_text())
    data["preprocess"]["resize_mode"] = "fit"
    with pytest.raises(BundleError, match="resize_mode"):
        from clipedge.runtime.manifest_schema import check_manifest

        check_manifest(data, "manifest.json", ("tflite", "onnx"))
    assert Manifest.read(small_bundle).data["preprocess"]["resample"] == "bicubic"


def test_crop_rules():
    # transformers: floor offset, odd padding pixel first; torchvision: offset rounded half to even, odd pixel last.
    assert crop_axis(227, 224, "transformers") == (1, 225, 0, 0)
    assert crop_axis(227, 224, "torchvision") == (2, 226, 0, 0)  # round(1.5) = 2
    assert crop_axis(229, 224, "torchvision") == (2, 226, 0, 0)  # round(2.5) = 2
    assert crop_axis(221, 224, "transformers") == (0, 221, 2, 1)
    assert crop_axis(221, 224, "torchvision") == (0, 221, 1, 2)
    assert longest_size(300, 41, 64) == (64, 9) and longest_size(1, 5000, 64) == (1, 64)


@pytest.mark.parametrize("mode", ["shortest", "longest", "squash", "none"])
def test_long_thin_images_stay_small_in_every_mode(mode):
    config = PreprocessConfig(image_size=224, crop_size=224, resize_mode=mode, crop_rule="torchvision",
                              fill=(10, 20, 30))
    for shape in [(1, 20000, 3), (20000, 1, 3)]:
        out = preprocess(np.full(shape, 200, np.uint8), config)
        assert out.shape == (1, 224, 224, 3) and np.isfinite(out).all()


def test_fast_decode_is_exact_without_a_resize(tmp_path):
    """resize_mode none crops the decoded pixels themselves: the fast path must not shrink them first."""
    path = tmp_path / "big.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (900, 1200, 3), dtype=np.uint8)).save(path, quality=95)
    config = PreprocessConfig(resize_mode="none")
    np.testing.assert_array_equal(preprocess([path], config, decode="fast"), preprocess([path], config))


def test_fill_and_rescale_against_clip_image_processor():
    """Padding (crop larger than the resized image) and a rescale factor, against CLIPImageProcessor."""
    processor = transformers.CLIPImageProcessorPil(size={"shortest_edge": 50}, crop_size={"height": 64, "width": 64},
                                                   rescale_factor=1 / 127.5, image_mean=[1, 1, 1], image_std=[1, 1, 1])
    config = PreprocessConfig(image_size=50, crop_size=64, rescale_factor=1 / 127.5, mean=(1, 1, 1), std=(1, 1, 1))
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (77, 51, 3), dtype=np.uint8))
    expected = processor(image, return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(preprocess(image, config), expected)
