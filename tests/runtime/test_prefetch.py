"""Decoding in worker threads ahead of the model (clipedge.runtime.prefetch, issue #18): results in input order, the
first bad image in input order named as the sequential path names it, bounded work in flight, no thread left behind."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipedge.runtime.clip_runtime import load
from clipedge.runtime.errors import ImageError
from clipedge.runtime.prefetch import THREAD_PREFIX, prefetched


def decode_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def slow_rows(delays: list[float], seen: list[int] | None = None):
    """A loader that sleeps a different time per item, so threads finish out of order; returns the index as a row."""
    def load(chunk: list[int], start: int) -> np.ndarray:
        if seen is not None:
            seen.append(start)
        time.sleep(delays[chunk[0]])
        return np.array([[chunk[0]]])

    return load


@pytest.mark.parametrize("group", [1, 3, 8])
def test_rows_come_back_in_input_order(group):
    items = list(range(23))
    delays = list(np.random.default_rng(0).uniform(0, 0.01, len(items)))
    out = np.concatenate(list(prefetched(items, group, slow_rows(delays), workers=4)))
    assert out[:, 0].tolist() == items
    assert decode_threads() == []


def test_work_in_flight_is_bounded():
    items = list(range(40))
    submitted: list[int] = []
    batches = prefetched(items, 2, slow_rows([0.0] * 40, submitted), workers=2, lookahead=5)
    next(batches)
    time.sleep(0.05)
    assert len(submitted) <= 5 + 2  # the lookahead, plus the group taken out before the next refill
    batches.close()
    assert decode_threads() == []


def test_closing_early_stops_the_threads():
    batches = prefetched(list(range(100)), 4, slow_rows([0.005] * 100), workers=3)
    next(batches)
    assert decode_threads()
    batches.close()
    assert decode_threads() == []


def test_one_worker_runs_in_the_calling_thread():
    calls: list[str] = []

    def load(chunk: list[int], start: int) -> np.ndarray:
        calls.append(threading.current_thread().name)
        return np.array([[c] for c in chunk])

    out = np.concatenate(list(prefetched(list(range(10)), 4, load, workers=1)))
    assert out[:, 0].tolist() == list(range(10))
    assert set(calls) == {threading.current_thread().name}
    assert len(calls) == 3  # whole groups, as the sequential path always loaded them


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    """12 images of different sizes; number 5 truncated, number 9 not an image."""
    root = tmp_path_factory.mktemp("prefetch")
    paths = []
    for i in range(12):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 256, (60 + 7 * i, 90 + 3 * i, 3), dtype=np.uint8)).save(root / f"{i:02d}.jpg")
        paths.append(str(root / f"{i:02d}.jpg"))
    data = Path(paths[5]).read_bytes()
    Path(paths[5]).write_bytes(data[: len(data) // 2])
    Path(paths[9]).write_bytes(b"not an image")
    return paths


def test_threaded_encode_equals_sequential_and_names_the_first_bad_image(small_bundle, photos):
    threaded, sequential = load(small_bundle, decode_workers=4), load(small_bundle, decode_workers=0)
    good = [p for i, p in enumerate(photos) if i not in (5, 9)]
    np.testing.assert_array_equal(threaded.encode_images(good), sequential.encode_images(good))
    errors = []
    for runtime in (threaded, sequential):
        with pytest.raises(ImageError) as caught:
            runtime.encode_images(photos)
        errors.append(caught.value)
    assert str(errors[0]) == str(errors[1])
    assert errors[0].index == 5 and photos[5] in str(errors[0]) and str(errors[0]).startswith("image 5 ")
    assert decode_threads() == []


def test_classify_threaded_keeps_order(small_bundle, photos):
    good = [p for i, p in enumerate(photos) if i not in (5, 9)]
    threaded = load(small_bundle, decode_workers=3).classify(good, ["cat", "dog"])
    one_by_one = [load(small_bundle, decode_workers=0).classify([p], ["cat", "dog"])[0] for p in good]
    for a, b in zip(threaded, one_by_one, strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=0, atol=1e-6)
    assert decode_threads() == []
