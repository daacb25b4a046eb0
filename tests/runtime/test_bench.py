"""`clipedge bench` and the runtime's measuring helpers: tables for a TFLite and an ONNX model, synthetic inputs,
peak memory in a fresh process, bad input, and no TensorFlow / torch / matplotlib anywhere on its path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from clipedge.runtime.bench import (
    bench,
    bench_table,
    machine_info,
    measure_latency,
    peak_memory,
    resolve_target,
    synthetic_feeds,
)
from clipedge.runtime.errors import BundleError, InputError


def clipedge(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, as a user runs it (main() sets up logging and fd 2 for a whole process)."""
    return subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_measure_latency_counts_warmup_apart():
    calls = []
    latency = measure_latency(lambda: calls.append(1), repeats=5, warmup=3)
    assert len(calls) == 8 and latency.runs == 5
    assert 0 <= latency.min_ms <= latency.median_ms <= latency.p90_ms
    with pytest.raises(InputError, match="repeats"):
        measure_latency(lambda: None, repeats=0)


def test_bench_tflite_and_onnx(small_bundle):
    rows = bench(small_bundle, tower="image", fmt="tflite", precision="fp32", batches=[1, 3], threads=[1, 2],
                 repeats=2, warmup=1)
    assert [(r.threads, r.batch) for r in rows] == [(1, 1), (1, 3), (2, 1), (2, 3)]
    assert all(r.file == "image_fp32.tflite" and r.model_batch == 1 and r.items_per_second > 0 for r in rows)
    table = bench_table(rows)
    assert "image_fp32.tflite" in table and "repeated calls" in table and len(table.splitlines()) == 4 + 4

    rows = bench(small_bundle / "text_dynamic-int8.onnx", batches=[1, 2], repeats=2, warmup=1)
    assert [r.batch for r in rows] == [1, 2] and rows[0].model_batch is None  # dynamic batch axis
    assert (rows[0].tower, rows[0].precision, rows[0].backend) == ("text", "dynamic-int8", "onnxruntime")
    assert "repeated calls" not in bench_table(rows)


def test_synthetic_feeds(small_bundle):
    from clipedge.runtime.manifest import Manifest

    manifest = Manifest.read(small_bundle)
    text = manifest.find("text", "tflite", "fp32")
    feeds = synthetic_feeds([_spec("input_ids", (1, 77), "int32")], 3, text, manifest)
    ids = feeds["input_ids"]
    assert ids.shape == (3, 77) and ids.dtype == np.int32
    assert (ids[:, 0] == 49406).all() and (ids == 49407).sum(axis=1).tolist() == [1, 1, 1]
    gpu = manifest.find("text", "tflite", "fp32", variant="gpu")
    from clipedge.runtime.backends.open import open_backend

    backend = open_backend(manifest.verified_path(gpu), signature=gpu.signature, threads=1)
    feeds = synthetic_feeds(backend.inputs, 2, gpu, manifest)
    assert feeds["eot_mask"].sum(axis=1).tolist() == [1.0, 1.0]  # the runtime's own lookup, not noise
    assert backend.run(feeds)


def _spec(name, shape, dtype):
    from clipedge.runtime.backends.open import TensorSpec

    return TensorSpec(name, shape, dtype)


def test_peak_memory_and_machine(small_bundle):
    memory = peak_memory(small_bundle, "image_dynamic-int8.tflite", threads=1)
    assert memory["peak_rss_mb"] >= memory["before_load_rss_mb"] > 0
    info = machine_info()
    assert info["cores"] >= 1 and "numpy" in info["libraries"]


def test_bench_cli(small_bundle):
    done = clipedge("bench", str(small_bundle), "--tower", "text", "--format", "onnx", "--precision", "fp32",
                    "--batch", "1,2", "--threads", "1", "--repeats", "2", "--warmup", "0", "--json")
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert [r["batch"] for r in payload["rows"]] == [1, 2]
    assert payload["rows"][0]["file"] == "text_fp32.onnx" and payload["rows"][0]["latency"]["runs"] == 2
    done = clipedge("bench", str(small_bundle / "image_dynamic-int8.tflite"), "--batch", "1", "--repeats", "1")
    assert done.returncode == 0 and "image_dynamic-int8.tflite" in done.stdout and "median ms" in done.stdout


def test_bench_bad_input(small_bundle, tmp_path):
    done = clipedge("bench", str(tmp_path / "nothing"))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "does not exist" in done.stderr
    for bad in ("0", "1,x"):
        done = clipedge("bench", str(small_bundle), "--batch", bad)
        assert done.returncode == 2 and "comma-separated positive integers" in done.stderr
    with pytest.raises(InputError, match="already one model file"):
        resolve_target(small_bundle / "image_fp32.tflite", precision="int8")
    with pytest.raises(BundleError, match="has no image model with format=onnx, precision=int8"):
        resolve_target(small_bundle, fmt="onnx", precision="int8")


def test_bench_runs_on_a_runtime_only_install(small_bundle):
    """No TensorFlow, torch, transformers or matplotlib: importing any of them fails in this process."""
    code = textwrap.dedent(f"""
        import sys
        for name in ("tensorflow", "torch", "transformers", "matplotlib"):
            sys.modules[name] = None  # as if not installed: importing raises ImportError
        from clipedge.runtime.cli.main import main
        for target in ({str(small_bundle / "image_fp32.tflite")!r}, {str(small_bundle / "text_fp32.onnx")!r}):
            assert main(["bench", target, "--batch", "1", "--threads", "1", "--repeats", "1", "--json"]) == 0
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count('"rows"') == 2
