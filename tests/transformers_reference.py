"""Judging a bundle's files by transformers itself: HF's embeddings of the held-out photos and captions an export
verified on (as its manifest records them, prepared the way the runtime prepares them), and each file's min cosine
to them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipedge.runtime.datasets import shipped_data_dir
from clipedge.runtime.manifest import Manifest
from clipedge.runtime.preprocess import PreprocessConfig, preprocess
from clipedge.runtime.runner import ArtifactRunner
from clipedge.runtime.tokenizer import Tokenizer


def cosine_min(ours: np.ndarray, reference: np.ndarray) -> float:
    a = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def held_out_inputs(manifest: Manifest) -> dict[str, np.ndarray]:
    """{"image": NHWC pixels, "text": int32 ids} of the samples the export held out."""
    held_out = manifest.data["export"]["calibration"]
    pixels = preprocess([shipped_data_dir() / name for name in held_out["held_out_images"]],
                        PreprocessConfig.from_dict(manifest.data["preprocess"]), layout="NHWC")
    return {"image": pixels, "text": Tokenizer.default()(held_out["held_out_captions"], context_length=77)}


def transformers_features(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An HF CLIPModel's unnormalized image and text embeddings of `inputs` (held_out_inputs' layout)."""
    import torch

    with torch.no_grad():
        pixels = torch.from_numpy(np.ascontiguousarray(inputs["image"].transpose(0, 3, 1, 2)))
        image = model.get_image_features(pixel_values=pixels)
        text = model.get_text_features(input_ids=torch.from_numpy(inputs["text"].astype(np.int64)))
    return {"image": getattr(image, "pooler_output", image).numpy(),
            "text": getattr(text, "pooler_output", text).numpy()}


def measured(bundle: Path, model) -> tuple[Manifest, dict[str, float]]:
    """(manifest, {file: min cosine to `model` on the held-out samples}), each file run by the runtime."""
    manifest = Manifest.read(bundle)
    inputs = held_out_inputs(manifest)
    reference = transformers_features(model, inputs)
    return manifest, {a.file: cosine_min(ArtifactRunner.open(manifest, a).run(inputs[a.tower]), reference[a.tower])
                      for a in manifest.artifacts}
