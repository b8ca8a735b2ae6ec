"""Synthetic phantoms (determinism, validity, difficulty) and the seeded splits."""
import numpy as np
import pytest

from mecca_rllib.data import make_phantom, split_labeled, split_train_test


def _best_threshold_dice(image: np.ndarray, label: np.ndarray) -> float:
    """Dice of the best global threshold (either polarity) over 99 intensity quantiles."""
    truth = label.astype(bool)
    best = 0.0
    for t in np.quantile(image, np.linspace(0.01, 0.99, 99)):
        for pred in (image > t, image < t):
            best = max(best, 2 * (pred & truth).sum() / (pred.sum() + truth.sum()))
    return best


@pytest.mark.parametrize("shape", [(30, 55, 55), (8, 16, 16), (12, 20, 16)])
def test_phantom_shapes_dtypes_and_zscore(shape):
    image, label = make_phantom(shape, 3)
    assert image.shape == label.shape == shape
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert set(np.unique(label)) == {0, 1}
    assert abs(float(image.mean())) < 1e-3 and abs(float(image.std()) - 1) < 1e-3
    assert 0.02 < label.mean() < 0.5


def test_phantom_is_deterministic_per_seed_and_generator():
    a = make_phantom((8, 16, 16), 7)
    b = make_phantom((8, 16, 16), np.random.default_rng(7))
    c = make_phantom((8, 16, 16), 8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def _moment_ellipsoid_dice(mask: np.ndarray) -> float:
    """Dice between a mask and the ellipsoid with the same centroid and second moments."""
    points = np.argwhere(mask).astype(float)
    centre = points.mean(0)
    cov = np.cov(points.T)
    grid = np.indices(mask.shape).reshape(3, -1).T - centre
    # A solid ellipsoid with semi-axes r has covariance diag(r^2 / 5).
    inside = np.einsum("ni,ij,nj->n", grid, np.linalg.inv(5 * cov), grid) <= 1
    ellipsoid = inside.reshape(mask.shape)
    return 2 * (ellipsoid & mask).sum() / (ellipsoid.sum() + mask.sum())


def test_phantom_target_is_one_connected_irregular_blob():
    from scipy import ndimage

    zz, yy, xx = np.indices((30, 55, 55))
    ellipsoid = ((zz - 15) / 9) ** 2 + ((yy - 27) / 16) ** 2 + ((xx - 25) / 12) ** 2 <= 1
    assert _moment_ellipsoid_dice(ellipsoid) > 0.97       # the measure recognises an ellipsoid
    for seed in range(3):
        label = make_phantom((30, 55, 55), seed)[1].astype(bool)
        assert ndimage.label(label)[1] == 1
        assert _moment_ellipsoid_dice(label) < 0.93


@pytest.mark.parametrize("shape", [(30, 55, 55), (8, 16, 16)])
def test_phantoms_defeat_a_global_threshold(shape):
    dice = [_best_threshold_dice(*make_phantom(shape, seed)) for seed in range(6)]
    assert np.median(dice) < 0.85, dice
    assert max(dice) < 0.9, dice


def test_phantom_rejects_bad_shape():
    with pytest.raises(ValueError, match="shape"):
        make_phantom((2, 16, 16), 0)


@pytest.mark.parametrize("n,fraction,expected", [(8, 0.125, 1), (8, 0.25, 2), (40, 0.25, 10),
                                                 (30, 1 / 3, 10), (10, 1.0, 10), (10, 0.0, 0),
                                                 (3, 0.01, 1)])
def test_split_labeled_counts(n, fraction, expected):
    mask = split_labeled(n, fraction, seed=1)
    assert mask.dtype == bool and mask.shape == (n,)
    assert mask.sum() == expected


def test_split_labeled_is_seeded():
    assert np.array_equal(split_labeled(50, 0.3, 4), split_labeled(50, 0.3, 4))
    assert not np.array_equal(split_labeled(50, 0.3, 4), split_labeled(50, 0.3, 5))


def test_split_labeled_rejects_bad_fraction():
    with pytest.raises(ValueError, match="fraction"):
        split_labeled(10, 1.5)


def test_split_train_test_is_a_seeded_partition():
    train, test = split_train_test(25, 0.2, seed=3)
    assert len(test) == 5 and len(train) == 20
    assert sorted(np.concatenate([train, test])) == list(range(25))
    assert np.array_equal(split_train_test(25, 0.2, 3)[1], test)
    small_train, small_test = split_train_test(2, 0.2, 0)   # never an empty side when 0 < f < 1
    assert len(small_train) == 1 and len(small_test) == 1
