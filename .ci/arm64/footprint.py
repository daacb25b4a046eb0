"""The runtime's footprint where it is installed: venv size, `import clipedge.runtime` time, peak RSS of one classify.

Usage: python footprint.py --venv VENV --bundle BUNDLE --image IMAGE --out FILE.json [--label NAME] [--no-size]
       [--precisions fp32,dynamic-int8]
Run it with any python; the measured commands run with VENV/bin/python and VENV/bin/clipedge in fresh processes.
Under qemu user-mode emulation, times are the emulator's (20-50x a native arm64 core) and the peak RSS is the qemu
process's, which includes the emulator and its translated-code cache: compare with `python_baseline_peak_rss_mb`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

IMPORT_SNIPPET = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def peak_rss_mb(argv: list[str]) -> tuple[float, float]:
    """Run argv to completion; (peak RSS in MB of that process alone, wall seconds). Fails on a non-zero exit."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {process.returncode}:\n{stderr[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def import_seconds(python: str, module: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        result = subprocess.run([python, "-c", IMPORT_SNIPPET.format(module=module)], capture_output=True, text=True,
                                check=True)
        out.append(float(result.stdout.strip()))
    return out


def tree_bytes(path: Path) -> tuple[int, int]:
    """(disk usage like `du`, apparent size) in bytes, hard links counted once."""
    seen: set[tuple[int, int]] = set()
    disk = apparent = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            disk += st.st_blocks * 512
            apparent += st.st_size
    return disk, apparent


def distribution_sizes(python: str) -> dict[str, float]:
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        "for d in m.distributions():\n"
        "    size = sum((f.size or 0) for f in (d.files or []))\n"
        "    out[d.metadata['Name']] = round(size / 1e6, 2)\n"
        "print(json.dumps(out))\n"
    )
    data = json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)
    return dict(sorted(data.items(), key=lambda kv: -kv[1]))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", type=Path, required=True)
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--label", default=platform.machine())
    parser.add_argument("--no-size", action="store_true", help="skip the venv size (a dev venv with extras)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,dynamic-int8", help="classify once with each")
    args = parser.parse_args()
    python = str(args.venv / "bin" / "python")
    clipedge = str(args.venv / "bin" / "clipedge")
    labels = ["dog", "cat", "car", "building", "fish", "flower", "tool", "person"]

    result: dict = {"label": args.label, "machine": platform.machine(), "bundle": args.bundle,
                    "python": subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"],
                                             capture_output=True, text=True, check=True).stdout.strip()}
    if not args.no_size:
        disk, apparent = tree_bytes(args.venv)
        result["venv_disk_mb"] = round(disk / 1e6, 1)
        result["venv_apparent_mb"] = round(apparent / 1e6, 1)
        result["distributions_mb"] = distribution_sizes(python)
    runtime_imports = import_seconds(python, "clipedge.runtime", args.runs)
    clip_imports = import_seconds(python, "clipedge.runtime.clip_runtime", args.runs)
    result["import_clipedge_runtime_s"] = round(statistics.median(runtime_imports), 4)
    result["import_clipedge_runtime_clip_s"] = round(statistics.median(clip_imports), 4)
    result["python_baseline_peak_rss_mb"], _ = (round(v, 1) for v in peak_rss_mb([python, "-c", "pass"]))
    result["classify_one_image"] = {}
    for precision in [p for p in args.precisions.split(",") if p]:
        rss, seconds = peak_rss_mb([clipedge, "classify", "--bundle", args.bundle, "--precision", precision,
                                    args.image, "--labels", *labels])
        result["classify_one_image"][precision] = {"peak_rss_mb": round(rss, 1), "wall_s": round(seconds, 2)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
