"""`TrainSettings`: one run of `clipedge demo train`, in one frozen value (no TensorFlow: the CLI reads its options
from here, clipedge.export.options). The defaults are the shipped demo's recipe (docs/demo.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from clipedge.export.options import non_negative_int, option, positive_int
from clipedge.runtime.errors import InputError

__all__ = ["TrainSettings"]


@dataclass(frozen=True)
class TrainSettings:
    steps: int = option(14000, "training steps", parse=positive_int)
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 300
    weight_decay: float = 0.05
    clip_norm: float = 1.0
    token_loss_weight: float = 1.0  # the token-labeling term (see _token_loss); 0 trains on the image loss alone
    part_loss_weight: float = 1.0  # the per-patch outline-part labels (demo_pool.part_maps); 0: off
    part_layer: int = 2  # whose output tokens predict them (1-based)
    attention_loss_weight: float = 1.0  # the last layer's class-token attention pulled onto the shape; 0: off
    mimetic_init: bool = True  # start the image tower's attention as mimetic_init_ does; False: OpenAI's init only
    pool_size: int = 60000  # images generated once and re-sampled (with flips/rotations) every step
    text_tokens: int = 16  # text positions run in training (>= the longest caption incl. SOT and EOT)
    keep_tokens: int = 32  # patch tokens a step runs (the shape's first, see _keep_tokens); 0: all of them
    full_token_steps: int = 1000  # the last steps run every patch token, as the exported model will
    eval_images: int = 1000  # held-out generated images for the accuracy in the model card
    seed: int = option(0, "data and initialization seed", parse=non_negative_int)
    weights_dtype: str = "float16"  # how model.safetensors stores the weights (the loaders cast to float32)

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "pool_size", "text_tokens")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "eval_images", "seed", "keep_tokens", "full_token_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} must be an integer >= 0, got {value!r}")
        if self.batch_size < 2:
            raise InputError(f"batch_size must be at least 2 for a contrastive loss, got {self.batch_size}")
        if self.pool_size < self.batch_size:
            raise InputError(f"pool_size ({self.pool_size}) must be at least batch_size ({self.batch_size})")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise InputError(f"learning_rate must be a positive number, got {self.learning_rate!r}")
        weights = ("token_loss_weight", "part_loss_weight", "attention_loss_weight", "weight_decay")
        for name in weights:
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and value >= 0):
                raise InputError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.mimetic_init, bool):
            raise InputError(f"mimetic_init must be True or False, got {self.mimetic_init!r}")
        if self.weights_dtype not in ("float16", "float32"):
            raise InputError(f"weights_dtype must be 'float16' or 'float32', got {self.weights_dtype!r}")
