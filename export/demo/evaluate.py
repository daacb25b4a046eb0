"""Zero-shot accuracy of the demo CLIP over its 40 shape classes, as the model card and the tests measure it.

Images go through `runtime.preprocess` and prompts through the runtime's tokenizer, so the number is the one a
runtime user would see from the float model; only the model in between is TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from clipedge.export.demo.data import CLASSES, HELD_OUT_STREAM, Sample, class_prompts, make_sample
from clipedge.export.model.clip import CLIPEncoder
from clipedge.runtime.errors import InputError
from clipedge.runtime.prompts import DEFAULT_TEMPLATE

__all__ = ["SIZE_BUCKETS", "held_out_sample_list", "held_out_samples", "measure_zero_shot", "predict_classes",
           "size_bucket_accuracy", "size_bucket_masks", "zero_shot_accuracy"]


# Shape sizes (outer diameter / image width) the accuracy tables split by: the 10%..80% the generator draws.
SIZE_BUCKETS = ((0.10, 0.20), (0.20, 0.35), (0.35, 0.50), (0.50, 0.65), (0.65, 0.80))


def size_bucket_masks(sizes: np.ndarray) -> dict[str, np.ndarray]:
    """{"10%-20%": boolean mask over `sizes`, ...} for each SIZE_BUCKETS range; the last includes its upper end."""
    last = SIZE_BUCKETS[-1][1]
    return {f"{low:.0%}-{high:.0%}": (sizes >= low) & ((sizes < high) | ((high == last) & (sizes <= high)))
            for low, high in SIZE_BUCKETS}


def size_bucket_accuracy(right: np.ndarray, sizes: np.ndarray) -> dict[str, float | None]:
    """Top-1 within each size bucket (`size_bucket_masks`), None where a bucket is empty."""
    return {name: float(right[inside].mean()) if inside.any() else None
            for name, inside in size_bucket_masks(sizes).items()}


def predict_classes(model: CLIPEncoder, images: list, template: str = DEFAULT_TEMPLATE,
                    batch_size: int = 64) -> np.ndarray:
    """Top-1 class index (into CLASSES) per image: `images` (paths or PIL images) through `runtime.preprocess`,
    prompts from `template` through `Tokenizer.default()`, the TF float model in between."""
    from clipedge.runtime.preprocess import preprocess
    from clipedge.runtime.preprocess_config import PreprocessConfig
    from clipedge.runtime.tokenizer import Tokenizer

    size = model.config.vision.image_size
    config = PreprocessConfig(image_size=size, crop_size=size)  # what the checkpoint's preprocessor_config.json says
    text = model.encode_text(tf.constant(Tokenizer.default()(class_prompts(template)))).numpy()
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    predictions = []
    for start in range(0, len(images), batch_size):
        pixels = preprocess(list(images[start : start + batch_size]), config, layout="NHWC")
        image = model.encode_image(tf.constant(pixels)).numpy()
        predictions.append(np.argmax(image @ text.T, axis=1))  # normalizing images does not change the argmax
    return np.concatenate(predictions)


def zero_shot_accuracy(model: CLIPEncoder, images: list, labels: list[int] | np.ndarray,
                       template: str = DEFAULT_TEMPLATE, batch_size: int = 64) -> float:
    """Top-1 over the 40 classes (see `predict_classes`)."""
    if len(images) != len(labels) or not images:
        raise InputError(f"need as many labels as images (got {len(images)} images, {len(labels)} labels)")
    return float(np.mean(predict_classes(model, images, template, batch_size) == np.asarray(labels)))


def held_out_sample_list(n: int, seed: int) -> list[Sample]:
    """`n` generated samples the training stream never produces (HELD_OUT_STREAM), classes balanced, with what each
    shows (size, fill, background) for accuracy tables split by them."""
    return [make_sample(seed, i, HELD_OUT_STREAM, class_index=i % len(CLASSES)) for i in range(n)]


def held_out_samples(n: int, seed: int) -> tuple[list, list[int]]:
    """The images and class indices of `held_out_sample_list`."""
    samples = held_out_sample_list(n, seed)
    return [s.image for s in samples], [s.class_index for s in samples]


def measure_zero_shot(model: CLIPEncoder, eval_images: int, seed: int,
                      eval_dir: str | Path | None) -> dict[str, Any]:
    """The model card's numbers, so that `train` reports what the saved checkpoint does: top-1 on `eval_images`
    held-out generated images (None for 0), on `eval_dir` and on the second renderer's set ("shipped":
    calibration_data/eval and calibration_data/drawn when installed; None for neither), each folder's size, and the
    held-out top-1 by shape size (SIZE_BUCKETS)."""
    from clipedge.export.demo.data import read_eval_set

    result: dict[str, Any] = {"held_out_generated": None, "held_out_by_size": None}
    if eval_images:
        samples = held_out_sample_list(eval_images, seed)
        right = predict_classes(model, [s.image for s in samples]) == np.array([s.class_index for s in samples])
        result["held_out_generated"] = float(right.mean())
        result["held_out_by_size"] = size_bucket_accuracy(right, np.array([2 * s.radius for s in samples]))
    folders: dict[str, Path | None] = {"eval_set": None if eval_dir in (None, "shipped") else Path(eval_dir),
                                       "drawn_set": None}
    if eval_dir == "shipped":
        from clipedge.runtime.datasets import SHIPPED_EVAL_ONLY, shipped_data_dir

        root = shipped_data_dir()
        for key, name in (("eval_set", "eval"), ("drawn_set", SHIPPED_EVAL_ONLY)):
            folders[key] = root / name if root is not None and (root / name).is_dir() else None
    for key, folder in folders.items():
        result[key], result[f"{key}_images"] = None, 0
        if folder is not None:
            files, labels = read_eval_set(folder)
            result[key], result[f"{key}_images"] = zero_shot_accuracy(model, files, labels), len(files)
    return result
