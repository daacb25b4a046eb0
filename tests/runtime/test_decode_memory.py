"""A memory budget for decoding (issue #33, case 6): a 9400x9400 16-bit grey PNG is 190 KB on disk, just under the
decompression-bomb guard, and took 1.0 GB to preprocess, four of them in decode threads 3.9 GB. The decode threads now
share a byte budget (clipedge.runtime.decode.DECODE_BUDGET) and 16-bit pixels become 8-bit a strip at a time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipedge.runtime import preprocess as preprocess_module
from clipedge.runtime.decode import DecodeBudget, Shrink, decoded_bytes
from clipedge.runtime.errors import ImageError
from clipedge.runtime.prefetch import prefetched
from clipedge.runtime.preprocess import PreprocessConfig, load_image, preprocess
from clipedge.runtime.resize_modes import to_pixel_values

SIDE = 9400  # 88.4 megapixels: under DEFAULT_MAX_PIXELS (89.5)


def old_8bit(values: np.ndarray) -> np.ndarray:
    """What `_to_8bit` computed before issue #33, on the whole array at once: round(v / 257)."""
    return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def grey16(values: np.ndarray) -> Image.Image:
    image = Image.fromarray(values.astype(np.uint16))
    assert image.mode == "I;16"
    return image


# ---- the pixels are those of before --------------------------------------------------------------------------------
def test_16bit_pixels_are_unchanged(tmp_path):
    rng = np.random.default_rng(6)
    values = rng.integers(0, 65536, (300, 257)).astype(np.uint16)
    values[0, :6] = [0, 128, 129, 32767, 65534, 65535]  # the rounding edges
    path = tmp_path / "g16.png"
    grey16(values).save(path)
    assert Image.open(path).mode == "I;16"
    expected = np.repeat(old_8bit(values)[:, :, None], 3, axis=2)
    assert np.array_equal(np.asarray(load_image(path)), expected)
    assert np.array_equal(np.asarray(load_image(grey16(values))), expected)
    big_endian = Image.frombytes("I;16B", (257, 300), values.astype(">u2").tobytes())
    assert np.array_equal(np.asarray(load_image(big_endian)), expected)


@pytest.mark.parametrize("high", [255, 65535])
def test_32bit_integer_pixels_are_unchanged(high):
    values = np.random.default_rng(high).integers(0, high + 1, (70, 90)).astype(np.int32)
    expected = values.astype(np.uint8) if high == 255 else old_8bit(values)
    out = np.asarray(load_image(Image.fromarray(values)))
    assert np.array_equal(out, np.repeat(expected[:, :, None], 3, axis=2))
    with pytest.raises(ImageError, match="no known range"):
        load_image(Image.fromarray(np.array([[0, 70000]], np.int32)))


def test_fast_16bit_shrinks_before_rgb_with_the_same_pixels(tmp_path):
    """The fast path now box-reduces the 8-bit grey image before the RGB copy: the same pixels as reducing the RGB."""
    y, x = np.mgrid[0:1500, 0:2000]
    values = (x * 31 + y * 17) % 65536 + np.random.default_rng(1).integers(0, 300, (1500, 2000))
    values = np.clip(values, 0, 65535).astype(np.uint16)
    path = tmp_path / "g16.png"
    grey16(values).save(path)
    config = PreprocessConfig()
    rgb = Image.fromarray(old_8bit(values)).convert("RGB")
    shrunk = Shrink(config.image_size, config.crop_size).after_decode(rgb)
    assert shrunk.size != rgb.size  # the shrink does run
    assert np.array_equal(preprocess(str(path), config, decode="fast")[0], to_pixel_values(shrunk, config))
    assert np.array_equal(preprocess(str(path), config, decode="exact")[0], to_pixel_values(rgb, config))


# ---- the budget ------------------------------------------------------------------------------------------------------
def test_decoded_bytes_counts_pixels_and_the_rgb_copy():
    assert decoded_bytes("RGB", 4000, 3000) == 48_000_000  # Pillow keeps RGB in 4 bytes a pixel, no copy needed
    assert decoded_bytes("I;16", 100, 10) == 1000 * (2 + 4)
    assert decoded_bytes("L", 100, 10) == 1000 * (1 + 4)
    assert decoded_bytes("RGBA", 100, 10) == 1000 * (4 + 4)


def until(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_budget_holds_what_fits_and_runs_an_oversized_one_alone():
    budget = DecodeBudget(100)
    order: list[str] = []
    go = {name: threading.Event() for name in ("a", "b", "big", "c")}

    def take(name: str, nbytes: int) -> None:
        with budget.hold(nbytes):
            order.append(f"+{name}")
            go[name].wait(10)
        order.append(f"-{name}")

    threads = {name: threading.Thread(target=take, args=(name, nbytes))
               for name, nbytes in [("a", 60), ("b", 30), ("big", 500), ("c", 10)]}
    threads["a"].start()
    until(lambda: budget.used == 60)
    threads["b"].start()
    until(lambda: budget.used == 90)  # a and b fit together
    threads["big"].start()
    until(lambda: len(budget._queue) == 1)
    threads["c"].start()  # c would fit beside a and b, but it is in line behind big
    until(lambda: len(budget._queue) == 2)
    assert order == ["+a", "+b"]
    go["a"].set()
    until(lambda: budget.used == 30)
    assert "+big" not in order  # big waits for b as well: it runs alone
    go["b"].set()
    until(lambda: "+big" in order)
    assert budget.used == 100 and "+c" not in order
    go["big"].set()
    go["c"].set()
    for thread in threads.values():
        thread.join(10)
    assert order.index("+c") > order.index("+big")
    assert budget.used == 0 and budget.peak == 100


def pngs(root: Path, count: int, side: int) -> list[str]:
    paths = []
    for i in range(count):
        path = root / f"{i}.png"
        Image.fromarray(np.full((side, side, 3), (i * 20, 100, 200), np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_decode_threads_stay_within_the_budget(tmp_path, monkeypatch):
    paths = pngs(tmp_path, 8, 600)  # 1.44 MB each as decoded RGB
    limit = 3 * decoded_bytes("RGB", 600, 600)
    budget = DecodeBudget(limit)
    monkeypatch.setattr(preprocess_module, "DECODE_BUDGET", budget)
    out = np.concatenate(list(prefetched(paths, 2, lambda chunk, start: preprocess(chunk, first_index=start),
                                         workers=4)))
    assert out.shape[0] == 8
    assert 0 < budget.peak <= limit and budget.used == 0


def test_budget_is_given_back_after_a_bad_file(tmp_path, monkeypatch):
    budget = DecodeBudget(10**9)
    monkeypatch.setattr(preprocess_module, "DECODE_BUDGET", budget)
    path = Path(pngs(tmp_path, 1, 300)[0])
    path.write_bytes(path.read_bytes()[:-200])  # truncated: fails while decoding, after the budget was taken
    with pytest.raises(ImageError, match="truncated"):
        preprocess([str(path)], decode="exact")
    with pytest.raises(ImageError, match="truncated"):
        load_image(path)
    assert budget.peak > 0 and budget.used == 0


# ---- case 6 itself: peak memory of a child process -----------------------------------------------------------------
CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from clipedge.runtime.preprocess import preprocess
    from clipedge.runtime.prefetch import prefetched

    def peak_kib():  # VmHWM, this process's own peak: ru_maxrss would also count the pytest process it came from
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))

    decode, paths = sys.argv[1], sys.argv[2:]
    base = peak_kib()
    load = lambda chunk, start: preprocess(chunk, first_index=start, decode=decode)  # as CLIPRuntime.encode_images
    rows = np.concatenate(list(prefetched(paths, 8, load, workers=4, lookahead=32)))
    assert rows.shape == (len(paths), 224, 224, 3), rows.shape
    print((peak_kib() - base) // 1024)  # MiB
""")


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> list[str]:
    """Four copies of a 9400x9400 16-bit grey PNG, a smooth ramp over the whole 16-bit range (~190 KB)."""
    root = tmp_path_factory.mktemp("case6")
    ramp = (np.arange(SIDE, dtype=np.uint32) * 65535 // (SIDE - 1)).astype(np.uint16)
    first = root / "0.png"
    grey16(np.broadcast_to(ramp, (SIDE, SIDE))).save(first, compress_level=9)
    assert first.stat().st_size < 400_000
    paths = [first]
    for i in range(1, 4):
        paths.append(root / f"{i}.png")
        shutil.copyfile(first, paths[-1])
    return [str(p) for p in paths]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status and glibc's malloc_trim: Linux")
@pytest.mark.parametrize(("decode", "bound"), [("fast", 450), ("exact", 650)])
def test_case6_peak_memory_of_four_16bit_bombs(bombs, decode, bound):
    """Growth of the peak RSS over the child's baseline after imports. Before issue #33: one image 1012 MB, four with
    4 decode threads 3843 MB (fast) / 3722 MB (exact); now about 270-300 MB (fast) and 420-470 MB (exact)."""
    grown = []
    for paths in (bombs[:1], bombs):
        done = subprocess.run([sys.executable, "-c", CHILD, decode, *paths], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        grown.append(int(done.stdout.split()[-1]))
    assert grown[0] < bound and grown[1] < bound, f"peak RSS growth, 1 and 4 images: {grown} MiB"
