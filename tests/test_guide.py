"""Interaction guide: supervoxels, advice regions, cache and guided-mode advice_fn."""
from __future__ import annotations

import numpy as np
import pytest

from mecca_rllib import guide
from mecca_rllib.guide import (
    GuidedAdvice,
    SupervoxelCache,
    advice_regions,
    make_advice_fn,
    supervoxels,
)

SHAPE = (8, 16, 16)


def block_labels(shape=SHAPE, block=(4, 8, 8)) -> np.ndarray:
    """Hand-made supervoxels: a grid of equal boxes labelled 1..n (row-major)."""
    grid = np.indices(shape)
    counts = [s // b for s, b in zip(shape, block)]
    idx = [g // b for g, b in zip(grid, block)]
    return (np.ravel_multi_index(idx, counts) + 1).astype(np.int32)


def test_advice_regions_are_the_k_least_confident_supervoxels():
    labels = block_labels()  # 2 x 2 x 2 = 8 boxes of 4x8x8 voxels
    rng = np.random.default_rng(0)
    box_means = rng.permutation(np.linspace(0.1, 0.8, 8))
    confidence = box_means[labels - 1]
    # Voxel-level noise with zero mean per box: the ranking must use the box mean.
    noise = rng.uniform(-0.05, 0.05, SHAPE)
    for lab in range(1, 9):
        inside = labels == lab
        noise[inside] -= noise[inside].mean()
    confidence = confidence + noise

    advice = advice_regions(confidence, labels, k=3)

    expected = np.argsort(box_means)[:3] + 1
    assert [r.supervoxel for r in advice.regions] == expected.tolist()
    assert [r.rank for r in advice.regions] == [1, 2, 3]
    for region in advice.regions:
        assert region.mean_confidence == pytest.approx(box_means[region.supervoxel - 1])
        assert region.size == 4 * 8 * 8
        inside = np.argwhere(labels == region.supervoxel)
        np.testing.assert_allclose(region.centroid, inside.mean(axis=0))
        # The label map holds the rank exactly on that supervoxel.
        np.testing.assert_array_equal(advice.label_map == region.rank, labels == region.supervoxel)
    assert advice.label_map.dtype == np.uint8
    assert advice.mask.sum() == 3 * 4 * 8 * 8


def test_advice_matches_brute_force_on_slic_supervoxels():
    rng = np.random.default_rng(1)
    image = rng.normal(size=SHAPE).astype(np.float32)
    labels = supervoxels(image, 12)
    confidence = rng.random(SHAPE)
    advice = advice_regions(confidence, labels, k=5)
    means = {lab: confidence[labels == lab].mean() for lab in np.unique(labels)}
    expected = sorted(means, key=means.get)[:5]
    assert [r.supervoxel for r in advice.regions] == expected


def test_tie_break_prefers_larger_then_lower_label():
    labels = np.ones(SHAPE, np.int32)
    labels[:, :, 8:] = 2  # same size as 1
    labels[:4, :8, :8] = 3  # label 3 is 4x8x8; label 1 loses those voxels
    labels[:, :8, 12:] = 4  # label 4 is smaller than 2
    confidence = np.full(SHAPE, 0.5)
    advice = advice_regions(confidence, labels, k=4)
    sizes = {lab: int((labels == lab).sum()) for lab in range(1, 5)}
    expected = sorted(sizes, key=lambda lab: (-sizes[lab], lab))
    assert [r.supervoxel for r in advice.regions] == expected


def test_fewer_supervoxels_than_k_and_label_zero_ignored():
    labels = np.zeros(SHAPE, np.int32)
    labels[:, :8] = 7  # non-contiguous label ids
    labels[:, 8:] = 3
    confidence = np.zeros(SHAPE)  # label 0 region (none here) would be "least confident"
    labels[0] = 0
    advice = advice_regions(confidence, labels, k=5)
    assert sorted(r.supervoxel for r in advice.regions) == [3, 7]
    assert not advice.mask[0].any()


@pytest.mark.parametrize(
    "confidence, labels, k, match",
    [
        (np.zeros((4, 4)), np.ones((4, 4), np.int32), 1, "3D"),
        (np.zeros(SHAPE), np.ones((8, 16, 15), np.int32), 1, "differs"),
        (np.full(SHAPE, np.nan), np.ones(SHAPE, np.int32), 1, "NaN"),
        (np.zeros(SHAPE), np.ones(SHAPE, np.float32), 1, "integers"),
        (np.zeros(SHAPE), np.ones(SHAPE, np.int32), 0, "k must"),
    ],
)
def test_advice_regions_bad_input(confidence, labels, k, match):
    with pytest.raises(ValueError, match=match):
        advice_regions(confidence, labels, k)


def test_supervoxels_cover_the_volume_and_follow_the_segment_count():
    rng = np.random.default_rng(2)
    image = rng.normal(size=SHAPE).astype(np.float32)
    few, many = supervoxels(image, 4), supervoxels(image, 40)
    for labels in (few, many):
        assert labels.dtype == np.int32 and labels.shape == SHAPE
        assert labels.min() >= 1
    assert len(np.unique(many)) > len(np.unique(few))


def test_supervoxels_follow_intensity_edges():
    image = np.zeros(SHAPE, np.float32)
    image[:, :, 8:] = 5.0  # two flat halves
    labels = supervoxels(image, 8)
    left, right = set(np.unique(labels[:, :, :8])), set(np.unique(labels[:, :, 8:]))
    assert not left & right


def test_supervoxels_bad_input():
    with pytest.raises(ValueError, match="3D"):
        supervoxels(np.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match="NaN"):
        supervoxels(np.full(SHAPE, np.nan), 2)


def test_cache_computes_each_count_once(monkeypatch):
    calls: list[int] = []
    real = guide.supervoxels

    def counting(image, n, *args, **kwargs):
        calls.append(n)
        return real(image, n, *args, **kwargs)

    monkeypatch.setattr(guide, "supervoxels", counting)
    image = np.random.default_rng(3).normal(size=SHAPE).astype(np.float32)
    cache = SupervoxelCache(image, schedule=(12, 6, 6))
    first = cache.for_step(0)
    assert cache.for_step(0) is first
    assert cache.segments_for_step(2) == 6 and cache.segments_for_step(9) == 6
    cache.for_step(1), cache.for_step(2), cache.for_step(7)
    assert calls == [12, 6]
    cache.warm()
    assert calls == [12, 6] and len(cache) == 2
    with pytest.raises(ValueError, match="schedule"):
        SupervoxelCache(image, schedule=())


def test_guided_advice_fn_caches_per_volume(monkeypatch):
    calls: list[int] = []
    real = guide.supervoxels
    monkeypatch.setattr(
        guide, "supervoxels", lambda im, n, *a, **kw: calls.append(n) or real(im, n, *a, **kw)
    )
    rng = np.random.default_rng(4)
    fn = make_advice_fn(schedule=(10, 5), k=2)
    assert isinstance(fn, GuidedAdvice)
    obs = np.stack([rng.normal(size=SHAPE), np.full(SHAPE, 0.5), np.zeros(SHAPE)]).astype(np.float32)
    confidence = rng.random(SHAPE)
    mask = fn(obs, confidence, 0)
    expected = advice_regions(confidence, real(obs[0], 10), k=2).mask
    np.testing.assert_array_equal(mask, expected)
    assert mask.dtype == bool and mask.any()
    fn(obs, confidence, 0), fn(obs, confidence, 1), fn(obs, confidence, 4)
    assert calls == [10, 5]  # once per segment count
    obs2 = obs.copy()
    obs2[0] += 1.0  # a new volume: supervoxels are recomputed
    fn(obs2, confidence, 0)
    assert calls == [10, 5, 10]
