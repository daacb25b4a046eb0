"""Fuzz (issues #17 and #33): about 1,300 hostile inputs, every one a result or a ClipEdgeError, never a signal or a
traceback.

Random byte and structure mutations of manifests, model files (with the manifest's sha256 recomputed, so only the
model's own checks stand between the bytes and the interpreter), index files and images, and random texts; seed 17,
so a failure is the same on every run. Issue #33's surfaces (tests/runtime/fuzz_surfaces.py, fuzz_disk_full.py):
model files whose float32 weights hold NaN or infinity, FIFOs, sockets, devices and directories as images, a full
disk (an injected OSError) while embeddings or an index are written, and file names that are not UTF-8, each also
once through the CLI. The cases run in a child process (tests/runtime/fuzz_harness.py): a crash in native code ends
it, not pytest, and its last output names the case. About 90 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the fast tier (`pytest -m 'not slow'`) leaves this file out

SEED = 17
ROOT = Path(__file__).resolve().parents[2]


def test_fuzz_every_case_ends_in_a_result_or_a_clipedge_error(small_bundle, tmp_path):
    env = {**os.environ, "CLIPEDGE_CACHE_DIR": str(tmp_path / "cache"), "CLIPEDGE_PROBE_TIMEOUT": "30",
           "TMPDIR": str(tmp_path)}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tests.runtime.fuzz_harness", str(small_bundle),
                             str(tmp_path / "work"), str(SEED)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    seconds = time.perf_counter() - start
    lines = result.stdout.strip().splitlines()
    if result.returncode < 0:
        last = "\n".join(lines[-6:])
        raise AssertionError(f"the fuzz process was killed by {signal.Signals(-result.returncode).name}; its last "
                             f"case:\n{last}\n{result.stderr[-1500:]}")
    summary = json.loads(lines[-1])
    print(f"fuzz: {summary['cases']} cases in {seconds:.1f} s (seed {SEED}): {json.dumps(summary['outcomes'])}")
    unexpected = "\n\n".join(f"case {u['case']} ({u['kind']}): {u['error']}\n{u['traceback']}"
                             for u in summary["unexpected"])
    assert result.returncode == 0 and not summary["unexpected"], unexpected or result.stderr[-2000:]
    assert summary["cases"] >= 1250
    outcomes = summary["outcomes"]
    # the mutations reach every layer: some inputs still work, the rest are refused by the checks meant for them
    assert outcomes["model-file"].get("result") and outcomes["model-file"].get("BundleError")
    assert outcomes["manifest-json"].get("BundleError") and outcomes["image"].get("ImageError")
    assert outcomes["index"].get("BundleError") and outcomes["text"].get("result")
    # issue #33's surfaces: each kind reached, each ending only where it may (tests/runtime/fuzz_surfaces.py)
    assert_surfaces(outcomes)
    # nothing in the temp directory: probes and captures leave no files (onnxruntime's import writes .ses, one name)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("cache", "work", ".ses")]
    assert leftovers == []


def assert_surfaces(outcomes: dict[str, dict[str, int]]) -> None:
    nan, special, disk, names = (outcomes[k] for k in ("nan-model", "special-file", "disk-full", "non-utf8-name"))
    # damaged weights: a ModelOutputError naming the file, or a finite result where the input never meets them
    assert set(nan) <= {"ModelOutputError", "result", "cli-exit-2"} and nan.get("ModelOutputError"), nan
    assert nan.get("cli-exit-2") == 1, nan  # `classify --json`: exit 2, one line, no NaN printed
    assert set(special) == {"ImageError", "cli-skipped"} and special["cli-skipped"] == 1, special
    # a full disk: ClipEdgeError from `save_embeddings`, the OSError itself from an index's save; a save the
    # fault did not reach ("result") loaded whole; the CLI's `embed -o` and `index build`: exit 2, one line
    assert set(disk) <= {"ClipEdgeError", "OSError(ENOSPC)", "OSError(EDQUOT)", "OSError(EIO)", "result",
                         "cli-exit-2"} and disk.get("ClipEdgeError") and disk.get("OSError(ENOSPC)"), disk
    assert disk.get("cli-exit-2") == 2, disk
    assert set(names) == {"result", "ImageError", "cli-result"} and names["cli-result"] == 2, names
