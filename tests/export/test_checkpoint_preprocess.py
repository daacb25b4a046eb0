"""A HF checkpoint's own preprocessing, honoured (issue #22): every `CLIPImageProcessor` field of its
preprocessor_config.json read into the bundle, the runtime's pixels equal to `CLIPImageProcessorPil.from_pretrained`
on that file (transformers' own reading of it), the exported files' embeddings equal to transformers' `CLIPModel` on
those pixels, what cannot be reproduced refused by name, overrides recorded, and a misread caught by the export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from clipedge.export.checkpoint import files as checkpoint_files
from clipedge.export.checkpoint.files import preprocess_config
from clipedge.export.pipeline.export_bundle import export_bundle
from clipedge.export.settings import ExportSettings
from clipedge.runtime.errors import CheckpointError, ExportError
from clipedge.runtime.preprocess import PreprocessConfig, preprocess

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = sorted((ROOT / "calibration_data" / "photos").glob("*.webp"))
FLOOR = 0.9999
SIZE = 64  # the small checkpoints' image size (tests/conftest.py SMALL_VISION)

# One preprocessor_config.json per CLIPImageProcessor option (on top of what HF writes for OpenAI's models).
OPTIONS = {
    **{f"resample-{code}": {"resample": code} for code in range(6)},
    "size-int-crop-int": {"size": SIZE, "crop_size": SIZE},
    "shortest-larger-than-crop": {"size": {"shortest_edge": 80}},
    "shortest-smaller-than-crop": {"size": {"shortest_edge": 50}},
    "height-width-then-crop": {"size": {"height": 80, "width": 80}, "resample": 2},
    "height-width-no-crop": {"size": {"height": SIZE, "width": SIZE}, "do_center_crop": False},
    "no-resize": {"do_resize": False},
    "no-rescale": {"do_rescale": False, "image_mean": [123.0, 117.0, 104.0], "image_std": [58.0, 57.0, 57.5]},
    "rescale-factor": {"rescale_factor": 1 / 127.5, "image_mean": [1.0, 1.0, 1.0], "image_std": [1.0, 1.0, 1.0]},
    "no-normalize": {"do_normalize": False},
    "no-rescale-no-normalize": {"do_rescale": False, "do_normalize": False},
    "scalar-mean-std": {"image_mean": 0.5, "image_std": 0.25},
    "no-convert-rgb": {"do_convert_rgb": False},
}


def base_config() -> dict:
    """What transformers writes for OpenAI's CLIP, at the small model's size."""
    return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": SIZE},
            "resample": 3, "do_center_crop": True, "crop_size": {"height": SIZE, "width": SIZE}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711], "do_convert_rgb": True}


def write(directory: Path, changes: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "preprocessor_config.json").write_text(json.dumps({**base_config(), **changes}))
    return directory


def images(directory: Path) -> list[str]:
    """Odd and extreme shapes (crop offsets of both parities, padding, long thin), plus shipped photos."""
    rng = np.random.default_rng(1)
    directory.mkdir(exist_ok=True)
    files = []
    for i, (h, w) in enumerate([(97, 61), (61, 97), (64, 64), (41, 300), (30, 20), (1, 250), (200, 130)]):
        y, x = np.mgrid[0:h, 0:w]
        smooth = np.stack([128 + 90 * np.sin((3 + c) * x / w + c) * np.cos(2 * y / h) for c in range(3)], -1)
        files.append(str(directory / f"{i}.png"))
        Image.fromarray(np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)).save(files[-1])
    return files + [str(p) for p in PHOTOS[::16]]


def hf_pixels(directory: Path, files: list[str]) -> np.ndarray:
    """transformers' own reading of the file, its Pillow backend; NHWC float32."""
    processor = transformers.CLIPImageProcessorPil.from_pretrained(str(directory))
    out = [processor(Image.open(f), return_tensors="np")["pixel_values"][0] for f in files]
    return np.stack(out).astype(np.float32).transpose(0, 2, 3, 1)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_each_processor_option_equals_clip_image_processor(tmp_path, name):
    directory = write(tmp_path / "ckpt", OPTIONS[name])
    files = images(tmp_path / "images")
    config = preprocess_config(directory, SIZE)
    ours, expected = preprocess(files, config), hf_pixels(directory, files)
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() == 0.0, np.abs(ours - expected).max(axis=(1, 2, 3))


def test_what_the_options_become(tmp_path):
    def read(changes: dict) -> PreprocessConfig:
        return preprocess_config(write(tmp_path / str(len(list(tmp_path.iterdir()))), changes), SIZE)

    assert read({"resample": 2}).resample == "bilinear"  # the issue's case: read, not left at bicubic
    assert read({"size": {"height": 80, "width": 80}}).resize_mode == "squash"
    assert read({"do_resize": False}).resize_mode == "none"
    assert read({"do_rescale": False}).rescale_factor == 1.0
    config = read({"do_normalize": False})
    assert config.mean == (0.0, 0.0, 0.0) and config.std == (1.0, 1.0, 1.0)
    assert read({}).to_dict() == PreprocessConfig(image_size=SIZE, crop_size=SIZE).to_dict()


@pytest.mark.parametrize("changes, field", [
    ({"image_processor_type": "SiglipImageProcessor"}, "image_processor_type"),
    ({"do_pad": True}, "do_pad"),
    ({"size": {"shortest_edge": 64, "longest_edge": 100}}, "size"),
    ({"size": {"height": 64, "width": 80}}, "size"),
    ({"crop_size": {"height": 64, "width": 48}}, "crop_size"),
    ({"do_center_crop": False}, "do_center_crop"),
    ({"do_resize": False, "do_center_crop": False}, "do_center_crop"),
    ({"resample": 7}, "resample"),
    ({"resample": "bicubic"}, "resample"),
    ({"do_resize": "yes"}, "do_resize"),
    ({"do_rescale": 1}, "do_rescale"),
    ({"rescale_factor": -1}, "rescale_factor"),
    ({"image_mean": [0.5, 0.5]}, "mean"),
])
def test_what_cannot_be_reproduced_is_refused_by_name(tmp_path, changes, field):
    with pytest.raises(CheckpointError, match=field):
        preprocess_config(write(tmp_path, changes), SIZE)


def test_overrides_apply_and_are_checked(tmp_path):
    directory = write(tmp_path, {"resample": 2})
    config = preprocess_config(directory, SIZE, overrides={"mean": (0.5, 0.5, 0.5), "resample": "lanczos",
                                                           "resize_mode": "squash", "std": None})
    assert (config.mean, config.resample, config.resize_mode) == ((0.5, 0.5, 0.5), "lanczos", "squash")
    assert config.std == PreprocessConfig().std
    settings = ExportSettings(mean="0.5", std="0.2,0.3,0.4", resample="nearest", resize_mode="longest")
    assert settings.preprocess_overrides() == {"mean": (0.5, 0.5, 0.5), "std": (0.2, 0.3, 0.4),
                                               "resample": "nearest", "resize_mode": "longest"}
    assert settings.to_manifest()["mean"] == [0.5, 0.5, 0.5]
    for bad, message in (({"mean": "a,b,c"}, "mean"), ({"std": "0,1,1"}, "std"), ({"mean": "1,2"}, "mean"),
                         ({"resample": "cubic"}, "resample"), ({"resize_mode": "fit"}, "resize mode")):
        with pytest.raises(ExportError, match=message):
            ExportSettings(**bad)


def test_cli_flags_reach_the_settings(monkeypatch):
    from clipedge.export.commands import cmd_export
    from clipedge.runtime.cli import main as cli

    args = cli.build_parser().parse_args(["export", "--mean", "0.5,0.5,0.5", "--std", "0.5", "--resample",
                                          "bilinear", "--resize-mode", "squash"])
    assert (args.mean, args.std, args.resample, args.resize_mode) == ("0.5,0.5,0.5", "0.5", "bilinear", "squash")
    seen = {}

    def fake_export(settings, progress):
        seen["settings"] = settings
        return SimpleNamespace(bundle="b", rows=[], peak_rss={}, skipped_formats={}, table=lambda: "")

    monkeypatch.setattr("clipedge.export.pipeline.export_bundle.export_bundle", fake_export)
    args.argv = []
    assert cmd_export(args) == 0
    assert seen["settings"].preprocess_overrides() == {"mean": (0.5,) * 3, "std": (0.5,) * 3, "resample": "bilinear",
                                                       "resize_mode": "squash"}


# ---- exported bundles against transformers' CLIPModel on CLIPImageProcessor's pixels --------------------------------
EXPORTED = {
    "bilinear-squash-half": {"size": {"height": SIZE, "width": SIZE}, "do_center_crop": False, "resample": 2,
                             "image_mean": [0.5] * 3, "image_std": [0.5] * 3},
    "lanczos-crop-no-rescale": {"size": {"shortest_edge": 80}, "resample": 1, "do_rescale": False,
                                "image_mean": [123.0, 117.0, 104.0], "image_std": [58.0, 57.0, 57.5]},
}


@pytest.fixture(scope="module")
def hf_bundles(small_hf_clip, tmp_path_factory):
    hf_model, source = small_hf_clip
    root = tmp_path_factory.mktemp("hf_preprocess")
    files = images(root / "images")
    out = {}
    for name, changes in EXPORTED.items():
        directory = root / name
        shutil.copytree(source, directory)
        write(directory, changes)
        bundle = root / f"{name}-bundle"
        export_bundle(bundle, checkpoint=directory, precisions=["fp32"], gpu=False, samples=8, progress=False)
        with torch.no_grad():
            pixels = hf_pixels(directory, files)
            features = hf_model.get_image_features(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)))
        out[name] = (bundle, pixels, getattr(features, "pooler_output", features).numpy())
    return files, out


@pytest.mark.parametrize("name", list(EXPORTED))
@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
@pytest.mark.slow
def test_bundle_embeddings_equal_transformers(hf_bundles, name, fmt):
    from clipedge.runtime.clip_runtime import load
    from clipedge.runtime.manifest import Manifest
    from clipedge.runtime.metrics import cosine_stats

    files, bundles = hf_bundles
    bundle, pixels, reference = bundles[name]
    check = Manifest.read(bundle).data["export"]["preprocess_check"]
    assert check["reference"].startswith("transformers") and check["max_abs_pixel_diff"] == 0.0, check
    runtime = load(bundle, precision="fp32", format=fmt)
    ours = preprocess(files, PreprocessConfig.from_dict(Manifest.read(bundle).data["preprocess"]))  # exact decode
    np.testing.assert_array_equal(ours, pixels)
    stats = cosine_stats(runtime.runner("image").run(ours), reference)
    small = [i for i, f in enumerate(files) if f.endswith(".png")]  # the runtime's own path from files
    from_files = cosine_stats(runtime.encode_images([files[i] for i in small]), reference[small])
    print(f"{name} {fmt}: image min cosine {stats['cosine_min']:.7f} (from files {from_files['cosine_min']:.7f})")
    assert min(stats["cosine_min"], from_files["cosine_min"]) >= FLOOR, (stats, from_files)


def test_a_misread_processor_fails_the_export(small_hf_clip, tmp_path, monkeypatch):
    """The issue's HF case: `resample: 2` read as bicubic. The export's check against CLIPImageProcessor refuses the
    bundle instead of shipping it."""
    directory = tmp_path / "ckpt"
    shutil.copytree(small_hf_clip[1], directory)
    write(directory, {"resample": 2})
    real = checkpoint_files._hf
    monkeypatch.setattr(checkpoint_files, "_hf", lambda file, size: PreprocessConfig(
        **{**real(file, size).to_dict(), "resample": "bicubic"}))
    with pytest.raises(ExportError, match=r"does not match the checkpoint's own \(transformers"):
        export_bundle(tmp_path / "out", checkpoint=directory, precisions=["fp32"], formats=["tflite"],
                      towers=["image"], gpu=False, samples=8, progress=False)
    assert not (tmp_path / "out").exists()


def test_mobile_refuses_a_rescale_it_cannot_fold(tmp_path):
    directory = write(tmp_path, {"rescale_factor": 1 / 127.5})
    with pytest.raises(ExportError, match="rescale_factor"):
        preprocess_config(directory, SIZE, mobile=True)


def test_feature_extractor_honours_or_refuses_each_option():
    """The TF graph twin: fill and rescale_factor as the runtime computes them (within its documented tolerance);
    the options it cannot compute refused by name."""
    from clipedge.export.model.feature_extractor import TOLERANCE, CLIPFeatureExtractorTF
    from clipedge.runtime.errors import InputError

    config = PreprocessConfig(image_size=50, crop_size=64, fill=(200, 10, 90), rescale_factor=1 / 127.5,
                              mean=(1, 1, 1), std=(1, 1, 1))
    image = np.random.default_rng(3).integers(0, 256, (77, 51, 3), dtype=np.uint8)
    extractor = CLIPFeatureExtractorTF(config)  # held: its tf.functions keep only a weak reference to it
    graph = extractor.from_pixels(image).numpy()
    assert np.abs(graph - preprocess(image, config)).max() <= TOLERANCE
    for field, value in (("resize_mode", "longest"), ("crop_rule", "torchvision"), ("resample", "bilinear")):
        with pytest.raises(InputError, match=field):
            CLIPFeatureExtractorTF(PreprocessConfig(**{field: value}))


def test_every_export_option_is_declared_once_on_the_settings():
    """The CLI's export flags are made from ExportSettings' fields (clipedge.export.options): each field with an
    option has its flag, and a value given on the command line arrives in the settings under the field's name."""
    import dataclasses

    from clipedge.export.options import given_options
    from clipedge.export.settings import ExportSettings
    from clipedge.runtime.cli import main as cli

    parser = cli.build_parser()
    given = ["--formats", "onnx", "--precisions", "fp32,int8", "--towers", "text", "--batch", "dynamic",
             "--samples", "7", "--seed", "3", "--force", "--int8-io", "--no-gpu", "--template", "x {}",
             "--isolate", "no", "--target-cosine", "0.9", "--target-top1-drop", "2", "--eval", "e", "--mean", "0.5",
             "--std", "0.25", "--resample", "box", "--resize-mode", "squash", "--out", "o", "--checkpoint", "c",
             "--architecture", "ViT-B-32", "--calibration", "cal", "--captions", "cap"]
    settings = ExportSettings(**given_options(parser.parse_args(["export", *given]), ExportSettings))
    assert (settings.formats, settings.precisions, settings.towers, settings.batch) == (
        ("onnx",), ("fp32", "int8"), ("text",), None)
    assert (settings.samples, settings.seed, settings.force, settings.int8_io, settings.gpu, settings.isolate) == (
        7, 3, True, True, False, False)
    assert (settings.mean, settings.std, settings.resample, settings.resize_mode) == ((0.5,) * 3, (0.25,) * 3, "box",
                                                                                      "squash")
    assert (settings.target_cosine, settings.target_top1_drop, str(settings.eval_dir)) == (0.9, 2.0, "e")
    with_cli = {f.name for f in dataclasses.fields(ExportSettings) if "cli" in f.metadata}
    help_text = parser._subparsers._group_actions[0].choices["export"].format_help()  # noqa: SLF001
    for name in with_cli:
        flag = dataclasses.fields(ExportSettings)[[f.name for f in dataclasses.fields(ExportSettings)].index(name)]
        assert (flag.metadata["cli"].flag or "--" + name.replace("_", "-")) in help_text, name
    # nothing given: the dataclass's own defaults, not the parser's
    assert ExportSettings(**given_options(parser.parse_args(["export"]), ExportSettings)) == ExportSettings()
