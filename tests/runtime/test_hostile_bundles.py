"""Damaged, edited and hostile bundles (issue #17): each ends in a one-line BundleError, never a crash, a traceback,
a file read from outside the bundle or a silently wrong result; and a killed command leaves nothing in the temp
directory."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipedge.runtime.backends.probe import probe_model
from clipedge.runtime.clip_runtime import load
from clipedge.runtime.errors import BackendError, BundleError
from clipedge.runtime.manifest import Manifest


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_manifest(bundle: Path, change) -> None:
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    result = change(data)
    path.write_text(json.dumps(data if result is None else result))


def rewrite_with_sha(bundle: Path, name: str, data: bytes) -> None:
    """Replace a model file and recompute its manifest entry: integrity passes, the bytes are hostile."""
    (bundle / name).write_bytes(data)

    def change(manifest):
        for artifact in manifest["artifacts"]:
            if artifact["file"] == name:
                artifact.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))

    edit_manifest(bundle, change)


def cli(*args: str, tmp: Path, cache: Path) -> subprocess.CompletedProcess:
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp), "CLIPEDGE_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture()
def probe_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLIPEDGE_CACHE_DIR", str(cache))
    return cache


# ---- 1. a malformed model file with a matching sha256 ------------------------------------------------------------
def test_truncated_model_is_a_bundle_error_not_a_crash(small_bundle, tmp_path):
    bundle = copy_bundle(small_bundle, tmp_path / "b")
    data = (bundle / "text_fp32.tflite").read_bytes()
    rewrite_with_sha(bundle, "text_fp32.tflite", data[: len(data) // 2])  # was SIGSEGV in CompiledModel.from_file
    result = cli("embed", "--text", "a dog", "-o", str(tmp_path / "e.npy"), "--bundle", str(bundle),
                 "--precision", "fp32", "--format", "tflite", tmp=tmp_path / "tmp", cache=tmp_path / "cache")
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert result.stderr.startswith("clipedge: error:") and "Traceback" not in result.stderr
    assert "text_fp32.tflite is not a valid TFLite flatbuffer" in result.stderr  # LiteRT's verifier, in the child
    assert _leftovers(tmp_path / "tmp") == []  # no clipedge-native-*.log, nothing else


def _leftovers(tmp: Path) -> list[str]:
    return [p.name for p in tmp.iterdir() if p.name != ".ses"]  # onnxruntime's import writes .ses, always that one


def test_a_model_that_crashes_the_probe_is_refused_and_remembered(small_bundle, tmp_path, probe_cache, monkeypatch):
    """Past the verifier, whatever kills the child is a BundleError here (or, on the GPU route, a BackendError that
    `auto` falls back from), and a deterministic crash is cached on disk for the next process."""
    import clipedge.runtime.backends.probe as probe

    monkeypatch.setattr(probe, "CHILD_MODULE", "tests.runtime.crashing_probe_child")
    monkeypatch.setattr(probe, "_memory", {})  # this process probed these files while exporting them
    bundle = copy_bundle(small_bundle, tmp_path / "b")
    with pytest.raises(BundleError, match=r"image_fp32.tflite is malformed .* killed by SIGSEGV.*Check failed"):
        load(bundle, precision="fp32", format="tflite").encode_images([np.zeros((8, 8, 3), np.uint8)])
    artifact = Manifest.read(bundle).find("image", "tflite", "fp32")
    sha = artifact.sha256
    stored = list((probe_cache / "probes").glob(f"{sha}-cpu-*.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text())["status"] == "crashed"
    # a healthy child would say ok...
    monkeypatch.setattr(probe, "CHILD_MODULE", "clipedge.runtime.backends.probe_child")
    monkeypatch.setattr(probe, "_memory", {})
    assert probe_model(bundle / "image_fp32.tflite", signature=artifact.signature).crashed  # ...the cache answers
    from clipedge.runtime.backends.open import open_backend

    monkeypatch.setattr(probe, "CHILD_MODULE", "tests.runtime.crashing_probe_child")
    monkeypatch.setenv("CRASH_ON", "gpu")  # a GPU that cannot take the model, a CPU that can
    with pytest.raises(BackendError, match="the GPU route fails .* killed by SIGSEGV"):
        open_backend(bundle / "image_fp32.onnx", accelerator="gpu")
    auto = open_backend(bundle / "image_fp32.onnx", accelerator="auto")
    assert auto.info.accelerator == "cpu" and "the GPU route fails" in auto.info.note


def test_probe_outcomes_are_cached_by_sha256_and_accelerator(small_bundle, tmp_path, probe_cache, monkeypatch):
    import clipedge.runtime.backends.probe as probe

    monkeypatch.setattr(probe, "_memory", {})
    good = small_bundle / "image_fp32.tflite"
    first = probe_model(good, accelerator="cpu")
    assert first.ok and not first.cached and first.backend in ("litert-compiled", "litert-interpreter")
    again = probe_model(good, accelerator="cpu")
    assert again.ok and again.cached
    assert not probe_model(good, accelerator="gpu").cached  # another accelerator, another probe
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    refused = probe_model(bad, accelerator="cpu")
    assert refused.status == "error" and refused.error_class == "BundleError" and "flatbuffer" in refused.detail
    stored = {json.loads(p.read_text())["status"] for p in (probe_cache / "probes").glob("*.json")}
    assert stored == {"ok"}  # errors stay in memory: they may depend on the moment
    code = ("import sys; from clipedge.runtime.backends.probe import probe_model; r = probe_model(sys.argv[1]); "
            "print(r.status, r.cached)")
    out = subprocess.run([sys.executable, "-c", code, str(good)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ok", "True"]  # another process reads the disk cache: no child


def test_a_killed_command_leaves_nothing_in_the_temp_directory(small_bundle, tmp_path):
    """SIGKILL in the middle of a command (what a crash does): the native-log capture file has no name to leave."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = ("import os, signal, sys; import clipedge.runtime.cli.main as cli; "
            "cli.cmd_info = lambda args: os.kill(os.getpid(), signal.SIGKILL); "  # build_parser reads it at call
            "sys.exit(cli.main(['info', sys.argv[1]]))")
    result = subprocess.run([sys.executable, "-c", code, str(small_bundle)], env={**os.environ, "TMPDIR": str(tmp)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr[-1000:]
    assert _leftovers(tmp) == []


# ---- 5. paths outside the bundle; unchecked tokenizer files ------------------------------------------------------
@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_model_files_outside_the_bundle_are_refused(small_bundle, tmp_path, where):
    bundle = copy_bundle(small_bundle, tmp_path / "b")
    outside = tmp_path / "outside.tflite"
    shutil.copy(bundle / "image_fp32.tflite", outside)
    name = {"parent": "../outside.tflite", "absolute": str(outside), "symlink": "image_fp32.tflite"}[where]
    if where == "symlink":
        (bundle / "image_fp32.tflite").unlink()
        (bundle / "image_fp32.tflite").symlink_to(outside)
    edit_manifest(bundle, lambda m: m["artifacts"][0].update(file=name))
    with pytest.raises(BundleError, match="outside the bundle|inside the bundle|relative to the bundle"):
        load(bundle, precision="fp32", format="tflite").encode_images([b"\x89PNG"])


def test_tokenizer_files_are_in_the_integrity_check(small_bundle, tmp_path):
    """Two merges swapped: a well-formed vocabulary that gives other ids; the manifest's sha256 catches it."""
    bundle = copy_bundle(small_bundle, tmp_path / "b")
    vocab = bundle / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(vocab.read_bytes()).decode().split("\n")
    lines[1], lines[2] = lines[2], lines[1]
    vocab.write_bytes(gzip.compress("\n".join(lines).encode()))
    manifest = Manifest.read(bundle)
    assert "tokenizer/bpe_simple_vocab_16e6.txt.gz" in manifest.data["files"]
    with pytest.raises(BundleError, match="bpe_simple_vocab_16e6.txt.gz is damaged"):
        load(bundle)  # load checks every file the runtime may use, the tokenizer's too
    result = cli("info", str(bundle), "--verify", tmp=tmp_path / "tmp", cache=tmp_path / "cache")
    assert result.returncode == 2 and "bpe_simple_vocab_16e6.txt.gz" in result.stderr
    assert "intact" in result.stdout


def test_info_verify_checks_every_file(small_bundle, tmp_path):
    result = cli("info", str(small_bundle), "--verify", tmp=tmp_path / "tmp", cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    total = len(Manifest.read(small_bundle).verify_all())
    assert f"verified  {total} of {total} files intact" in result.stdout
    bundle = copy_bundle(small_bundle, tmp_path / "b")
    data = bytearray((bundle / "text_dynamic-int8.onnx").read_bytes())
    data[-10] ^= 0xFF  # not a model load picks by default: only --verify looks at it
    (bundle / "text_dynamic-int8.onnx").write_bytes(bytes(data))
    (bundle / "text_gpu_token_embedding.npy").unlink()
    result = cli("info", str(bundle), "--verify", "--json", tmp=tmp_path / "tmp", cache=tmp_path / "cache")
    assert result.returncode == 2 and result.stderr.startswith("clipedge: error: 2 of")
    problems = {e["file"]: e["problem"] for e in json.loads(result.stdout)["verified"] if e["problem"]}
    assert set(problems) == {"text_dynamic-int8.onnx", "text_gpu_token_embedding.npy"}
    assert "damaged" in problems["text_dynamic-int8.onnx"] and "missing" in problems["text_gpu_token_embedding.npy"]


# ---- 9. valid JSON of the wrong shape -----------------------------------------------------------------------------
def _set(path: list, value):
    def change(manifest):
        target = manifest
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


WRONG_SHAPES = {
    "a list": lambda m: [m],
    "artifacts as strings": lambda m: m.update(artifacts=["image_fp32.tflite"]),
    "a string logit_scale": _set(["logit_scale"], "100"),
    "NaN logit_scale": _set(["logit_scale"], float("nan")),
    "a bool embed_dim": _set(["embed_dim"], True),
    "preprocess mean as text": _set(["preprocess", "mean"], "0.5"),
    "a 100000-pixel crop": _set(["preprocess", "crop_size"], 100000),
    "tokenizer files as an object": _set(["tokenizer", "files"], {"a": 1}),
    "a string context length": _set(["tokenizer", "context_length"], "77"),
    "input shape of strings": lambda m: m["artifacts"][0]["inputs"][0].update(shape=["1", "64"]),
    "unknown dtype": lambda m: m["artifacts"][0]["inputs"][0].update(dtype=["float32"]),
    "a quantization scale of zero": lambda m: m["artifacts"][0]["outputs"][0].update(
        quantization={"scale": 0, "zero_point": 0}),
    "a short sha256": lambda m: m["artifacts"][0].update(sha256="abc"),
    "model as a string": _set(["model"], "ViT"),
    "files entry without sha256": _set(["files"], {"tokenizer/x": {}}),
}


@pytest.mark.parametrize("shape", sorted(WRONG_SHAPES))
def test_a_manifest_of_the_wrong_shape_is_one_clear_line(small_bundle, tmp_path, shape):
    bundle = copy_bundle(small_bundle, tmp_path / "b")
    edit_manifest(bundle, WRONG_SHAPES[shape])
    with pytest.raises(BundleError, match="manifest.json"):
        load(bundle).encode_texts(["a dog"])
    result = cli("classify", str(Path(__file__).parent / "missing.jpg"), "--labels", "a,b", "--bundle", str(bundle),
                 tmp=tmp_path / "tmp", cache=tmp_path / "cache")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-1500:]
    assert result.stderr.startswith("clipedge: error:") and result.stderr.count("\n") == 1, result.stderr
