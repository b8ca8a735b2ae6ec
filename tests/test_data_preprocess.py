"""Preprocessing (MECCA.md §6): crop margins, resize, spacing, z-score; augmentation."""
import numpy as np
import pytest

from mecca_rllib.data import DataError, augment, preprocess
from mecca_rllib.data.preprocess import crop_box, resize_label


def _box_case(shape=(20, 40, 36), box=((6, 12), (10, 25), (8, 20))):
    label = np.zeros(shape, np.uint8)
    label[tuple(slice(a, b) for a, b in box)] = 1
    rng = np.random.default_rng(0)
    image = (100.0 + 50.0 * label + rng.normal(0, 5, shape)).astype(np.float32)
    return image, label


def test_crop_margins_are_1_to_11_voxels_and_clamped():
    image, label = _box_case()
    box = np.array([(6, 12), (10, 25), (8, 20)])
    seen = set()
    for seed in range(40):
        crop = crop_box(label, np.random.default_rng(seed))
        before, after = box[:, 0] - crop[:, 0], crop[:, 1] - box[:, 1]
        limit_before = np.minimum(11, box[:, 0])                # clamped at 0
        limit_after = np.minimum(11, np.array(label.shape) - box[:, 1])
        assert np.all(before >= np.minimum(1, limit_before)) and np.all(before <= limit_before)
        assert np.all(after >= 1) and np.all(after <= limit_after)
        seen.update(before.tolist())
    assert len(seen) > 4                                          # margins really vary


def test_preprocess_shape_dtype_zscore_and_label():
    image, label = _box_case()
    out = preprocess(image, label, rng=3, shape=(8, 16, 12))
    assert out.image.shape == out.label.shape == (8, 16, 12)
    assert out.image.dtype == np.float32 and out.label.dtype == np.uint8
    assert abs(out.image.mean()) < 1e-4 and abs(out.image.std() - 1) < 1e-3
    assert set(np.unique(out.label)) == {0, 1}
    # the label still marks the bright region after crop + resize
    assert out.image[out.label == 1].mean() > out.image[out.label == 0].mean() + 1


def test_preprocess_spacing_follows_the_crop_and_resize():
    image, label = _box_case()
    out = preprocess(image, label, rng=5, shape=(10, 20, 20), spacing=(3.0, 1.0, 0.5))
    sizes = out.crop[:, 1] - out.crop[:, 0]
    assert out.spacing == pytest.approx(tuple(s * n / m for s, n, m in
                                              zip((3.0, 1.0, 0.5), sizes, (10, 20, 20))))


def test_preprocess_is_seeded():
    image, label = _box_case()
    a, b = preprocess(image, label, 9, (8, 16, 16)), preprocess(image, label, 9, (8, 16, 16))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.crop, b.crop)


def test_tiny_label_survives_downsampling():
    label = np.zeros((40, 40, 40), np.uint8)
    label[20, 20, 20] = 1
    assert resize_label(label, (4, 4, 4)).sum() >= 1


def test_preprocess_rejects_empty_label_and_shape_mismatch():
    image, label = _box_case()
    with pytest.raises(DataError, match="empty label"):
        preprocess(image, np.zeros_like(label), 0, (8, 8, 8))
    with pytest.raises(DataError, match="shape"):
        preprocess(image[:-1], label, 0, (8, 8, 8))


@pytest.mark.parametrize("shape", [(6, 12, 12), (6, 12, 10)])
@pytest.mark.parametrize("small_angle", [False, True])
def test_augment_transforms_image_and_label_together(shape, small_angle):
    rng = np.random.default_rng(11)
    label = np.zeros(shape, np.uint8)
    label[1:4, 2:7, 3:6] = 1
    label[4, 8, 1] = 1                         # asymmetric, so flips/rotations show
    image = (label * 10.0 + rng.uniform(0, 0.1, shape)).astype(np.float32)
    outcomes = set()
    for seed in range(12):
        img, lab = augment(image, label, np.random.default_rng(seed), small_angle=small_angle)
        assert img.shape == lab.shape == shape
        assert img.dtype == np.float32 and lab.dtype == np.uint8
        if small_angle:   # interpolation blurs edges; interiors must still agree
            agree = ((img > 5) == (lab == 1)).mean()
            assert agree > 0.9
        else:
            assert np.array_equal(img > 5, lab == 1)   # exactly the same transform
            assert lab.sum() == label.sum()
        outcomes.add(lab.tobytes())
    assert len(outcomes) > 3                   # it does transform


def test_augment_returns_writable_copies():
    image, label = np.zeros((4, 6, 6), np.float32), np.zeros((4, 6, 6), np.uint8)
    image.flags.writeable = False
    for seed in range(8):
        img, _ = augment(image, label, np.random.default_rng(seed))
        assert img.flags.writeable and not np.shares_memory(img, image)
