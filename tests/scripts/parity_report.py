"""Print the TF-vs-HF parity numbers the tests assert (max |diff| relative to the reference's max |value|), per case.

Usage: python tests/scripts/parity_report.py [--vit-b32]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.conftest import SMALL_TEXT, SMALL_VISION, make_hf_clip  # noqa: E402
from tests.export.test_model_parity import compare, hf_to_openclip  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vit-b32", action="store_true", help="also the full ViT-B/32 architecture (~1 min)")
    args = parser.parse_args()
    import numpy as np
    from safetensors.numpy import save_file

    from clipedge.export import CLIPModel
    from clipedge.export.model.config import PRESETS

    root = Path(tempfile.mkdtemp())
    results = {}
    hf, directory = make_hf_clip(root / "small")
    model = CLIPModel.from_pretrained(directory)
    results["small"] = compare(hf, model, 64)
    results["small, padding with EOT, lengths 0..75"] = compare(hf, model, 64, lengths=(0, 1, 7, 30, 74, 75),
                                                                 pad_id=49407)
    state = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items()}
    (root / "oc").mkdir()
    save_file({k: np.array(v, order="C") for k, v in hf_to_openclip(state).items()},
              str(root / "oc" / "open_clip_model.safetensors"))
    model_cfg = {"quick_gelu": True, "vision_cfg": {"width": 64, "head_width": 16}, "text_cfg": {"heads": 4}}
    (root / "oc" / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    results["OpenCLIP layout"] = compare(hf, CLIPModel.from_pretrained(root / "oc"), 64)
    gelu_text, gelu_vision = {**SMALL_TEXT, "hidden_act": "gelu"}, {**SMALL_VISION, "hidden_act": "gelu"}
    hf, directory = make_hf_clip(root / "gelu", text=gelu_text, vision=gelu_vision)
    results["gelu"] = compare(hf, CLIPModel.from_pretrained(directory), 64)
    if args.vit_b32:
        preset = PRESETS["vit-b-32"]
        text = {k: getattr(preset.text, k) for k in SMALL_TEXT}
        vision = {**{k: getattr(preset.vision, k) for k in SMALL_TEXT}, "image_size": 224, "patch_size": 32}
        hf, directory = make_hf_clip(root / "b32", text=text, vision=vision, projection_dim=512)
        results["ViT-B/32"] = compare(hf, CLIPModel.from_pretrained(directory, architecture="ViT-B/32"), 224)
    print(f"{'case':<42} {'image':>10} {'text':>10} {'logits':>10}")
    for case, diffs in results.items():
        print(f"{case:<42} {diffs['image']:>10.2e} {diffs['text']:>10.2e} {diffs['logits']:>10.2e}")


if __name__ == "__main__":
    main()
