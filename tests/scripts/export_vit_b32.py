"""Export the full ViT-B/32 architecture (random-init HF weights: sizes, latencies and fidelities are real,
accuracies are not) with `clipedge export`, and report the table, wall time and peak memory.

Usage: python tests/scripts/export_vit_b32.py [--out DIR] [--precisions ...] [--formats ...]
Peak memory: the export runs as a child; "peak_rss_gib" is the largest single process (resource.getrusage
RUSAGE_CHILDREN), "peak_tree_rss_gib" the largest sum over the export and its conversion processes at one moment,
sampled every 0.2 s from /proc (Linux), which is what the machine must hold.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants now (Linux /proc; 0 once it has exited)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def make_checkpoint(directory: Path) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPModel

    from clipedge.export.model.config import PRESETS

    preset = PRESETS["vit-b-32"]
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    config = CLIPConfig(text_config={k: getattr(preset.text, k) for k in keys},
                        vision_config={**{k: getattr(preset.vision, k) for k in keys}, "patch_size": 32},
                        projection_dim=512)
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(directory)
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="vit-b32-bundle")
    parser.add_argument("--precisions", default=None)
    parser.add_argument("--formats", default="tflite,onnx")
    parser.add_argument("--checkpoint", help="reuse an existing ViT-B/32 checkpoint directory")
    args = parser.parse_args()
    checkpoint = Path(args.checkpoint) if args.checkpoint else make_checkpoint(Path(tempfile.mkdtemp()) / "vit-b32")
    command = [sys.executable, "-m", "clipedge.runtime.cli", "export", "--checkpoint", str(checkpoint),
               "--architecture", "ViT-B/32", "--out", args.out, "--formats", args.formats, "--force"]
    if args.precisions:
        command += ["--precisions", args.precisions]
    start = time.perf_counter()
    process = subprocess.Popen(command)
    peak_tree = 0

    def sample() -> None:
        nonlocal peak_tree
        while process.poll() is None:
            peak_tree = max(peak_tree, tree_rss_bytes(process.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    returncode = process.wait()
    sampler.join()
    wall = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux
    summary = {"wall_seconds": round(wall, 1), "peak_rss_gib": round(peak_gib, 2),
               "peak_tree_rss_gib": round(peak_tree / 2**30, 2), "returncode": returncode}
    print(json.dumps(summary))
    return returncode


if __name__ == "__main__":
    sys.exit(main())
