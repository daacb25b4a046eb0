"""Zero-shot accuracy of the demo CLIP over its 40 shape classes, as the model card and the tests measure it.

Images go through `runtime.preprocess` and prompts through the runtime's tokenizer, so the number is the one a
runtime user would see from the float model; only the model in between is TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from clipedge.export.demo_data import CLASSES, HELD_OUT_STREAM, class_prompts, make_sample
from clipedge.export.model.clip import CLIPEncoder
from clipedge.runtime.errors import InputError
from clipedge.runtime.prompts import DEFAULT_TEMPLATE

__all__ = ["held_out_samples", "measure_zero_shot", "predict_classes", "zero_shot_accuracy"]


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


def held_out_samples(n: int, seed: int) -> tuple[list, list[int]]:
    """`n` generated images the training stream never produces (HELD_OUT_STREAM), classes balanced."""
    samples = [make_sample(seed, i, HELD_OUT_STREAM, class_index=i % len(CLASSES)) for i in range(n)]
    return [s.image for s in samples], [s.class_index for s in samples]


def measure_zero_shot(model: CLIPEncoder, eval_images: int, seed: int,
                      eval_dir: str | Path | None) -> tuple[float | None, float | None, int]:
    """The model card's two numbers, so that `train` reports what the saved checkpoint does: top-1 on `eval_images`
    held-out generated images (None for 0) and on `eval_dir` ("shipped": calibration_data/eval when installed; None
    for none); returns both accuracies and how many images `eval_dir` held."""
    held_out = None
    if eval_images:
        images, labels = held_out_samples(eval_images, seed)
        held_out = zero_shot_accuracy(model, images, labels)
    eval_set, eval_files = None, []
    if eval_dir == "shipped":
        from clipedge.runtime.datasets import shipped_data_dir

        shipped_data = shipped_data_dir()
        eval_dir = shipped_data / "eval" if shipped_data is not None and (shipped_data / "eval").is_dir() else None
    if eval_dir is not None:
        from clipedge.export.demo_data import read_eval_set

        eval_files, labels = read_eval_set(eval_dir)
        eval_set = zero_shot_accuracy(model, eval_files, labels)
    return held_out, eval_set, len(eval_files)
