"""Near-duplicate groups (issue #35): planted duplicates found, chains joined (single linkage), the same groups for
every block size, the threshold inclusive, bad inputs refused; checked against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from clipedge.runtime.errors import InputError
from clipedge.runtime.library.dupes import DEFAULT_DUPLICATE_COSINE, near_duplicate_groups


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def at_cosine(base: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly `cosine` to unit `base` (up to float rounding)."""
    other = rng.standard_normal(base.shape)
    other -= other @ base * base
    other /= np.linalg.norm(other)
    return cosine * base + np.sqrt(1 - cosine**2) * other


def reference(x: np.ndarray, threshold: float) -> list[list[int]]:
    """The full matrix and a breadth-first search: what the blocked union-find must equal."""
    x = unit(x.astype(np.float64))
    linked = x @ x.T >= threshold - 1e-6
    seen, groups = set(), []
    for start in range(len(x)):
        if start in seen:
            continue
        group, todo = {start}, [start]
        while todo:
            for j in np.flatnonzero(linked[todo.pop()]):
                if int(j) not in group:
                    group.add(int(j))
                    todo.append(int(j))
        seen |= group
        if len(group) > 1:
            groups.append(sorted(group))
    return sorted(groups)


@pytest.fixture
def planted():
    """300 random unit vectors in 64 dims (distinct pairs stay below ~0.5) with planted copies: 7 and 250 copies of
    3 (0.99, 0.97); a chain 10 - 20 - 30 at 0.96 a step (10 and 30 only 0.84); 299 a copy of 0."""
    rng = np.random.default_rng(0)
    x = unit(rng.standard_normal((300, 64)))
    x[7], x[250] = at_cosine(x[3], 0.99, rng), at_cosine(x[3], 0.97, rng)
    step = np.arccos(0.96)  # 10, 20, 30 on one great circle, 0.96 a step: 10 - 30 is cos(2 * step) = 0.84
    away = (at_cosine(x[10], 0.0, rng)).astype(np.float32)
    x[20] = np.cos(step) * x[10] + np.sin(step) * away
    x[30] = np.cos(2 * step) * x[10] + np.sin(2 * step) * away
    x[299] = x[0]
    return x.astype(np.float32)


def test_planted_duplicates_and_chains_are_grouped(planted):
    groups = near_duplicate_groups(planted)
    assert groups == [[0, 299], [3, 7, 250], [10, 20, 30]]
    assert float(planted[10] @ planted[30]) < 0.85  # joined through 20, not directly
    assert near_duplicate_groups(planted, threshold=0.98) == [[0, 299], [3, 7]]


@pytest.mark.parametrize("block", [1, 2, 7, 64, 299, 300, 4096])
def test_every_block_size_gives_the_same_groups(planted, block):
    assert near_duplicate_groups(planted, block=block) == [[0, 299], [3, 7, 250], [10, 20, 30]]


@pytest.mark.parametrize("threshold", [0.2, 0.3, 0.5, 0.9])
def test_equals_a_brute_force_reference_even_when_many_pairs_link(threshold):
    """Clustered data where low thresholds link thousands of pairs into long chains: the vectorised union must
    join every one of them, whatever the tiling."""
    rng = np.random.default_rng(1)
    centres = unit(rng.standard_normal((12, 16)))
    x = centres[rng.integers(0, 12, 400)] + 0.35 * rng.standard_normal((400, 16))
    expected = reference(x, threshold)
    assert expected and any(len(g) > 10 for g in expected) or threshold == 0.9
    for block in (5, 64, 400):
        assert near_duplicate_groups(x, threshold=threshold, block=block) == expected


def test_the_threshold_is_inclusive():
    rng = np.random.default_rng(2)
    base = unit(rng.standard_normal(512))
    x = np.stack([base, at_cosine(base, 0.95, rng)])
    assert near_duplicate_groups(x, threshold=0.95) == [[0, 1]]
    assert near_duplicate_groups(x, threshold=0.9501) == []
    y = np.stack([base, at_cosine(base, 0.949, rng)])
    assert near_duplicate_groups(y, threshold=0.95) == []
    same = np.stack([base, base, unit(rng.standard_normal(512))])
    assert near_duplicate_groups(same, threshold=1.0) == [[0, 1]]  # cosine 1 in float32 may read 0.99999994


def test_rows_need_not_be_unit_and_zero_rows_never_group(planted):
    scales = np.linspace(0.1, 10, len(planted), dtype=np.float32)[:, None]
    assert near_duplicate_groups(planted * scales) == near_duplicate_groups(planted)
    x = np.zeros((3, 8), np.float32)
    assert near_duplicate_groups(x) == []
    assert near_duplicate_groups(np.zeros((0, 8), np.float32)) == []
    assert near_duplicate_groups(planted.astype(np.float16)) == [[0, 299], [3, 7, 250], [10, 20, 30]]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"embeddings": np.ones(4, np.float32)}, "2-D"),
    ({"embeddings": np.ones((2, 4), np.int32)}, "floating"),
    ({"embeddings": np.array([[np.nan, 1.0]], np.float32)}, "NaN"),
    ({"threshold": 0.0}, r"\(0, 1\]"),
    ({"threshold": 1.5}, r"\(0, 1\]"),
    ({"threshold": "0.9"}, r"\(0, 1\]"),
    ({"block": 0}, "positive"),
    ({"block": 2.5}, "positive"),
])
def test_bad_inputs_are_refused(kwargs, message):
    args = {"embeddings": np.eye(3, dtype=np.float32), **kwargs}
    with pytest.raises(InputError, match=message):
        near_duplicate_groups(**args)


def test_the_default_threshold_is_a_conservative_cosine():
    assert 0.9 <= DEFAULT_DUPLICATE_COSINE < 1.0
