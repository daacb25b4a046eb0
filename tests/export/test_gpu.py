"""The gpu variants on LiteRT's real GPU accelerator (CI: Mesa's software Vulkan, lavapipe; see .ci/gpu-setup.sh).

With a Vulkan driver on the machine these run with accelerator="gpu"; without one they skip, except under CI=true,
where a missing driver fails them (CI must prove the GPU path). What they hold: the export's own check found every
op of both demo gpu variants on the GPU; the GPU's outputs (fp32 compute, clipedge's default) are within cosine
0.9999 of the CPU fp32 files on every shipped photo, every evaluation image and freshly generated shapes; the CLI's
--json output stays parseable with --accelerator gpu and auto; bench names the adapter.

GPU work runs in child processes: this test process has TensorFlow loaded, and LiteRT's GPU setup crashes next to
it on llvmpipe (the backend refuses instead: test_a_tensorflow_process_gets_an_error_not_a_crash).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clipedge.export.pipeline.export_bundle import default_checkpoint, export_bundle
from clipedge.runtime.backends.open import open_backend
from clipedge.runtime.errors import BackendError
from clipedge.runtime.manifest import Manifest

REPO = Path(__file__).resolve().parents[2]
FLOOR = 0.9999  # the fp32 files' floor, GPU (fp32 compute) against CPU


def vulkan_drivers() -> list[str]:
    """The Vulkan ICD manifests the loader would read (the standard places, or the variables that override them)."""
    for variable in ("VK_DRIVER_FILES", "VK_ICD_FILENAMES"):
        if os.environ.get(variable):
            return [p for p in os.environ[variable].split(os.pathsep) if os.path.isfile(p)]
    data_dirs = os.environ.get("XDG_DATA_DIRS", "/usr/local/share:/usr/share").split(os.pathsep)
    roots = ["/etc", *data_dirs]
    return sorted({f for root in roots for f in glob.glob(os.path.join(root, "vulkan", "icd.d", "*.json"))})


@pytest.fixture(scope="module")
def gpu_required():
    if not vulkan_drivers():
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the GPU tests, and this machine has no Vulkan driver: run .ci/gpu-setup.sh")
        pytest.skip("no Vulkan driver on this machine (CI installs lavapipe: .ci/gpu-setup.sh)")


@pytest.fixture(scope="module")
def demo_gpu_bundle(tmp_path_factory):
    """The demo CLIP's fp32 TFLite files and both gpu variants (the export checks them on the GPU when it can)."""
    out = tmp_path_factory.mktemp("gpu") / "demo"
    export_bundle(out, checkpoint=default_checkpoint(), formats=["tflite"], precisions=["fp32"], samples=8,
                  progress=False)
    return out


def _child(code: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Python code in a fresh interpreter without TensorFlow, in the repository (for calibration_data)."""
    env = {**os.environ, "CLIPEDGE_LOG": "warning"}
    env.pop("CLIPEDGE_GPU_PRECISION", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=timeout)


def test_demo_gpu_variants_run_wholly_on_the_gpu(gpu_required, demo_gpu_bundle):
    manifest = Manifest.read(demo_gpu_bundle)
    for tower in ("image", "text"):
        artifact = manifest.find(tower, "tflite", "fp32", "gpu")
        check = artifact.extra["gpu_accelerator"]
        print(artifact.file, json.dumps(check))
        assert check["status"] == "ran", check
        assert check["ops_on_cpu"] == 0 and check["fully_delegated"] and check["ops_on_gpu"] > 0, check
        assert check["adapter"], check
        assert check["cosine_to_cpu"]["fp32"]["min"] >= FLOOR, check
        assert check["cosine_to_cpu"]["fp16"]["min"] >= 0.999, check  # LiteRT's fp16 default: reported, looser
        assert not artifact.flags, artifact.flags


@pytest.mark.slow  # 40-50 s: the fast tier keeps test_demo_gpu_variants_run_wholly_on_the_gpu
def test_gpu_matches_the_cpu_on_photos_eval_images_and_shapes(gpu_required, demo_gpu_bundle, tmp_path):
    from clipedge.export.demo.data import generate

    shapes = tmp_path / "shapes"
    shapes.mkdir()
    for index, sample in enumerate(generate(24, seed=2024, stream=7)):
        sample.image.save(shapes / f"{index:02d}.png")
    result = _child(f"""
        import json
        from clipedge.export.demo.data import class_prompts
        from clipedge.runtime.clip_runtime import load
        from clipedge.runtime.datasets import list_images, read_captions
        bundle = {str(demo_gpu_bundle)!r}
        sets = {{"photos": list_images("calibration_data/photos"), "eval": list_images("calibration_data/eval"),
                 "shapes": list_images({str(shapes)!r})}}
        texts = read_captions("calibration_data/captions.txt") + class_prompts()
        cpu = load(bundle, precision="fp32", format="tflite", accelerator="cpu")
        gpu = load(bundle, precision="fp32", format="tflite", accelerator="gpu")
        out = {{name: float((gpu.encode_images(files) * cpu.encode_images(files)).sum(1).min())
                for name, files in sets.items()}}
        out["captions"] = float((gpu.encode_texts(texts) * cpu.encode_texts(texts)).sum(1).min())
        out["counts"] = {{name: len(files) for name, files in sets.items()}} | {{"captions": len(texts)}}
        out["describe"] = gpu.describe()
        print(json.dumps(out))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(measured, indent=1))
    for tower in ("image", "text"):
        info = measured["describe"][tower]
        assert info["file"] == f"{tower}_gpu_fp32.tflite" and info["accelerator"] == "gpu", info
        assert info["fully_accelerated"] and "fp32 compute" in info["device"], info
    for name in ("photos", "eval", "shapes", "captions"):
        assert measured[name] >= FLOOR, (name, measured[name])


def test_cli_json_stays_parseable_on_the_gpu(gpu_required, demo_gpu_bundle):
    image = REPO / "calibration_data" / "eval" / "blue_star" / "00.jpg"
    for accelerator in ("gpu", "auto"):
        done = subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", "classify", str(image), "--labels",
                               "blue star", "red circle", "--bundle", str(demo_gpu_bundle), "--accelerator",
                               accelerator, "--json"], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads(done.stdout)[0]["top"][0]["label"] in ("blue star", "red circle")
    done = subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", "bench", str(demo_gpu_bundle), "--tower",
                           "text", "--variant", "gpu", "--batch", "1", "--repeats", "2", "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout)["rows"][0]
    assert row["accelerator"] == "gpu" and row["device"], row  # the adapter, e.g. "llvmpipe (...), software"


@pytest.mark.slow
def test_a_tensorflow_process_gets_an_error_not_a_crash(demo_gpu_bundle, caplog):
    """With or without a driver: this process imported TensorFlow, whose LLVM crashes llvmpipe's; the GPU is
    refused with a BackendError, and auto falls back to the CPU with one warning."""
    path = demo_gpu_bundle / "text_gpu_fp32.tflite"
    with pytest.raises(BackendError, match="GPU"):
        open_backend(path, accelerator="gpu")
    with caplog.at_level(logging.WARNING, logger="clipedge.runtime.backends.open"):
        backend = open_backend(path, accelerator="auto")
    assert backend.info.accelerator == "cpu" and backend.info.note.startswith("GPU not used")
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
