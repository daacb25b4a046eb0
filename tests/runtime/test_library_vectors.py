"""Exact top-k and the approximate index of clipedge.runtime.library.vectors (issue #35)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from clipedge.runtime.atomic import file_mode
from clipedge.runtime.errors import InputError
from clipedge.runtime.library.vectors import EXACT_SEARCH_UP_TO, ApproximateIndex, exact_top_k

pytest.importorskip("usearch")

DIM = 512


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _uniform(n: int, seed: int) -> np.ndarray:
    return _unit(np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32))


def _clustered(n: int, seed: int, centres: int = 100) -> np.ndarray:
    """Unit vectors around a few centres (cos ~0.67 to their centre), as photo embeddings group by subject."""
    rng = np.random.default_rng(seed)
    c = _unit(rng.standard_normal((centres, DIM), dtype=np.float32))
    return _unit(c[rng.integers(0, centres, n)] + 0.05 * rng.standard_normal((n, DIM), dtype=np.float32))


def _reference(matrix: np.ndarray, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = matrix.astype(np.float32) @ vector
    order = np.argsort(-scores, kind="stable")[:k]
    return order, scores[order]


# ---- exact_top_k ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("k", [1, 10, 99, 100, 250])
def test_exact_top_k_equals_a_stable_full_sort(dtype, k):
    matrix = _uniform(100, 1).astype(dtype)
    vector = _uniform(1, 2)[0]
    rows, scores = exact_top_k(matrix, vector, k)
    ref_rows, ref_scores = _reference(matrix, vector, k)
    assert rows.dtype == np.int64 and scores.dtype == np.float32
    assert len(rows) == min(k, 100)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-6)


def test_exact_top_k_breaks_ties_by_lower_row():
    """Many rows share each score, and the k-th score is tied across the cut: the lower rows must be chosen."""
    rng = np.random.default_rng(3)
    base = _uniform(7, 4)
    matrix = base[rng.integers(0, 7, 5000)]  # 5000 rows, 7 distinct vectors: every score is tied ~700 times
    vector = _uniform(1, 5)[0]
    for k in (1, 5, 700, 1234, 4999, 5000, 6000):
        rows, _ = exact_top_k(matrix, vector, k)
        np.testing.assert_array_equal(rows, _reference(matrix, vector, k)[0])


def test_exact_top_k_large_float16_in_blocks_and_edge_cases():
    matrix = _uniform(10_000, 6)
    vector = _uniform(1, 7)[0]
    rows, _ = exact_top_k(matrix.astype(np.float16), vector, 20)
    np.testing.assert_array_equal(rows, _reference(matrix.astype(np.float16), vector, 20)[0])
    assert len(exact_top_k(matrix, vector, 0)[0]) == 0
    assert len(exact_top_k(matrix[:0], vector, 5)[0]) == 0
    with pytest.raises(InputError, match="dimensions"):
        exact_top_k(matrix, vector[:100], 5)
    with pytest.raises(InputError, match="2-D"):
        exact_top_k(matrix[0], vector, 5)


def test_threshold_is_a_measured_size():
    assert 10_000 <= EXACT_SEARCH_UP_TO <= 1_000_000


# ---- ApproximateIndex -----------------------------------------------------------------------------------------------

def _recall(index: ApproximateIndex, data: np.ndarray, queries: np.ndarray, breadth: int | None = None) -> float:
    hits = 0
    for q in queries:
        truth = set(exact_top_k(data, q, 10)[0].tolist())
        keys, _ = index.search(q, 10, breadth)
        hits += len(truth & set(keys.tolist()))
    return hits / (10 * len(queries))


@pytest.fixture(scope="module")
def clustered_index():
    data = _clustered(20_101, 10)  # the last 101 rows are queries: drawn around the same centres, not in the index
    index = ApproximateIndex.create(DIM)
    index.add(np.arange(20_000, dtype=np.int64), data[:20_000])
    return index, data[:20_000], data[20_000:]


def test_recall_at_10_on_clustered_vectors(clustered_index):
    """Embeddings cluster: the default search breadth reaches the target."""
    index, data, queries = clustered_index
    assert len(index) == len(data)
    assert _recall(index, data, queries[:100]) >= 0.95


def test_recall_at_10_on_uniform_random_vectors():
    """Uniform vectors on the 512-sphere are the worst case (every row is about as far as every other): the default
    breadth of 64 finds a fraction of the true neighbours, a wide one reaches the target (docs/search-scale.md)."""
    data = _uniform(5_000, 12)
    index = ApproximateIndex.create(DIM)
    index.add(np.arange(len(data), dtype=np.int64), data)
    queries = _uniform(50, 13)
    narrow = _recall(index, data, queries, breadth=64)
    wide = _recall(index, data, queries, breadth=1024)
    assert wide >= 0.95 and wide > narrow


def test_scores_are_cosines_best_first(clustered_index):
    index, data, queries = clustered_index
    q = queries[100]
    keys, scores = index.search(q, 10)
    assert keys.dtype == np.int64 and scores.dtype == np.float32 and len(keys) == 10
    assert np.all(np.diff(scores) <= 0)
    np.testing.assert_allclose(scores, data[keys] @ q, atol=0.01)  # 8-bit vectors: close to the exact cosine


def test_add_remove_search_save_load_round_trip(tmp_path):
    data = _clustered(2000, 20)
    keys = np.arange(1000, 3000, dtype=np.int64)  # keys are ids, not positions
    index = ApproximateIndex.create(DIM)
    index.add(keys, data, threads=1)
    assert len(index) == 2000 and 1500 in index and 5 not in index
    found, scores = index.search(data[7], 1)
    assert found[0] == 1007 and scores[0] > 0.99

    removed = keys[::2]
    assert index.remove(np.concatenate([removed, [99_999]])) == len(removed)
    assert len(index) == 1000 and 1000 not in index
    for q in data[:50]:
        assert not set(index.search(q, 20)[0].tolist()) & set(removed.tolist())

    index.add(np.array([1000]), -data[0])  # re-added with another vector
    assert index.search(-data[0], 1)[0][0] == 1000
    index.add(np.array([1001]), data[5])  # a present key gets the new vector
    assert len(index) == 1001 and index.search(data[5], 1)[0][0] == 1001

    path = tmp_path / "images.usearch"
    index.save(path)
    for writable in (True, False):
        loaded = ApproximateIndex.load(path, DIM, writable=writable)
        assert len(loaded) == len(index) and loaded.memory_bytes() > 0
        for q in data[100:120]:
            a, b = index.search(q, 10), loaded.search(q, 10)
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_allclose(a[1], b[1])
    loaded = ApproximateIndex.load(path, DIM, writable=True)
    loaded.remove(np.array([1001]))
    assert 1001 not in loaded
    view = ApproximateIndex.load(path, DIM, writable=False)
    with pytest.raises(InputError, match="read-only"):
        view.remove(np.array([1001]))


def test_save_is_atomic_with_umask_modes(tmp_path):
    index = ApproximateIndex.create(DIM)
    index.add(np.arange(100), _uniform(100, 30))
    path = tmp_path / "images.usearch"
    old = os.umask(0o027)
    try:
        index.save(path)
        expected = file_mode()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == expected == 0o640
    index.save(path)  # over an existing file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.usearch"]


def test_dimension_and_input_errors(tmp_path):
    index = ApproximateIndex.create(DIM)
    with pytest.raises(InputError, match="512 dimensions"):
        index.add(np.arange(3), np.ones((3, 256), np.float32))
    with pytest.raises(InputError, match="keys"):
        index.add(np.arange(2), _uniform(3, 31))
    with pytest.raises(InputError, match="distinct"):
        index.add(np.array([1, 1]), _uniform(2, 32))
    with pytest.raises(InputError, match="non-zero"):
        index.add(np.array([1]), np.zeros((1, DIM), np.float32))
    assert len(index.search(_uniform(1, 33)[0], 10)[0]) == 0  # empty index
    index.add(np.arange(3), _uniform(3, 34))
    with pytest.raises(InputError, match="512 dimensions"):
        index.search(np.ones(64, np.float32), 5)
    assert len(index.search(_uniform(1, 35)[0], 10)[0]) == 3  # k > rows
    path = tmp_path / "i.usearch"
    index.save(path)
    with pytest.raises(InputError, match="another model"):
        ApproximateIndex.load(path, 64)
    with pytest.raises(InputError, match="no approximate index"):
        ApproximateIndex.load(tmp_path / "missing.usearch", DIM)
    (tmp_path / "junk.usearch").write_bytes(b"not an index at all" * 10)
    with pytest.raises(InputError):
        ApproximateIndex.load(tmp_path / "junk.usearch", DIM)


def test_missing_library_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_usearch(name, *args, **kwargs):
        if name.startswith("usearch"):
            raise ImportError("No module named 'usearch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_usearch)
    with pytest.raises(InputError, match="pip install usearch"):
        ApproximateIndex.create(DIM)
