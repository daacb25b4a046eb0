"""`load(bundle)` -> a `CLIPRuntime`: images and texts in, L2-normalized embeddings and CLIP scores out.

Everything the reference CLIP does outside its weights is here, driven by the bundle's manifest: preprocessing
(resize, crop, mean/std, NHWC or NCHW), tokenization (OpenAI BPE, context length), L2 normalization and the
checkpoint's own logit_scale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.backends import Backend, open_backend
from clipedge.runtime.errors import BundleError, InputError
from clipedge.runtime.manifest import FORMATS, Artifact, Manifest
from clipedge.runtime.scoring import cosine_similarity, l2_normalize, softmax

__all__ = ["CLIPRuntime", "Classification", "load", "DEFAULT_TEMPLATE"]

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "a photo of a {}."  # OpenAI's most common zero-shot prompt (CLIP notebooks, ImageNet prompts)


@dataclass(frozen=True)
class Classification:
    """Per image: labels sorted by probability, and the full probability row in label order."""

    labels: list[str]
    probabilities: np.ndarray  # [L], in the order of `labels` given to classify()

    @property
    def top(self) -> tuple[str, float]:
        i = int(np.argmax(self.probabilities))
        return self.labels[i], float(self.probabilities[i])

    def ranked(self, k: int | None = None) -> list[tuple[str, float]]:
        order = np.argsort(-self.probabilities)[:k]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]


class CLIPRuntime:
    """One bundle, one format and precision. Towers are opened on first use, so an image-only app never loads the
    text model (and its tokenizer)."""

    def __init__(self, manifest: Manifest, fmt: str, precision: str, accelerator: str = "cpu",
                 threads: int | None = None, batch_size: int = 32, variant: str = "default") -> None:
        self.manifest = manifest
        self.format = fmt
        self.precision = precision
        self.variant = variant
        self.accelerator = accelerator
        self.threads = threads
        self.batch_size = batch_size
        self._backends: dict[str, Backend] = {}
        self._tokenizer = None
        self._label_cache: dict[tuple[str, ...], np.ndarray] = {}
        from clipedge.runtime.preprocess import PreprocessConfig

        self.preprocess_config = PreprocessConfig.from_dict(manifest.data["preprocess"])

    # ---- plumbing -------------------------------------------------------------------------------------------
    @property
    def logit_scale(self) -> float:
        return self.manifest.logit_scale

    def artifact(self, tower: str) -> Artifact:
        variant = self.variant if tower in ("image", "text") else "default"
        return self.manifest.find(tower, self.format, self.precision, variant)

    def backend(self, tower: str) -> Backend:
        if tower not in self._backends:
            artifact = self.artifact(tower)
            path = self.manifest.verified_path(artifact)
            self._backends[tower] = open_backend(path, signature=artifact.signature, threads=self.threads,
                                                 accelerator=self.accelerator)
            info = self._backends[tower].info
            log.info("%s tower: %s on %s (%s)", tower, info.backend, info.accelerator, artifact.file)
        return self._backends[tower]

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from clipedge.runtime.tokenizer import Tokenizer

            directory = self.manifest.tokenizer_dir()
            self._tokenizer = Tokenizer.from_files(directory) if directory else Tokenizer.default()
        return self._tokenizer

    def describe(self) -> dict[str, Any]:
        """What actually runs: per opened tower, the interpreter, accelerator and whether it is fully accelerated."""
        return {tower: {"file": self.artifact(tower).file, **vars(b.info)} for tower, b in self._backends.items()}

    # ---- encoders -------------------------------------------------------------------------------------------
    def preprocess(self, images: Any) -> np.ndarray:
        from clipedge.runtime.preprocess import preprocess

        layout = self.artifact("image").input_layout or "NHWC"
        return preprocess(images, self.preprocess_config, layout=layout)

    def encode_images(self, images: Any) -> np.ndarray:
        """Paths, bytes, PIL images or uint8 arrays (one or a list) -> float32 [B, D] unit vectors."""
        items = images if isinstance(images, (list, tuple)) else [images]
        out = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            try:
                pixels = self.preprocess(list(chunk))
            except InputError as err:
                raise type(err)(f"{err} (batch starts at item {start})" if start else str(err)) from err
            out.append(self.run("image", {"pixel_values": pixels}))
        if not out:
            return np.zeros((0, self.manifest.embed_dim), np.float32)
        return l2_normalize(np.concatenate(out))

    def encode_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        """Already preprocessed pixels in the model's layout -> unit vectors (for callers with their own pipeline)."""
        return l2_normalize(self.run("image", {"pixel_values": pixel_values}))

    def run(self, tower: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One model's single output for float feeds, (de)quantizing where the file has integer in/out (int8_io)."""
        artifact = self.artifact(tower)
        backend = self.backend(tower)
        feeds = {spec["name"]: quantize(feeds[spec["name"]], spec.get("quantization"))
                 for spec in artifact.inputs}
        output = next(iter(backend.run(feeds).values()))
        return dequantize(output, artifact.outputs[0].get("quantization"))

    def tokenize(self, texts: str | Sequence[str], truncate: bool = True) -> np.ndarray:
        context = int(self.manifest.data["tokenizer"].get("context_length", 77))
        return self.tokenizer(texts, context_length=context, truncate=truncate)

    def encode_texts(self, texts: str | Sequence[str], truncate: bool = True) -> np.ndarray:
        """One string or a list -> float32 [B, D] unit vectors."""
        ids = self.tokenize(texts, truncate=truncate)
        if len(ids) == 0:
            return np.zeros((0, self.manifest.embed_dim), np.float32)
        artifact = self.artifact("text")
        if artifact.variant == "gpu":
            feeds = gpu_text_feeds(ids, self._token_table(artifact), artifact.extra["pool"])
        else:
            feeds = {"input_ids": ids}
        return l2_normalize(self.run("text", feeds))

    def _token_table(self, artifact: Artifact) -> np.ndarray:
        if not hasattr(self, "_table"):
            entry = artifact.extra["token_table"]
            self._table = np.load(self.manifest.verified_file(entry["file"], entry["sha256"]), allow_pickle=False)
        return self._table

    # ---- scores ---------------------------------------------------------------------------------------------
    def similarity(self, image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
        """Cosine similarities [I, T]."""
        return cosine_similarity(image_embeds, text_embeds)

    def label_embeddings(self, labels: Sequence[str], template: str = DEFAULT_TEMPLATE) -> np.ndarray:
        key = (template, *labels)
        if key not in self._label_cache:
            self._label_cache[key] = self.encode_texts([fill_template(template, label) for label in labels])
        return self._label_cache[key]

    def classify(self, images: Any, labels: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[Classification]:
        """Zero-shot: softmax over labels of logit_scale * cosine(image, template.format(label))."""
        labels = list(labels)
        if not labels or not all(isinstance(label, str) and label.strip() for label in labels):
            raise InputError(f"classify needs a non-empty list of non-empty label strings, got {labels!r}")
        baked = self.baked_classifier(labels, template)
        if baked is not None:  # labels folded into an image-only model at export: no text tower needed
            items = images if isinstance(images, (list, tuple)) else [images]
            probs = [self.run("classifier", {"pixel_values": self.preprocess(list(items[i : i + self.batch_size]))})
                     for i in range(0, len(items), self.batch_size)]
            return [Classification(labels, row) for row in np.concatenate(probs)]
        image_embeds = self.encode_images(images)
        probs = softmax(self.logit_scale * self.similarity(image_embeds, self.label_embeddings(labels, template)))
        return [Classification(labels, row) for row in probs]


    def baked_classifier(self, labels: Sequence[str], template: str) -> Artifact | None:
        """The bundle's `classifier` model for this format/precision, if it was exported for exactly these labels
        and template."""
        for a in self.manifest.artifacts:
            if (a.tower == "classifier" and a.format == self.format and a.precision == self.precision
                    and a.extra.get("labels") == list(labels) and a.extra.get("template") == template):
                return a
        return None


def quantize(x: np.ndarray, quantization: dict | None) -> np.ndarray:
    """float -> int8 with the file's input scale/zero point; unchanged when the input is float."""
    if not quantization:
        return x
    q = np.round(np.asarray(x, np.float32) / quantization["scale"]) + quantization["zero_point"]
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize(y: np.ndarray, quantization: dict | None) -> np.ndarray:
    if not quantization:
        return y
    return ((y.astype(np.float32) - quantization["zero_point"]) * quantization["scale"]).astype(np.float32)


def gpu_text_feeds(ids: np.ndarray, table: np.ndarray, pool: dict) -> dict[str, np.ndarray]:
    """Inputs of the GPU text variant: the token lookup and the EOT position, done here because LiteRT's GPU
    accelerator has no 2-D GATHER. `pool` is the manifest's rule: {"rule": "first", "eot_token_id": id} (HF's
    first-EOT) or {"rule": "argmax"} (configs with eos_token_id == 2)."""
    ids = np.asarray(ids)
    if pool.get("rule") == "argmax":
        position = ids.argmax(axis=-1)
    else:
        position = (ids == pool["eot_token_id"]).argmax(axis=-1)
    mask = np.zeros(ids.shape, np.float32)
    mask[np.arange(len(ids)), position] = 1.0
    return {"token_embeddings": table[ids].astype(np.float32), "eot_mask": mask}


def fill_template(template: str, label: str) -> str:
    if "{}" not in template:
        raise InputError(f"template {template!r} has no '{{}}' where the label goes")
    return template.replace("{}", label)


def load(bundle: str | Path, precision: str | None = None, format: str | None = None,  # noqa: A002 (API name)
         accelerator: str = "cpu", threads: int | None = None, batch_size: int = 32,
         variant: str | None = None) -> CLIPRuntime:
    """Open a bundle directory. `precision`/`format` None pick the first the bundle lists (fp32 TFLite for a
    default export). `variant` None means "gpu" when a GPU is asked for and the bundle has that variant, else
    "default". Sha256 sums of the chosen files are checked here, before anything runs."""
    manifest = Manifest.read(bundle)
    if format is not None and format not in FORMATS:
        raise InputError(f"format={format!r}; choose from {FORMATS}")
    if variant is None:
        has_gpu = any(a.variant == "gpu" and (format is None or a.format == format) for a in manifest.artifacts)
        variant = "gpu" if accelerator in ("gpu", "auto") and has_gpu and precision in (None, "fp32") else "default"
    candidates = [a for a in manifest.artifacts if a.variant == variant and a.tower in ("image", "text")
                  and (format is None or a.format == format) and (precision is None or a.precision == precision)]
    if not candidates:
        manifest.find("image", format, precision, variant)  # raises BundleError listing what the bundle has
        raise BundleError(f"{bundle} has no models")
    chosen = candidates[0]
    runtime = CLIPRuntime(manifest, chosen.format, chosen.precision, accelerator, threads, batch_size, variant)
    for artifact in manifest.artifacts:
        same = artifact.format == chosen.format and artifact.precision == chosen.precision
        if same and artifact.variant == variant:
            manifest.verified_path(artifact)
    return runtime
