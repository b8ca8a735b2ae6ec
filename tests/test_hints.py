"""The incremental Gaussian hint map."""
import numpy as np
import pytest

from mecca_rllib.envs.hints import ClickHints, HintMap, gaussian_kernel


def _dense_hint(shape, clicks, kernel, sigma):
    """Reference: evaluate every click's truncated Gaussian on the full grid, take the max."""
    grid = np.stack(np.indices(shape), axis=-1)
    out = np.zeros(shape)
    r = kernel // 2
    for c in clicks:
        off = grid - np.asarray(c)
        g = np.exp(-(off**2).sum(-1) / (2 * sigma**2)) * (np.abs(off).max(-1) <= r)
        out = np.maximum(out, g)
    return out


def test_kernel_peak_symmetry_and_sigma():
    k = gaussian_kernel(8)
    assert k.shape == (9, 9, 9) and k.dtype == np.float32
    assert k[4, 4, 4] == 1.0 and k.max() == 1.0
    np.testing.assert_allclose(k, k[::-1, ::-1, ::-1])
    assert k[5, 4, 4] == pytest.approx(np.exp(-1 / (2 * 2.0**2)))  # sigma = 8 / 4


def test_hint_map_peaks_exactly_at_clicks_and_matches_dense_reference():
    shape = (8, 16, 16)
    clicks = np.array([[0, 0, 0], [4, 8, 8], [4, 10, 9], [7, 15, 2]])
    hints = HintMap(shape, kernel=8)
    hints.add(clicks[:2])
    hints.add(clicks[2:])
    assert hints.values.dtype == np.float32
    assert np.all(hints.values[tuple(clicks.T)] == 1.0)
    clicked = np.zeros(shape, bool)
    clicked[tuple(clicks.T)] = True
    assert hints.values[~clicked].max() < 1.0
    np.testing.assert_allclose(hints.values, _dense_hint(shape, clicks, 8, 2.0), atol=1e-6)


def test_adding_a_click_only_touches_its_window():
    hints = HintMap((8, 16, 16), kernel=4)
    hints.add(np.array([[1, 1, 1]]))
    before = hints.values.copy()
    hints.add(np.array([[6, 12, 12]]))
    window = np.zeros(before.shape, bool)
    window[4:9, 10:15, 10:15] = True
    np.testing.assert_array_equal(hints.values[~window], before[~window])
    assert hints.values[6, 12, 12] == 1.0


def test_writes_into_given_buffer_and_reset_clears():
    buf = np.full((3, 4, 5), 7.0, np.float32)
    hints = HintMap(buf.shape, kernel=2, out=buf)
    assert not buf.any()
    hints.add(np.array([[1, 2, 3]]))
    assert buf[1, 2, 3] == 1.0
    hints.reset()
    assert not buf.any()


def test_rejects_points_outside_volume_and_bad_kernels():
    hints = HintMap((4, 4, 4))
    with pytest.raises(ValueError, match=r"\(1, 4, 0\)"):
        hints.add(np.array([[0, 0, 0], [1, 4, 0]]))
    with pytest.raises(ValueError, match="integer"):
        hints.add(np.array([[0.5, 0, 0]]))
    with pytest.raises(ValueError, match="kernel"):
        HintMap((4, 4, 4), kernel=0)


def test_click_hints_route_clicks_by_side_and_need_the_side_when_split():
    pts = np.array([[1, 1, 1], [6, 12, 12]])
    one = ClickHints((8, 16, 16), kernel=2, channels=1)
    one.add(pts)  # the side is irrelevant with one channel
    assert one.values.shape == (1, 8, 16, 16) and one.values[0][1, 1, 1] == 1.0
    two = ClickHints((8, 16, 16), kernel=2, channels=2)
    two.add(pts, foreground=np.array([True, False]))
    assert two.values[0][1, 1, 1] == 1.0 and two.values[0][6, 12, 12] < 1.0
    assert two.values[1][6, 12, 12] == 1.0 and two.values[1][1, 1, 1] < 1.0
    np.testing.assert_array_equal(two.values.max(axis=0), one.values[0])
    with pytest.raises(ValueError, match="foreground"):
        two.add(pts)
    two.reset()
    assert not two.values.any()
