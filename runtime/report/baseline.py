"""The PyTorch fp32 baseline of `clipedge report`: transformers' `CLIPModel` run in the report's own process, so its
latency is measured side by side with the artifacts' (same machine, same load, same threads) and its embeddings are
the reference the fp32 artifacts are judged against.

Optional: torch and transformers are imported only when a baseline runs; without them, or without a local HF
checkpoint, the report says why it skipped the baseline and measures everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from clipedge.runtime.bench import measure_latency
from clipedge.runtime.errors import InputError
from clipedge.runtime.manifest import Manifest
from clipedge.runtime.scoring import l2_normalize

__all__ = ["baseline_checkpoint_for", "run_baseline", "torch_baseline"]

log = logging.getLogger(__name__)


def baseline_checkpoint_for(manifest: Manifest, given: str | Path | None) -> tuple[Path | None, str]:
    """The HF checkpoint directory to run in PyTorch, or None and why not: the manifest's model source is used when
    it is still a local HF directory, since that is the exact model the bundle was exported from."""
    if given is not None:
        path = Path(given)
        if not (path / "config.json").is_file():
            raise InputError(f"--baseline-checkpoint {path} is not a HF checkpoint directory (no config.json)")
        return path, "given"
    source = str(manifest.data.get("model", {}).get("source", ""))
    if source and (Path(source) / "config.json").is_file():
        return Path(source), "the manifest's model source"
    return None, (f"the manifest's model source {source!r} is not a local HF checkpoint directory; "
                  "pass --baseline-checkpoint DIR")


def torch_baseline(checkpoint: Path, pixels_nhwc: np.ndarray, ids: np.ndarray, threads: int,
                   repeats: int, warmup: int, chunk: int = 32) -> dict[str, Any]:
    """transformers `CLIPModel` (PyTorch, fp32, eager) on the same inputs: batch-1 latency per tower with
    `torch.set_num_threads(threads)`, and embeddings of every given image and text (the reference). The thread count
    is restored afterwards: the artifacts are measured next in this process."""
    import torch
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(checkpoint).eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)

    def features(out: Any) -> np.ndarray:
        return getattr(out, "pooler_output", out).float().numpy()  # transformers 5 returns an output object

    pixels = torch.from_numpy(np.ascontiguousarray(pixels_nhwc.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
    tokens = torch.from_numpy(ids.astype(np.int64))
    try:
        with torch.inference_mode():
            image_1, text_1 = pixels[:1], tokens[:1]
            latency = {
                "image": measure_latency(lambda: model.get_image_features(pixel_values=image_1), repeats, warmup),
                "text": measure_latency(lambda: model.get_text_features(input_ids=text_1), repeats, warmup),
            }
            image_embeds = np.concatenate([features(model.get_image_features(pixel_values=pixels[i : i + chunk]))
                                           for i in range(0, len(pixels), chunk)])
            text_embeds = np.concatenate([features(model.get_text_features(input_ids=tokens[i : i + chunk]))
                                          for i in range(0, len(tokens), chunk)])
    finally:
        torch.set_num_threads(previous)
    return {"status": "ran", "checkpoint": str(checkpoint), "threads": threads, "torch": torch.__version__,
            "latency": {tower: value.to_dict() for tower, value in latency.items()},
            "embeddings": {"image": l2_normalize(image_embeds), "text": l2_normalize(text_embeds)}}


def run_baseline(manifest: Manifest, checkpoint: str | Path | None, pixels: np.ndarray, ids: np.ndarray,
                 threads: int, repeats: int, warmup: int, say: Callable[[str], None],
                 chunk: int = 32) -> dict[str, Any]:
    """`torch_baseline`, or {"status": "skipped", "reason"}: a missing checkpoint, torch or transformers never fails
    the report, it is said in it."""
    path, why = baseline_checkpoint_for(manifest, checkpoint)
    if path is None:
        return {"status": "skipped", "reason": why}
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as err:
        return {"status": "skipped", "reason": f"{err.name} is not installed: pip install torch transformers"}
    say(f"PyTorch fp32 baseline: {path}")
    try:
        return torch_baseline(path, pixels, ids, threads, repeats, warmup, chunk)
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # e.g. an OpenCLIP file, not a HF directory
        log.warning("PyTorch baseline skipped: %s", err)
        return {"status": "skipped", "reason": f"transformers could not run {path}: {err}"}
