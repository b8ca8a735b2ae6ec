"""Metrics against values computed by hand on tiny arrays."""
import math

import numpy as np
import pytest

from mecca_rllib.metrics import assd, dice, misunderstanding_rate, noc, surface


def _points(shape, *points):
    mask = np.zeros(shape, bool)
    for p in points:
        mask[p] = True
    return mask


def test_dice_hand_computed():
    pred = np.array([[[1, 1, 0, 0]]], np.uint8)
    label = np.array([[[1, 0, 1, 0]]], np.uint8)
    assert dice(pred, label) == pytest.approx(2 * 1 / (2 + 2))
    assert dice(label, label) == 1.0


def test_dice_empty_masks():
    empty, one = np.zeros((2, 3, 3), bool), _points((2, 3, 3), (1, 1, 1))
    assert dice(empty, empty) == 1.0
    assert dice(empty, one) == 0.0 and dice(one, empty) == 0.0


def test_dice_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"\(2, 2, 2\).*\(2, 2, 3\)"):
        dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))


def test_surface_of_cube_is_its_shell():
    cube = np.zeros((5, 5, 5), bool)
    cube[1:4, 1:4, 1:4] = True
    expected = cube.copy()
    expected[2, 2, 2] = False  # the only voxel without a background face neighbour
    np.testing.assert_array_equal(surface(cube), expected)


def test_assd_isotropic_single_voxels():
    shape = (1, 1, 10)
    assert assd(_points(shape, (0, 0, 2)), _points(shape, (0, 0, 5))) == pytest.approx(3.0)


def test_assd_is_pooled_over_both_surfaces():
    shape = (1, 1, 10)
    label = _points(shape, (0, 0, 0))
    pred = _points(shape, (0, 0, 3), (0, 0, 4))  # both pred voxels are surface voxels
    # pred -> label: 3 and 4; label -> pred: 3; pooled mean over 3 surface voxels.
    assert assd(pred, label) == pytest.approx((3 + 4 + 3) / 3)
    assert assd(label, pred) == pytest.approx((3 + 4 + 3) / 3)


def test_assd_anisotropic_spacing_in_mm():
    shape = (4, 4, 4)
    pred, label = _points(shape, (0, 0, 0)), _points(shape, (2, 0, 1))
    spacing = (2.0, 1.0, 0.5)  # (d, h, w) mm per voxel
    expected = math.sqrt((2 * 2.0) ** 2 + (1 * 0.5) ** 2)
    assert assd(pred, label, spacing=spacing) == pytest.approx(expected)
    assert assd(pred, label) == pytest.approx(math.sqrt(2**2 + 1**2))  # in voxels


def test_assd_identical_masks_is_zero():
    cube = np.zeros((6, 6, 6), bool)
    cube[1:5, 2:4, 1:3] = True
    assert assd(cube, cube, spacing=(3.0, 1.0, 1.0)) == 0.0


def test_assd_empty_masks():
    empty, one = np.zeros((3, 3, 3), bool), _points((3, 3, 3), (1, 1, 1))
    assert assd(empty, empty) == 0.0
    assert assd(empty, one) == math.inf and assd(one, empty) == math.inf


def test_assd_rejects_bad_spacing():
    one = _points((3, 3, 3), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        assd(one, one, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        assd(one, one, spacing=(1.0, 1.0))


def test_misunderstanding_rate_counts_moves_against_the_label():
    label = np.array([1, 1, 0, 0, 1])
    p_prev = np.array([0.5, 0.5, 0.5, 0.5, 1.0])
    p_next = np.array([0.6, 0.4, 0.6, 0.5, 1.0])  # voxels 1 and 2 move the wrong way
    assert misunderstanding_rate(p_prev, p_next, label) == pytest.approx(2 / 5)
    assert misunderstanding_rate(p_next, p_next, label) == 0.0


def test_noc_first_step_reaching_threshold():
    per_step = [0.80, 0.86, 0.91, 0.89]
    assert noc(per_step, 0.85) == 2
    assert noc(per_step, 0.90) == 3
    assert noc(per_step, 0.95) == 5  # never reached -> T + 1
    np.testing.assert_array_equal(noc(np.array([per_step, [0.9] * 4]), 0.9), [3, 1])


def test_noc_rejects_percent_thresholds():
    with pytest.raises(ValueError, match="threshold"):
        noc([0.5], 90)
