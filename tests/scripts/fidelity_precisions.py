"""int16x8 and int4 against their targets (issue #18), measured the way export verifies a file.

Usage: python tests/scripts/fidelity_precisions.py CHECKPOINT WORK [--architecture NAME]

For each tower: the fp32 .tflite and .onnx of WORK/fp32 (a bundle; exported there first, fp32 only, if it has no
manifest), then int16x8 (TFLite) and int4 (TFLite, ONNX) made from those fp32 files by export's own converters,
written to WORK/precisions/, and judged by export's own verification (clipedge.export.pipeline.verify: the runtime's
runner on the 32 held-out shipped photos / captions, min cosine to the float TensorFlow model). Prints the table and the
targets: int16x8 min cosine >= 0.999 both towers; int4 min cosine >= 0.98 at <= 35% of fp32's size, both towers and
formats. `measure()` is what the results aggregator calls.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

INT16X8_MIN_COSINE = 0.999
INT4_MIN_COSINE = 0.98
INT4_MAX_SHARE = 0.35  # of the fp32 file's size
# (format, precision) measured here
MEASURED = (("tflite", "int16x8"), ("tflite", "int4"), ("onnx", "int4"))


def _fp32_bundle(checkpoint: Path, work: Path, architecture: str | None) -> Path:
    bundle = work / "fp32"
    if not (bundle / "manifest.json").exists():
        from clipedge.export.pipeline.export_bundle import export_bundle

        export_bundle(bundle, checkpoint=checkpoint, architecture=architecture, formats=("tflite", "onnx"),
                      precisions=("fp32",), gpu=False, force=True, progress=False)
    return bundle


def _kept(precision: str, fmt: str, data: bytes) -> tuple[str, str]:
    """(groups whose matmul weights are 8-bit, what the 4-bit ones are) read back from the file itself."""
    if precision != "int4":
        return "all (int16 activations)", "–"
    from clipedge.export.formats.int4 import onnx_weight_bits, tflite_weight_bits

    if fmt == "tflite":
        bits = tflite_weight_bits(data)
    else:
        import onnx

        bits = onnx_weight_bits(onnx.load_from_string(data))
    eight = [g for g, kinds in bits.items() if "int8" in kinds]
    kinds = sorted({k for counts in bits.values() for k in counts if k.startswith("int4")})
    four = sum(n for counts in bits.values() for k, n in counts.items() if k.startswith("int4"))
    total = sum(n for counts in bits.values() for n in counts.values())
    order = lambda g: (0, 0) if g == "embeddings" else (1, int(g.split("_")[1])) if g.startswith("layer_") else (2, 0)  # noqa: E731
    return (", ".join(sorted(eight, key=order)) or "none",
            f"{', '.join(kinds) or 'none'}: {100 * four / max(total, 1):.0f}% of the weights")


def measure(checkpoint: Path, work: Path, architecture: str | None = None) -> tuple[str, list[tuple[str, str, str,
                                                                                                    bool]]]:
    """(markdown table, [(target, measured, goal, holds)])."""
    from clipedge.export import CLIPModel, checkpoint_files
    from clipedge.export.pipeline.convert_job import convert_job
    from clipedge.export.pipeline.job import Job
    from clipedge.export.pipeline.samples import build_samples
    from clipedge.export.pipeline.verify import Reference, describe, verify
    from clipedge.export.towers import tower_spec

    bundle = _fp32_bundle(checkpoint, work, architecture)
    manifest = json.loads((bundle / "manifest.json").read_text())
    settings = manifest["export"]
    model = CLIPModel.from_pretrained(checkpoint, architecture=architecture)
    config = model.config
    context = config.text.max_position_embeddings
    preprocess = checkpoint_files.preprocess_config(model.checkpoint.directory, config.vision.image_size,
                                                    model.checkpoint.layout)
    tokenizer = checkpoint_files.tokenizer(model.checkpoint.directory, context)
    samples = build_samples(config.vision.image_size, context, preprocess, tokenizer,
                            samples=settings.get("samples", 64), seed=settings.get("seed", 0))
    reference = Reference.build(model, samples, None)
    out_dir = work / "precisions"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, targets = [], []
    for tower in ("image", "text"):
        spec = tower_spec(model, tower, mean=preprocess.mean, std=preprocess.std)
        for fmt, precision in MEASURED:
            job = Job(tower, fmt, precision)
            fp32_path = bundle / Job(tower, fmt, "fp32").file
            fp32 = fp32_path.read_bytes()
            calibration = spec.feeds(fmt, samples.calibration_pixels, samples.calibration_ids)
            start = time.perf_counter()
            data, _ = convert_job(spec, job, 1 if fmt == "tflite" else None, calibration, False, fp32)
            seconds = time.perf_counter() - start
            path = out_dir / job.file
            path.write_bytes(data)
            artifact = describe(spec, job, 1, path, {}, {})
            stats, flags, _ = verify(path, artifact, spec, samples, reference)
            share = len(data) / len(fp32)
            eight, four = _kept(precision, fmt, data)
            rows.append([tower, fmt, precision, f"{len(data) / 1e6:.1f}", f"{100 * share:.1f}%",
                         f"{stats['cosine_min']:.5f}", f"{stats['cosine_mean']:.5f}", four, eight,
                         ", ".join(flags) or "–", f"{seconds:.0f}"])
            name = f"{tower} {fmt} {precision}"
            if precision == "int16x8":
                targets.append((f"{name} min cosine", f"{stats['cosine_min']:.5f}", f">= {INT16X8_MIN_COSINE}",
                                stats["cosine_min"] >= INT16X8_MIN_COSINE))
            else:
                targets.append((f"{name} min cosine", f"{stats['cosine_min']:.5f}", f">= {INT4_MIN_COSINE}",
                                stats["cosine_min"] >= INT4_MIN_COSINE))
                targets.append((f"{name} size vs fp32", f"{100 * share:.1f}% ({len(data) / 1e6:.1f} of "
                                f"{len(fp32) / 1e6:.1f} MB)", f"<= {100 * INT4_MAX_SHARE:.0f}%",
                                share <= INT4_MAX_SHARE))
    header = ["tower", "format", "precision", "MB", "% of fp32", "min cosine", "mean cosine", "4-bit weights",
              "8-bit weights (groups)", "flags", "quantize s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines), targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--architecture")
    args = parser.parse_args()
    table, targets = measure(args.checkpoint, args.work, args.architecture)
    print(table, "\n")
    print("| target | measured | goal | holds |\n|---|---|---|---|")
    for name, measured, goal, holds in targets:
        print(f"| {name} | {measured} | {goal} | {'yes' if holds else 'NO'} |")


if __name__ == "__main__":
    main()
