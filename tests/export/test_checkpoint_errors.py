"""Bad checkpoints fail with one CheckpointError that names the problem; nothing half-loaded comes back."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from clipedge.export import CLIPConfig, CLIPModel
from clipedge.runtime.errors import CheckpointError, ClipEdgeError


def copy_checkpoint(src, dst, edit=None):
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    state = load_file(str(src / "model.safetensors"))
    if edit:
        edit(state)
    save_file(state, str(dst / "model.safetensors"))
    return dst


def test_missing_tensor_is_named(small_hf_clip, tmp_path):
    _, src = small_hf_clip
    bad = copy_checkpoint(src, tmp_path / "bad", lambda s: s.pop("text_model.encoder.layers.1.mlp.fc1.bias"))
    with pytest.raises(CheckpointError, match=r"missing 1 tensor.*text_model\.encoder\.layers\.1\.mlp\.fc1\.bias"):
        CLIPModel.from_pretrained(bad)


def test_shape_mismatch_is_named(small_hf_clip, tmp_path):
    _, src = small_hf_clip

    def shrink(state):
        state["vision_model.encoder.layers.0.self_attn.k_proj.weight"] = np.zeros((64, 32), np.float32)

    bad = copy_checkpoint(src, tmp_path / "bad", shrink)
    with pytest.raises(CheckpointError, match=r"k_proj\.weight' has shape \(64, 32\).*needs \(64, 64\)"):
        CLIPModel.from_pretrained(bad)


def test_unexpected_tensor_is_named(small_hf_clip, tmp_path):
    _, src = small_hf_clip
    bad = copy_checkpoint(src, tmp_path / "bad", lambda s: s.update({"vision_model.extra.weight": np.zeros(3)}))
    with pytest.raises(CheckpointError, match=r"unexpected 1 tensor.*vision_model\.extra\.weight"):
        CLIPModel.from_pretrained(bad)


def test_nan_weights_are_refused(small_hf_clip, tmp_path):
    _, src = small_hf_clip

    def poison(state):
        state["logit_scale"] = np.array(np.nan, np.float32)

    with pytest.raises(CheckpointError, match="logit_scale.*NaN"):
        CLIPModel.from_pretrained(copy_checkpoint(src, tmp_path / "bad", poison))


def test_architecture_mismatch_and_unknown_preset(small_hf_clip):
    _, src = small_hf_clip
    with pytest.raises(CheckpointError, match="not ViT-B/32: vision hidden_size is 64, ViT-B/32 has 768"):
        CLIPModel.from_pretrained(src, architecture="ViT-B/32")
    with pytest.raises(CheckpointError, match="unknown architecture 'ViT-Q/99'"):
        CLIPModel.from_pretrained(src, architecture="ViT-Q/99")


def test_unsupported_activation(small_hf_clip, tmp_path):
    _, src = small_hf_clip
    dst = copy_checkpoint(src, tmp_path / "relu")
    config = json.loads((dst / "config.json").read_text())
    config["vision_config"]["hidden_act"] = "swiglu"
    (dst / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="hidden_act=.swiglu."):
        CLIPModel.from_pretrained(dst)


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        CLIPModel.from_pretrained(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no CLIP weights"):
        CLIPModel.from_pretrained(tmp_path)


def test_damaged_weights_file(small_hf_clip, tmp_path):
    _, src = small_hf_clip
    dst = copy_checkpoint(src, tmp_path / "damaged")
    data = (dst / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read"):
        CLIPModel.from_pretrained(dst)


def test_hub_id_offline_says_to_pass_a_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="pass its local directory"):
        CLIPModel.from_pretrained("openai/clip-vit-base-patch32-not-cached")


def test_openclip_without_activation_asks_for_architecture(small_hf_clip, tmp_path):
    from tests.export.test_model_parity import hf_to_openclip

    hf_model, _ = small_hf_clip
    state = {k: np.array(v.detach().numpy(), order="C") for k, v in hf_model.state_dict().items()}
    save_file({k: np.array(v, order="C") for k, v in hf_to_openclip(state).items()},
              str(tmp_path / "open_clip_model.safetensors"))
    with pytest.raises(CheckpointError, match="pass architecture="):
        CLIPModel.from_pretrained(tmp_path)


def test_errors_are_one_family():
    assert issubclass(CheckpointError, ClipEdgeError)


def test_presets_and_hf_config_round_trip():
    for name in ("ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14-336", "vit_b_32"):
        config = CLIPConfig.preset(name)
        assert CLIPConfig.from_hf_config(config.to_hf_config()) == config
    assert CLIPConfig.preset("ViT-L/14-336").vision.image_size == 336


def test_loaded_model_reads_back_in_transformers(tmp_path):
    """A config.json written by clipedge is one transformers reads (used by the demo checkpoint)."""
    from transformers import CLIPConfig as HFConfig

    config = CLIPConfig.preset("ViT-B/16")
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf_config()))
    hf = HFConfig.from_pretrained(tmp_path)
    assert hf.vision_config.patch_size == 16 and hf.text_config.hidden_size == 512 and hf.projection_dim == 512


class _NotATensor:
    """Pickled by reference (module + name): torch's weights-only loader refuses to import it; nothing runs."""


@pytest.mark.slow
def test_pickled_code_is_one_line_without_torch_advice(tmp_path):
    import subprocess
    import sys

    import torch

    checkpoint = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"weight": torch.zeros(2), "extra": _NotATensor()}, checkpoint)
    result = subprocess.run([sys.executable, "-m", "clipedge", "export", "--checkpoint", str(checkpoint),
                             "--out", str(tmp_path / "bundle")], capture_output=True, text=True, timeout=120,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("clipedge: error: "), result.stderr
    assert "weights_only" not in result.stderr and "pickled code" in result.stderr
    assert "safetensors" in result.stderr and "_NotATensor" in result.stderr
    assert not (tmp_path / "bundle").exists()
