"""`load(bundle)` -> a `CLIPRuntime`: images and texts in, L2-normalized embeddings and CLIP scores out.

Everything the reference CLIP does outside its weights is here, driven by the bundle's manifest: preprocessing
(resize, crop, mean/std, NHWC or NCHW), tokenization (OpenAI BPE, context length), L2 normalization and the
checkpoint's own logit_scale.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.backends.open import Backend, check_threads
from clipedge.runtime.decode import DEFAULT_DECODE, check_decode
from clipedge.runtime.defaults import default_precision, warn_if_flagged
from clipedge.runtime.errors import BundleError, InputError
from clipedge.runtime.manifest import FORMATS, Artifact, Manifest
from clipedge.runtime.prompts import DEFAULT_TEMPLATE, fill_template
from clipedge.runtime.runner import ArtifactRunner
from clipedge.runtime.scoring import cosine_similarity, l2_normalize, softmax

__all__ = ["CLIPRuntime", "Classification", "load"]

log = logging.getLogger(__name__)


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
    text model (and its tokenizer). Safe to share between threads: towers open once under a lock, and each model's
    calls are serialized by its backend (docs/python-api.md, "Threads")."""

    def __init__(self, manifest: Manifest, fmt: str, precision: str, accelerator: str = "cpu",
                 threads: int | None = None, batch_size: int = 32, variant: str = "default",
                 decode: str = DEFAULT_DECODE, decode_workers: int | None = None) -> None:
        self.manifest = manifest
        self.format = fmt
        self.precision = precision
        self.variant = variant
        self.accelerator = accelerator
        self.threads = check_threads(threads)  # refused here, at load, not at the first encode
        self.batch_size = batch_size
        self.decode = check_decode(decode)  # "fast" | "exact": how image files are read (clipedge.runtime.decode)
        self.decode_workers = decode_workers  # threads decoding ahead of the model; None: prefetch.default_workers
        self._runners: dict[str, ArtifactRunner] = {}  # by file: a baked classifier is not the tower's first one
        self._tokenizer = None
        self._label_cache: dict[tuple[str, ...], np.ndarray] = {}
        self._open_lock = threading.Lock()  # two threads' first calls must not open (and probe) a tower twice
        from clipedge.runtime.preprocess import PreprocessConfig

        self.preprocess_config = PreprocessConfig.from_dict(manifest.data["preprocess"])

    # ---- plumbing -------------------------------------------------------------------------------------------
    @property
    def logit_scale(self) -> float:
        return self.manifest.logit_scale

    def artifact(self, tower: str) -> Artifact:
        variant = self.variant if tower in ("image", "text") else "default"
        return self.manifest.find(tower, self.format, self.precision, variant)

    def runner(self, tower_or_artifact: str | Artifact) -> ArtifactRunner:
        """The opened model of a tower (or of one manifest entry), opened and sha256-checked on first use."""
        artifact = self.artifact(tower_or_artifact) if isinstance(tower_or_artifact, str) else tower_or_artifact
        with self._open_lock:
            if artifact.file not in self._runners:
                runner = ArtifactRunner.open(self.manifest, artifact, threads=self.threads,
                                             accelerator=self.accelerator, chunk=self.batch_size)
                log.info("%s tower: %s on %s (%s)", artifact.tower, runner.info.backend, runner.info.accelerator,
                         artifact.file)
                self._runners[artifact.file] = runner
            return self._runners[artifact.file]

    def backend(self, tower: str) -> Backend:
        return self.runner(tower).backend

    @property
    def tokenizer(self):
        with self._open_lock:
            if self._tokenizer is None:
                from clipedge.runtime.tokenizer import Tokenizer

                directory = self.manifest.tokenizer_dir()
                self._tokenizer = Tokenizer.from_files(directory) if directory else Tokenizer.default()
            return self._tokenizer

    def describe(self) -> dict[str, Any]:
        """What actually runs: per opened tower, the interpreter, accelerator, whether it is fully accelerated, and
        how many rows one call takes (1 for files whose activation ranges are taken per call, ONNX dynamic-int8 and
        int4: so every row's result is the one it gets alone, `batch_independent`)."""
        return {r.artifact.tower: {"file": r.artifact.file, **vars(r.info),
                                   "rows_per_call": 1 if r.rows_per_call_only else r.chunk,
                                   "batch_independent": True} for r in self._runners.values()}

    # ---- encoders -------------------------------------------------------------------------------------------
    def preprocess(self, images: Any, layout: str | None = None, first_index: int = 0,
                   decode: str = "exact") -> np.ndarray:
        """Pixels in the image model's layout (`layout=None`), or in the one asked for. `first_index`: the position of
        `images[0]` in the caller's whole input, so an error names the item where the caller has it. `decode`:
        "exact" (the default here: the checkpoint's own preprocessor, bit for bit, for callers that compare pixels)
        or "fast" (large images shrunk while decoding, what `encode_images` does by default)."""
        from clipedge.runtime.preprocess import preprocess

        layout = layout or self.artifact("image").input_layout or "NHWC"
        return preprocess(images, self.preprocess_config, layout=layout, first_index=first_index, decode=decode)

    def _pixel_batches(self, images: Any, runner: ArtifactRunner, decode: str | None) -> Iterator[np.ndarray]:
        """NHWC pixels in groups the model takes in one call (its fixed batch, else up to 8), decoded by worker
        threads while the model runs the previous group (clipedge.runtime.prefetch), so a folder of thousands of
        photos is never decoded at once; a bad item is named by its position in `images`."""
        from clipedge.runtime.prefetch import default_workers, prefetched

        decode = check_decode(self.decode if decode is None else decode)
        if not isinstance(images, (list, tuple)):
            yield self.preprocess(images, layout="NHWC", decode=decode)
            return
        batch = runner.backend.inputs[0].shape[0] if runner.backend.inputs[0].shape else -1
        group = batch if batch > 0 else min(self.batch_size, 8)
        workers = default_workers() if self.decode_workers is None else self.decode_workers
        yield from prefetched(images, group, lambda chunk, start: self.preprocess(
            chunk, layout="NHWC", first_index=start, decode=decode), workers, lookahead=max(self.batch_size, group))

    def encode_images(self, images: Any, decode: str | None = None) -> np.ndarray:
        """Paths, bytes, PIL images or uint8 arrays (one or a list) -> float32 [B, D] unit vectors. `decode`: see
        `preprocess`; None: the runtime's (`load(decode=...)`)."""
        runner = self.runner("image")
        with closing(self._pixel_batches(images, runner, decode)) as batches:  # its decode threads end here
            out = [runner.run(pixels) for pixels in batches]
        if not out:
            return np.zeros((0, self.manifest.embed_dim), np.float32)
        return l2_normalize(np.concatenate(out))

    def encode_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        """Already preprocessed pixels in the model's layout -> unit vectors (for callers with their own pipeline)."""
        return l2_normalize(self.run("image", {"pixel_values": pixel_values}))

    def run(self, tower: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """One model's single output for float feeds by input name (see `ArtifactRunner.run_feeds`)."""
        return self.runner(tower).run_feeds(feeds)

    def tokenize(self, texts: str | Sequence[str], truncate: bool = True) -> np.ndarray:
        context = int(self.manifest.data["tokenizer"].get("context_length", 77))
        return self.tokenizer(texts, context_length=context, truncate=truncate)

    def encode_texts(self, texts: str | Sequence[str], truncate: bool = True) -> np.ndarray:
        """One string or a list -> float32 [B, D] unit vectors."""
        ids = self.tokenize(texts, truncate=truncate)
        if len(ids) == 0:
            return np.zeros((0, self.manifest.embed_dim), np.float32)
        return l2_normalize(self.runner("text").run(ids))

    # ---- scores ---------------------------------------------------------------------------------------------
    def similarity(self, image_embeds: np.ndarray, text_embeds: np.ndarray) -> np.ndarray:
        """Cosine similarities [I, T]."""
        return cosine_similarity(image_embeds, text_embeds)

    def label_embeddings(self, labels: Sequence[str], template: str = DEFAULT_TEMPLATE) -> np.ndarray:
        key = (template, *labels)
        if key not in self._label_cache:
            self._label_cache[key] = self.encode_texts([fill_template(template, label) for label in labels])
        return self._label_cache[key]

    def classify(self, images: Any, labels: Sequence[str], template: str = DEFAULT_TEMPLATE,
                 decode: str | None = None) -> list[Classification]:
        """Zero-shot: softmax over labels of logit_scale * cosine(image, template.format(label))."""
        labels = list(labels)
        if not labels or not all(isinstance(label, str) and label.strip() for label in labels):
            raise InputError(f"classify needs a non-empty list of non-empty label strings, got {labels!r}")
        baked = self.baked_classifier(labels, template)
        if baked is not None:  # labels folded into an image-only model at export: no text tower needed
            runner = self.runner(baked)
            with closing(self._pixel_batches(images, runner, decode)) as batches:
                probs = [runner.run(pixels) for pixels in batches]
            return [Classification(labels, row) for row in np.concatenate(probs)]
        image_embeds = self.encode_images(images, decode)
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


def load(bundle: str | Path, precision: str | None = None, format: str | None = None,  # noqa: A002 (API name)
         accelerator: str = "cpu", threads: int | None = None, batch_size: int = 32,
         variant: str | None = None, decode: str = DEFAULT_DECODE, decode_workers: int | None = None) -> CLIPRuntime:
    """Open a bundle directory. `format` None picks the first the bundle lists (TFLite for a default export);
    `precision` None the bundle's default for that format, recorded at export (the fastest file pair that passed its
    fidelity floor, clipedge.runtime.defaults; `clipedge info` shows it), else the first listed. A file export's
    verification flagged is loaded with a warning. `variant` None means "gpu" when a GPU is asked for and the bundle
    has that variant, else "default". Sha256 sums of every file the runtime may use (both towers, their token
    tables, the baked classifiers of this format and precision, the tokenizer) are checked here, before anything
    runs; `clipedge info --verify` checks the whole bundle. `decode`: how image files are read, "fast" (the default:
    large photos shrunk while decoding, clipedge.runtime.decode) or "exact" (CLIPImageProcessor bit for bit);
    `decode_workers`: threads decoding ahead of the model (None: the usable cores, at most 4; 0 or 1: in the calling
    thread)."""
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
    if precision is None:  # the bundle's recorded default for this format (clipedge.runtime.defaults)
        default = default_precision(manifest, chosen.format, variant)
        chosen = next((a for a in candidates if a.format == chosen.format and a.precision == default), chosen)
    warn_if_flagged(manifest, [a for a in manifest.artifacts if a.format == chosen.format and a.variant == variant
                               and a.precision == chosen.precision and a.tower in ("image", "text")])
    runtime = CLIPRuntime(manifest, chosen.format, chosen.precision, accelerator, threads, batch_size, variant,
                          check_decode(decode), decode_workers)
    for artifact in manifest.artifacts:  # every file this runtime may open: towers, token tables, baked classifiers
        same = artifact.format == chosen.format and artifact.precision == chosen.precision
        if same and (artifact.variant == variant or artifact.tower == "classifier" and artifact.variant == "default"):
            manifest.verified_path(artifact)
            if "token_table" in artifact.extra:
                manifest.verified_file(artifact.extra["token_table"]["file"], artifact.extra["token_table"]["sha256"])
    manifest.tokenizer_dir()  # checks the tokenizer files too
    return runtime
