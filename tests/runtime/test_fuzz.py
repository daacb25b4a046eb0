"""Fuzz (issue #17): about 1,100 hostile inputs, every one a result or a ClipEdgeError, never a signal or a traceback.

Random byte and structure mutations of manifests, model files (with the manifest's sha256 recomputed, so only the
model's own checks stand between the bytes and the interpreter), index files and images, and random texts; seed 17,
so a failure is the same on every run. The cases run in a child process (tests/runtime/fuzz_harness.py): a crash
in native code ends it, not pytest, and its last output names the case. About 30 s on 2 cores.
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
    assert summary["cases"] >= 1000
    outcomes = summary["outcomes"]
    # the mutations reach every layer: some inputs still work, the rest are refused by the checks meant for them
    assert outcomes["model-file"].get("result") and outcomes["model-file"].get("BundleError")
    assert outcomes["manifest-json"].get("BundleError") and outcomes["image"].get("ImageError")
    assert outcomes["index"].get("BundleError") and outcomes["text"].get("result")
    # nothing in the temp directory: probes and captures leave no files (onnxruntime's import writes .ses, one name)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("cache", "work", ".ses")]
    assert leftovers == []
