"""One conversion per process (what a ViT-B/32 export does by default): same files as in-process, errors come back
from the child as they were raised, and a killed export takes its converter process down with it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipedge.export.pipeline.child_process import ConversionRequest, convert_isolated
from clipedge.export.pipeline.export_bundle import export_bundle
from clipedge.runtime.errors import ExportError
from clipedge.runtime.manifest import Manifest


@pytest.mark.slow
def test_isolated_export_writes_the_in_process_files(small_hf_clip, small_bundle, tmp_path):
    out = tmp_path / "isolated"
    result = export_bundle(out, checkpoint=small_hf_clip[1], formats=["tflite", "onnx"],
                           precisions=["fp32", "dynamic-int8"], towers=["image"], gpu=False, progress=False,
                           isolate=True)
    isolated, in_process = Manifest.read(out), Manifest.read(small_bundle)
    for artifact in isolated.artifacts:
        reference = in_process.find(artifact.tower, artifact.format, artifact.precision)
        if artifact.format == "tflite":  # the TFLite converter is deterministic; tf2onnx numbers its node names
            assert artifact.sha256 == reference.sha256, artifact.file
        assert artifact.fidelity["cosine_min"] == pytest.approx(reference.fidelity["cosine_min"], abs=1e-7)
        assert artifact.fidelity["cosine_mean"] == pytest.approx(reference.fidelity["cosine_mean"], abs=1e-7)
    export = json.loads((out / "manifest.json").read_text())["export"]
    assert export["isolated_conversions"] is True
    assert 0 < export["peak_rss_mib"]["largest_conversion_process"] < 64 * 1024
    assert "largest conversion process" in result.table()
    assert not (out / ".work").exists()


def test_child_errors_come_back_as_raised(small_hf_clip, tmp_path):
    request = ConversionRequest(checkpoint=str(small_hf_clip[1]), architecture=None, tower="image",
                                variant="default", fmt="tflite", precision="int8", batch=1,
                                out_file=str(tmp_path / "x.tflite"))  # int8 without calibration samples
    with pytest.raises(ExportError, match="precision int8 needs calibration samples"):
        convert_isolated(request)
    assert not (tmp_path / "x.tflite").exists()


def _converter_pids() -> set[int]:
    """From /proc, not `ps`: ps cuts its lines at $COLUMNS (80 on some CI runners), which cut the module name off."""
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended while we looked
            continue
        if b"clipedge.export.pipeline.child_process" in args:
            pids.add(int(cmdline.parent.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
@pytest.mark.slow
def test_killed_export_takes_its_converter_down(small_hf_clip, tmp_path):
    before = _converter_pids()
    command = [sys.executable, "-m", "clipedge.runtime.cli", "export", "--checkpoint", str(small_hf_clip[1]),
               "--out", str(tmp_path / "bundle"), "--precisions", "fp32", "--no-gpu", "--isolate", "yes"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (_converter_pids() - before) and time.time() < deadline:
        time.sleep(0.2)
    children = _converter_pids() - before
    assert children, "no converter process started"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.time() + 30
    while (_converter_pids() & children) and time.time() < deadline:
        time.sleep(0.2)
    assert not (_converter_pids() & children)
    assert not Path(tmp_path / "bundle").exists()
