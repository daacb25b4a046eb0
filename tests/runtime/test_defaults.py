"""The precision a bundle runs when none is asked for (clipedge.runtime.defaults, issue #34): chosen at export as the
fastest image+text pair that passed its fidelity floor, ties within the timing noise going to the smallest; recorded
in the manifest; used by `load()` and every command; shown by `clipedge info`; a flagged file warns once."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import pytest

from clipedge.runtime.clip_runtime import load
from clipedge.runtime.defaults import LATENCY_KEY, choose_defaults
from clipedge.runtime.manifest import Artifact, Manifest
from clipedge.runtime.manifest_schema import check_manifest


def _artifact(tower: str, precision: str, median: float, size: int, flags: tuple[str, ...] = (),
              fmt: str = "tflite", variant: str = "default", spread: float = 0.02) -> Artifact:
    timing = {"median": median, "low": median * (1 - spread), "high": median * (1 + spread), "runs": 10}
    return Artifact(tower=tower, format=fmt, precision=precision, file=f"{tower}_{precision}.{fmt}", bytes=size,
                    sha256="0" * 64, signature="s", inputs=[{}], outputs=[{}], variant=variant, flags=list(flags),
                    extra={LATENCY_KEY: timing})


def _pair(precision: str, image_ms: float, text_ms: float, size: int, **kwargs) -> list[Artifact]:
    return [_artifact("image", precision, image_ms, size, **kwargs),
            _artifact("text", precision, text_ms, size, **kwargs)]


def test_the_fastest_faithful_pair_is_the_default():
    artifacts = _pair("fp32", 10.0, 6.0, 4000) + _pair("dynamic-int8", 3.0, 2.0, 1000) + _pair("int8", 6.0, 4.0, 1000)
    assert choose_defaults(artifacts)["by_format"] == {"tflite": {"cpu": "dynamic-int8"}}


def test_a_flagged_file_is_never_the_default():
    artifacts = (_pair("fp32", 10.0, 6.0, 4000) + [_artifact("image", "int8", 2.0, 1000),
                                                   _artifact("text", "int8", 1.0, 1000, flags=("low-fidelity",))])
    assert choose_defaults(artifacts)["by_format"]["tflite"]["cpu"] == "fp32"


def test_ties_within_the_noise_go_to_the_smallest_whichever_timed_faster():
    """Two exports on a loaded machine: the same pick whichever of two near-equal files happened to time faster."""
    picks = set()
    for int4_ms, int8_ms in ((3.0, 3.1), (3.1, 3.0), (3.2, 2.95)):
        artifacts = (_pair("fp32", 10.0, 6.0, 4000) + _pair("dynamic-int8", int8_ms, 2.0, 1000)
                     + _pair("int4", int4_ms, 2.0, 600))
        section = choose_defaults(artifacts)
        picks.add(section["by_format"]["tflite"]["cpu"])
        assert section["tied"] == {"tflite": ["dynamic-int8"]}
    assert picks == {"int4"}


def test_a_difference_beyond_the_noise_picks_the_faster_though_larger():
    artifacts = _pair("dynamic-int8", 3.0, 2.0, 1000) + _pair("int4", 6.0, 4.0, 600)
    section = choose_defaults(artifacts)
    assert section["by_format"]["tflite"]["cpu"] == "dynamic-int8" and "tied" not in section


def test_the_override_and_the_gpu_entry():
    artifacts = (_pair("fp32", 10.0, 6.0, 4000) + _pair("dynamic-int8", 3.0, 2.0, 1000)
                 + _pair("fp32", 9.0, 5.0, 4000, variant="gpu") + _pair("fp32", 8.0, 5.0, 4000, fmt="onnx"))
    section = choose_defaults(artifacts, override="fp32")
    assert section["by_format"] == {"tflite": {"cpu": "fp32", "gpu": "fp32"}, "onnx": {"cpu": "fp32"}}
    assert section["rule"] == "--default-precision fp32"


def test_untimed_files_fall_back_to_the_first_listed():
    artifacts = [Artifact("image", "tflite", p, f"image_{p}.tflite", 1, "0" * 64, "s", [{}], [{}])
                 for p in ("fp32", "dynamic-int8")]
    assert choose_defaults(artifacts)["by_format"]["tflite"]["cpu"] == "fp32"


def clipedge(*args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it, through `python -m clipedge` (the console script's twin)."""
    return subprocess.run([sys.executable, "-m", "clipedge", *args], capture_output=True, text=True, timeout=120)


def _with_defaults(small_bundle, tmp_path, defaults: dict) -> Manifest:
    bundle = tmp_path / "bundle"
    shutil.copytree(small_bundle, bundle)
    data = json.loads((bundle / "manifest.json").read_text())
    data["defaults"] = defaults
    (bundle / "manifest.json").write_text(json.dumps(data))
    return bundle


def test_the_exported_bundle_records_a_default_that_load_and_info_use(small_bundle):
    manifest = Manifest.read(small_bundle)
    section = manifest.data["defaults"]
    chosen = section["by_format"]["tflite"]["cpu"]
    assert set(section["by_format"]) == {"tflite", "onnx"} and chosen in ("fp32", "dynamic-int8")
    for artifact in manifest.artifacts:
        if artifact.variant == "default" and artifact.tower in ("image", "text"):
            timing = artifact.extra[LATENCY_KEY]
            assert 0 < timing["low"] <= timing["median"] <= timing["high"], artifact.file
    assert load(small_bundle).precision == chosen
    assert load(small_bundle, precision="fp32").precision == "fp32"  # asked for: what was asked
    info = clipedge("info", str(small_bundle))
    assert info.returncode == 0 and f"default   tflite {chosen}" in info.stdout, info.stdout + info.stderr


@pytest.mark.parametrize("chosen", ["fp32", "dynamic-int8"])
def test_load_and_the_cli_run_the_recorded_default(small_bundle, tmp_path, chosen):
    bundle = _with_defaults(small_bundle, tmp_path, {"by_format": {"tflite": {"cpu": chosen},
                                                                   "onnx": {"cpu": chosen}}, "rule": "test"})
    assert load(bundle).precision == chosen
    assert load(bundle, format="onnx").precision == chosen
    done = clipedge("embed", "--text", "a dog", "-o", str(tmp_path / "e.npy"), "--bundle", str(bundle))
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "e.json").read_text())["model"]["precision"] == chosen


def test_a_damaged_defaults_section_is_one_clear_error(small_bundle, tmp_path):
    data = json.loads((small_bundle / "manifest.json").read_text())
    data["defaults"] = {"by_format": {"tflite": {"cpu": "int3"}}}
    with pytest.raises(Exception, match=r"defaults\.by_format\.tflite\.cpu"):
        check_manifest(data, "manifest.json", ("tflite", "onnx"))


def test_a_flagged_file_warns_once_when_loaded(small_bundle, tmp_path, caplog):
    bundle = tmp_path / "flagged"
    shutil.copytree(small_bundle, bundle)
    data = json.loads((bundle / "manifest.json").read_text())
    for entry in data["artifacts"]:
        if entry["file"] == "text_dynamic-int8.tflite":
            entry["flags"] = ["low-fidelity"]
    (bundle / "manifest.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="clipedge"):
        load(bundle, precision="dynamic-int8")
        load(bundle, precision="dynamic-int8")
        load(bundle, precision="fp32")
    warned = [r.getMessage() for r in caplog.records if "flagged" in r.getMessage()]
    assert len(warned) == 1 and "text_dynamic-int8.tflite was flagged low-fidelity" in warned[0], warned
