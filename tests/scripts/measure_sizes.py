"""The install sizes the docs state, measured: the wheel, what clipedge itself installs, and a runtime-only venv.

Usage: python tests/scripts/measure_sizes.py [--write] [--json]

Builds the wheel (`pip wheel --no-deps .`), installs it with the runtime's dependencies and no extras into a fresh
venv (a Pi user's `pip install`), and measures. With --write, every `<!-- size:NAME -->VALUE<!-- /size -->` span in
README.md and docs/*.md is set to the measured VALUE, so no size in the docs is typed by hand; without it, the spans
that differ are listed (exit status 1 when any does). The venv's packages are this machine's wheels (x86_64 here);
clipedge's own files are the same on every platform (pure Python).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SPAN = re.compile(r"(<!-- size:(?P<name>[a-z0-9_]+) -->)(?P<value>[^<]*)(<!-- /size -->)")
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MB = 1e6


def tree_bytes(path: Path) -> int:
    """Disk usage like `du` (allocated blocks), hard links counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def installed_files(python: Path) -> dict[str, dict[str, int]]:
    """Per distribution: its files' sizes (from its RECORD) by path, as installed in that venv."""
    code = ("import json, importlib.metadata as m\n"
            "print(json.dumps({d.metadata['Name'].lower(): {str(f): f.size or 0 for f in (d.files or [])}\n"
            "                  for d in m.distributions()}))\n")
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def measure() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="clipedge-sizes-") as tmp:
        tmp_path = Path(tmp)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO), "-w", tmp_path / "wheel"],
                       check=True)
        wheel = next((tmp_path / "wheel").glob("clipedge-*.whl"))
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        python = venv / "bin" / "python"
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel], check=True)
        files = installed_files(python)
        ours = files["clipedge"]

        def part(prefix: str) -> float:
            return sum(size for name, size in ours.items() if name.startswith(prefix)) / MB

        sizes = {
            "wheel_mb": wheel.stat().st_size / MB,
            "clipedge_installed_mb": sum(ours.values()) / MB,
            "demo_checkpoint_mb": part("clipedge/export/demo/demo_checkpoint/"),
            "calibration_data_mb": part("clipedge/calibration_data/"),
            "runtime_venv_mb": tree_bytes(venv) / MB,
            "seconds": time.perf_counter() - start,
        }
        for name in ("numpy", "ai-edge-litert", "pillow", "pip"):
            sizes[f"{name.replace('-', '_')}_mb"] = sum(files.get(name, {}).values()) / MB
        return sizes


def shown(value: float) -> str:
    """How a size reads in prose: 212 MB, 14.5 MB, 0.9 MB."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def sync_docs(sizes: dict[str, float], write: bool) -> list[str]:
    """The spans whose value differs from the measurement (rewritten with --write); unknown names are errors."""
    changed = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")

        def replace(match: re.Match, doc: Path = doc) -> str:
            name = match["name"]
            if name not in sizes:
                raise SystemExit(f"{doc}: size span {name!r} is not measured here (known: {sorted(sizes)})")
            value = shown(sizes[name])
            if value != match["value"]:
                changed.append(f"{doc.relative_to(REPO)}: {name} {match['value'] or '(empty)'} -> {value}")
            return f"{match[1]}{value}{match[4]}"

        new = SPAN.sub(replace, text)
        if write and new != text:
            doc.write_text(new, encoding="utf-8")
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="set the docs' size spans to the measured values")
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = parser.parse_args()
    sizes = measure()
    if args.json:
        print(json.dumps({k: round(v, 2) for k, v in sizes.items()}, indent=1))
    else:
        for name, value in sizes.items():
            print(f"{name:<24} {value:8.2f}")
    changed = sync_docs(sizes, args.write)
    for line in changed:
        print(("updated " if args.write else "differs ") + line, file=sys.stderr)
    return 1 if changed and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
