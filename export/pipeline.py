"""`export_bundle`: checkpoint -> verified bundle, the product's main job (also `clipedge export`)."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipedge.export.bundle import BundleWriter
from clipedge.export.checkpoint import CLIPModel
from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.onnx import ONNX_PRECISIONS, convert_onnx
from clipedge.export.samples import SampleSet, build_samples
from clipedge.export.tflite import TFLITE_PRECISIONS, convert_tflite
from clipedge.export.towers import tower_spec
from clipedge.export.verify import fidelity, judge, run_artifact
from clipedge.runtime.errors import ExportError
from clipedge.runtime.manifest import FORMATS, TOWERS, Artifact, artifact_file_name

__all__ = ["ExportResult", "export_bundle", "SUPPORTED", "default_checkpoint"]

log = logging.getLogger(__name__)

SUPPORTED = {"tflite": TFLITE_PRECISIONS, "onnx": ONNX_PRECISIONS}


@dataclass
class ExportResult:
    bundle: Path
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per artifact: the final table

    def table(self) -> str:
        header = f"{'artifact':<34} {'size':>10} {'cos mean':>9} {'cos min':>9} {'time':>7}  flags"
        lines = [header, "-" * len(header)]
        for r in self.rows:
            lines.append(f"{r['file']:<34} {r['bytes'] / 1e6:>8.2f}MB {r['cosine_mean']:>9.6f} "
                         f"{r['cosine_min']:>9.6f} {r['seconds']:>6.1f}s  {','.join(r['flags']) or '-'}")
        return "\n".join(lines)


def default_checkpoint() -> Path:
    """The demo CLIP shipped inside clipedge.export (trained by `clipedge demo train`)."""
    from importlib import resources

    path = Path(str(resources.files("clipedge.export") / "demo_checkpoint"))
    if not (path / "config.json").is_file():
        raise ExportError("no --checkpoint given and the shipped demo checkpoint is missing from this install")
    return path


def _preprocess_config(directory: Path, image_size: int):
    """From the checkpoint's preprocessor_config.json (HF), else OpenAI's values at the model's resolution."""
    from clipedge.runtime.preprocess import PreprocessConfig

    config = PreprocessConfig(image_size=image_size, crop_size=image_size)
    file = directory / "preprocessor_config.json"
    if file.is_file():
        data = json.loads(file.read_text())
        size = data.get("size", {})
        shortest = size.get("shortest_edge", image_size) if isinstance(size, dict) else int(size)
        crop = data.get("crop_size", image_size)
        crop = crop.get("height", image_size) if isinstance(crop, dict) else int(crop)
        config = PreprocessConfig(image_size=int(shortest), crop_size=int(crop),
                                  mean=tuple(data.get("image_mean", config.mean)),
                                  std=tuple(data.get("image_std", config.std)))
    if config.crop_size != image_size:
        raise ExportError(f"preprocessor crop_size {config.crop_size} does not match the model's image_size "
                          f"{image_size}")
    return config


def _tokenizer(directory: Path):
    from clipedge.runtime.tokenizer import Tokenizer

    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return Tokenizer.from_files(directory)
    return Tokenizer.default()


def _reference(model: CLIPEncoder, samples: SampleSet) -> dict[str, Any]:
    return {"image": model.encode_image(samples.eval_pixels).numpy(),
            "text": model.encode_text(samples.eval_ids).numpy()}


def _convert(model: CLIPEncoder, tower: str, fmt: str, precision: str, batch: int) -> bytes:
    if fmt == "tflite":
        return convert_tflite(model, tower, precision, batch=batch)
    return convert_onnx(model, tower, precision)


def _check_choices(formats, precisions, towers) -> list[tuple[str, str, str]]:
    for fmt in formats:
        if fmt not in FORMATS:
            raise ExportError(f"unknown format {fmt!r}; choose from {FORMATS}")
    for tower in towers:
        if tower not in TOWERS:
            raise ExportError(f"unknown tower {tower!r}; choose from {TOWERS}")
    jobs = []
    for precision in precisions:
        known = [fmt for fmt in formats if precision in SUPPORTED[fmt]]
        if not known:
            raise ExportError(f"precision {precision!r} is not available for {', '.join(formats)}; available: "
                              + "; ".join(f"{f}: {', '.join(SUPPORTED[f])}" for f in formats))
        jobs += [(tower, fmt, precision) for fmt in known for tower in towers]
    return sorted(jobs, key=lambda j: (FORMATS.index(j[1]), list(precisions).index(j[2]), TOWERS.index(j[0])))


def export_bundle(out: str | Path, checkpoint: str | Path | None = None, formats=("tflite", "onnx"),
                  precisions=("fp32", "fp16", "dynamic-int8"), towers=TOWERS, batch: int = 1,
                  calibration: str | Path | None = None, captions: str | Path | None = None, samples: int = 64,
                  seed: int = 0, force: bool = False, architecture: str | None = None,
                  progress: bool = True) -> ExportResult:
    """Convert, verify against the float TF model on held-out samples, and write the bundle atomically.

    Every artifact is judged by the runtime's own backends; one below its precision's floor is kept and flagged."""
    from tqdm.auto import tqdm

    if batch < 1:
        raise ExportError(f"batch must be >= 1, got {batch}")
    jobs = _check_choices(list(formats), list(precisions), list(towers))
    writer = BundleWriter(out, force=force)  # refuses an existing bundle before any slow work
    with writer:
        model = CLIPModel.from_pretrained(checkpoint or default_checkpoint(), architecture=architecture)
        info = model.checkpoint
        config = model.config
        preprocess_config = _preprocess_config(info.directory, config.vision.image_size)
        tokenizer = _tokenizer(info.directory)
        context = config.text.max_position_embeddings
        sample_set = build_samples(config.vision.image_size, context, preprocess_config, tokenizer,
                                   Path(calibration) if calibration else None, Path(captions) if captions else None,
                                   samples=samples, seed=seed)
        reference = _reference(model, sample_set)
        tokenizer_files = [f"tokenizer/{name}" for name in tokenizer.save(writer.path("tokenizer"))]
        result = ExportResult(Path(out))
        bar = tqdm(jobs, desc="export", unit="model", disable=not progress)
        for tower, fmt, precision in bar:
            bar.set_postfix_str(f"{tower} {fmt} {precision}")
            start = time.perf_counter()
            name = artifact_file_name(tower, fmt, precision)
            path = writer.write_bytes(name, _convert(model, tower, fmt, precision, batch))
            spec = tower_spec(model, tower)
            inputs, outputs = spec.io(fmt, batch if fmt == "tflite" else None, config.projection_dim)
            layout = inputs[0].get("layout")
            eval_inputs = sample_set.eval_pixels if tower == "image" else sample_set.eval_ids
            stats = fidelity(run_artifact(path, spec.signature, eval_inputs, layout), reference[tower])
            flags = judge(precision, stats)
            seconds = time.perf_counter() - start
            artifact = Artifact(tower=tower, format=fmt, precision=precision, file=name, signature=spec.signature,
                                inputs=inputs, outputs=outputs, fidelity={**stats, "export_seconds": round(seconds, 2)},
                                flags=flags, **writer.describe_file(path))
            writer.add_artifact(artifact)
            if flags:
                log.warning("%s: %s (min cosine %.6f)", name, ", ".join(flags), stats["cosine_min"])
            result.rows.append({"file": name, "bytes": artifact.bytes, **stats, "seconds": seconds, "flags": flags})
        fields = {
            "model": {"name": Path(str(info.source)).name or str(info.source), "source": info.source,
                      "weights_file": info.weights_file.name, "sha256": info.sha256, "layout": info.layout,
                      "config": config.to_hf_config()},
            "embed_dim": config.projection_dim,
            "logit_scale": float(math.exp(float(model.logit_scale.numpy()))),
            "logit_scale_log": float(model.logit_scale.numpy()),
            "preprocess": preprocess_config.to_dict(),
            "tokenizer": {"files": tokenizer_files, "context_length": context,
                          "sot_token_id": tokenizer.sot_token_id, "eot_token_id": tokenizer.eot_token_id,
                          "pad_token_id": 0, "truncate": "keep-eot"},
            "export": {"batch": batch, "samples": samples, "seed": seed,
                       "eval_images": len(sample_set.eval_image_files), "eval_captions": len(sample_set.eval_captions)},
        }
        result.bundle = writer.finish(fields)
    return result
