"""The fuzz cases of tests/runtime/test_fuzz.py, run in a process of their own so that a signal (a crash in native
code) ends this process, not pytest, and the last `case` line on stdout names the case that did it.

`python -m tests.runtime.fuzz_harness BUNDLE WORKDIR [SEED [SCALE]]`. Deterministic for a seed: every mutation comes
from one `random.Random(seed)`. Each case is hostile input (a mutated manifest, model file, index, image, or a random
text; issue #33's NaN weights, special files, full disks and non-UTF-8 names: fuzz_surfaces.py, fuzz_disk_full.py)
pushed through what a device does with it; it must end in a result or a ClipEdgeError. Anything else is
counted as unexpected, with its traceback, and the process exits 1. The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import io
import json
import logging
import math
import os
import random
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipedge.runtime.clip_runtime import load
from clipedge.runtime.errors import ClipEdgeError
from clipedge.runtime.index import EmbeddingIndex
from clipedge.runtime.preprocess import preprocess
from clipedge.runtime.tokenizer import Tokenizer
from tests.runtime.fuzz_disk_full import DiskFullCases
from tests.runtime.fuzz_surfaces import SURFACE_COUNTS, SurfaceCases

COUNTS = {"manifest-json": 160, "manifest-bytes": 60, "model-file": 36, "index": 160, "image": 320, "text": 400,
          **SURFACE_COUNTS}  # issue #33's surfaces last: the older kinds draw the same numbers as before
MODEL_FILES = ["image_fp32.tflite", "image_dynamic-int8.tflite", "text_gpu_fp32.tflite", "image_fp32.onnx",
               "image_dynamic-int8.onnx"]
PIXELS = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)


# ---- mutations -----------------------------------------------------------------------------------------------------
def mutate_bytes(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    out = bytearray(data)
    how = rng.choice(["flip", "set", "truncate", "zero", "insert", "delete", "copy"])
    if how == "flip" or not out:
        n = rng.randint(1, 40)
        for _ in range(n):
            if out:
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out), f"flip {n} bits"
    i = rng.randrange(len(out))
    j = min(len(out), i + rng.randint(1, 4096))
    if how == "set":
        out[i] = rng.randrange(256)
    elif how == "truncate":
        del out[i:]
    elif how == "zero":
        out[i:j] = bytes(j - i)
    elif how == "insert":
        out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif how == "delete":
        del out[i:j]
    else:
        k = rng.randrange(len(out))
        out[k : k + (j - i)] = out[i:j]
    return bytes(out), f"{how} at {i}..{j}"


def random_value(rng: random.Random, near: Any = None) -> Any:
    choices: list[Callable[[], Any]] = [
        lambda: None, lambda: True, lambda: False, lambda: 0, lambda: -1, lambda: 2**63, lambda: 1e308,
        lambda: float("nan"), lambda: float("inf"), lambda: -0.0, lambda: "", lambda: "x", lambda: "../x.tflite",
        lambda: "/etc/passwd", lambda: "image_fp32.tflite", lambda: "tokenizer", lambda: [], lambda: {},
        lambda: [1, 2], lambda: {"a": None}, lambda: "a" * 500, lambda: [[[]]], lambda: "NCHW", lambda: "int8",
        lambda: rng.randint(-(2**31), 2**31), lambda: rng.uniform(-10, 10),
    ]
    if near is not None:  # a plausible neighbour of the real value: the cases a schema most easily misses
        if isinstance(near, bool):
            choices.append(lambda: not near)
        elif isinstance(near, int):
            choices += [lambda: near + 1, lambda: -near, lambda: near * 1000, lambda: str(near)]
        elif isinstance(near, float):
            choices += [lambda: near * 1e6, lambda: -near, lambda: str(near)]
        elif isinstance(near, str):
            choices += [lambda: near + "x", lambda: near.upper(), lambda: near[:-1], lambda: [near]]
        elif isinstance(near, list) and near:
            choices += [lambda: near[:-1], lambda: near + near[:1], lambda: near[::-1]]
    return rng.choice(choices)()


def _slots(node: Any) -> list[tuple[Any, Any]]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((node, key))
            out += _slots(value)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append((node, i))
            out += _slots(value)
    return out


def mutate_json(rng: random.Random, data: Any) -> tuple[Any, str]:
    slots = _slots(data)
    if not slots or rng.random() < 0.04:
        return random_value(rng), "whole document replaced"
    changes = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        container, key = rng.choice(slots)
        try:
            old = container[key]
        except (KeyError, IndexError):
            continue
        op = rng.choice(["replace", "replace", "replace", "delete", "wrap"])
        if op == "delete":
            del container[key]
            slots = _slots(data)
        elif op == "wrap":
            container[key] = [old]
        else:
            container[key] = random_value(rng, old)
        changes.append(f"{op} [{key!r}]")
        if not slots:
            break
    return data, ", ".join(changes)


# ---- the cases -------------------------------------------------------------------------------------------------------
def say(how: str) -> None:
    print(f"  {how}", flush=True)


class Cases(SurfaceCases, DiskFullCases):
    def __init__(self, bundle: Path, work: Path, rng: random.Random) -> None:
        self.rng, self.work = rng, work
        self.bundle = work / "bundle"
        shutil.copytree(bundle, self.bundle)
        self.manifest_text = (self.bundle / "manifest.json").read_text()
        self.models = {name: (self.bundle / name).read_bytes() for name in MODEL_FILES}
        self.tokenizer = Tokenizer.default()
        self.runtime = load(self.bundle, precision="fp32", format="tflite")
        self.index_dir = work / "index-good"
        vectors = np.random.default_rng(1).normal(size=(6, 32)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        EmbeddingIndex([f"p{i}.jpg" for i in range(6)], vectors, {"sha256": "0" * 64, "name": "m",
                                                                  "format": "tflite", "precision": "fp32",
                                                                  "embed_dim": 32}).save(self.index_dir)
        self.images = seed_images()
        self.setup_surfaces()
        self.setup_disk_full()

    def _use_bundle(self, texts: bool = True) -> None:
        fmt = self.rng.choice([None, "tflite", "onnx"])
        runtime = load(self.bundle, format=fmt, precision=self.rng.choice([None, "fp32", "dynamic-int8"]))
        if texts:
            runtime.encode_texts(["a photo of a dog", ""])
        runtime.encode_images([PIXELS])
        runtime.classify([PIXELS], ["cat", "dog"])
        from clipedge.runtime.cli.commands import cmd_info

        with contextlib.redirect_stdout(io.StringIO()):
            try:
                cmd_info(argparse.Namespace(bundle=str(self.bundle), json=False, verify=True))
            except ClipEdgeError:
                pass

    def manifest_json(self) -> str:
        data, how = mutate_json(self.rng, json.loads(self.manifest_text))
        say(how)
        (self.bundle / "manifest.json").write_text(json.dumps(data))
        try:
            self._use_bundle()
        finally:
            (self.bundle / "manifest.json").write_text(self.manifest_text)

    def manifest_bytes(self) -> str:
        data, how = mutate_bytes(self.rng, self.manifest_text.encode())
        say(how)
        (self.bundle / "manifest.json").write_bytes(data)
        try:
            self._use_bundle()
        finally:
            (self.bundle / "manifest.json").write_text(self.manifest_text)

    def model_file(self) -> str:
        name = self.rng.choice(MODEL_FILES)
        data, how = mutate_bytes(self.rng, self.models[name])
        say(f"{name}: {how}")
        manifest = json.loads(self.manifest_text)
        for artifact in manifest["artifacts"]:
            if artifact["file"] == name:  # the sha256 recomputed: the integrity check passes, the bytes are hostile
                artifact.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
                fmt, precision, variant = artifact["format"], artifact["precision"], artifact.get("variant", "default")
        path = self.bundle / name
        path.unlink()
        path.write_bytes(data)
        (self.bundle / "manifest.json").write_text(json.dumps(manifest))
        try:
            runtime = load(self.bundle, format=fmt, precision=precision, variant=variant)
            if name.startswith("text"):
                runtime.encode_texts(["a photo of a dog"])
            else:
                runtime.encode_images([PIXELS, PIXELS[:, ::-1]])
        finally:
            path.unlink()
            path.write_bytes(self.models[name])
            (self.bundle / "manifest.json").write_text(self.manifest_text)

    def index(self) -> str:
        target = self.work / "index"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(self.index_dir, target)
        meta_path = target / "index.json"
        meta = json.loads(meta_path.read_text())
        choice = self.rng.random()
        if choice < 0.5:
            data, how = mutate_json(self.rng, meta)
            meta_path.write_text(json.dumps(data))
        elif choice < 0.75:
            data, how = mutate_bytes(self.rng, meta_path.read_bytes())
            meta_path.write_bytes(data)
        else:
            matrix = target / meta["embeddings"]["file"]
            data, how = mutate_bytes(self.rng, matrix.read_bytes())
            matrix.write_bytes(data)
            if self.rng.random() < 0.5:  # with a matching sha256: the checks after the hash must hold too
                meta["embeddings"]["sha256"] = hashlib.sha256(data).hexdigest()
                meta_path.write_text(json.dumps(meta))
                how += " (sha256 recomputed)"
        say(how)
        loaded = EmbeddingIndex.load(target)
        loaded.search_vector(np.random.default_rng(0).normal(size=loaded.embeddings.shape[1]), k=3)
        loaded.search(self.runtime, "a dog", k=2)

    def image(self) -> str:
        name, data = self.rng.choice(self.images)
        mutated, how = mutate_bytes(self.rng, data)
        say(f"{name}: {how}")
        preprocess(mutated)

    def text(self) -> str:
        texts = [random_text(self.rng) for _ in range(self.rng.randint(1, 4))]
        say(f"{len(texts)} texts, {sum(map(len, texts))} characters: {ascii(texts)[:200]}")
        self.tokenizer(texts, truncate=self.rng.random() < 0.8)
        self.tokenizer.encode(texts[0])
        if self.rng.random() < 0.1:
            self.runtime.encode_texts(texts)


def random_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.25:  # any code point, surrogates and controls included
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randint(0, 60)))
    if kind < 0.45:  # one long word
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyzé日") for _ in range(rng.randint(100, 6000)))
    if kind < 0.6:
        return rng.choice(["&amp;", "&#x1F600;", "&lt;b&gt;", "<start_of_text>", "<end_of_text>", "\x1b[31m", "ﬁ"]) * \
            rng.randint(1, 200)
    pieces = ["a", "photo", "of", "the", "dog", "!", "?", "123", " ", "\t", "\n", "ß", "İ", "🏳️‍🌈", "\u0301",
              "\u200d", "\ufeff", "\x00", "\udc80", "’"]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 300)))


def seed_images() -> list[tuple[str, bytes]]:
    """Small valid images in the formats and modes devices meet: the starting points of the image mutations."""
    rgb = Image.fromarray(PIXELS)
    out = []
    for fmt, image, kwargs in [
        ("PNG", rgb, {}), ("PNG", rgb.convert("RGBA"), {}), ("PNG", rgb.convert("P"), {}),
        ("PNG", Image.fromarray(PIXELS[..., 0].astype(np.uint16) * 257), {}), ("JPEG", rgb, {"quality": 80}),
        ("WEBP", rgb, {}), ("GIF", rgb, {}), ("BMP", rgb, {}), ("TIFF", rgb, {}), ("PNG", rgb.convert("L"), {}),
    ]:
        buf = io.BytesIO()
        if fmt == "JPEG":
            exif = Image.Exif()
            exif[0x0112] = 6  # rotated: the EXIF path is fuzzed too
            kwargs = {**kwargs, "exif": exif}
        image.save(buf, fmt, **kwargs)
        out.append((f"{fmt}/{image.mode}", buf.getvalue()))
    return out


def main(argv: list[str]) -> int:
    bundle, work = Path(argv[0]), Path(argv[1])
    seed = int(argv[2]) if len(argv) > 2 else 17
    scale = float(argv[3]) if len(argv) > 3 else 1.0  # more cases when hunting by hand; the test runs 1.0
    logging.disable(logging.CRITICAL)  # warnings about damaged inputs are expected by the thousand
    os.environ.setdefault("CLIPEDGE_PROBE_TIMEOUT", "30")
    cases = Cases(bundle, work, random.Random(seed))
    counts: dict[str, collections.Counter] = {kind: collections.Counter() for kind in COUNTS}
    unexpected: list[dict[str, Any]] = []
    start, number = time.perf_counter(), 0
    for kind, count in COUNTS.items():
        run = getattr(cases, kind.replace("-", "_"))
        for _ in range(max(1, round(count * scale))):
            number += 1
            print(f"case {number} {kind}", flush=True)  # the last one printed names a case that killed us
            try:
                counts[kind][run() or "result"] += 1  # a case may name its outcome (a CLI run's, say)
            except ClipEdgeError as err:
                counts[kind][type(err).__name__] += 1
            except Exception as err:  # the bug this test looks for
                counts[kind]["unexpected"] += 1
                unexpected.append({"case": number, "kind": kind, "error": f"{type(err).__name__}: {err}"[:300],
                                   "traceback": traceback.format_exc()[-1500:]})
    seconds = time.perf_counter() - start
    summary = {"cases": number, "seconds": round(seconds, 1), "seed": seed,
               "outcomes": {k: dict(v) for k, v in counts.items()}, "unexpected": unexpected[:20]}
    print(json.dumps(summary, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v)))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
