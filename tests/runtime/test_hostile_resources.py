"""Hostile use of resources (issue #33): special files given as images, thread counts past the cores, a 10 MB word,
a terminal that cannot print a label."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipedge.runtime.backends.open import check_threads
from clipedge.runtime.bench import usable_cores
from clipedge.runtime.datasets import list_images
from clipedge.runtime.errors import ImageError, InputError
from clipedge.runtime.preprocess import load_image, preprocess
from clipedge.runtime.tokenizer import Tokenizer


def clipedge(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipedge", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def photo(path: Path) -> Path:
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(path)
    return path


# ---- 4. a FIFO, /dev/zero, /dev/stdin as images -------------------------------------------------------------------
@pytest.fixture
def fifo(tmp_path):
    """A FIFO named x.jpg. Should a reader open it after all (the bug), a writer comes after 10 s and closes it at
    once, so the test fails instead of hanging."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    path = tmp_path / "x.jpg"
    os.mkfifo(path)
    done = threading.Event()

    def unblock() -> None:
        while not done.wait(10):
            with contextlib.suppress(OSError):  # ENXIO: no reader is waiting, which is right
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    threading.Thread(target=unblock, daemon=True).start()
    yield path
    done.set()


@pytest.mark.parametrize("decode", ["fast", "exact"])
def test_special_files_are_refused_before_opening(fifo, decode):
    for source, kind in [(fifo, "FIFO"), ("/dev/zero", "character device")]:
        if not os.path.exists(source):
            continue
        with pytest.raises(ImageError, match=f"{kind}.*not an image file"):
            preprocess([str(source)], decode=decode)  # opening the FIFO would wait for a writer forever
    with pytest.raises(ImageError, match="FIFO"):
        load_image(fifo)


def test_directories_do_not_list_special_files(fifo):
    good = photo(fifo.parent / "good.png")
    (fifo.parent / "zero.jpg").symlink_to("/dev/zero")
    assert list_images(fifo.parent) == [good]


@pytest.mark.slow
def test_cli_skips_or_stops_on_a_fifo(small_bundle, fifo):
    good = photo(fifo.parent / "good.png")
    skip = clipedge("classify", str(fifo), str(good), "--labels", "red,blue", "--bundle", str(small_bundle),
                    "--on-error", "skip", "--json")
    assert skip.returncode == 0, skip.stderr
    assert "x.jpg" in skip.stdout + skip.stderr and "good.png" in skip.stdout
    stop = clipedge("classify", str(fifo), str(good), "--labels", "red,blue", "--bundle", str(small_bundle),
                    "--on-error", "stop")
    assert stop.returncode == 2
    assert stop.stderr.count("\n") == 1 and stop.stderr.startswith("clipedge: error: ") and "x.jpg" in stop.stderr
    zero = clipedge("classify", "/dev/zero", "--labels", "red,blue", "--bundle", str(small_bundle))
    assert zero.returncode == 2 and zero.stderr.count("\n") == 1 and "/dev/zero" in zero.stderr


# ---- 5. --threads past the usable cores ---------------------------------------------------------------------------
def test_thread_counts_are_held_to_the_usable_cores():
    cores = usable_cores()
    assert check_threads(None) is None and check_threads(1) == 1 and check_threads(cores) == cores
    for bad in (cores + 1, 10_000, 0, -1, True, 2.0):
        with pytest.raises(InputError, match="threads="):
            check_threads(bad)
    with pytest.raises(InputError, match=f"use {cores} core.*give 1..{cores}"):
        check_threads(10_000)


@pytest.mark.slow
def test_api_and_cli_refuse_too_many_threads(small_bundle, tmp_path):
    import clipedge.runtime as runtime

    with pytest.raises(InputError, match="threads=10000"):
        runtime.load(small_bundle, format="onnx", threads=10_000)
    assert runtime.load(small_bundle, format="onnx", threads=1).encode_texts(["a cat"]).shape[0] == 1
    image = str(photo(tmp_path / "a.png"))
    start = time.monotonic()
    result = clipedge("embed", image, "--bundle", str(small_bundle), "--format", "onnx", "--threads", "10000",
                      "--output", str(tmp_path / "e.npy"))
    assert time.monotonic() - start < 30
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("clipedge: error: threads=10000: this machine lets clipedge use")
    for bad in ("0", "-3"):
        result = clipedge("embed", image, "--bundle", str(small_bundle), "--threads", bad,
                          "--output", str(tmp_path / "e.npy"))
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    ok = clipedge("embed", image, "--bundle", str(small_bundle), "--format", "onnx", "--threads", "1",
                  "--output", str(tmp_path / "e.npy"))
    assert ok.returncode == 0, ok.stderr


# ---- 7. one 10 MB word --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.default()


@pytest.mark.parametrize("char", ["a", "é", "ab"])
def test_a_10mb_word_costs_what_its_head_costs(tokenizer, char):
    word = char * (10_000_000 // len(char))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    ids = tokenizer(word)
    took = time.perf_counter() - start
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert took < 2.5 and grew_mb < 300, (took, grew_mb)  # were 40 s and 2.2 GB for "a"
    assert (ids == tokenizer(word[:20_000])).all()  # the old path, on a head short enough for it


@pytest.mark.slow
def test_long_texts_keep_openclip_ids(tokenizer):
    """The head route against the whole-text route (`_encode` with no limit, then cut) on texts that make the head
    matter: cuts inside words, entities, combining marks after ASCII, capital sigmas far before the cut, lines."""
    texts = ["a" * 300_000, "ab" * 100_000 + "c", "x " * 100_000, " " * 200_000 + "hello world",
             "\x01" * 100_000 + "hi there", "a" * 70_000 + "\n" + "b" * 10, "e" * 65_536 + "\u0301" * 5 + "f" * 10,
             "ΑΣ" + "." * 100_000 + "Α", "&amp;" * 20_000 + "lt;" + "q" * 70_000, "Ã©" * 50_000, "ing" * 40_000]
    for text in texts:
        expected = tokenizer._encode(text)[:75]
        assert tokenizer(text)[0, 1:1 + len(expected)].tolist() == expected, repr(text[:40])
    short = Tokenizer.default(context_length=6)
    for text in ["a" * 5_000, "th" * 3_000 + " end"]:
        assert short(text)[0].tolist() == [short.sot_token_id, *short._encode(text)[:4], short.eot_token_id]


# ---- 14. a terminal that cannot print the labels ------------------------------------------------------------------
@pytest.mark.slow
def test_an_ascii_terminal_gets_escapes_not_a_traceback(small_bundle, tmp_path):
    image = str(photo(tmp_path / "café.png"))
    result = clipedge("classify", image, "--labels", "café,thé", "--bundle", str(small_bundle),
                      env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0, result.stderr
    assert "caf\\xe9" in result.stdout and "Traceback" not in result.stderr
    missing = clipedge("classify", str(tmp_path / "naïve.png"), "--labels", "café", "--bundle", str(small_bundle),
                       env={"PYTHONIOENCODING": "ascii"})
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "na\\xefve" in missing.stderr
