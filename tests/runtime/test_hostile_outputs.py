"""What the runtime's outputs must survive (issue #33, "hostile use"): results in input order with an image given
twice, a model that outputs NaN, a full disk while embeddings are written, file names that are not UTF-8, `-o` naming
a directory, and an index rebuilt in a directory that holds someone's own `embeddings*.npy`."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import clipedge.runtime.atomic as atomic_module
from clipedge.runtime.cli.batches import counted
from clipedge.runtime.embeddings_file import save_embeddings
from clipedge.runtime.errors import ClipEdgeError, ModelOutputError
from clipedge.runtime.index import EmbeddingIndex
from clipedge.runtime.runner import ArtifactRunner

PHOTOS = sorted((Path(__file__).parents[2] / "calibration_data" / "photos").glob("*.webp"))[:2]

# every model output NaN, below ArtifactRunner (where the check is): as a broken model file would give
NAN_MODEL = """
import numpy as np
import clipedge.runtime.runner as _runner
_open = _runner.open_backend
def _nan_open(*args, **kwargs):
    backend = _open(*args, **kwargs)
    run = backend.run
    backend.run = lambda feeds: {k: np.full(np.shape(v), np.nan, np.float32) for k, v in run(feeds).items()}
    return backend
_runner.open_backend = _nan_open
"""


def run_cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"import sys\n{prelude}\nfrom clipedge.runtime.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                          errors="surrogateescape")


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("clipedge: error: "), result.stderr
    return lines[0]


# ---- (10) results in input order, duplicates included ------------------------------------------------------------
def test_classify_answers_in_input_order_with_an_image_given_twice(small_bundle):
    a, b = map(str, PHOTOS)
    result = run_cli("classify", a, b, a, "--labels", "cat,dog", "--json", "--bundle", str(small_bundle))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert [item["image"] for item in payload] == [a, b, a]  # was b, a, a: ordered by path, the last place won
    assert payload[0]["top"] == payload[2]["top"]


# ---- (9) a model that outputs NaN ---------------------------------------------------------------------------------
class _NanBackend:
    def run(self, feeds):
        return {"out": np.full((len(next(iter(feeds.values()))), 4), np.nan, np.float32)}


def _runner_with(backend, path: str) -> ArtifactRunner:
    runner = object.__new__(ArtifactRunner)  # no file opened: only what run_feeds uses
    runner.path, runner.backend = Path(path), backend
    runner._input_quantization, runner._output_quantization = {}, None
    return runner


def test_a_nan_output_is_an_error_naming_the_model_file():
    runner = _runner_with(_NanBackend(), "bundle/image_fp32.tflite")
    with pytest.raises(ModelOutputError, match=r"model file bundle/image_fp32\.tflite gave NaN or infinity in 2 "
                                               r"of its 2 output rows: the file is damaged"):
        runner.run_feeds({"pixel_values": np.zeros((2, 3), np.float32)})
    with pytest.raises(ModelOutputError, match="its inputs hold NaN or infinity too"):
        runner.run_feeds({"pixel_values": np.full((2, 3), np.inf, np.float32)})
    assert issubclass(ModelOutputError, ClipEdgeError)


@pytest.mark.slow
def test_the_cli_never_prints_or_writes_nan(small_bundle, tmp_path):
    b = ["--bundle", str(small_bundle)]
    result = run_cli("classify", str(PHOTOS[0]), "--labels", "cat,dog", "--json", *b, prelude=NAN_MODEL)
    line = one_error_line(result)
    assert "model file " in line and "NaN or infinity" in line and str(small_bundle) in line
    assert "NaN" not in result.stdout and "nan" not in result.stdout
    result = run_cli("classify", str(PHOTOS[0]), "--labels", "cat,dog", *b, prelude=NAN_MODEL)
    assert "(nan)" not in result.stdout and "model file " in one_error_line(result)
    np.save(tmp_path / "e.npy", np.ones((1, 32), np.float32))
    before = (tmp_path / "e.npy").read_bytes()
    for source in ([str(PHOTOS[0])], ["--text", "a dog"]):
        result = run_cli("embed", *source, "-o", str(tmp_path / "e.npy"), *b, prelude=NAN_MODEL)
        assert "model file " in one_error_line(result)
        assert (tmp_path / "e.npy").read_bytes() == before and not (tmp_path / "e.json").exists()


# ---- (2) embeddings written atomically; names that are not UTF-8 --------------------------------------------------
def _full_disk_while_writing_the_matrix(monkeypatch):
    def half_written(f, array):
        f.write(b"\x93NUMPY half a header")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", half_written)


def _full_disk_while_writing_the_rows(monkeypatch):
    calls = []
    real = os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the matrix is written and synced; the .json beside it is not
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(atomic_module.os, "fsync", fsync)


def _full_disk_at_the_second_rename(monkeypatch):
    """Found by the fuzz test: the matrix was renamed into place, the rows' description was not, and the old rows
    were described as the new matrix's."""
    calls = []
    real = os.replace

    def replace(source, target):
        calls.append(target)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(source, target)

    monkeypatch.setattr(atomic_module.os, "replace", replace)


@pytest.mark.parametrize("inject", [_full_disk_while_writing_the_matrix, _full_disk_while_writing_the_rows,
                                    _full_disk_at_the_second_rename])
def test_a_full_disk_leaves_the_earlier_embeddings_whole(tmp_path, monkeypatch, inject):
    out = tmp_path / "out" / "e.npy"
    save_embeddings(out, np.eye(2, 4, dtype=np.float32), ["a.jpg", "b.jpg"], "image", {"sha256": "0" * 64})
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    assert sorted(before) == ["e.json", "e.npy"]
    inject(monkeypatch)
    with pytest.raises(ClipEdgeError, match=r"cannot write .*e\.npy: No space left on device"):
        save_embeddings(out, np.ones((3, 4), np.float32), ["c", "d", "e"], "image", {"sha256": "1" * 64})
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before  # nothing temporary left either
    rows = json.loads((out.parent / "e.json").read_text())
    assert rows["items"] == ["a.jpg", "b.jpg"] and np.load(out).shape == (2, 4)


def test_file_names_that_are_not_utf8(small_bundle, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    good = photos / os.fsdecode(b"\xff-photo.webp")
    bad = photos / os.fsdecode(b"\xfe-broken.png")
    shutil.copy(PHOTOS[0], good)
    bad.write_bytes(b"not an image")
    out = tmp_path / "e.npy"
    result = run_cli("embed", str(good), str(bad), "--on-error", "skip", "-o", str(out), "--bundle",
                     str(small_bundle))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "1 unreadable image left out" in result.stdout  # one image: no plural
    raw = (tmp_path / "e.json").read_bytes()
    raw.decode("ascii")  # plain ASCII: the name's byte escaped (\udcff), see clipedge.runtime.embeddings_file
    items = json.loads(raw)["items"]
    assert [os.fsencode(item) for item in items] == [os.fsencode(good)] and np.load(out).shape == (1, 32)
    listed = (tmp_path / "e.skipped.tsv").read_bytes()
    assert os.fsencode(bad) in listed  # the name's own bytes: `cut -f2` gives a name that opens


# ---- (16) -o naming a directory; counts in words ------------------------------------------------------------------
def test_embed_refuses_an_output_that_names_a_directory(tmp_path):
    (tmp_path / "existing").mkdir()
    for output, shown in ((f"{tmp_path}/out/dir/", tmp_path / "out" / "dir"),
                          (str(tmp_path / "existing"), tmp_path / "existing")):
        result = run_cli("embed", "--text", "a dog", "-o", output, "--bundle", str(tmp_path / "no-bundle"))
        line = one_error_line(result)
        assert f"-o {output} names a directory; give a file name like {shown / 'embeddings.npy'}" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]  # no out/dir.npy, no existing.npy


def test_counts_read_in_the_singular_and_plural():
    assert (counted(1, "unreadable image"), counted(2, "image"), counted(0, "image")) == \
        ("1 unreadable image", "2 images", "0 images")


# ---- (3) an index rebuild deletes only the matrix it replaced ----------------------------------------------------
def _index(names: list[str], seed: int) -> EmbeddingIndex:
    vectors = np.random.default_rng(seed).normal(size=(len(names), 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return EmbeddingIndex(names, vectors, {"sha256": "0" * 64, "name": "m", "format": "tflite",
                                           "precision": "fp32", "embed_dim": 8})


def test_an_index_rebuild_keeps_the_users_embeddings_files(tmp_path):
    idx = tmp_path / "idx"
    names = [str(tmp_path / name) for name in ("a.jpg", "b.jpg", "c.jpg")]
    _index(names[:2], seed=0).save(idx)
    first = json.loads((idx / "index.json").read_text())["embeddings"]["file"]
    theirs = {"embeddings-backup-monday.npy": b"a user's backup", "embeddings.npy": b"from `clipedge embed`",
              "embeddings.json": b"{}"}
    for name, data in theirs.items():
        (idx / name).write_bytes(data)
    again = _index(names, seed=1)
    again.save(idx)
    again.save(idx)  # the same matrix again: the file it names is kept, not deleted as the "replaced" one
    second = json.loads((idx / "index.json").read_text())["embeddings"]["file"]
    assert second != first and not (idx / first).exists()  # the replaced index's own matrix is gone
    assert {name: (idx / name).read_bytes() for name in theirs} == theirs
    assert sorted(p.name for p in idx.iterdir()) == sorted([*theirs, second, "index.json"])
    assert EmbeddingIndex.load(idx).items == names


# ---- (15) a first index build killed between its writes ----------------------------------------------------------
def test_a_first_build_killed_before_its_index_json_is_rebuilt_over(tmp_path, monkeypatch):
    """The matrix renamed into place, then killed before index.json (issue #33): a rerun used to refuse the
    directory as "other files" forever. Now the leftover, provably the save's own (named after its sha256), goes;
    a look-alike with another content is still a stranger's file and refused."""
    import clipedge.runtime.index as index_module
    from clipedge.runtime.errors import InputError

    idx = tmp_path / "idx"
    names = [str(tmp_path / name) for name in ("a.jpg", "b.jpg")]

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands in for the SIGKILL between the two renames

    with monkeypatch.context() as patch:
        patch.setattr(index_module.EmbeddingIndex, "_write_meta", killed)
        patch.setattr(index_module.Path, "unlink", lambda self, missing_ok=False: None)  # killed: no clean-up ran
        with pytest.raises(KeyboardInterrupt):
            _index(names, seed=0).save(idx)
    leftover = [p.name for p in idx.iterdir()]
    assert len(leftover) == 1 and leftover[0].startswith("embeddings-"), leftover
    _index(names, seed=1).save(idx)  # the rerun
    assert EmbeddingIndex.load(idx).items == names and leftover[0] not in [p.name for p in idx.iterdir()]

    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "embeddings-0123456789abcdef.npy").write_bytes(b"someone's file that only looks like ours")
    with pytest.raises(InputError, match="directory of other files"):
        _index(names, seed=0).save(stranger)
