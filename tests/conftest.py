"""Shared fixtures: reference checkpoints built here from random-init HF `transformers.CLIPModel`s (no hub access).

Weights are re-drawn with a larger spread than HF's init (std 0.02, LayerNorm at exactly 1/0) so that every tensor,
including LayerNorm scales and biases, visibly moves the outputs: a parity test must fail if one weight is wrong.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
SMALL_VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    image_size=64, patch_size=16)


def randomize_(model, seed: int) -> None:
    """Re-draw every parameter in place: LayerNorm weights ~ 1 + N(0, 0.2), everything else ~ N(0, 0.05)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name == "logit_scale":
                param.fill_(2.6592)
            elif ("norm" in name or "layrnorm" in name) and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * noise)
            else:
                param.copy_(0.05 * noise)


def make_hf_clip(tmp_path: Path, text: dict | None = None, vision: dict | None = None, projection_dim: int = 32,
                 seed: int = 0, **top):
    """Save a randomized HF CLIPModel with `save_pretrained` and return (model, directory)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(text_config=text or SMALL_TEXT, vision_config=vision or SMALL_VISION,
                        projection_dim=projection_dim, **top)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    randomize_(model, seed)
    model.save_pretrained(tmp_path)
    return model, tmp_path


@pytest.fixture(scope="session")
def small_hf_clip(tmp_path_factory):
    return make_hf_clip(tmp_path_factory.mktemp("small_hf_clip"))


def random_ids(rng: np.random.Generator, lengths: list[int], context: int = 77, pad_id: int = 0,
               eot: int = 49407, sot: int = 49406) -> np.ndarray:
    """SOT, `n` random BPE ids, EOT, then padding: the layout a tokenizer produces."""
    ids = np.full((len(lengths), context), pad_id, dtype=np.int64)
    for row, n in enumerate(lengths):
        ids[row, 0] = sot
        ids[row, 1 : n + 1] = rng.integers(256, 49400, size=n)
        ids[row, n + 1] = eot
    return ids


@pytest.fixture(scope="session")
def small_bundle(request, tmp_path_factory):
    """The small reference checkpoint exported to fp32 and dynamic-int8, TFLite and ONNX (about 20 s); or, with
    $CLIPEDGE_TEST_BUNDLE, that bundle made beforehand (.ci/lowest-versions.sh: a runtime-only venv cannot export)."""
    if os.environ.get("CLIPEDGE_TEST_BUNDLE"):
        return Path(os.environ["CLIPEDGE_TEST_BUNDLE"])
    from clipedge.export.pipeline.export_bundle import export_bundle

    _, directory = request.getfixturevalue("small_hf_clip")
    out = tmp_path_factory.mktemp("bundles") / "small"
    export_bundle(out, checkpoint=directory, precisions=("fp32", "dynamic-int8"), progress=False)
    return out


# ---- docs/schema is a promise to apps in other languages: every bundle and index the tests write is held to it ----
SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schema"
DESCRIPTION_KEYS = ("producer", "tower", "precision", "embed_dim", "logit_scale", "source_sha256")


def schema_errors(data: object, schema_name: str) -> list[str]:
    """Where `data` breaks docs/schema/<schema_name> ([] when it matches), for assertion messages."""
    import json

    import jsonschema

    schema = json.loads((SCHEMAS / schema_name).read_text(encoding="utf-8"))
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:200]}" for e in errors]


def check_written_bundle(bundle: Path) -> None:
    """The manifest matches the schema, and every model file carries its own description (issue #20)."""
    import json

    from clipedge.export.pipeline.self_describe import read_description

    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    errors = schema_errors(manifest, "manifest.schema.json")
    assert not errors, f"{bundle}/manifest.json breaks docs/schema/manifest.schema.json: {errors[:5]}"
    for artifact in manifest["artifacts"]:
        facts = read_description((bundle / artifact["file"]).read_bytes())
        assert facts is not None, f"{artifact['file']} carries no clipedge metadata"
        missing = [key for key in DESCRIPTION_KEYS if key not in facts]
        assert not missing and facts["precision"] == artifact["precision"], (artifact["file"], missing)


@pytest.fixture(scope="session", autouse=True)
def _written_files_match_the_schemas():
    """Checked as each is written (BundleWriter.finish, EmbeddingIndex.save), so the failure is the test that wrote
    it; tests that damage a copy on purpose afterwards are not held to it."""
    from clipedge.export.pipeline.bundle_writer import BundleWriter
    from clipedge.runtime.index import EmbeddingIndex

    finish, save = BundleWriter.finish, EmbeddingIndex.save

    def checked_finish(self, fields):
        out = finish(self, fields)
        check_written_bundle(Path(out))
        return out

    def checked_save(self, directory):
        import json

        out = save(self, directory)
        meta = json.loads((Path(out) / "index.json").read_text(encoding="utf-8"))
        errors = schema_errors(meta, "index.schema.json")
        assert not errors, f"{out}/index.json breaks docs/schema/index.schema.json: {errors[:5]}"
        return out

    patch = pytest.MonkeyPatch()
    patch.setattr(BundleWriter, "finish", checked_finish)
    patch.setattr(EmbeddingIndex, "save", checked_save)
    yield
    patch.undo()


def missing_tool(reason: str) -> None:
    """Skip on a developer's machine; fail in CI (CI=true), where .ci/run must have installed every tool a test
    needs: a test that silently skips there proves nothing."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def node_major(node: str) -> int:
    """The major version of the Node.js at `node`, 0 when it does not answer."""
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=60).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0
