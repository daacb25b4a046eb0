"""Train the demo CLIP from scratch on generated shapes (`clipedge demo train`) and save it as a HF checkpoint.

The model is clipedge's own `CLIPEncoder` at a small size (`DEMO_CONFIG`: a patch-32 ViT at 224 px and a narrow causal
text transformer over OpenAI's 49408-token BPE vocabulary, 77 positions), so everything downstream (export, TFLite,
ONNX, the runtime) treats it exactly like a released CLIP. Training is CLIP's symmetric contrastive loss (Radford et
al. 2021, figure 3) with class-aware targets: a batch holds several captions of the same class, and each image
counts every caption of its class as a positive (uniform soft targets) instead of fighting the duplicates.

Data: `TrainSettings.pool_size` images from `demo_data` (stream TRAIN_STREAM) are generated once, in parallel, as
uint8; each step samples a batch, flips/rotates it by multiples of 90 degrees (every shape class is closed under
those) and normalizes in the graph. For a 224 x 224 RGB image `runtime.preprocess` reduces to exactly that
normalization (the resize and crop are identities), so training sees what the runtime feeds.

Text runs on the first `TrainSettings.text_tokens` positions only: the mask is causal, so positions after the EOT
token cannot change the EOT output, and a 77-token row and its first 16 tokens pool to the same embedding.

Optimizer: AdamW (Loshchilov & Hutter 2019) written here over the raw tf.Variables, linear warmup then cosine decay,
global-norm gradient clipping, decay on weight matrices only; logit_scale is clamped to ln(100) as CLIP does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from clipedge.export.demo_data import (
    CLASSES,
    HELD_OUT_STREAM,
    IMAGE_SIZE,
    RADIUS_RANGE,
    TRAIN_STREAM,
    class_prompts,
    make_sample,
)
from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.model.config import CLIPConfig, CLIPImageConfig, CLIPTextConfig
from clipedge.export.towers import normalize_uint8
from clipedge.runtime.errors import ExportError, InputError

__all__ = [
    "DEMO_CONFIG",
    "TrainSettings",
    "TrainResult",
    "train",
    "save_checkpoint",
    "hf_state_dict",
    "zero_shot_accuracy",
    "zero_shot_predictions",
]

log = logging.getLogger(__name__)

# A patch-32 ViT at 224 px (ViT-B/32's input pipeline) shrunk to fit a 2-core CPU budget. The text tower stays narrow
# because its token table is 49408 x width: at width 64 and float16 it is 6.3 MB of the checkpoint.
DEMO_CONFIG = CLIPConfig(
    vision=CLIPImageConfig(image_size=IMAGE_SIZE, patch_size=32, hidden_size=128, intermediate_size=512,
                           num_hidden_layers=4, num_attention_heads=4, projection_dim=64),
    text=CLIPTextConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2,
                        projection_dim=64),
)
TOKEN_COVERAGE = 0.05  # a patch token joins the token-level loss when the shape covers more of it than this
LOGIT_SCALE_MAX = math.log(100.0)  # CLIP paper section 2.5: the temperature is clipped at 100
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.05
    clip_norm: float = 1.0
    token_loss_weight: float = 1.0  # the token-labeling term (see _token_loss); 0 trains on the image loss alone
    pool_size: int = 12000  # images generated once and re-sampled (with flips/rotations) every step
    text_tokens: int = 16  # text positions run in training (>= the longest caption incl. SOT and EOT)
    eval_images: int = 1000  # held-out generated images for the accuracy in the model card
    seed: int = 0
    weights_dtype: str = "float16"  # how model.safetensors stores the weights (the loaders cast to float32)

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "pool_size", "text_tokens")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "eval_images", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be an integer >= 0, got {value!r}")
        if self.batch_size < 2:
            raise InputError(f"batch_size must be at least 2 for a contrastive loss, got {self.batch_size}")
        if self.pool_size < self.batch_size:
            raise InputError(f"pool_size ({self.pool_size}) must be at least batch_size ({self.batch_size})")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise InputError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        if self.weights_dtype not in ("float16", "float32"):
            raise InputError(f"weights_dtype must be 'float16' or 'float32', got {self.weights_dtype!r}")


@dataclass
class TrainResult:
    checkpoint: Path
    seconds: dict[str, float]  # data, train, total
    losses: list[float]
    held_out_accuracy: float | None
    eval_set_accuracy: float | None


# ---- data --------------------------------------------------------------------------------------------------------
@dataclass
class Pool:
    """The training images, generated once: uint8 pixels [n, 224, 224, 3], int32 class indices [n], captions, and
    float32 [n, g, g] shape coverage of each patch (the token-level loss's weights)."""

    pixels: np.ndarray
    classes: np.ndarray
    captions: list[str]
    coverage: np.ndarray


def _generate_chunk(args: tuple[int, int, int, int, int]) -> Pool:
    from PIL import Image

    seed, stream, start, count, grid = args
    pool = Pool(np.empty((count, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), np.empty(count, np.int32), [],
                np.empty((count, grid, grid), np.float32))
    for i in range(count):
        sample = make_sample(seed, start + i, stream)
        pool.pixels[i] = np.asarray(sample.image, dtype=np.uint8)
        pool.classes[i] = sample.class_index
        pool.captions.append(sample.caption)
        pool.coverage[i] = np.asarray(sample.mask.resize((grid, grid), Image.Resampling.BOX), np.float32) / 255
    return pool


def generate_pool(n: int, seed: int, stream: int = TRAIN_STREAM, workers: int | None = None,
                  progress: bool = False, grid: int = 7) -> Pool:
    """Images 0..n-1 of `stream` (image i is `make_sample(seed, i, stream)`), generated in parallel processes;
    `grid` is the model's patch grid (image_size // patch_size) for the coverage."""
    from tqdm.auto import tqdm

    workers = workers or min(os.cpu_count() or 1, 8)
    chunk = max(1, min(200, math.ceil(n / workers)))
    jobs = [(seed, stream, start, min(chunk, n - start), grid) for start in range(0, n, chunk)]
    pool = Pool(np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8), np.empty(n, np.int32), [],
                np.empty((n, grid, grid), np.float32))
    bar = tqdm(total=n, desc="generate", unit="img", disable=not progress)
    if workers == 1 or len(jobs) == 1:
        results = map(_generate_chunk, jobs)
        executor = None
    else:
        executor = ProcessPoolExecutor(max_workers=workers)
        results = executor.map(_generate_chunk, jobs)
    try:
        for (_, _, start, count, _), part in zip(jobs, results, strict=True):
            pool.pixels[start : start + count], pool.classes[start : start + count] = part.pixels, part.classes
            pool.coverage[start : start + count] = part.coverage
            pool.captions += part.captions
            bar.update(count)
    finally:
        bar.close()
        if executor is not None:
            executor.shutdown()
    return pool


def openai_init_(model: CLIPEncoder, seed: int) -> None:
    """Re-draw the weights as openai/CLIP `clip/model.py` `CLIP.initialize_parameters` does (MIT licence).

    The model's own init (std 0.02 everywhere) exists to be overwritten by a checkpoint. From scratch at these small
    widths it leaves the residual branches and position embeddings ~4x weaker than OpenAI's width-scaled init, and
    the ViT then learns colour but no shape within the step budget."""
    rng = np.random.default_rng([seed, 7])

    def normal(variable: tf.Variable, std: float) -> None:
        variable.assign(rng.normal(0.0, std, size=variable.shape).astype(np.float32))

    for tower, prefix in ((model.vision_model, "vision_model"), (model.text_model, "text_model")):
        width = tower.config.hidden_size
        layers = tower.config.num_hidden_layers
        attn_std, fc_std = width**-0.5, (2 * width) ** -0.5
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for key, (variable, _) in tower.variables_by_key(prefix).items():
            if key.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")):
                normal(variable, attn_std)
            elif key.endswith(("out_proj.weight", "fc2.weight")):
                normal(variable, proj_std)
            elif key.endswith("fc1.weight"):
                normal(variable, fc_std)
            elif key.endswith(("visual_projection.weight", "text_projection.weight")):
                normal(variable, width**-0.5)
            elif key.endswith(("class_embedding", "vision_model.embeddings.position_embedding.weight")):
                normal(variable, width**-0.5)  # OpenAI: scale * randn, scale = width ** -0.5
    # Unchanged: token embedding (std 0.02), text position embedding (0.01), patch conv, LayerNorms 1/0, biases 0.


# ---- optimizer ---------------------------------------------------------------------------------------------------
class AdamW:
    """Decoupled weight decay Adam over plain tf.Variables (Keras 3's optimizers want Keras variables)."""

    def __init__(self, variables: list[tf.Variable], decay: list[bool], weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6) -> None:
        # betas/eps: CLIP paper, table 4 (beta2 0.98, eps 1e-6 for ViTs)
        self.variables = variables
        self.decay = decay
        self.weight_decay = weight_decay
        self.beta1, self.beta2, self.eps = betas[0], betas[1], eps
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.t = tf.Variable(0.0, trainable=False)

    def apply(self, grads: list[tf.Tensor], lr: tf.Tensor) -> None:
        self.t.assign_add(1.0)
        c1 = 1 - tf.pow(self.beta1, self.t)
        c2 = 1 - tf.pow(self.beta2, self.t)
        for var, g, m, v, decay in zip(self.variables, grads, self.m, self.v, self.decay, strict=True):
            if isinstance(g, tf.IndexedSlices):
                self._apply_rows(var, g, m, v, lr, c1, c2)
                continue
            m.assign(self.beta1 * m + (1 - self.beta1) * g)
            v.assign(self.beta2 * v + (1 - self.beta2) * tf.square(g))
            update = (m / c1) / (tf.sqrt(v / c2) + self.eps)
            if decay:
                update += self.weight_decay * var
            var.assign_sub(lr * update)


    def _apply_rows(self, var: tf.Variable, g: tf.IndexedSlices, m: tf.Variable, v: tf.Variable, lr: tf.Tensor,
                    c1: tf.Tensor, c2: tf.Tensor) -> None:
        """Lazy Adam for an embedding table: only the rows in this batch move (and their moments decay), so a step
        costs the batch's tokens, not 49408 rows. Embedding rows get no weight decay."""
        rows, position = tf.unique(g.indices)
        grad = tf.math.unsorted_segment_sum(g.values, position, tf.shape(rows)[0])  # repeated tokens add up
        m_rows = self.beta1 * tf.gather(m, rows) + (1 - self.beta1) * grad
        v_rows = self.beta2 * tf.gather(v, rows) + (1 - self.beta2) * tf.square(grad)
        m.scatter_nd_update(rows[:, None], m_rows)
        v.scatter_nd_update(rows[:, None], v_rows)
        var.scatter_nd_sub(rows[:, None], lr * (m_rows / c1) / (tf.sqrt(v_rows / c2) + self.eps))


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Linear warmup to the peak, then cosine decay to zero at the last step."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _class_targets(labels: tf.Tensor) -> tf.Tensor:
    """[B, B]: image i's target spread evenly over the captions of its class (symmetric: so is text j's)."""
    same = tf.cast(tf.equal(labels[:, None], labels[None, :]), tf.float32)
    return same / tf.reduce_sum(same, axis=1, keepdims=True)


def _class_aware_loss(logits_per_image: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Symmetric cross-entropy against `_class_targets`."""
    per_image = tf.nn.softmax_cross_entropy_with_logits(targets, logits_per_image)
    per_text = tf.nn.softmax_cross_entropy_with_logits(targets, tf.transpose(logits_per_image))
    return 0.5 * (tf.reduce_mean(per_image) + tf.reduce_mean(per_text))


def _token_loss(token_embeds: tf.Tensor, text_embeds: tf.Tensor, targets: tf.Tensor, coverage: tf.Tensor,
                scale: tf.Tensor) -> tf.Tensor:
    """Token labeling (Jiang et al. 2021, "All Tokens Matter") in CLIP form: every patch token the shape covers is
    scored against the batch's captions like the image embedding is, with the same class-aware targets. It hands the
    patch embedding a dense signal about what a shape looks like instead of one label per image; the checkpoint is
    an ordinary CLIP (the loss reads the tokens through the usual post_layernorm and visual_projection)."""
    tokens = tf.math.l2_normalize(token_embeds, axis=-1)  # B N P
    logits = scale * tf.einsum("bnp,cp->bnc", tokens, text_embeds)  # B N B (captions)
    per_token = tf.nn.softmax_cross_entropy_with_logits(tf.broadcast_to(targets[:, None, :], tf.shape(logits)),
                                                        logits)  # B N
    weight = tf.cast(coverage > TOKEN_COVERAGE, tf.float32)
    return tf.reduce_sum(per_token * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)


def _augment(pixels: tf.Tensor, coverage: tf.Tensor, rng: tf.random.Generator) -> tuple[tf.Tensor, tf.Tensor]:
    """Flips and quarter turns (the 8 symmetries of the square keep every shape class what it is), the same for a
    batch's pixels and patch coverage."""
    flip = rng.uniform([tf.shape(pixels)[0], 1, 1, 1]) < 0.5
    k = rng.uniform([], 0, 4, dtype=tf.int32)
    pixels = tf.image.rot90(tf.where(flip, tf.reverse(pixels, axis=[2]), pixels), k=k)
    coverage = coverage[..., None]
    coverage = tf.image.rot90(tf.where(flip, tf.reverse(coverage, axis=[2]), coverage), k=k)
    return pixels, coverage[..., 0]


def _make_step(model: CLIPEncoder, settings: TrainSettings):
    entries = list(model.variables_by_key().values())
    variables = [var for var, _ in entries]
    decay = [layout in ("linear", "conv") for _, layout in entries]  # not LayerNorms, biases, embeddings, scale
    optimizer = AdamW(variables, decay, settings.weight_decay)
    rng = tf.random.Generator.from_seed(settings.seed)
    b, n = settings.batch_size, settings.text_tokens
    vision = model.vision_model
    grid = vision.config.image_size // vision.config.patch_size

    @tf.function(input_signature=[tf.TensorSpec([b, IMAGE_SIZE, IMAGE_SIZE, 3], tf.uint8),
                                  tf.TensorSpec([b, n], tf.int32), tf.TensorSpec([b], tf.int32),
                                  tf.TensorSpec([b, grid, grid], tf.float32), tf.TensorSpec([], tf.float32)])
    def step(pixels, input_ids, labels, coverage, lr):
        pixels, coverage = _augment(pixels, coverage, rng)
        with tf.GradientTape() as tape:
            projected = vision.project(vision.tokens(normalize_uint8(pixels)))  # B 1+N P, class token first
            image = tf.math.l2_normalize(projected[:, 0], axis=-1)
            text = tf.math.l2_normalize(model.encode_text(input_ids), axis=-1)
            scale = tf.exp(model.logit_scale)
            targets = _class_targets(labels)
            loss = _class_aware_loss(scale * tf.matmul(image, text, transpose_b=True), targets)
            tokens = _token_loss(projected[:, 1:], text, targets, tf.reshape(coverage, [b, grid * grid]), scale)
            total = loss + settings.token_loss_weight * tokens
        grads = tape.gradient(total, variables)  # the token table's gradient stays sparse (IndexedSlices)
        grads, _ = tf.clip_by_global_norm(grads, settings.clip_norm)
        optimizer.apply(grads, lr)
        model.logit_scale.assign(tf.clip_by_value(model.logit_scale, 0.0, LOGIT_SCALE_MAX))
        return loss

    return step


# ---- saving ------------------------------------------------------------------------------------------------------
# Inverse of checkpoint._LAYOUTS: TF variable -> the HF (PyTorch) tensor.
_TO_HF = {
    "as_is": lambda a: a,
    "linear": lambda a: a.T,  # [in, out] -> [out, in]
    "conv": lambda a: a.transpose(3, 2, 0, 1),  # [p, p, C, D] -> [D, C, p, p]
}


def hf_state_dict(model: CLIPEncoder, dtype: str = "float32") -> dict[str, np.ndarray]:
    """HF-named, HF-shaped C-contiguous arrays. `logit_scale` stays 0-d float32 (float16 would move the temperature).
    `np.array(order="C")`, not `ascontiguousarray`: safetensors' numpy writer ignores strides, and
    `ascontiguousarray` would turn the 0-d logit_scale into shape (1,)."""
    state = {}
    for key, (variable, layout) in model.variables_by_key().items():
        value = _TO_HF[layout](variable.numpy())
        state[key] = np.array(value, dtype=np.float32 if key == "logit_scale" else dtype, order="C")
    return state


def _write_tokenizer_files(directory: Path, context_length: int) -> None:
    """HF's vocab.json + merges.txt (OpenAI's vocabulary, what `Tokenizer.default()` uses) and the licence notice
    that travels with it, plus HF's tokenizer_config.json so `transformers.CLIPTokenizer` reads the directory."""
    from importlib import resources

    from clipedge.runtime.tokenizer import LICENSE_FILE, Tokenizer

    tokenizer = Tokenizer.default(context_length=context_length)
    # The tokenizer keeps OpenAI's ids; HF's files add the two special tokens at the ids after the BPE tokens.
    vocab = {**tokenizer._vocab, "<|startoftext|>": tokenizer.sot_token_id, "<|endoftext|>": tokenizer.eot_token_id}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "".join(f"{a} {b}\n" for a, b in tokenizer._merges)
    (directory / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")
    (directory / LICENSE_FILE).write_bytes(resources.files("clipedge.runtime").joinpath(LICENSE_FILE).read_bytes())
    special = "<|endoftext|>"
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": context_length, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": special, "unk_token": special, "pad_token": special,
    }, indent=2) + "\n")


def _write_preprocessor_config(directory: Path, image_size: int) -> None:
    """As HF's CLIPImageProcessor writes it for OpenAI's models (resample 3 = bicubic)."""
    from clipedge.runtime.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    config = {
        "image_processor_type": "CLIPImageProcessor", "processor_class": "CLIPProcessor",
        "do_resize": True, "size": {"shortest_edge": image_size}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": list(OPENAI_CLIP_MEAN), "image_std": list(OPENAI_CLIP_STD), "do_convert_rgb": True,
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n")


def save_checkpoint(model: CLIPEncoder, directory: str | Path, dtype: str = "float16") -> Path:
    """Write a HuggingFace CLIP directory that both `clipedge.export.CLIPModel` and `transformers.CLIPModel` read:
    config.json, model.safetensors (`dtype` weights), tokenizer and preprocessor files."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.to_hf_config()
    # Load as float32 whatever the storage: transformers' dtype="auto" reads this before the weights' dtype.
    config["dtype"] = "float32"
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(hf_state_dict(model, dtype), str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    _write_tokenizer_files(directory, model.config.text.max_position_embeddings)
    _write_preprocessor_config(directory, model.config.vision.image_size)
    return directory


# ---- evaluation --------------------------------------------------------------------------------------------------
def zero_shot_predictions(model: CLIPEncoder, images: list, template: str = "a photo of a {}.",
                          batch_size: int = 64) -> np.ndarray:
    """Top-1 class index (into CLASSES) per image: `images` (paths or PIL images) through `runtime.preprocess`,
    prompts from `template` through `Tokenizer.default()`, the TF float model in between."""
    from clipedge.runtime.preprocess import preprocess
    from clipedge.runtime.tokenizer import Tokenizer

    text = model.encode_text(tf.constant(Tokenizer.default()(class_prompts(template)))).numpy()
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    predictions = []
    for start in range(0, len(images), batch_size):
        pixels = preprocess(list(images[start : start + batch_size]), layout="NHWC")
        image = model.encode_image(tf.constant(pixels)).numpy()
        predictions.append(np.argmax(image @ text.T, axis=1))  # normalizing images does not change the argmax
    return np.concatenate(predictions)


def zero_shot_accuracy(model: CLIPEncoder, images: list, labels: list[int] | np.ndarray,
                       template: str = "a photo of a {}.", batch_size: int = 64) -> float:
    """Top-1 over the 40 classes (see `zero_shot_predictions`)."""
    if len(images) != len(labels) or not images:
        raise InputError(f"need as many labels as images (got {len(images)} images, {len(labels)} labels)")
    return float(np.mean(zero_shot_predictions(model, images, template, batch_size) == np.asarray(labels)))


def held_out_samples(n: int, seed: int) -> tuple[list, list[int]]:
    """`n` generated images the training stream never produces (HELD_OUT_STREAM), classes balanced."""
    samples = [make_sample(seed, i, HELD_OUT_STREAM, class_index=i % len(CLASSES)) for i in range(n)]
    return [s.image for s in samples], [s.class_index for s in samples]


def write_model_card(directory: Path, record: dict[str, Any], config: CLIPConfig) -> None:
    """MODEL_CARD.md from the measured training record (what `train` just did, nothing hand-copied)."""
    v, t, z = config.vision, config.text, record["zero_shot_top1"]
    weights = directory / WEIGHTS_FILE
    total_bytes = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
    seconds = record["seconds"]
    settings = record["settings"]

    def pct(value: float | None) -> str:
        return "not measured" if value is None else f"{100 * value:.1f}%"

    text = f"""# clipedge demo CLIP

A small CLIP trained from scratch by clipedge on generated images of coloured shapes, shipped so that
`clipedge export` works with no download. It knows 40 classes, {len(CLASSES) // 5} colours x 5 shapes
(red, green, blue, yellow, orange, purple, white, black x circle, square, triangle, star, cross), and nothing else.

## How it was made
```
{record["command"]}
```
Measured on this run: {seconds["total"]:.0f} s in all ({seconds["data"]:.0f} s generating
{settings["pool_size"]} training images, {seconds["train"]:.0f} s for {settings["steps"]} steps of batch
{settings["batch_size"]}, the rest saving and evaluating) on {record["cpu_count"]} CPU cores, TensorFlow
{record["tensorflow"]}. Data: `clipedge.export.demo_data` (stream 0, seed {settings["seed"]}); loss: CLIP's
symmetric contrastive loss with class-aware targets, plus the same loss on every patch token the shape covers
(token labeling, weight {settings["token_loss_weight"]}); optimizer: AdamW, peak learning rate
{settings["learning_rate"]}, {settings["warmup_steps"]} warmup steps, cosine decay, weight decay
{settings["weight_decay"]}. Mean loss: {record["loss_first_50"]:.3f} over the first 50 steps,
{record["loss_last_50"]:.3f} over the last 50. Learned temperature exp(logit_scale) = {record["logit_scale"]:.1f}.
Re-running the command regenerates the same data; weights may differ in the last bits (threaded float sums).

## Architecture
clipedge's `CLIPEncoder` (HF `CLIPModel` layout), {record["parameters"]:,} parameters, stored as
{settings["weights_dtype"]} in `{WEIGHTS_FILE}` ({weights.stat().st_size / 1e6:.1f} MB; the loaders cast to float32;
this directory is {total_bytes / 1e6:.1f} MB).

| tower | layers | width | MLP | heads | other |
|---|---|---|---|---|---|
| image (ViT) | {v.num_hidden_layers} | {v.hidden_size} | {v.intermediate_size} | {v.num_attention_heads} | \
{v.image_size} px, patch {v.patch_size} ({v.num_patches} patches + class token), {v.hidden_act} |
| text (causal) | {t.num_hidden_layers} | {t.hidden_size} | {t.intermediate_size} | {t.num_attention_heads} | \
vocabulary {t.vocab_size} (OpenAI BPE), {t.max_position_embeddings} positions, EOT id {t.eos_token_id}, \
{t.hidden_act} |

Projection dimension {config.projection_dim}. Preprocessing: OpenAI CLIP's (shortest side to 224 bicubic, center crop
224, OpenAI mean/std), written to `preprocessor_config.json`. Tokenizer: OpenAI's, as `vocab.json` + `merges.txt`.

## Zero-shot accuracy (TF float32, the weights as stored)
Prompts `{z["template"]}` filled with each of the 40 labels ("red circle", ...), images through
`clipedge.runtime.preprocess`, top-1 over the 40 classes:

| images | top-1 |
|---|---|
| {z["held_out_images"]} held-out generated images (stream 2, never used in training, classes balanced) | \
{pct(z["held_out_generated"])} |
| the shipped evaluation set `calibration_data/eval/` ({z["eval_set_images"]} JPEGs, stream 1) | \
{pct(z["eval_set"])} |

## Limits
- Only the 40 shape classes. On real photographs its answers are meaningless; use a released CLIP for real work.
- Only the tokens of the training captions were trained; the other rows of the 49408-token table are the random
  initialization. Text positions {settings["text_tokens"]}..{t.max_position_embeddings - 1} were never trained
  either, so a text longer than {settings["text_tokens"] - 2} BPE tokens gets an unreliable embedding.
- Shapes are those of `demo_data`: drawn flat, one per image, small
  ({2 * RADIUS_RANGE[0]:.0%}..{2 * RADIUS_RANGE[1]:.0%} of the image wide) and centred on one of the 7 x 7
  patches of the ViT. A large shape, or one straddling patches, is outside what it was trained on: a from-scratch
  ViT learns patch-sized shapes several times faster, and this one had a 20-minute CPU budget.

## Licence
Weights: MIT, as clipedge. The vocabulary is OpenAI CLIP's (MIT, `LICENSE-openai-clip.txt` here). Photo backgrounds
in the training data: the Public Domain / CC0 photos of `calibration_data/photos/` (see its CREDITS.tsv).
"""
    (directory / "MODEL_CARD.md").write_text(text, encoding="utf-8")


# ---- training ----------------------------------------------------------------------------------------------------
def _check_output_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise InputError(f"--out {out} is not empty; pass --force to replace the checkpoint in it")
        if not (out / "config.json").is_file():
            raise InputError(f"--out {out} is not empty and holds no config.json: not a checkpoint directory, "
                             "so --force will not replace it")


def train(out: str | Path, settings: TrainSettings = TrainSettings(), config: CLIPConfig = DEMO_CONFIG,  # noqa: B008
          progress: bool = True, force: bool = False, workers: int | None = None,
          eval_dir: str | Path | None = "shipped", command: str | None = None) -> TrainResult:
    """Generate data, train, save the checkpoint to `out`, reload what was saved and measure its zero-shot top-1
    (on `settings.eval_images` held-out generated images, and on `eval_dir`: by default the shipped
    calibration_data/eval when installed, None for none); writes `training_log.json` and `MODEL_CARD.md` beside the
    weights. `command` is recorded in both (default: the equivalent `clipedge demo train` line)."""
    from tqdm.auto import tqdm

    from clipedge.runtime.tokenizer import Tokenizer

    if not isinstance(settings, TrainSettings):
        raise InputError(f"settings must be a TrainSettings, got {type(settings).__name__}")
    if config.vision.image_size != IMAGE_SIZE:
        raise InputError(f"the demo data is {IMAGE_SIZE} px; config.vision.image_size is {config.vision.image_size}")
    if settings.text_tokens > config.text.max_position_embeddings:
        raise InputError(f"text_tokens={settings.text_tokens} exceeds the model's "
                         f"{config.text.max_position_embeddings} positions")
    out = Path(out)
    _check_output_dir(out, force)
    started = time.perf_counter()

    grid = config.vision.image_size // config.vision.patch_size
    pool = generate_pool(settings.pool_size, settings.seed, workers=workers, progress=progress, grid=grid)
    tokenizer = Tokenizer.default(context_length=config.text.max_position_embeddings)
    ids = tokenizer(pool.captions)
    if not (ids[:, settings.text_tokens :] == 0).all():
        longest = max(pool.captions, key=lambda c: len(tokenizer.encode(c)))
        raise ExportError(f"caption {longest!r} is longer than text_tokens={settings.text_tokens}")
    ids = np.ascontiguousarray(ids[:, : settings.text_tokens])
    data_seconds = time.perf_counter() - started

    model = CLIPEncoder(config, seed=settings.seed)
    openai_init_(model, settings.seed)
    step = _make_step(model, settings)
    rng = np.random.default_rng([settings.seed, 1000])
    losses: list[float] = []
    bar = tqdm(range(settings.steps), desc="train", unit="step", disable=not progress)
    train_started = time.perf_counter()
    for i in bar:
        batch = rng.choice(settings.pool_size, size=settings.batch_size, replace=False)
        batch.sort()  # gathers from the pool in memory order
        lr = np.float32(learning_rate(i, settings))
        loss = float(step(pool.pixels[batch], ids[batch], pool.classes[batch], pool.coverage[batch], lr))
        if not math.isfinite(loss):
            raise ExportError(f"training diverged at step {i} (loss {loss}); try a lower learning rate")
        losses.append(loss)
        if i % 10 == 0 or i == settings.steps - 1:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", scale=f"{math.exp(model.logit_scale.numpy()):.1f}")
    bar.close()
    train_seconds = time.perf_counter() - train_started
    del pool

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, tmp, settings.weights_dtype)

    # Measure what ships: the saved (possibly float16) weights, loaded back through the public loader.
    from clipedge.export.checkpoint import CLIPModel

    shipped = CLIPModel.from_pretrained(tmp)
    held_out = None
    if settings.eval_images:
        images, labels = held_out_samples(settings.eval_images, settings.seed)
        held_out = zero_shot_accuracy(shipped, images, labels)
    eval_set, eval_files = None, []
    if eval_dir == "shipped":
        from clipedge.export.samples import default_calibration_dir

        shipped_data = default_calibration_dir()
        eval_dir = shipped_data / "eval" if shipped_data is not None and (shipped_data / "eval").is_dir() else None
    if eval_dir is not None:
        from clipedge.export.demo_data import read_eval_set

        eval_files, labels = read_eval_set(eval_dir)
        eval_set = zero_shot_accuracy(shipped, eval_files, labels)
    seconds = {"data": round(data_seconds, 1), "train": round(train_seconds, 1),
               "total": round(time.perf_counter() - started, 1)}
    record: dict[str, Any] = {
        "command": command or f"clipedge demo train --out {out} --steps {settings.steps} --seed {settings.seed}",
        "settings": dataclasses.asdict(settings), "seconds": seconds, "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__, "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
        "loss_first_50": float(np.mean(losses[:50])), "loss_last_50": float(np.mean(losses[-50:])),
        "logit_scale": float(math.exp(float(shipped.logit_scale.numpy()))),
        "zero_shot_top1": {"template": "a photo of a {}.", "held_out_generated": held_out,
                           "held_out_images": settings.eval_images, "eval_set": eval_set,
                           "eval_set_images": len(eval_files)},
    }
    (tmp / "training_log.json").write_text(json.dumps(record, indent=2) + "\n")
    write_model_card(tmp, record, config)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("demo CLIP written to %s in %.0f s (held-out top-1 %s)", out, seconds["total"], held_out)
    return TrainResult(checkpoint=out, seconds=seconds, losses=losses, held_out_accuracy=held_out,
                       eval_set_accuracy=eval_set)
