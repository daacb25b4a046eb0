"""The demo: generated data, the shipped checkpoint (read by clipedge and by transformers), its accuracy on the shipped
evaluation set, a training smoke run, and `clipedge demo train`'s argument errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipedge.export.demo import data as demo_data
from clipedge.export.demo.data import CLASSES, COLOURS, IMAGE_SIZE, SHAPES, class_prompts, make_sample, read_eval_set

EVAL_DIR = Path(__file__).resolve().parents[2] / "calibration_data" / "eval"
DRAWN_DIR = EVAL_DIR.parent / "drawn"  # the second renderer's drawings (calibration_data/make_drawn_eval.py)
# Top-1 floors of the shipped demo (docs/demo.md): held-out generated 91.2% of 1000, the second renderer's drawings
# 92.2% of 400 (TFLite dynamic-int8 92.2%, int8 91.8%), the 120-image eval set 85.0%. The first two floors are issue
# #19's 90% at float (9-12 images under what was measured), held for the quantized drawings too (the issue asks 87%
# there); the eval set's is 3 images under.
HELD_OUT_FLOOR, DRAWN_FLOOR, EVAL_SET_FLOOR = 0.90, 0.90, 0.825
CHECKPOINT = Path(__file__).resolve().parents[2] / "export" / "demo" / "demo_checkpoint"


# ---- generator --------------------------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_image():
    a, b = make_sample(3, 17), make_sample(3, 17)
    assert a.image.tobytes() == b.image.tobytes()
    assert (a.caption, a.label, a.background) == (b.caption, b.label, b.background)
    assert make_sample(4, 17).image.tobytes() != a.image.tobytes()
    assert make_sample(3, 18).image.tobytes() != a.image.tobytes()
    # streams keep training and evaluation apart for the same seed and index
    assert make_sample(3, 17, demo_data.EVAL_STREAM).image.tobytes() != a.image.tobytes()


def test_generator_varies_and_labels_are_true():
    samples = [make_sample(0, i) for i in range(120)]
    assert {s.background for s in samples} == set(demo_data.BACKGROUNDS)
    assert {s.colour for s in samples} == set(COLOURS)
    assert {s.shape for s in samples} == set(SHAPES)
    assert len({s.label for s in samples}) >= 35
    assert len({s.caption for s in samples}) >= 80
    # sizes span the 10%..80% of the width the model card promises (diameter = 2 * radius)
    diameters = 2 * np.asarray([s.radius for s in samples])
    low, high = demo_data.SIZE_RANGE
    assert ((diameters >= low) & (diameters <= high)).all() and diameters.min() < low + 0.02
    assert diameters.max() > high - 0.02
    assert 0.25 <= np.mean([not s.filled for s in samples]) <= 0.55  # OUTLINE_SHARE of outlines
    # anywhere in the frame, across patch borders, yet always whole: nothing painted on the image's edge
    patch = demo_data.IMAGE_SIZE / 8
    assert len({int(s.center[0] // patch) for s in samples}) >= 6
    assert len({int(s.center[1] // patch) for s in samples}) >= 6
    offsets = np.asarray([s.center[0] / patch % 1 for s in samples])
    assert np.histogram(offsets, bins=4, range=(0, 1))[0].min() >= 15
    for s in samples:
        assert s.image.size == (demo_data.IMAGE_SIZE,) * 2 and s.image.mode == "RGB"
        assert s.colour in s.caption and s.shape in s.caption
        mask = np.asarray(s.mask)
        assert max(mask[0].max(), mask[-1].max(), mask[:, 0].max(), mask[:, -1].max()) == 0, s.label
        assert len(s.vertices) == {"circle": 0, "square": 4, "triangle": 3, "star": 10, "cross": 12}[s.shape]
        if not s.filled or s.radius < 0.1:
            continue
        # the centre of a filled shape is inside it: its pixel is nearest one of its colour's shades
        x, y = (int(round(v)) for v in s.center)
        pixel = np.asarray(s.image, np.float32)[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(0)
        nearest = min(demo_data.SHADES, key=lambda name: min(
            np.linalg.norm(pixel - np.asarray(rgb)) for rgb in demo_data.SHADES[name]))
        assert nearest == s.colour, (s.label, pixel)


def test_zero_shot_prompts_cover_the_40_classes():
    prompts = class_prompts()
    assert len(prompts) == len(CLASSES) == 40 == len(set(prompts))
    assert prompts[0] == "a photo of a red circle."


def test_training_pixels_are_what_runtime_preprocess_gives():
    """What training feeds is what the runtime makes of the image under the shipped preprocessor_config.json."""
    from clipedge.export.checkpoint.files import preprocess_config
    from clipedge.export.towers import normalize_uint8
    from clipedge.runtime.preprocess import preprocess

    image = make_sample(0, 5).image
    ours = normalize_uint8(np.asarray(image)[None]).numpy()
    config = preprocess_config(CHECKPOINT, demo_data.IMAGE_SIZE)
    np.testing.assert_allclose(ours, preprocess(image, config, layout="NHWC"), atol=1e-6)


# ---- the shipped evaluation set and checkpoint ---------------------------------------------------------------------
def test_shipped_eval_set_has_every_class():
    files, labels = read_eval_set(EVAL_DIR)
    assert sorted(set(labels)) == list(range(40))
    assert len(files) == 120 and np.bincount(labels).tolist() == [3] * 40
    for (colour, shape), folder in zip(CLASSES, sorted({f.parent.name for f in files}, key=lambda n: (
            list(COLOURS).index(n.split("_")[0]), SHAPES.index(n.split("_")[1]))), strict=True):
        assert folder == f"{colour}_{shape}"


def test_shipped_eval_set_is_what_its_command_writes(tmp_path):
    demo_data.write_eval_set(tmp_path, per_class=3)  # image indices depend on per_class
    for folder in ("red_circle", "black_cross"):
        assert (tmp_path / folder / "00.jpg").read_bytes() == (EVAL_DIR / folder / "00.jpg").read_bytes()


def test_shipped_checkpoint_is_small_and_complete():
    names = {p.name for p in CHECKPOINT.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt", "preprocessor_config.json",
            "tokenizer_config.json", "MODEL_CARD.md"} <= names
    assert sum(p.stat().st_size for p in CHECKPOINT.iterdir()) <= 15e6


@pytest.fixture(scope="module")
def shipped_model():
    from clipedge.export import CLIPModel
    from clipedge.export.pipeline.export_bundle import default_checkpoint

    assert default_checkpoint().resolve() == CHECKPOINT.resolve()
    return CLIPModel.from_pretrained(CHECKPOINT)


def test_shipped_checkpoint_matches_transformers(shipped_model):
    import torch
    import transformers

    from clipedge.runtime.preprocess import preprocess
    from clipedge.runtime.tokenizer import Tokenizer

    hf = transformers.CLIPModel.from_pretrained(CHECKPOINT).eval()  # dtype "auto": config.json says float32
    assert hf.text_model.embeddings.token_embedding.weight.dtype == torch.float32
    from clipedge.export.checkpoint.files import preprocess_config

    files, _ = read_eval_set(DRAWN_DIR)  # 128-224 px: the resize to the checkpoint's 112 is part of what is compared
    files = files[::50]
    config = preprocess_config(CHECKPOINT, demo_data.IMAGE_SIZE)
    prompts = class_prompts()[::7]
    ids = Tokenizer.default()(prompts)
    # transformers' tokenizer reads the shipped vocab.json/merges.txt and agrees on these plain prompts
    hf_ids = transformers.CLIPTokenizer.from_pretrained(CHECKPOINT)(prompts, padding="max_length", max_length=77)
    for ours, theirs in zip(ids, hf_ids["input_ids"], strict=True):
        n = int(np.argmax(ours == 49407)) + 1
        assert ours[:n].tolist() == theirs[:n]
    with torch.no_grad():
        hf_image = hf.get_image_features(pixel_values=torch.from_numpy(preprocess(files, config, layout="NCHW")))
        hf_text = hf.get_text_features(input_ids=torch.from_numpy(ids.astype(np.int64)))
    hf_image = getattr(hf_image, "pooler_output", hf_image).numpy()  # transformers 5 may return an output object
    hf_text = getattr(hf_text, "pooler_output", hf_text).numpy()
    image = shipped_model.encode_image(preprocess(files, config, layout="NHWC")).numpy()
    text = shipped_model.encode_text(ids).numpy()
    for ours, theirs in ((image, hf_image), (text, hf_text)):
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max()
    assert float(hf.logit_scale) == pytest.approx(float(shipped_model.logit_scale.numpy()), abs=1e-6)


@pytest.mark.slow
def test_shipped_checkpoint_zero_shot_on_held_out_images(shipped_model):
    """The float model's top-1 over the 40 classes on the model card's 1000 held-out generated images, the second
    renderer's 400 drawings (one image is 0.25 points) and the shipped 120-image eval set (0.8 points)."""
    from clipedge.export.demo.train import held_out_samples, zero_shot_accuracy

    images, labels = held_out_samples(1000, seed=0)
    assert zero_shot_accuracy(shipped_model, images, labels) >= HELD_OUT_FLOOR
    files, labels = read_eval_set(DRAWN_DIR)
    assert zero_shot_accuracy(shipped_model, files, labels) >= DRAWN_FLOOR
    files, labels = read_eval_set(EVAL_DIR)
    assert zero_shot_accuracy(shipped_model, files, labels) >= EVAL_SET_FLOOR


@pytest.mark.slow
def test_runtime_quantized_tflite_on_the_second_renderers_drawings(shipped_model, tmp_path):
    """The export + runtime path on the drawings export never calibrates on: fp32 TFLite gives the TF model's own
    top-1 on every image, and dynamic-int8 and full int8 keep the float model's floor."""
    from clipedge.export.demo.train import predict_classes
    from clipedge.export.pipeline.export_bundle import export_bundle
    from clipedge.runtime import load

    export_bundle(tmp_path / "demo", formats=["tflite"], precisions=["fp32", "dynamic-int8", "int8"], gpu=False,
                  progress=False)
    files, labels = read_eval_set(DRAWN_DIR)
    reference = predict_classes(shipped_model, files)
    for precision in ("fp32", "dynamic-int8", "int8"):
        runtime = load(tmp_path / "demo", precision=precision, format="tflite")
        ours = np.argmax(runtime.encode_images(files) @ runtime.encode_texts(class_prompts()).T, axis=1)
        if precision == "fp32":
            assert (ours == reference).all(), np.flatnonzero(ours != reference)
        assert (ours == np.asarray(labels)).mean() >= DRAWN_FLOOR, precision


def test_shipped_tokenizer_files_give_the_default_ids():
    from clipedge.runtime.tokenizer import Tokenizer

    texts = class_prompts() + ["a small blue star on a noisy background", "Café &amp; 東京"]
    np.testing.assert_array_equal(Tokenizer.from_files(CHECKPOINT)(texts), Tokenizer.default()(texts))


# ---- training -----------------------------------------------------------------------------------------------------
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, projection_dim=16)


def tiny_config():
    from clipedge.export.model.config import CLIPConfig, CLIPImageConfig, CLIPTextConfig

    return CLIPConfig(vision=CLIPImageConfig(image_size=IMAGE_SIZE, patch_size=28, **TINY),
                      text=CLIPTextConfig(**TINY))


def test_hf_state_dict_round_trips_exactly(tmp_path):
    from clipedge.export import CLIPModel
    from clipedge.export.demo.train import save_checkpoint
    from clipedge.export.model.clip import CLIPEncoder

    model = CLIPEncoder(tiny_config(), seed=5)
    model.logit_scale.assign(3.25)
    save_checkpoint(model, tmp_path, dtype="float32")
    loaded = CLIPModel.from_pretrained(tmp_path)
    theirs = loaded.variables_by_key()
    for key, (variable, _) in model.variables_by_key().items():
        np.testing.assert_array_equal(theirs[key][0].numpy(), variable.numpy(), err_msg=key)


def test_mimetic_init_makes_fresh_heads_attend_to_neighbouring_patches():
    """On a blank image the patch tokens differ only by position; mimetic init (with the sine-cosine positions)
    should then start each head of layer 1 looking at nearby patches, the prior the init is there for. OpenAI's init
    alone spreads attention almost evenly."""
    import tensorflow as tf

    from clipedge.export.demo.init import mimetic_init_, openai_init_
    from clipedge.export.demo.train import DEMO_CONFIG
    from clipedge.export.model.clip import CLIPEncoder

    def near_over_far(mimetic: bool) -> float:
        model = CLIPEncoder(DEMO_CONFIG, seed=0)
        openai_init_(model, 0)
        if mimetic:
            mimetic_init_(model, 0)
        vision = model.vision_model
        x = vision.embed(tf.zeros([1, IMAGE_SIZE, IMAGE_SIZE, 3]))
        attention = vision.encoder.layers[0].self_attn
        h = vision.encoder.layers[0].layer_norm1(x)
        q = attention._split_heads(attention.q_proj(h) * attention.scale, x.shape[1])
        k = attention._split_heads(attention.k_proj(h), x.shape[1])
        weights = tf.nn.softmax(tf.matmul(q, k, transpose_b=True), axis=-1).numpy()[0, :, 1:, 1:]  # H N N
        grid = DEMO_CONFIG.vision.image_size // DEMO_CONFIG.vision.patch_size
        yx = np.stack(np.divmod(np.arange(grid * grid), grid), axis=1)
        distance = np.abs(yx[:, None] - yx[None]).max(axis=-1)  # Chebyshev distance between patches
        near, far = (distance == 1), (distance >= 3)
        return float((weights * near).sum(-1).mean() / near.sum(-1).mean()
                     / ((weights * far).sum(-1).mean() / far.sum(-1).mean()))

    assert near_over_far(mimetic=True) > 3.0
    assert near_over_far(mimetic=False) < 1.5


def test_attention_loss_is_cross_entropy_from_coverage_to_class_token_attention():
    """Against the same quantity written out in numpy from the layer's weights: softmax over the patches of the
    class token's scores, per head, and the cross-entropy from the normalized coverage, averaged."""
    import tensorflow as tf

    from clipedge.export.demo.train import _attention_loss
    from clipedge.export.model.clip import CLIPEncoder

    model = CLIPEncoder(tiny_config(), seed=3)
    block = model.vision_model.encoder.layers[0]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 17, 32)).astype(np.float32)
    coverage = rng.random((2, 16)).astype(np.float32) * (rng.random((2, 16)) < 0.4)
    ours = float(_attention_loss(block, tf.constant(x), tf.constant(coverage)))

    h = block.layer_norm1(tf.constant(x)).numpy()
    attention = block.self_attn
    q = (h[:, 0] @ attention.q_proj.weight.numpy() + attention.q_proj.bias.numpy()).reshape(2, 2, 16) / 4.0
    k = (h[:, 1:] @ attention.k_proj.weight.numpy() + attention.k_proj.bias.numpy()).reshape(2, 16, 2, 16)
    scores = np.einsum("bhd,bnhd->bhn", q, k)
    log_weights = scores - np.log(np.exp(scores - scores.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - scores.max(-1, keepdims=True)
    target = coverage / coverage.sum(1, keepdims=True)
    theirs = -np.mean(np.sum(target[:, None] * log_weights, axis=-1))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_keep_tokens_keeps_the_outline_then_the_covered_patches_then_background():
    import tensorflow as tf

    from clipedge.export.demo.train import _keep_tokens

    rng = np.random.default_rng(1)
    b, n, d, parts = 3, 16, 4, 2
    x = rng.normal(size=(b, 1 + n, d)).astype(np.float32)
    maps = np.zeros((b, n, 1 + parts), np.float32)
    maps[:, [2, 9], 1] = 1  # outline patches (coverage may be 0 on an outline's corner patch)
    maps[:, [4, 5, 6], 0] = 0.5  # covered
    maps[:, 7, 0] = 0.01  # under TOKEN_COVERAGE: background
    for keep, expected_in in ((2, [2, 9]), (5, [2, 4, 5, 6, 9])):
        kept, kept_maps = _keep_tokens(tf.constant(x), tf.constant(maps), keep, tf.random.Generator.from_seed(0))
        assert kept.shape == (b, 1 + keep, d)
        np.testing.assert_array_equal(kept[:, 0], x[:, 0])  # the class token always runs
        for i in range(b):
            rows = [int(np.flatnonzero((x[i, 1:] == row).all(-1))[0]) for row in kept[i, 1:].numpy()]
            assert rows == expected_in  # in patch order, the maps with them
            np.testing.assert_array_equal(kept_maps[i], maps[i, rows])
    kept, _ = _keep_tokens(tf.constant(x), tf.constant(maps), 9, tf.random.Generator.from_seed(0))
    backgrounds = {tuple(sorted(set(np.flatnonzero(np.isin(x[i, 1:, 0], kept[i, 1:, 0]))) - {2, 4, 5, 6, 9}))
                   for i in range(b)}
    assert all(len(rows) == 4 for rows in backgrounds) and len(backgrounds) > 1  # random background, per image


@pytest.mark.parametrize("settings, message", [
    (dict(attention_loss_weight=-1.0), "attention_loss_weight must be a number >= 0, got -1.0"),
    (dict(token_loss_weight=float("nan")), "token_loss_weight must be a number >= 0, got nan"),
    (dict(mimetic_init=1), "mimetic_init must be True or False, got 1"),
])
def test_train_settings_refuse_bad_loss_weights_and_init(settings, message):
    from clipedge.export.demo.train import TrainSettings
    from clipedge.runtime.errors import InputError

    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        TrainSettings(**settings)


@pytest.mark.slow
def test_training_smoke_writes_a_loadable_checkpoint_and_learns(tmp_path):
    from clipedge.export import CLIPModel
    from clipedge.export.demo.train import TrainSettings, train

    settings = TrainSettings(steps=40, batch_size=16, pool_size=48, learning_rate=3e-3, warmup_steps=5,
                             eval_images=8, keep_tokens=8, full_token_steps=10)  # 8 of 16 patches, then all
    result = train(tmp_path / "ckpt", settings, tiny_config(), progress=False, workers=1, eval_dir=None)
    losses = np.asarray(result.losses)
    assert len(losses) == 40 and np.isfinite(losses).all()
    assert losses[-8:].mean() < losses[:8].mean() - 0.2
    model = CLIPModel.from_pretrained(result.checkpoint)
    assert model.config.vision.hidden_size == 32
    log = json.loads((result.checkpoint / "training_log.json").read_text())
    assert log["settings"]["steps"] == 40 and 0 <= log["zero_shot_top1"]["held_out_generated"] <= 1
    card = " ".join((result.checkpoint / "MODEL_CARD.md").read_text().split())
    assert "clipedge demo train" in card and "all but the last 10 steps ran 8 patch tokens" in card
    assert not (tmp_path / "ckpt.tmp").exists()


# ---- CLI ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps: must be a positive integer, got '0'"),
    (["--steps", "ten"], "--steps: must be a positive integer, got 'ten'"),
    (["--seed", "-1"], "--seed: must be an integer >= 0, got '-1'"),
])
def test_demo_train_bad_arguments(tmp_path, capsys, argv, message):
    from clipedge.runtime.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "train", "--out", str(tmp_path / "x"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_demo_train_needs_out(capsys):
    from clipedge.runtime.cli.main import main

    with pytest.raises(SystemExit):
        main(["demo", "train"])
    assert "--out" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_train_refuses_a_non_empty_directory(tmp_path):
    import subprocess
    import sys

    def demo_train(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "clipedge.runtime.cli", "demo", "train", "--out", str(tmp_path),
                               *extra], capture_output=True, text=True, timeout=300)

    (tmp_path / "notes.txt").write_text("mine")
    result = demo_train()
    assert result.returncode == 2 and "is not empty; pass --force" in result.stderr
    result = demo_train("--force")
    assert result.returncode == 2 and "holds no config.json" in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"
