"""Export under faults (issue #17): --force never deletes what is not a bundle, a bad preprocessor_config.json is a
clear error, and a conversion child whose parent dies while it starts neither outlives it nor leaves files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clipedge.export.pipeline.export_bundle import export_bundle
from clipedge.runtime.errors import CheckpointError, ExportError
from clipedge.runtime.manifest import Manifest

SMALL = {"precisions": ["fp32"], "formats": ["tflite"], "towers": ["image"], "gpu": False, "progress": False}


def photos_and_notes(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"\xff\xd8 a photo")
    (folder / "notes.txt").write_text("do not lose me")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# ---- 2. --force ------------------------------------------------------------------------------------------------------
def test_force_never_replaces_a_folder_that_is_not_a_bundle(small_hf_clip, tmp_path):
    folder = tmp_path / "photos"
    before = photos_and_notes(folder)
    start = time.perf_counter()
    with pytest.raises(ExportError, match="not a clipedge bundle .* --force replaces only a bundle or an empty"):
        export_bundle(folder, checkpoint=small_hf_clip[1], force=True, **SMALL)
    assert time.perf_counter() - start < 5  # refused before the model is even loaded
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not list(tmp_path.glob(".photos.partial-*"))


def test_force_refuses_another_tools_manifest_and_a_file(tmp_path):
    webapp = tmp_path / "webapp"
    webapp.mkdir()
    (webapp / "manifest.json").write_text(json.dumps({"name": "My PWA", "icons": []}))
    with pytest.raises(ExportError, match="not a clipedge bundle"):
        export_bundle(webapp, checkpoint="never-loaded", force=True, **SMALL)
    assert (webapp / "manifest.json").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        export_bundle(tmp_path / "file", checkpoint="never-loaded", force=True, **SMALL)


@pytest.mark.slow
def test_force_replaces_an_empty_directory_and_a_bundle(small_hf_clip, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    export_bundle(out, checkpoint=small_hf_clip[1], force=True, **SMALL)
    first = Manifest.read(out)
    assert [a.file for a in first.artifacts] == ["image_fp32.tflite"]
    assert set(first.data["files"]) == {"tokenizer/bpe_simple_vocab_16e6.txt.gz", "tokenizer/LICENSE-openai-clip.txt"}
    export_bundle(out, checkpoint=small_hf_clip[1], force=True, **{**SMALL, "formats": ["onnx"]})
    assert [a.file for a in Manifest.read(out).artifacts] == ["image_fp32.onnx"]


def test_force_keeps_a_users_files_put_inside_a_bundle(small_hf_clip, small_bundle, tmp_path):
    """A bundle holding `notes.txt` and `my-index/` (issue #33): --force refuses, names them, deletes nothing."""
    out = tmp_path / "b"
    shutil.copytree(small_bundle, out)
    (out / "notes.txt").write_text("mine")
    (out / "my-index").mkdir()
    (out / "my-index" / "index.json").write_text("{}")
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    with pytest.raises(ExportError, match=r"files its manifest does not list \(my-index/index.json, notes.txt\)"):
        export_bundle(out, checkpoint=small_hf_clip[1], force=True, **SMALL)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
    (out / "notes.txt").unlink()
    shutil.rmtree(out / "my-index")
    export_bundle(out, checkpoint=small_hf_clip[1], force=True, **SMALL)  # the bundle alone: replaced
    assert not (out / "notes.txt").exists() and (out / "manifest.json").is_file()


def test_cli_force_on_a_photo_folder_is_one_line(tmp_path):
    folder = tmp_path / "photos"
    before = photos_and_notes(folder)
    result = subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", "export", "--out", str(folder), "--force"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.startswith("clipedge: error:") and "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# ---- 9. a bad preprocessor_config.json ------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["[1, 2]", "{", '{"size": "big"}', '{"crop_size": {"height": null}}',
                                     '{"image_mean": [0.5, 0.5]}', '{"image_std": [0, 0, 0]}', '{"size": 1e400}'])
def test_a_bad_preprocessor_config_is_a_checkpoint_error(small_hf_clip, tmp_path, content):
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(small_hf_clip[1], checkpoint)
    (checkpoint / "preprocessor_config.json").write_text(content)
    with pytest.raises(CheckpointError, match="preprocessor_config.json"):
        export_bundle(tmp_path / "out", checkpoint=checkpoint, **SMALL)
    assert not (tmp_path / "out").exists()


# ---- 8. a conversion child whose parent is killed as it starts -------------------------------------------------------
WRAPPER = textwrap.dedent("""
    import os, signal, sys, threading, time
    from clipedge.export.pipeline.child_process import ConversionRequest, convert_isolated

    def children():
        me = str(os.getpid())
        found = []
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1] == me:
                    found.append(int(pid))
            except OSError:
                pass
        return found

    def kill_me_when_the_child_starts():
        while True:
            found = children()
            if found:
                print(found[0], flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.0005)

    threading.Thread(target=kill_me_when_the_child_starts, daemon=True).start()
    convert_isolated(ConversionRequest(checkpoint=sys.argv[1], architecture=None, tower="image", variant="default",
                                       fmt="tflite", precision="fp32", batch=1, out_file=sys.argv[2]))
""")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its entry waits for a reaper


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and PR_SET_PDEATHSIG are Linux's")
def test_a_converter_whose_parent_dies_as_it_starts_exits_and_writes_nothing(small_hf_clip, tmp_path):
    tmp, out = tmp_path / "tmp", tmp_path / "work" / "image.tflite"
    tmp.mkdir()
    out.parent.mkdir()
    result = subprocess.run([sys.executable, "-c", WRAPPER, str(small_hf_clip[1]), str(out)], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "TMPDIR": str(tmp)})
    assert result.returncode == -9, result.stderr[-1500:]
    child = int(result.stdout.split()[0])
    deadline = time.time() + 20  # the old child went on for the whole conversion (TensorFlow's import alone: seconds)
    while _running(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not _running(child), "the converter outlived its parent"
    time.sleep(0.5)
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    assert list(tmp.iterdir()) == []  # no clipedge-convert-* directory left behind
