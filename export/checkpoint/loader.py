"""Reading CLIP checkpoints (HuggingFace directories, OpenCLIP state dicts, hub ids) into a `CLIPEncoder`.

Everything is converted to HuggingFace's tensor names first (the canonical names), checked completely (missing,
unexpected, wrong shape), and only then assigned: a checkpoint either loads whole or raises one `CheckpointError`
naming the tensors at fault. No network is touched when the argument is a local path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clipedge.export.model.clip import CLIPEncoder
from clipedge.export.model.config import CLIPConfig, CLIPImageConfig, CLIPTextConfig
from clipedge.runtime.errors import CheckpointError

__all__ = [
    "CLIPModel",
    "CheckpointInfo",
    "resolve_checkpoint",
    "read_checkpoint",
    "openclip_to_hf",
    "config_from_openclip",
    "load_state_dict",
]

log = logging.getLogger(__name__)

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
OPENCLIP_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HUB_PATTERNS = ["config.json", "*.safetensors", "vocab.json", "merges.txt", "tokenizer*.json",
                "special_tokens_map.json", "preprocessor_config.json", "open_clip_config.json"]
HUB_PICKLES = ["pytorch_model.bin", "open_clip_pytorch_model.bin"]
# Buffers some exports carry that are not weights.
IGNORED_KEYS = re.compile(r"(^|\.)(position_ids|attn_mask)$")


@dataclass(frozen=True)
class CheckpointInfo:
    """Where the weights came from, for the bundle manifest and for reproducing an export."""

    source: str  # what the user passed
    weights_file: Path
    sha256: str
    layout: str  # "hf" or "openclip"
    config: CLIPConfig

    @property
    def directory(self) -> Path:
        return self.weights_file.parent


def resolve_checkpoint(path_or_id: str | Path, revision: str | None = None) -> Path:
    """A local directory or weights file as is; otherwise a hub id, downloaded with huggingface_hub."""
    path = Path(path_or_id).expanduser()
    if path.exists():
        return path
    text = str(path_or_id)
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise CheckpointError(f"checkpoint {text!r} does not exist (and is not a hub id of the form 'org/name')")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:
        raise CheckpointError(
            f"{text!r} is not a local path, and huggingface_hub is not installed to fetch it from the hub: "
            "pip install huggingface_hub, or pass a local checkpoint directory"
        ) from err
    try:
        directory = Path(snapshot_download(text, revision=revision, allow_patterns=HUB_PATTERNS))
        if not any((directory / name).is_file() for name in HF_WEIGHT_FILES + OPENCLIP_WEIGHT_FILES):
            # Only a pickle (.bin) ships the weights (many OpenCLIP repos): fetched second so that a repo with
            # both never costs the download of the same weights twice.
            directory = Path(snapshot_download(text, revision=revision, allow_patterns=HUB_PATTERNS + HUB_PICKLES))
        return directory
    except Exception as err:  # network, auth and not-found errors all come as different types
        raise CheckpointError(
            f"could not fetch {text!r} from the HuggingFace hub ({type(err).__name__}: {err}). Offline? Download "
            "the model elsewhere and pass its local directory (config.json + model.safetensors) instead"
        ) from err


def _find_weights(path: Path) -> tuple[Path, str]:
    if path.is_file():
        layout = "openclip" if path.name.startswith("open_clip") else "auto"
        return path, layout
    for name in HF_WEIGHT_FILES:
        if (path / name).is_file() and (path / "config.json").is_file():
            return path / name, "hf"
    for name in OPENCLIP_WEIGHT_FILES:
        if (path / name).is_file():
            return path / name, "openclip"
    raise CheckpointError(
        f"no CLIP weights in {path}: expected config.json with one of {HF_WEIGHT_FILES} (HuggingFace) "
        f"or one of {OPENCLIP_WEIGHT_FILES} (OpenCLIP)"
    )


def _read_tensors(file: Path) -> dict[str, np.ndarray]:
    if file.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="numpy") as f:
                return {k: f.get_tensor(k) for k in f.keys()}
        except (TypeError, ValueError) as err:  # bfloat16 has no numpy dtype
            if "bfloat16" not in str(err).lower() and "bf16" not in str(err).lower():
                raise CheckpointError(f"cannot read {file}: {err}") from err
            return _torch_load(file, safetensors=True)
        except Exception as err:  # safetensors raises its own SafetensorError for damaged files
            raise CheckpointError(f"cannot read {file}: {err}") from err
    return _torch_load(file, safetensors=False)


def _pickled_code(file: Path, err: Exception) -> str:
    """One line for a pickle that torch's weights-only loader refuses, instead of torch's 6-8 lines that end by
    suggesting weights_only=False: that would run whatever code the file holds, which clipedge never does."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    what = f" (it names {found.group(1)})" if found else ""
    return (f"{file} holds pickled code{what} that clipedge will not run, only plain tensors are read; convert the "
            "checkpoint to safetensors where you trust it (safetensors.torch.save_file(state_dict, ...))")


def _torch_load(file: Path, safetensors: bool) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:
        raise CheckpointError(
            f"{file.name} needs PyTorch to read ({'bfloat16 safetensors' if safetensors else 'a pickled .bin'}); "
            "pip install torch, or convert the checkpoint to float32 safetensors"
        ) from err
    try:
        if safetensors:
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            with warnings.catch_warnings():  # "Detected pickle protocol 4": two lines of advice to torch's users
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                state = torch.load(str(file), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(_pickled_code(file, err)) from err
    except Exception as err:
        raise CheckpointError(f"cannot read {file}: {err}") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # OpenCLIP training checkpoints nest the weights
    return {k: v.detach().float().numpy() for k, v in state.items() if hasattr(v, "detach")}


def openclip_to_hf(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename OpenCLIP (OpenAI) tensors to HF's, splitting fused q/k/v and transposing the projections
    (OpenCLIP computes x @ proj, HF x @ W.T)."""
    out: dict[str, np.ndarray] = {}
    unknown: list[str] = []
    for key, value in state.items():
        key = key.removeprefix("module.")
        if IGNORED_KEYS.search(key):
            continue
        if key.startswith("visual."):
            prefix, rest = "vision_model", key[len("visual."):]
        else:
            prefix, rest = "text_model", key
        m = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", rest)
        if m:
            layer = f"{prefix}.encoder.layers.{m.group(1)}"
            part = m.group(2)
            if part.startswith("attn.in_proj_"):
                kind = part.removeprefix("attn.in_proj_")  # weight [3D, D] or bias [3D]
                for name, chunk in zip(("q_proj", "k_proj", "v_proj"), np.split(value, 3, axis=0), strict=True):
                    out[f"{layer}.self_attn.{name}.{kind}"] = chunk
                continue
            renames = {"ln_1.": "layer_norm1.", "ln_2.": "layer_norm2.", "attn.out_proj.": "self_attn.out_proj.",
                       "mlp.c_fc.": "mlp.fc1.", "mlp.c_proj.": "mlp.fc2."}
            for old, new in renames.items():
                if part.startswith(old):
                    out[f"{layer}.{new}{part[len(old):]}"] = value
                    break
            else:
                unknown.append(key)
            continue
        simple = {
            "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
            "positional_embedding": "text_model.embeddings.position_embedding.weight",
            "ln_final.weight": "text_model.final_layer_norm.weight",
            "ln_final.bias": "text_model.final_layer_norm.bias",
            "logit_scale": "logit_scale",
            "visual.class_embedding": "vision_model.embeddings.class_embedding",
            "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
            "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
            "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
            "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
            "visual.ln_post.weight": "vision_model.post_layernorm.weight",
            "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        }
        if key in simple:
            out[simple[key]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.T
        elif key == "visual.proj":
            out["visual_projection.weight"] = value.T
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(
            f"OpenCLIP state dict has {len(unknown)} tensor(s) a CLIP ViT does not have, e.g. {unknown[:5]} "
            "(ResNet, SigLIP and custom text towers are not supported)"
        )
    return out


def _count_layers(state: dict[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


def config_from_openclip(hf_state: dict[str, np.ndarray], hidden_act: str,
                         model_cfg: dict | None = None) -> CLIPConfig:
    """Read the architecture from tensor shapes, as openai/CLIP's build_model does. Head counts cannot be seen
    in the shapes: they come from OpenCLIP's `model_cfg` (open_clip_config.json) when there is one, else from
    OpenCLIP's default head width of 64 (true for every released ViT)."""
    model_cfg = model_cfg or {}
    vision_cfg, text_cfg = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    try:
        patch = hf_state["vision_model.embeddings.patch_embedding.weight"]
        vpos = hf_state["vision_model.embeddings.position_embedding.weight"]
        v_fc1 = hf_state["vision_model.encoder.layers.0.mlp.fc1.weight"]
        tokens = hf_state["text_model.embeddings.token_embedding.weight"]
        tpos = hf_state["text_model.embeddings.position_embedding.weight"]
        t_fc1 = hf_state["text_model.encoder.layers.0.mlp.fc1.weight"]
        proj = hf_state["visual_projection.weight"]
    except KeyError as err:
        raise CheckpointError(f"OpenCLIP state dict is missing tensor {err.args[0]!r}") from err
    width, channels, patch_size = patch.shape[0], patch.shape[1], patch.shape[-1]
    grid = int(round((vpos.shape[0] - 1) ** 0.5))
    text_width = tokens.shape[1]
    return CLIPConfig(
        vision=CLIPImageConfig(
            image_size=grid * patch_size, patch_size=patch_size, num_channels=channels, hidden_size=width,
            intermediate_size=v_fc1.shape[0], num_hidden_layers=_count_layers(hf_state, "vision_model.encoder.layers"),
            num_attention_heads=max(1, width // int(vision_cfg.get("head_width", 64))),
            projection_dim=proj.shape[0], hidden_act=hidden_act),
        text=CLIPTextConfig(
            vocab_size=tokens.shape[0], hidden_size=text_width, intermediate_size=t_fc1.shape[0],
            num_hidden_layers=_count_layers(hf_state, "text_model.encoder.layers"),
            num_attention_heads=int(text_cfg.get("heads", max(1, text_width // 64))),
            max_position_embeddings=tpos.shape[0],
            projection_dim=proj.shape[0], hidden_act=hidden_act),
    )


def _openclip_model_cfg(directory: Path) -> dict | None:
    """The `model_cfg` of an OpenCLIP hub repo's open_clip_config.json, if there is one."""
    config_file = directory / "open_clip_config.json"
    if not config_file.is_file():
        return None
    try:
        return json.loads(config_file.read_text()).get("model_cfg", {})
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_file} is not valid JSON: {err}") from err


def _openclip_activation(model_cfg: dict | None, architecture: str | None, hidden_act: str | None) -> str:
    """OpenCLIP's own rule: models named '*-quickgelu' and OpenAI's ('ViT-B/32') use QuickGELU, the rest GELU."""
    if hidden_act:
        return hidden_act
    if model_cfg is not None:
        return "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"
    if architecture:
        return "quick_gelu" if ("quickgelu" in architecture.lower() or "/" in architecture) else "gelu"
    raise CheckpointError(
        "an OpenCLIP state dict does not say which activation it uses: pass architecture= (e.g. 'ViT-B-32' for "
        "LAION models, 'ViT-B-32-quickgelu' or 'ViT-B/32' for OpenAI weights) or hidden_act='gelu'|'quick_gelu'"
    )


def _check_against_preset(config: CLIPConfig, architecture: str) -> CLIPConfig:
    preset = CLIPConfig.preset(re.sub(r"-quickgelu$", "", architecture.strip(), flags=re.IGNORECASE))
    for tower, ours, expected in (("vision", config.vision, preset.vision), ("text", config.text, preset.text)):
        for field in ("hidden_size", "num_hidden_layers", "intermediate_size", "projection_dim"):
            if getattr(ours, field) != getattr(expected, field):
                raise CheckpointError(
                    f"checkpoint is not {architecture}: {tower} {field} is {getattr(ours, field)}, "
                    f"{architecture} has {getattr(expected, field)}"
                )
    # The preset fixes what shapes cannot show (head counts).
    return replace(config,
                   vision=replace(config.vision, num_attention_heads=preset.vision.num_attention_heads),
                   text=replace(config.text, num_attention_heads=preset.text.num_attention_heads))


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(path_or_id: str | Path, architecture: str | None = None, hidden_act: str | None = None,
                    revision: str | None = None) -> tuple[dict[str, np.ndarray], CheckpointInfo]:
    """Tensors (HF names, float32) and what they are, without building a model."""
    path = resolve_checkpoint(path_or_id, revision)
    weights, layout = _find_weights(path)
    raw = _read_tensors(weights)
    if layout == "auto":
        layout = "hf" if any(k.startswith(("text_model.", "vision_model.")) for k in raw) else "openclip"
    if layout == "hf":
        config_file = weights.parent / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"{weights} has HuggingFace tensor names but there is no config.json beside it")
        try:
            config = CLIPConfig.from_hf_config(json.loads(config_file.read_text()))
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{config_file} is not valid JSON: {err}") from err
        state = {k: v for k, v in raw.items() if not IGNORED_KEYS.search(k)}
        if architecture:
            config = _check_against_preset(config, architecture)
    else:
        state = openclip_to_hf(raw)
        model_cfg = _openclip_model_cfg(weights.parent)
        config = config_from_openclip(state, _openclip_activation(model_cfg, architecture, hidden_act), model_cfg)
        if architecture:
            config = _check_against_preset(config, architecture)
    if hidden_act and layout == "hf":
        config = replace(config, vision=replace(config.vision, hidden_act=hidden_act),
                         text=replace(config.text, hidden_act=hidden_act))
    state = {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}
    info = CheckpointInfo(source=str(path_or_id), weights_file=weights, sha256=_sha256(weights), layout=layout,
                          config=config)
    return state, info


_LAYOUTS = {
    "as_is": lambda a: a,
    "linear": lambda a: a.T,  # [out, in] -> [in, out]
    "conv": lambda a: a.transpose(2, 3, 1, 0),  # [D, C, p, p] -> [p, p, C, D]
}


def load_state_dict(model: CLIPEncoder, state: dict[str, np.ndarray]) -> None:
    """Assign HF-named tensors to the model, after checking all of them: nothing is assigned if any is wrong."""
    targets = model.variables_by_key()
    missing = sorted(set(targets) - set(state))
    unexpected = sorted(set(state) - set(targets))
    problems = []
    if missing:
        more = " ..." if len(missing) > 6 else ""
        problems.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:6])}{more}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected[:6])}"
                        f"{' ...' if len(unexpected) > 6 else ''}")
    converted: dict[str, np.ndarray] = {}
    for key, (variable, layout) in targets.items():
        if key not in state:
            continue
        value = _LAYOUTS[layout](np.asarray(state[key], dtype=np.float32))
        if tuple(value.shape) != tuple(variable.shape):
            problems.append(f"tensor {key!r} has shape {tuple(state[key].shape)}, the architecture needs "
                            f"{_checkpoint_shape(layout, tuple(variable.shape))}")
        elif not np.isfinite(value).all():
            problems.append(f"tensor {key!r} contains NaN or infinity")
        else:
            converted[key] = value
    if problems:
        raise CheckpointError("checkpoint does not fit the architecture: " + "; ".join(problems))
    for key, value in converted.items():
        targets[key][0].assign(value)


def _checkpoint_shape(layout: str, tf_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a checkpoint tensor must have to fill a variable of `tf_shape` (inverse of _LAYOUTS)."""
    if layout == "linear":
        return tf_shape[::-1]
    if layout == "conv":
        p, q, c, d = tf_shape
        return (d, c, p, q)
    return tf_shape


class CLIPModel:
    """Entry point named after the seed API: `CLIPModel.from_pretrained(...)` returns a loaded `CLIPEncoder`."""

    @staticmethod
    def from_pretrained(path_or_id: str | Path, architecture: str | None = None, hidden_act: str | None = None,
                        revision: str | None = None) -> CLIPEncoder:
        """Load a HuggingFace CLIP directory, an OpenCLIP state dict (file or directory) or a hub id.

        `architecture` names a preset ('ViT-B/32', 'ViT-B-16', 'ViT-L-14-336', '-quickgelu' variants) and is checked
        against the tensors; for OpenCLIP files it also says which activation the weights were trained with.
        The returned encoder carries `.checkpoint` (a `CheckpointInfo`)."""
        state, info = read_checkpoint(path_or_id, architecture, hidden_act, revision)
        model = CLIPEncoder(info.config)
        load_state_dict(model, state)
        model.checkpoint = info
        log.info("loaded %s (%s layout, %d tensors)", info.weights_file, info.layout, len(state))
        return model
