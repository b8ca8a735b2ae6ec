"""Click placement of the simulated user."""
import numpy as np
import pytest

from mecca_rllib.envs.simulated_user import (
    SimulatedUser,
    boundary_map,
    farthest_points,
    validate_points,
)


def _cube(shape, lo, hi):
    mask = np.zeros(shape, np.uint8)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return mask


def test_boundary_is_the_six_connected_morphological_gradient():
    label = _cube((6, 6, 6), (2, 2, 2), (4, 4, 4))
    b = boundary_map(label)
    # All 8 foreground voxels touch background; 6 faces x 4 background neighbours outside.
    assert b[label == 1].all() and b.sum() == 8 + 6 * 4
    assert not b[1, 1, 2]  # edge-diagonal neighbour: not a face neighbour
    assert b[1, 2, 2]
    assert not boundary_map(np.ones((3, 3, 3))).any()  # the volume border is not a class
    assert not boundary_map(np.zeros((3, 3, 3))).any()


def test_edge_clicks_lie_on_wrong_boundary_voxels_and_never_repeat():
    rng = np.random.default_rng(0)
    label = _cube((8, 16, 16), (2, 4, 4), (6, 12, 11))
    pred = np.zeros(label.shape, bool)
    pred[2:6, 4:12, 4:8] = True  # right part of the object is missed
    wrong_edge = boundary_map(label) & (pred != label.astype(bool))
    user = SimulatedUser("edge")
    user.start(label)
    seen = []
    for _ in range(4):
        pts = user.click(pred, 10, rng)
        assert len(pts) == 10 and pts.dtype == np.int32
        assert wrong_edge[tuple(pts.T)].all()
        seen.extend(tuple(int(v) for v in p) for p in pts)
    assert len(seen) == len(set(seen)) == 40
    np.testing.assert_array_equal(user.clicks, np.array(seen))  # oldest first


def test_edge_falls_back_to_other_wrong_voxels_then_to_none():
    rng = np.random.default_rng(1)
    label = _cube((6, 6, 6), (1, 1, 1), (5, 5, 5))
    pred = label.astype(bool).copy()
    pred[2, 2, 2] = False  # interior: wrong but not on the boundary
    pred[1, 1, 1] = False  # corner: wrong and on the boundary
    user = SimulatedUser("edge")
    user.start(label)
    pts = user.click(pred, 5, rng)
    assert [tuple(p) for p in pts] == [(1, 1, 1), (2, 2, 2)]  # edge points first
    assert len(user.click(pred, 5, rng)) == 0


def test_clicks_respect_the_advice_mask():
    rng = np.random.default_rng(2)
    label = _cube((8, 16, 16), (1, 1, 1), (7, 15, 15))
    advice = np.zeros(label.shape, bool)
    advice[:, :8, :] = True
    for mode in ("edge", "largest_error"):
        user = SimulatedUser(mode)
        user.start(label)
        pts = user.click(np.zeros(label.shape, bool), 6, rng, advice=advice)
        assert len(pts) == 6 and advice[tuple(pts.T)].all()


@pytest.mark.parametrize("mode", ["edge", "largest_error"])
def test_advice_first_clicks_the_advice_then_elsewhere(mode):
    label = _cube((8, 16, 16), (2, 4, 4), (6, 12, 12))
    pred = np.zeros(label.shape, bool)  # the whole object is missed
    advice = np.zeros(label.shape, bool)
    advice[3, 4:6, 3:5] = True  # holds 2 wrong (object) voxels
    only, first = SimulatedUser(mode, "only"), SimulatedUser(mode, "first")
    only.start(label)
    first.start(label)
    strict = only.click(pred, 6, np.random.default_rng(0), advice=advice)
    filled = first.click(pred, 6, np.random.default_rng(0), advice=advice)
    assert len(strict) == 2 and advice[tuple(strict.T)].all()  # "only": fewer clicks, none twice
    assert len(filled) == 6 and label[tuple(filled.T)].all()  # every click on a wrong voxel
    assert advice[tuple(filled.T)].tolist() == [True, True, False, False, False, False]
    assert len({tuple(p) for p in filled}) == 6
    with pytest.raises(ValueError, match="advice_mode"):
        SimulatedUser(mode, "anywhere")


@pytest.mark.parametrize("mode", ["edge", "largest_error"])
def test_no_clicks_without_an_object(mode):
    user = SimulatedUser(mode)
    user.start(np.zeros((4, 4, 4), np.uint8))
    pred = np.ones((4, 4, 4), bool)  # all false positives, but there is no edge to click
    assert user.click(pred, 5, np.random.default_rng(0)).shape == (0, 3)


def test_largest_error_clicks_centres_of_components_largest_first():
    label = np.zeros((9, 16, 16), np.uint8)
    label[1:6, 1:6, 1:6] = 1  # 5^3 error component, centre (3, 3, 3)
    label[2:5, 10:13, 10:13] = 1  # 3^3 component, centre (3, 11, 11)
    user = SimulatedUser("largest_error")
    user.start(label)
    pts = user.click(np.zeros(label.shape, bool), 2, np.random.default_rng(0))
    # After the first click the ball of radius 3 around it leaves only 4-voxel corners
    # of the big cube, smaller than the second cube.
    assert [tuple(p) for p in pts] == [(3, 3, 3), (3, 11, 11)]


def test_farthest_point_sampling_spreads_points():
    line = np.stack([np.zeros(50), np.zeros(50), np.arange(50)], axis=1).astype(int)
    for seed in range(5):
        pts = farthest_points(line, 2, np.random.default_rng(seed))
        first, second = int(pts[0, 2]), int(pts[1, 2])
        assert second == (0 if first >= 25 else 49)  # the far end from the random start
    pts = farthest_points(line, 3, np.random.default_rng(0), existing=np.array([[0, 0, 0]]))
    assert [int(p[2]) for p in pts] == [49, 24, 12]  # ties go to the first candidate


def test_validate_points_names_the_bad_point():
    assert validate_points(np.array([[0, 1, 2]]), (4, 4, 4)).dtype == np.int32
    with pytest.raises(ValueError, match=r"\(0, -1, 2\)"):
        validate_points(np.array([[1, 1, 1], [0, -1, 2]]), (4, 4, 4))
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        validate_points(np.array([1, 2, 3]), (4, 4, 4))
    with pytest.raises(ValueError, match="click_mode"):
        SimulatedUser("random")
