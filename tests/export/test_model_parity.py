"""The TF CLIP against HF transformers' PyTorch CLIPModel (the reference), on checkpoints saved by HF itself.

Tolerance: max |diff| <= 1e-4 relative to the embedding's max |value|, float32 on both sides.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from clipedge.export import CLIPModel
from clipedge.export.model.text import CAUSAL_MASK_VALUE
from tests.conftest import SMALL_TEXT, SMALL_VISION, make_hf_clip, random_ids

RTOL = 1e-4


def rel_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def hf_features(model, pixel_values=None, input_ids=None) -> np.ndarray:
    with torch.no_grad():
        if pixel_values is not None:
            out = model.get_image_features(pixel_values=torch.from_numpy(pixel_values))
        else:
            out = model.get_text_features(input_ids=torch.from_numpy(input_ids))
    return getattr(out, "pooler_output", out).numpy()  # transformers 5 returns an output object


def compare(hf_model, tf_model, image_size: int, seed: int = 0, lengths=(3, 10, 0, 75), pad_id: int = 0):
    rng = np.random.default_rng(seed)
    pixels = rng.normal(size=(2, 3, image_size, image_size)).astype(np.float32)  # NCHW for torch
    ids = random_ids(rng, list(lengths), pad_id=pad_id)
    ref_img, ref_txt = hf_features(hf_model, pixel_values=pixels), hf_features(hf_model, input_ids=ids)
    ours_img = tf_model.encode_image(pixels.transpose(0, 2, 3, 1)).numpy()
    ours_txt = tf_model.encode_text(ids.astype(np.int32)).numpy()
    with torch.no_grad():
        ref_logits = hf_model(pixel_values=torch.from_numpy(pixels), input_ids=torch.from_numpy(ids)).logits_per_image
    ours_logits = tf_model(pixels.transpose(0, 2, 3, 1), ids.astype(np.int32))["logits_per_image"].numpy()
    return {
        "image": rel_diff(ours_img, ref_img),
        "text": rel_diff(ours_txt, ref_txt),
        "logits": rel_diff(ours_logits, ref_logits.numpy()),
    }


def test_small_config_matches_hf(small_hf_clip):
    hf_model, directory = small_hf_clip
    diffs = compare(hf_model, CLIPModel.from_pretrained(directory), image_size=64)
    assert max(diffs.values()) <= RTOL, diffs


def test_one_perturbed_weight_fails_parity(small_hf_clip):
    """The tolerance is tight enough to see a single wrong number, in either tower."""
    hf_model, directory = small_hf_clip
    for key in ("text_model.encoder.layers.1.mlp.fc2.weight", "vision_model.pre_layrnorm.bias"):
        model = CLIPModel.from_pretrained(directory)
        variable, _ = model.variables_by_key()[key]
        index = (0,) * len(variable.shape)
        variable.assign(tf_add_at(variable.numpy(), index, 0.05))
        diffs = compare(hf_model, model, image_size=64)
        tower = "text" if key.startswith("text") else "image"
        assert diffs[tower] > RTOL, (key, diffs)


def tf_add_at(array: np.ndarray, index: tuple[int, ...], delta: float) -> np.ndarray:
    array = array.copy()
    array[index] += delta
    return array


@pytest.mark.parametrize("pad_id", [0, 49407])
def test_padding_after_eot(small_hf_clip, pad_id):
    """Texts of every length up to the context, padded with 0 (OpenCLIP) or with EOT itself (HF's tokenizer):
    pooling must take the first EOT."""
    hf_model, directory = small_hf_clip
    diffs = compare(hf_model, CLIPModel.from_pretrained(directory), 64, lengths=(0, 1, 7, 30, 74, 75), pad_id=pad_id)
    assert max(diffs.values()) <= RTOL, diffs


def test_legacy_eos_token_id_uses_argmax(tmp_path):
    """Configs saved before HF PR #24773 say eos_token_id=2; HF then pools at the argmax id, and so must we."""
    hf_model, directory = make_hf_clip(tmp_path, text={**SMALL_TEXT, "eos_token_id": 2})
    model = CLIPModel.from_pretrained(directory)
    assert model.config.text.eos_token_id == 2
    assert max(compare(hf_model, model, 64, pad_id=49407).values()) <= RTOL


def test_gelu_checkpoint(tmp_path):
    text, vision = {**SMALL_TEXT, "hidden_act": "gelu"}, {**SMALL_VISION, "hidden_act": "gelu"}
    hf_model, directory = make_hf_clip(tmp_path, text=text, vision=vision)
    diffs = compare(hf_model, CLIPModel.from_pretrained(directory), 64)
    assert max(diffs.values()) <= RTOL, diffs


def hf_to_openclip(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """OpenCLIP's layout written from HF names, independently of clipedge's converter (fused in_proj,
    [in, out] projections, ln_1/ln_2/c_fc/c_proj)."""
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        tower = "visual." if key.startswith("vision_model.") else ""
        key = key.replace("vision_model.", "").replace("text_model.", "")
        if ".self_attn." in key and any(p in key for p in ("q_proj", "k_proj", "v_proj")):
            layer, rest = key.split(".self_attn.")
            kind = rest.split(".")[1]
            if rest.startswith("q_proj"):
                fused = np.concatenate([state[f"{'vision_model' if tower else 'text_model'}.{layer}.self_attn."
                                              f"{p}.{kind}"] for p in ("q_proj", "k_proj", "v_proj")])
                out[f"{tower}{layer.replace('encoder.layers', 'transformer.resblocks')}.attn.in_proj_{kind}"] = fused
            continue
        renames = [("encoder.layers", "transformer.resblocks"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                   ("self_attn.out_proj", "attn.out_proj"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
                   ("embeddings.token_embedding.weight", "token_embedding.weight"),
                   ("embeddings.position_embedding.weight", "positional_embedding"),
                   ("embeddings.class_embedding", "class_embedding"), ("embeddings.patch_embedding", "conv1"),
                   ("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post"), ("final_layer_norm", "ln_final")]
        for old, new in renames:
            key = key.replace(old, new)
        if key == "text_projection.weight":
            out["text_projection"] = value.T
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.T
        else:
            out[tower + key] = value
    return out


def test_openclip_layout_matches_hf(small_hf_clip, tmp_path):
    hf_model, _ = small_hf_clip
    state = {k: v.detach().numpy().copy() for k, v in hf_model.state_dict().items()}
    contiguous = {k: np.array(v, order="C") for k, v in hf_to_openclip(state).items()}  # save_file ignores strides
    save_file(contiguous, str(tmp_path / "open_clip_model.safetensors"))
    # As OpenCLIP hub repos ship it: the head counts and activation are not visible in tensor shapes.
    model_cfg = {"quick_gelu": True, "vision_cfg": {"width": 64, "head_width": 16}, "text_cfg": {"heads": 4}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    model = CLIPModel.from_pretrained(tmp_path)
    assert model.checkpoint.layout == "openclip"
    assert model.config.vision.image_size == 64 and model.config.text.num_hidden_layers == 2
    diffs = compare(hf_model, model, 64)
    assert max(diffs.values()) <= RTOL, diffs


def test_pytorch_bin_checkpoint(small_hf_clip, tmp_path):
    hf_model, directory = small_hf_clip
    (tmp_path / "config.json").write_text((directory / "config.json").read_text())
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    diffs = compare(hf_model, CLIPModel.from_pretrained(tmp_path), 64)
    assert max(diffs.values()) <= RTOL, diffs


def test_causal_mask_constant_changes_no_float_output(small_hf_clip):
    """The small mask constant (int8-friendly) against -1e9 on the same weights."""
    import clipedge.export.model.text as text_module

    _, directory = small_hf_clip
    model = CLIPModel.from_pretrained(directory)
    ids = random_ids(np.random.default_rng(3), [0, 5, 40, 75]).astype(np.int32)
    ours = model.encode_text(ids).numpy()
    original = text_module.CAUSAL_MASK_VALUE
    try:
        text_module.causal_mask.__defaults__ = (-1e9,)
        wide = model.encode_text(ids).numpy()
    finally:
        text_module.causal_mask.__defaults__ = (original,)
    assert CAUSAL_MASK_VALUE == original
    np.testing.assert_array_equal(ours, wide)


@pytest.mark.slow
@pytest.mark.slow
def test_vit_b32_matches_hf(tmp_path):
    """The full ViT-B/32 architecture (random weights) at 224 pixels."""
    from clipedge.export.model.config import PRESETS

    preset = PRESETS["vit-b-32"]
    text = {k: getattr(preset.text, k) for k in SMALL_TEXT}
    vision = {**{k: getattr(preset.vision, k) for k in SMALL_TEXT}, "image_size": 224, "patch_size": 32}
    hf_model, directory = make_hf_clip(tmp_path, text=text, vision=vision, projection_dim=512)
    model = CLIPModel.from_pretrained(directory, architecture="ViT-B/32")
    diffs = compare(hf_model, model, 224)
    assert max(diffs.values()) <= RTOL, diffs
