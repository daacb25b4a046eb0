"""What an export leaves on the machine (issue #34): nothing in the temp directory, whether it succeeds, fails or is
stopped; and outputs (bundles, indexes) with the modes a plain write gives under the user's umask, not the 0700/0600
of the temporary directory and files they are first written as."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from clipedge.export.pipeline import export_bundle as export_module
from clipedge.export.pipeline.bundle_writer import BundleWriter
from clipedge.export.pipeline.export_bundle import TEMP_PREFIX, export_bundle, private_tempdir
from clipedge.runtime.atomic import current_umask, publish
from clipedge.runtime.errors import ExportError
from clipedge.runtime.index import EmbeddingIndex

# The cheapest real export: the shipped demo CLIP, one small file. It still loads the checkpoint, runs the
# preprocessing check (transformers imports torch's dynamo: torchinductor_<user>/), converts with TensorFlow
# (autograph's generated sources) and verifies with LiteRT.
CHEAP_EXPORT = ["--formats", "tflite", "--precisions", "fp32", "--towers", "image", "--no-gpu", "--samples", "8"]


def leftovers(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def modes(root: Path) -> dict[str, str]:
    """Every path's permission bits, in octal, by its path relative to root ('.' for root itself)."""
    paths = [root, *sorted(root.rglob("*"))]
    return {("." if p == root else str(p.relative_to(root))): oct(p.stat().st_mode & 0o777) for p in paths}


def expected_modes(root: Path, umask: int) -> dict[str, str]:
    paths = [root, *sorted(root.rglob("*"))]
    return {("." if p == root else str(p.relative_to(root))): oct((0o777 if p.is_dir() else 0o666) & ~umask)
            for p in paths}


def pinned_inside(tempdir: Path) -> list[str]:
    """Environment variables naming a private export directory in `tempdir`."""
    return sorted(key for key, value in os.environ.items() if f"{tempdir}{os.sep}{TEMP_PREFIX}" in value)


@pytest.fixture
def fresh_tempdir(tmp_path, monkeypatch) -> Path:
    """An empty temp directory as this process's and its children's ($TMPDIR), for the length of a test."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setenv("TMPDIR", str(directory))
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def test_autograph_writes_into_the_private_dir_which_goes_at_the_end(fresh_tempdir):
    """autograph reads tempfile.gettempdir() each time it writes a generated source, so pointing tempfile at the
    private directory works after TensorFlow was imported; children get it through $TMPDIR."""
    import tensorflow as tf

    with private_tempdir() as private:
        assert private.parent == fresh_tempdir and private.name.startswith(f"{TEMP_PREFIX}{os.getpid()}-")
        assert tempfile.gettempdir() == os.environ["TMPDIR"] == str(private)

        def doubled_when_positive(x):  # a Python `if` on a tensor: autograph rewrites it, through a generated file
            if tf.reduce_sum(x) > 0:
                return x * 2
            return x

        assert float(tf.function(doubled_when_positive)(tf.constant([1.0]))[0]) == 2.0
        assert [p.name for p in private.glob("__autograph_generated_file*.py")], leftovers(private)
        child = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
                               capture_output=True, text=True, check=True).stdout.strip()
        assert child == str(private)
        with private_tempdir() as nested:  # an export inside an export shares the directory
            assert nested == private
        assert private.is_dir()
        os.environ["CLIPEDGE_TEST_CACHE_DIR"] = str(private / "cache")  # as torch does with TORCHINDUCTOR_CACHE_DIR
    assert leftovers(fresh_tempdir) == []
    assert pinned_inside(fresh_tempdir) == [] and "CLIPEDGE_TEST_CACHE_DIR" not in os.environ
    assert tempfile.gettempdir() == os.environ["TMPDIR"] == str(fresh_tempdir)  # both put back


def test_a_killed_export_s_private_dir_is_removed_by_the_next(fresh_tempdir):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = fresh_tempdir / f"{TEMP_PREFIX}{dead.pid}-abc"
    (stale / "torchinductor_someone").mkdir(parents=True)
    running = fresh_tempdir / f"{TEMP_PREFIX}{os.getppid()}-def"  # a live process's (pytest's parent): kept
    running.mkdir()
    with private_tempdir():
        pass
    assert leftovers(fresh_tempdir) == [running.name]


@pytest.mark.slow
def test_a_failed_export_leaves_the_temp_dir_empty(fresh_tempdir, tmp_path, monkeypatch):
    """Whatever a library wrote into the temp directory during a failed export goes with it."""
    def fail_at_the_end(self, fields):
        Path(tempfile.gettempdir(), "left-by-a-library.py").write_text("# generated\n")
        raise ExportError("disk full")

    monkeypatch.setattr(BundleWriter, "finish", fail_at_the_end)
    with pytest.raises(ExportError, match="disk full"):
        export_bundle(tmp_path / "bundle", formats=("tflite",), precisions=("fp32",), towers=("image",), gpu=False,
                      samples=8, progress=False)
    assert leftovers(fresh_tempdir) == [], "the failed export left these in the temp directory"
    assert not (tmp_path / "bundle").exists()
    assert export_module._private_dir is None
    assert pinned_inside(fresh_tempdir) == [], "variables still naming the removed private directory"


@pytest.mark.slow
@pytest.mark.parametrize("umask, isolate", [(0o022, "yes"), (0o077, "no")], ids=["umask-022", "umask-077"])
def test_export_leaves_the_temp_dir_empty_and_the_bundle_under_the_umask(umask, isolate, tmp_path):
    """`clipedge export` as a user runs it, in a fresh $TMPDIR: empty afterwards (with a conversion process too),
    and the bundle readable by others exactly when the umask says so."""
    tmp, out = tmp_path / "tmp", tmp_path / "bundle"
    tmp.mkdir()
    done = subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", "export", "--out", str(out),
                           *CHEAP_EXPORT, "--isolate", isolate], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TMPDIR": str(tmp)}, umask=umask)
    assert done.returncode == 0, done.stderr[-3000:]
    assert leftovers(tmp) == [], "the export left these in the temp directory"
    assert modes(out) == expected_modes(out, umask)
    assert modes(out)["."] == ("0o755" if umask == 0o022 else "0o700")
    assert modes(out)["manifest.json"] == ("0o644" if umask == 0o022 else "0o600")


@pytest.mark.slow
def test_stopped_export_leaves_the_temp_dir_empty(tmp_path):
    """SIGTERM (the CLI turns it into SystemExit) once the export is under way: something written into its private
    temp directory (torch's torchinductor_<user>/, autograph's files), or its partial bundle begun. Not torch's
    directory alone: an install where nothing imports dynamo never makes one, and the export then finished first."""
    tmp, out = tmp_path / "tmp", tmp_path / "bundle"
    tmp.mkdir()
    log = tmp_path / "stderr.txt"
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "clipedge.runtime.cli", "export", "--out", str(out),
                                    *CHEAP_EXPORT], stdout=subprocess.DEVNULL, stderr=stderr,
                                   env={**os.environ, "TMPDIR": str(tmp)})
    deadline = time.time() + 300
    def under_way() -> bool:
        return any(tmp.glob("clipedge-export-*/*")) or any(tmp_path.glob(".bundle.partial-*"))

    while not under_way() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"the export ended before it could be stopped: {log.read_text()[-2000:]}"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    assert leftovers(tmp) == [], "the stopped export left these in the temp directory"
    assert not out.exists()


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask-022", "umask-077"])
def test_index_files_follow_the_umask(umask, tmp_path):
    items = [str(tmp_path / f"{i}.jpg") for i in range(3)]
    vectors = np.eye(3, 4, dtype=np.float32)
    model = {"sha256": "0" * 64, "name": "test", "format": "tflite", "precision": "fp32", "embed_dim": 4}
    old = os.umask(umask)
    try:
        EmbeddingIndex(items, vectors, model).save(tmp_path / "index")
        EmbeddingIndex(items[:2], vectors[:2], model).save(tmp_path / "index")  # a replaced index too
    finally:
        os.umask(old)
    index = tmp_path / "index"
    assert modes(index) == expected_modes(index, umask)
    assert modes(index)["index.json"] == ("0o644" if umask == 0o022 else "0o600")
    assert len(EmbeddingIndex.load(index).items) == 2


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=["umask-022", "umask-027", "umask-077"])
def test_publish_gives_mkdtemp_trees_the_umask_modes(umask, tmp_path):
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        root = Path(tempfile.mkdtemp(dir=tmp_path))
        (root / "sub").mkdir(mode=0o700)
        fd, name = tempfile.mkstemp(dir=root / "sub")
        os.close(fd)
        (root / "model.tflite").write_bytes(b"x")
        os.chmod(root / "model.tflite", 0o400)
        publish(root)
    finally:
        os.umask(old)
    assert modes(root) == expected_modes(root, umask)
