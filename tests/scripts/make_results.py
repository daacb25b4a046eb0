"""Regenerate docs/results/: `clipedge report` of the demo bundle and of the ViT-B/32 architecture, one command.

Usage: python tests/scripts/make_results.py [--out docs/results] [--work DIR] [--threads 2] [--repeats 20]
                                            [--skip-demo] [--skip-vit-b32] [--vit-b32-bundle DIR]

- demo/: the shipped demo CLIP (export/demo/demo_checkpoint, when present) exported in every precision and format (auto
  included, at its default target), with classifier models for the eval classes when calibration_data/eval exists,
  then reported (zero-shot top-1 on that eval set, PyTorch baseline on the same checkpoint).
- vit-b32/: the full ViT-B/32 architecture with random weights (HF init, torch seed 0; tests/scripts/export_vit_b32.py):
  sizes, latencies, memory and fidelities are real; accuracies are not (random weights classify at chance).
  `--vit-b32-bundle DIR` reports an existing export instead of exporting again (the export: about 25 min on 2
  cores, 9.4 GiB peak RSS).
Each writes report.md, report.png and report.json; docs/results/README.md lists them with the machine and command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_CHECKPOINT = REPO / "export" / "demo" / "demo_checkpoint"
EVAL_DIR = REPO / "calibration_data" / "eval"
RANDOM_NOTE = ("Random weights: the ViT-B/32 architecture with HF's random initialization (torch seed 0). Sizes, "
               "latencies, memory and fidelities are real; zero-shot accuracies are not (chance level).")
DEMO_NOTE = ("The demo CLIP shipped in export/demo/demo_checkpoint (trained by `clipedge demo train` on generated "
             "coloured shapes); zero-shot top-1 on calibration_data/eval is its real accuracy.")


def run(command: list[str]) -> None:
    print("$ " + shlex.join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def clipedge(*args: str) -> list[str]:
    return [sys.executable, "-m", "clipedge.runtime.cli", *args]


def report(bundle: Path, out: Path, checkpoint: Path | None, note: str, args: argparse.Namespace) -> None:
    command = clipedge("report", str(bundle), "--out", str(out), "--threads", str(args.threads),
                       "--repeats", str(args.repeats), "--note", note)
    if checkpoint is not None:
        command += ["--baseline-checkpoint", str(checkpoint)]
    run(command)


def demo(args: argparse.Namespace, work: Path) -> Path | None:
    if not (DEMO_CHECKPOINT / "config.json").is_file():
        print(f"skipping the demo: {DEMO_CHECKPOINT} does not exist (clipedge demo train --out {DEMO_CHECKPOINT})")
        return None
    bundle = work / "demo-bundle"
    command = clipedge("export", "--checkpoint", str(DEMO_CHECKPOINT), "--out", str(bundle), "--force",
                       "--precisions", "fp32,fp16,dynamic-int8,int8,int16x8,int4,auto")  # auto beside the fixed ones
    if EVAL_DIR.is_dir():  # classifier models for exactly the eval classes, so their top-1 is measured too
        labels = sorted(p.name.replace("_", " ") for p in EVAL_DIR.iterdir() if p.is_dir())
        labels_file = work / "demo-labels.txt"
        labels_file.write_text("\n".join(labels) + "\n", encoding="utf-8")
        command += ["--labels", str(labels_file)]
    run(command)
    out = args.out / "demo"
    report(bundle, out, DEMO_CHECKPOINT, DEMO_NOTE, args)
    return out


def vit_b32(args: argparse.Namespace, work: Path) -> Path:
    checkpoint = None
    if args.vit_b32_bundle:
        bundle = Path(args.vit_b32_bundle)
        source = json.loads((bundle / "manifest.json").read_text())["model"]["source"]
        checkpoint = Path(source) if (Path(source) / "config.json").is_file() else None
    else:
        sys.path.insert(0, str(REPO / "tests" / "scripts"))
        from export_vit_b32 import make_checkpoint

        checkpoint = make_checkpoint(work / "vit-b32-checkpoint")
        bundle = work / "vit-b32-bundle"
        run([sys.executable, str(REPO / "tests" / "scripts" / "export_vit_b32.py"), "--checkpoint", str(checkpoint),
             "--out", str(bundle)])
    out = args.out / "vit-b32"
    report(bundle, out, checkpoint, RANDOM_NOTE, args)
    return out


def index(out: Path, written: list[Path]) -> None:
    lines = ["# Results", "", "Regenerate with `python tests/scripts/make_results.py` (see its docstring).", ""]
    for directory in written:
        data = json.loads((directory / "report.json").read_text())
        rec, machine = data["recommendations"], data["machine"]
        smallest = rec.get("smallest")
        lines += [f"## [{directory.name}]({directory.name}/report.md)", "",
                  data.get("note") or "", "",
                  f"- Measured {data['started']} on {machine['cpu']} ({machine['usable_cores']} cores, "
                  f"{data['settings']['threads']} threads, load average {machine['load_average']}).",
                  f"- {len(data['artifacts'])} models; smallest within the rule ({rec['rule']}): "
                  + (f"{smallest['format']} {smallest['precision']}, {smallest['bytes'] / 1e6:.1f} MB"
                     if smallest else "none") + ".",
                  f"- Command: `{data['command']}`", "", f"![plots]({directory.name}/report.png)", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results")
    parser.add_argument("--work", type=Path, help="where bundles and checkpoints go (default: a new temp dir)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-vit-b32", action="store_true")
    parser.add_argument("--vit-b32-bundle", help="report this existing ViT-B/32 bundle instead of exporting one")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="clipedge-results-"))
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    if not args.skip_demo and (out := demo(args, work)) is not None:
        written.append(out)
    if not args.skip_vit_b32:
        written.append(vit_b32(args, work))
    existing = [d for d in sorted(args.out.iterdir()) if (d / "report.json").is_file()]
    index(args.out, existing)
    print(f"wrote {', '.join(str(d) for d in written)}; index {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
