"""Architecture configs for the two CLIP towers, read from a checkpoint or taken from presets.

Field names follow HuggingFace's `CLIPTextConfig` / `CLIPVisionConfig` so `from_hf_config` is a 1:1 read and a
`config.json` written by clipedge is one `transformers` can read back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from clipedge.runtime.errors import CheckpointError

__all__ = ["CLIPTextConfig", "CLIPImageConfig", "CLIPConfig", "PRESETS", "ACTIVATIONS"]

# Every activation HF's CLIPMLP accepts (transformers.activations.ACT2FN); implemented in model/activations.py.
ACTIVATIONS = ("quick_gelu", "gelu", "gelu_python", "gelu_10", "gelu_new", "gelu_fast", "gelu_accurate",
               "gelu_pytorch_tanh", "gelu_python_tanh", "relu", "relu2", "relu6", "leaky_relu", "sigmoid", "tanh",
               "silu", "swish", "mish", "hardswish", "laplace", "sqrtsoftplus", "linear", "prelu", "xielu")

# OpenAI's tokenizer ids (bpe_simple_vocab_16e6: 49152 merges + 256 bytes * 2 + 2 specials = 49408).
SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407


def _check_tower(tower: str, hidden_act: str, hidden_size: int, heads: int) -> None:
    if hidden_act not in ACTIVATIONS:
        raise CheckpointError(f"hidden_act={hidden_act!r} is not supported; expected one of HF's: "
                              f"{', '.join(ACTIVATIONS)}")
    if hidden_size % heads:
        raise CheckpointError(f"{tower} hidden_size={hidden_size} is not divisible by num_attention_heads={heads}")


@dataclass(frozen=True)
class CLIPTextConfig:
    """The causal text transformer. `eos_token_id` decides EOT pooling exactly as HF does:
    2 (the value in pre-2023 HF configs) means "argmax of the ids", anything else "first position of that id"."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    projection_dim: int = 512
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    bos_token_id: int = SOT_TOKEN_ID
    eos_token_id: int = EOT_TOKEN_ID
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        _check_tower("text", self.hidden_act, self.hidden_size, self.num_attention_heads)

    @classmethod
    def from_hf_config(cls, text_config: dict[str, Any], projection_dim: int) -> CLIPTextConfig:
        return cls(projection_dim=projection_dim, **_known_fields(cls, text_config, exclude={"projection_dim"}))


@dataclass(frozen=True)
class CLIPImageConfig:
    """The pre-LN ViT image tower (class token, ln_pre, ln_post)."""

    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    projection_dim: int = 512
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        _check_tower("vision", self.hidden_act, self.hidden_size, self.num_attention_heads)
        if self.image_size < self.patch_size:
            raise CheckpointError(f"image_size={self.image_size} is smaller than patch_size={self.patch_size}")

    @property
    def num_patches(self) -> int:
        """HF's count: an image size that is not a multiple of the patch drops the remainder (the stride-p
        convolution does, in torch as in TF's VALID padding)."""
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_hf_config(cls, vision_config: dict[str, Any], projection_dim: int) -> CLIPImageConfig:
        return cls(projection_dim=projection_dim, **_known_fields(cls, vision_config, exclude={"projection_dim"}))


@dataclass(frozen=True)
class CLIPConfig:
    """Both towers plus the initial logit scale (a checkpoint's own value always wins)."""

    text: CLIPTextConfig
    vision: CLIPImageConfig
    logit_scale_init_value: float = 2.6592  # ln(1/0.07), CLIP paper section 2.5

    @property
    def projection_dim(self) -> int:
        return self.vision.projection_dim

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> CLIPConfig:
        """Read a HuggingFace `CLIPModel` config.json dict (missing fields take HF's defaults)."""
        if "text_config" not in config or "vision_config" not in config:
            raise CheckpointError(
                "config.json has no 'text_config'/'vision_config': not a HuggingFace CLIPModel config "
                f"(model_type={config.get('model_type')!r})"
            )
        projection_dim = int(config.get("projection_dim", 512))
        return cls(
            text=CLIPTextConfig.from_hf_config(config["text_config"] or {}, projection_dim),
            vision=CLIPImageConfig.from_hf_config(config["vision_config"] or {}, projection_dim),
            logit_scale_init_value=float(config.get("logit_scale_init_value", 2.6592)),
        )

    def to_hf_config(self) -> dict[str, Any]:
        """A config.json that `transformers.CLIPModel.from_pretrained` reads back."""
        text = dataclasses.asdict(self.text)
        vision = dataclasses.asdict(self.vision)
        text.pop("projection_dim")
        vision.pop("projection_dim")
        return {
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": self.logit_scale_init_value,
            "text_config": {**text, "model_type": "clip_text_model"},
            "vision_config": {**vision, "model_type": "clip_vision_model"},
        }

    @classmethod
    def preset(cls, name: str) -> CLIPConfig:
        key = normalize_preset_name(name)
        if key not in PRESETS:
            raise CheckpointError(f"unknown architecture {name!r}; known: {', '.join(sorted(PRESETS))}")
        return PRESETS[key]


def normalize_preset_name(name: str) -> str:
    """'ViT-B/32', 'vit_b_32', 'ViT-B-32' all name the same preset (OpenCLIP writes '-', OpenAI '/')."""
    return name.strip().lower().replace("_", "-").replace("/", "-")


def _known_fields(cls: type, values: dict[str, Any], exclude: set[str]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)} - exclude
    return {k: v for k, v in values.items() if k in names and v is not None}


def _openai(vision_width: int, vision_layers: int, patch: int, image_size: int, text_width: int, embed_dim: int,
            act: str = "quick_gelu") -> CLIPConfig:
    # Shapes from openai/CLIP clip/model.py build_model and the released checkpoints (MIT licence).
    return CLIPConfig(
        text=CLIPTextConfig(hidden_size=text_width, intermediate_size=4 * text_width, num_hidden_layers=12,
                            num_attention_heads=text_width // 64, projection_dim=embed_dim, hidden_act=act),
        vision=CLIPImageConfig(image_size=image_size, patch_size=patch, hidden_size=vision_width,
                               intermediate_size=4 * vision_width, num_hidden_layers=vision_layers,
                               num_attention_heads=vision_width // 64, projection_dim=embed_dim, hidden_act=act),
    )


PRESETS: dict[str, CLIPConfig] = {
    "vit-b-32": _openai(768, 12, 32, 224, 512, 512),
    "vit-b-16": _openai(768, 12, 16, 224, 512, 512),
    "vit-l-14": _openai(1024, 24, 14, 224, 768, 768),
    "vit-l-14-336": _openai(1024, 24, 14, 336, 768, 768),
}
