"""Issue #35's update target, measured: after adding 100 photos to an index of 10,000, `clipedge index update`
should take at most 1.5x what embedding those 100 alone takes (`clipedge embed`).

    python tests/scripts/bench_index_update.py --bundle clipedge-bundle [--photos 10000] [--added 100] [--repeats 3]

Writes distinct JPEGs (noise over a gradient, 320x240: every file new bytes, so nothing is reused by its hash) into a
temporary folder, builds the index once, then per repeat: adds `--added` new photos, times `index update` and
`embed` of the same new photos side by side (alternating order), removes them again with an update. Prints a
markdown table of medians, the ratio and the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def write_photos(folder: Path, count: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, 320, dtype=np.float32)[None, :, None]
    out = []
    for i in range(count):
        pixels = np.clip(ramp + rng.normal(0, 30, (240, 320, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{seed}-{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=85)
        out.append(path)
    return out


def clipedge(*args: str) -> float:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"clipedge {' '.join(args)} failed:\n{result.stderr}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--added", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clipedge-bench-update-") as tmp:
        root = Path(tmp)
        library, index = root / "library", root / "index"
        write_photos(library / "old", args.photos, seed=1)
        build = clipedge("index", "build", str(library), "-o", str(index), "--bundle", args.bundle)
        update_times, embed_times = [], []
        for repeat in range(args.repeats):
            new = write_photos(library / "new", args.added, seed=100 + repeat)
            runs = [("update", lambda: clipedge("index", "update", str(index), "--json")),
                    ("embed", lambda new=new: clipedge("embed", *map(str, new), "-o", str(root / "new.npy"),
                                               "--bundle", args.bundle))]
            for name, run in (runs if repeat % 2 == 0 else runs[::-1]):
                (update_times if name == "update" else embed_times).append(run())
            for path in new:
                path.unlink()
            clipedge("index", "update", str(index))  # back to the old photos only
        rows = json.loads(subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", "index", "update",
                                          str(index), "--json"], capture_output=True, text=True).stdout)["items"]
    update, embed = statistics.median(update_times), statistics.median(embed_times)
    print(f"CPU: {cpu_name()}; bundle {args.bundle}; first build of {args.photos} photos: {build:.1f} s")
    print(f"\n| index of {rows} photos, {args.added} added | median of {args.repeats} (s) |\n|---|---|")
    print(f"| `clipedge index update` (scan, hash, embed the new, commit) | {update:.2f} |")
    print(f"| `clipedge embed` of the {args.added} new photos alone | {embed:.2f} |")
    print(f"| ratio update / embed | {update / embed:.2f}x |")


if __name__ == "__main__":
    main()
