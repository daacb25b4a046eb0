"""Write the trained demo CLIP as a HuggingFace CLIP directory, with the model card that says how it was made.

The HF layout is what makes the demo a drop-in for a released CLIP: `clipedge export` and `transformers.CLIPModel`
read it the same way, so nothing downstream special-cases the demo. The model card is written from the measured
training record only, so it cannot drift from what a run actually did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.export.demo.data import CLASSES, SIZE_RANGE
from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.model.config import CLIPConfig

__all__ = ["WEIGHTS_FILE", "hf_state_dict", "save_checkpoint", "write_model_card"]

WEIGHTS_FILE = "model.safetensors"

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


def _token_dropping(settings: dict[str, Any], patches: int) -> str:
    """The model card's clause on token dropping (empty for a run whose every step used every patch token)."""
    keep, full = settings.get("keep_tokens", 0), settings.get("full_token_steps", 0)
    if not 0 < keep < patches or full >= settings["steps"]:
        return ""
    return (f"all but the last {full} steps ran {keep} patch tokens of each image (the "
            "shape's outline first, then the rest it covers, then background), the last ones every token;")


def write_model_card(directory: Path, record: dict[str, Any], config: CLIPConfig) -> None:
    """MODEL_CARD.md from the measured training record (what `train` just did, nothing hand-copied)."""
    v, t, z = config.vision, config.text, record["zero_shot_top1"]
    weights = directory / WEIGHTS_FILE
    total_bytes = sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
    seconds = record["seconds"]
    by_size = z.get("held_out_by_size") or {}
    settings = record["settings"]
    dropping = _token_dropping(settings, (v.image_size // v.patch_size) ** 2)

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
{record["tensorflow"]}. Data: `clipedge.export.demo.data` (stream 0, seed {settings["seed"]}); loss: CLIP's
symmetric contrastive loss with class-aware targets, plus the same loss on every patch token the shape covers
(token labeling, weight {settings["token_loss_weight"]}), per-patch outline-part labels on layer
{settings["part_layer"]} (weight {settings["part_loss_weight"]}) and the last layer's class-token attention pulled
onto the shape (weight {settings.get("attention_loss_weight", 0.0)}); attention initialized
{"mimetically (Trockman & Kolter 2023)" if settings.get("mimetic_init") else "as OpenAI's CLIP"};
{dropping} optimizer: AdamW, peak learning rate {settings["learning_rate"]},
{settings["warmup_steps"]} warmup steps, cosine decay, weight decay
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

Projection dimension {config.projection_dim}. Preprocessing: OpenAI CLIP's (shortest side to {v.image_size} bicubic,
center crop {v.image_size}, OpenAI mean/std), written to `preprocessor_config.json`. Tokenizer: OpenAI's, as
`vocab.json` + `merges.txt`.

## Zero-shot accuracy (TF float32, the weights as stored)
Prompts `{z["template"]}` filled with each of the 40 labels ("red circle", ...), images through
`clipedge.runtime.preprocess`, top-1 over the 40 classes:

| images | top-1 |
|---|---|
| {z["held_out_images"]} held-out generated images (stream 2, never used in training, classes balanced) | \
{pct(z["held_out_generated"])} |
| the shipped evaluation set `calibration_data/eval/` ({z["eval_set_images"]} JPEGs, stream 1) | \
{pct(z["eval_set"])} |
| shapes drawn by a second renderer, `calibration_data/drawn/` ({z.get("drawn_set_images", 0)} JPEGs; OpenCV, other \
proportions, palette, strokes and photos; never trained or calibrated on) | {pct(z.get("drawn_set"))} |

Held-out generated images by shape size (outer diameter as a share of the image width):

| size | {" | ".join(by_size)} |
|---|{"---|" * len(by_size)}
| top-1 | {" | ".join(pct(v) for v in by_size.values())} |

Per precision after export, and the second renderer's set by size: `docs/demo.md`.

## Limits
- Only the 40 shape classes. On real photographs its answers are meaningless; use a released CLIP for real work.
- Only the tokens of the training captions were trained; the other rows of the 49408-token table are the random
  initialization. Text positions {settings["text_tokens"]}..{t.max_position_embeddings - 1} were never trained
  either, so a text longer than {settings["text_tokens"] - 2} BPE tokens gets an unreliable embedding.
- What it was trained to recognise: one flat shape per image, {SIZE_RANGE[0]:.0%}..{SIZE_RANGE[1]:.0%} of the
  image wide, anywhere in the frame (whole), at any angle, filled or outlined, in any of several shades of its
  colour, on a plain, gradient, noisy or photo background, blurred a little or JPEG-compressed. How well depends on
  the size (the table above): the colour is nearly always right, the shape of a small one often is not.
- What it does not: two or more shapes in one image, shapes cut by the frame, smaller than {SIZE_RANGE[0]:.0%} of
  the width (at {v.image_size} px that is {SIZE_RANGE[0] * v.image_size:.0f} pixels), 3-D or shaded shapes,
  hand-drawn wobbly lines, other shapes (an ellipse is a circle to it; a hexagon is anything) or other colours
  (pink, brown, grey get the nearest of the eight).

## Licence
Weights: MIT, as clipedge. The vocabulary is OpenAI CLIP's (MIT, `LICENSE-openai-clip.txt` here). Photo backgrounds
in the training data: the Public Domain / CC0 photos of `calibration_data/photos/` (see its CREDITS.tsv).
"""
    (directory / "MODEL_CARD.md").write_text(text, encoding="utf-8")
