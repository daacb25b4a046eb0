"""OpenCLIP checkpoints with their own preprocessing (issue #22), against open_clip itself.

The reference is open_clip 3.3's own code: its model (`create_model`, QuickGELU and exact GELU), its checkpoint
loading (`create_model_from_pretrained("local-dir:...")`, which reads open_clip_config.json's `model_cfg` and
`preprocess_cfg`) and its eval transform (`image_transform_v2`: torchvision's Resize / CenterCrop / ResizeKeepRatio /
CenterCropOrPad / ToTensor / Normalize on PIL images). open_clip imports torchvision, and PyPI's torchvision cannot
load its C extension next to this torch build ("operator torchvision::nms does not exist"); its transforms are pure
Python. So torchvision is installed in a directory of its own (INSTALL below), never on the venv's path (transformers
would find it and use it), and only child processes see it, through a stub `torchvision` package whose `__path__` is
that directory's (no `__init__`, so no C extension). This file is also the child: `python THIS_FILE REQUEST.json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the fast tier (`pytest -m 'not slow'`) leaves this file out

ROOT = Path(__file__).resolve().parents[2]
TORCHVISION_DIR = Path(os.environ.get("CLIPEDGE_TORCHVISION_TRANSFORMS", ROOT / ".venv" / "torchvision-transforms"))
INSTALL = "pip install -q --no-deps --target .venv/torchvision-transforms torchvision==0.28.0"
PHOTOS = sorted((ROOT / "calibration_data" / "photos").glob("*.webp"))
FLOOR = 0.9999  # fp32: min cosine on every image (docs/precisions.md)
SMALL_CFG = {"embed_dim": 32,
             "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 16, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}
# The preprocessing of each checkpoint: non-default normalization, interpolation, resize mode and fill.
CHECKPOINTS = {
    "siglip-like-safetensors": dict(quick_gelu=True, weights="open_clip_model.safetensors",
                                    preprocess={"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                                                "interpolation": "bilinear", "resize_mode": "shortest"}),
    "letterbox-bin": dict(quick_gelu=False, weights="open_clip_pytorch_model.bin",
                          preprocess={"mean": [0.0, 0.0, 0.0], "std": 1.0, "interpolation": "bicubic",
                                      "resize_mode": "longest", "fill_color": 128}),
    "squash-imagenet-safetensors": dict(quick_gelu=True, weights="open_clip_model.safetensors",
                                        preprocess={"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                                    "interpolation": "bicubic", "resize_mode": "squash"}),
}


# ---- the child: open_clip's side ------------------------------------------------------------------------------------

def _child(request: dict) -> dict:
    import open_clip
    import torch
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
    from PIL import Image

    out: dict = {}
    if request["task"] == "build":  # a checkpoint made by open_clip's own model code, saved as the hub does
        directory = Path(request["dir"])
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "open_clip_config.json").write_text(json.dumps(
            {"model_cfg": request["model_cfg"], "preprocess_cfg": request["preprocess_cfg"]}))
        model = open_clip.create_model("local-dir:" + str(directory))
        generator = torch.Generator().manual_seed(request["seed"])
        with torch.no_grad():  # visibly non-trivial weights (tests/conftest.py randomize_)
            for name, param in model.named_parameters():
                noise = torch.randn(param.shape, generator=generator)
                if name == "logit_scale":
                    param.fill_(2.6592)
                elif "ln" in name and name.endswith("weight"):
                    param.copy_(1.0 + 0.2 * noise)
                else:
                    param.copy_(0.05 * noise)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if request["weights"].endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(state, str(directory / request["weights"]))
        else:
            torch.save(state, directory / request["weights"])
    elif request["task"] == "embed":  # open_clip loads the repo and prepares the images by its own rules
        model, transform = open_clip.create_model_from_pretrained("local-dir:" + request["dir"])
        tokenizer = open_clip.get_tokenizer("local-dir:" + request["dir"])
        pixels = torch.stack([transform(Image.open(p)) for p in request["images"]])
        with torch.no_grad():
            out["image"] = model.encode_image(pixels).numpy().tolist()
            out["text"] = model.encode_text(tokenizer(request["texts"])).numpy().tolist()
        out["pixels"] = pixels.numpy().transpose(0, 2, 3, 1).tolist()
        out["preprocess_cfg"] = {k: list(v) if isinstance(v, tuple) else v
                                 for k, v in model.visual.preprocess_cfg.items()}
    elif request["task"] == "pixels":  # image_transform_v2 for each preprocess_cfg
        for name, cfg in request["configs"].items():
            merged = merge_preprocess_dict(PreprocessCfg(), cfg)
            merged["size"] = request["size"]
            transform = image_transform_v2(PreprocessCfg(**merged), is_train=False)
            out[name] = np.stack([transform(Image.open(p)).numpy().transpose(1, 2, 0)
                                  for p in request["images"]]).tolist()
    elif request["task"] == "check":  # the export's check, handed a config that misreads the checkpoint
        from clipedge.export.checkpoint.preprocess_check import check_preprocess
        from clipedge.runtime.errors import ExportError
        from clipedge.runtime.preprocess import PreprocessConfig, preprocess

        config = PreprocessConfig(**request["config"])
        pixels = preprocess(request["images"], config)
        flat = lambda x: x.reshape(len(x), -1)  # noqa: E731  (an "encoder" that sees every pixel)
        try:
            out["record"] = check_preprocess(Path(request["dir"]), "openclip", config, None, request["images"],
                                             pixels, flat, flat(pixels))
        except ExportError as err:
            out["error"] = str(err)
    return out


if __name__ == "__main__":
    result = _child(json.loads(Path(sys.argv[1]).read_text()))
    Path(sys.argv[2]).write_text(json.dumps(result))
    sys.exit(0)


# ---- the parent ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def openclip_env(tmp_path_factory) -> dict[str, str]:
    """Environment for a child that imports open_clip: the stub torchvision package first on PYTHONPATH."""
    if not (TORCHVISION_DIR / "torchvision" / "transforms" / "functional.py").is_file():
        message = f"torchvision's transforms are not in {TORCHVISION_DIR}: {INSTALL}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    stub = tmp_path_factory.mktemp("torchvision_stub")
    (stub / "torchvision").mkdir()
    (stub / "torchvision" / "__init__.py").write_text(
        "# torchvision's pure-Python transforms without its C extension (tests/export/test_openclip_preprocess.py)\n"
        f"__path__ = [{str(TORCHVISION_DIR / 'torchvision')!r}]\n__version__ = '0.28.0'\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(stub), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def run_child(env: dict[str, str], tmp_path: Path, request: dict, timeout: int = 300) -> dict:
    path_in, path_out = tmp_path / "request.json", tmp_path / "result.json"
    path_in.write_text(json.dumps(request))
    result = subprocess.run([sys.executable, __file__, str(path_in), str(path_out)], env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(path_out.read_text())


def make_images(directory: Path) -> list[str]:
    """Odd shapes (both crop roundings, letterbox padding of either parity, long thin) plus shipped photos."""
    from PIL import Image

    rng = np.random.default_rng(0)
    directory.mkdir(exist_ok=True)
    files = []
    for i, (h, w) in enumerate([(97, 61), (61, 97), (64, 64), (41, 300), (300, 43), (70, 67), (67, 70), (5, 203)]):
        y, x = np.mgrid[0:h, 0:w]
        smooth = np.stack([128 + 90 * np.sin((3 + c) * x / w + c) * np.cos(2 * y / h) for c in range(3)], -1)
        pixels = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
        files.append(str(directory / f"{i}_{h}x{w}.png"))
        Image.fromarray(pixels).save(files[-1])
    return files + [str(p) for p in PHOTOS[::12]]


PIXEL_CONFIGS = {
    "shortest-bicubic-openai": {},
    "shortest-bilinear-half": {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bilinear"},
    "longest-fill": {"resize_mode": "longest", "fill_color": 200, "mean": [0, 0, 0], "std": 1.0},
    "scalar-zero-mean": {"mean": 0.0, "std": 0.5},  # open_clip: `mean or OPENAI_DATASET_MEAN` -> OpenAI's mean
    "longest-bilinear": {"resize_mode": "longest", "interpolation": "bilinear"},
    "squash": {"resize_mode": "squash", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "random-interpolation": {"interpolation": "random"},
}


@pytest.mark.parametrize("size", [64, 224])
def test_pixels_equal_open_clip_image_transform(openclip_env, tmp_path, size):
    """clipedge's reading of each preprocess_cfg, through the runtime, equals open_clip's transform bit for bit."""
    from clipedge.export.checkpoint.files import preprocess_config
    from clipedge.runtime.preprocess import preprocess

    images = make_images(tmp_path / "images")
    reference = run_child(openclip_env, tmp_path, {"task": "pixels", "configs": PIXEL_CONFIGS, "size": size,
                                                   "images": images})
    for name, cfg in PIXEL_CONFIGS.items():
        directory = tmp_path / name
        directory.mkdir()
        (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}, "preprocess_cfg": cfg}))
        config = preprocess_config(directory, size, "openclip")
        ours = preprocess(images, config)
        expected = np.asarray(reference[name], np.float32)
        assert ours.shape == expected.shape, name
        assert np.abs(ours - expected).max() == 0.0, (name, np.abs(ours - expected).max(axis=(1, 2, 3)))


@pytest.fixture(scope="module")
def openclip_bundles(openclip_env, tmp_path_factory):
    """Each checkpoint built by open_clip, exported by `clipedge export` (fp32, TFLite and ONNX) in a child that can
    import open_clip (so the export's own check runs against it), and open_clip's embeddings of the test images."""
    root = tmp_path_factory.mktemp("openclip")
    images = make_images(root / "images")
    texts = ["a photo of a dog", "a diagram", "two red squares on a white background"]
    out = {}
    for seed, (name, spec) in enumerate(CHECKPOINTS.items()):
        directory = root / name
        run_child(openclip_env, root, {"task": "build", "dir": str(directory), "seed": seed,
                                       "model_cfg": {**SMALL_CFG, "quick_gelu": spec["quick_gelu"]},
                                       "preprocess_cfg": spec["preprocess"], "weights": spec["weights"]})
        reference = run_child(openclip_env, root, {"task": "embed", "dir": str(directory), "images": images,
                                                   "texts": texts})
        bundle = root / f"{name}-bundle"
        command = [sys.executable, "-m", "clipedge.runtime.cli", "export", "--checkpoint", str(directory), "--out",
                   str(bundle), "--formats", "tflite,onnx", "--precisions", "fp32", "--no-gpu", "--samples", "8"]
        result = subprocess.run(command, env=openclip_env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        out[name] = (bundle, reference)
    return images, texts, out


@pytest.mark.parametrize("name", list(CHECKPOINTS))
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_runtime_embeddings_equal_open_clip(openclip_bundles, name, fmt):
    from clipedge.runtime.clip_runtime import load
    from clipedge.runtime.manifest import Manifest
    from clipedge.runtime.metrics import cosine_stats
    from clipedge.runtime.preprocess import PreprocessConfig, preprocess

    images, texts, bundles = openclip_bundles
    bundle, reference = bundles[name]
    manifest = Manifest.read(bundle)
    check = manifest.data["export"]["preprocess_check"]
    assert check["reference"].startswith("open_clip") and check["max_abs_pixel_diff"] == 0.0, check
    assert manifest.data["model"]["layout"] == "openclip"
    runtime = load(bundle, precision="fp32", format=fmt)
    # The bundle's preprocessing, exactly (preprocess()'s default decode): open_clip's pixels, bit for bit.
    pixels = preprocess(images, PreprocessConfig.from_dict(manifest.data["preprocess"]))
    np.testing.assert_array_equal(pixels, np.asarray(reference["pixels"], np.float32))
    image = cosine_stats(runtime.runner("image").run(pixels), np.asarray(reference["image"]))
    text = cosine_stats(runtime.encode_texts(texts), np.asarray(reference["text"]))
    # The runtime's own path from image files (its default decode) on the generated images.
    small = [i for i, f in enumerate(images) if f.endswith(".png")]
    files = cosine_stats(runtime.encode_images([images[i] for i in small]), np.asarray(reference["image"])[small])
    print(f"{name} {fmt}: image min cosine {image['cosine_min']:.7f} (from files {files['cosine_min']:.7f}), "
          f"text {text['cosine_min']:.7f}")
    assert min(image["cosine_min"], files["cosine_min"], text["cosine_min"]) >= FLOOR, (image, files, text)


def test_manifest_records_the_checkpoints_preprocessing(openclip_bundles):
    from clipedge.runtime.manifest import Manifest
    from tests.conftest import schema_errors

    _, _, bundles = openclip_bundles
    for bundle, _ in bundles.values():  # written by a child process: the session's own schema check did not see it
        assert schema_errors(Manifest.read(bundle).data, "manifest.schema.json") == []
    data = Manifest.read(bundles["letterbox-bin"][0]).data["preprocess"]
    assert data == {"image_size": 64, "crop_size": 64, "mean": [0.0] * 3, "std": [1.0] * 3, "resample": "bicubic",
                    "resize_mode": "longest", "crop_rule": "torchvision", "fill": [128, 128, 128]}
    data = Manifest.read(bundles["siglip-like-safetensors"][0]).data["preprocess"]
    assert data["mean"] == [0.5] * 3 and data["resample"] == "bilinear" and data["crop_rule"] == "torchvision"


def test_export_check_refuses_a_misread_checkpoint(openclip_env, tmp_path):
    """The issue's case: OpenAI's mean/std for a checkpoint that says 0.5. The export's check, run against open_clip,
    refuses it (and accepts the right reading)."""
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": SMALL_CFG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
    images = [str(p) for p in PHOTOS[:4]]
    base = {"image_size": 64, "crop_size": 64, "crop_rule": "torchvision"}
    wrong = run_child(openclip_env, tmp_path, {"task": "check", "dir": str(directory), "images": images,
                                               "config": base})
    assert "preprocessing does not match the checkpoint's own (open_clip" in wrong.get("error", ""), wrong
    right = run_child(openclip_env, tmp_path, {"task": "check", "dir": str(directory), "images": images,
                                               "config": {**base, "mean": [0.5] * 3, "std": [0.5] * 3}})
    assert right["record"]["max_abs_pixel_diff"] == 0.0, right
