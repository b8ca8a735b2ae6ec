"""InteractiveSession: grids, click mapping, undo/reset, timings and bad input."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from mecca_rllib.data.nifti import load_volume
from mecca_rllib.data.preprocess import resize_image, zscore
from mecca_rllib.session import InteractiveSession, StepResult

NET_SHAPE = (8, 12, 16)  # (D, H, W) of the network


class ImagePolicy(nn.Module):
    """Stand-in for a trained module with a known answer: +0.4 where the z-scored image is
    positive, -0.4 elsewhere; confidence 0.9 on bright voxels, 0.1 + 0.01 * w elsewhere."""

    def __init__(self, shape=NET_SHAPE) -> None:
        super().__init__()
        self.model_config = {"shape": shape}
        self.scale = nn.Parameter(torch.tensor(10.0))
        self.seen: list[torch.Tensor] = []

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        self.seen.append(obs.clone())
        bright = obs[:, 0] * self.scale
        logits = torch.zeros(obs.shape[0], 6, *obs.shape[2:])
        logits[:, 0], logits[:, 5] = -bright, bright  # index 0: -0.4, index 5: +0.4
        return logits

    def confidence(self, obs: torch.Tensor, action_values: torch.Tensor) -> torch.Tensor:
        w = torch.arange(obs.shape[-1], dtype=torch.float32)
        return torch.where(obs[:, 0] > 0, torch.tensor(0.9), 0.1 + 0.01 * w)


def oblique_affine() -> np.ndarray:
    """Anisotropic, non-axis-aligned affine whose file axes (i, j, k) are closest to
    (superior, right, anterior) with j flipped: canonical (D, H, W) = (i, k, j) axes, so a
    file array of shape (8, 16, 12) is (8, 12, 16) canonically."""
    angle = np.deg2rad(15)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    axes = np.array([[0, -1, 0], [0, 0, 1], [1, 0, 0]], float)  # columns: i->z, j->-x, k->y
    affine = np.eye(4)
    affine[:3, :3] = rot @ axes @ np.diag([3.0, 0.9, 1.4])
    affine[:3, 3] = [20.0, -7.0, 5.0]
    return affine


def ball_image(shape, affine, centre_mm, radius_mm) -> np.ndarray:
    """float32 indicator of a world-space ball sampled on the grid of ``affine``."""
    ijk = np.stack(np.indices(shape), axis=-1).reshape(-1, 3)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    inside = np.linalg.norm(world - centre_mm, axis=1) <= radius_mm
    return inside.reshape(shape).astype(np.float32)


FILE_SHAPE = (8, 16, 12)


@pytest.fixture()
def oblique_case():
    affine = oblique_affine()
    centre = affine[:3, :3] @ (np.array(FILE_SHAPE) / 2 - 0.5) + affine[:3, 3]
    return ball_image(FILE_SHAPE, affine, centre, 6.0), affine


def test_results_map_back_exactly_on_an_oblique_anisotropic_grid(oblique_case):
    image, affine = oblique_case
    session = InteractiveSession(ImagePolicy())
    session.start(image, affine=affine, roi=[[0, 8], [0, 16], [0, 12]])  # ROI = volume = S
    result = session.step()

    assert isinstance(result, StepResult) and result.step == 1
    np.testing.assert_array_equal(result.affine, affine)
    for name in ("probability", "segmentation", "confidence", "advice"):
        assert getattr(result, name).shape == FILE_SHAPE
    # The policy pushes bright voxels to 0.9 and the rest to 0.1: the segmentation is the ball.
    np.testing.assert_array_equal(result.segmentation, image.astype(np.uint8))
    np.testing.assert_allclose(result.probability, np.where(image > 0, 0.9, 0.1), atol=1e-6)
    np.testing.assert_allclose(result.confidence[image > 0], 0.9, atol=1e-6)
    # Advice: the least confident voxels lie at small canonical w (file axis j flipped).
    for region in result.regions:
        voxels = np.argwhere(result.advice == region.rank)
        np.testing.assert_allclose(region.centroid, voxels.mean(axis=0), atol=1e-6)
    assert result.advice.max() == len(result.regions) > 0
    assert not (result.advice > 0)[image > 0].any()


def test_clicks_land_on_the_same_world_point_in_the_network_grid(oblique_case):
    image, affine = oblique_case
    policy = ImagePolicy()
    session = InteractiveSession(policy)
    session.start(image, affine=affine, roi=[[0, 8], [0, 16], [0, 12]])
    click = np.array([3, 5, 9])
    grid = session.click([click])[0]
    session.step()
    hint = policy.seen[-1][0, 2].numpy()
    assert np.unravel_index(hint.argmax(), hint.shape) == tuple(grid)
    assert hint.max() == pytest.approx(1.0)
    # Same world point: the canonical grid's affine (data layer) at the hinted voxel.
    canonical_affine = session.volume.affine
    np.testing.assert_allclose(
        canonical_affine[:3, :3] @ grid + canonical_affine[:3, 3],
        affine[:3, :3] @ click + affine[:3, 3],
        atol=1e-9,
    )


def test_resized_roi_maps_back_inside_the_box_only(oblique_case):
    image, affine = oblique_case
    big = np.kron(image, np.ones((2, 2, 2), np.float32))  # (16, 32, 24): twice the grid
    big_affine = affine @ np.diag([0.5, 0.5, 0.5, 1.0])
    roi = np.array([[2, 14], [3, 29], [2, 22]])
    session = InteractiveSession(ImagePolicy())
    session.start(big, affine=big_affine, roi=roi)
    np.testing.assert_array_equal(session.roi, roi)
    result = session.step()
    inside = np.zeros(big.shape, bool)
    inside[tuple(slice(a, b) for a, b in roi)] = True
    assert not result.segmentation[~inside].any()
    assert (result.probability[~inside] == 0).all() and (result.confidence[~inside] == 1).all()
    assert not result.advice[~inside].any()
    seg, truth = result.segmentation[inside] > 0, big[inside] > 0
    dice = 2 * (seg & truth).sum() / (seg.sum() + truth.sum())
    assert dice > 0.9  # linear resampling blurs only the boundary


def test_roi_derived_from_first_clicks_and_nifti_input(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(20, 24, 18)).astype(np.float32)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image, np.diag([-1.2, 1.0, 2.0, 1.0])), path)
    session = InteractiveSession(ImagePolicy(), roi_margin=2)
    session.start(path)
    assert session.roi is None
    with pytest.raises(RuntimeError, match="region of interest"):
        session.step()
    session.click([[5, 6, 7], [12, 10, 9]])
    np.testing.assert_array_equal(session.roi, [[3, 15], [4, 13], [5, 12]])
    # Canonical (D, H, W) = (k, j, flipped i): the ROI is [5, 12) x [4, 13) x [20-15, 20-3).
    canonical = load_volume(path).array
    crop = canonical[5:12, 4:13, 5:17]
    np.testing.assert_allclose(session.network_image, zscore(resize_image(crop, NET_SHAPE)), atol=1e-6)
    result = session.step()
    assert result.probability.shape == image.shape
    np.testing.assert_allclose(result.affine, nib.load(path).affine)
    with pytest.raises(ValueError, match=r"click \(0, 0, 0\).*region of interest"):
        session.click([[0, 0, 0]])


def test_undo_and_reset_restore_clicks_and_probability():
    rng = np.random.default_rng(1)
    image = rng.normal(size=NET_SHAPE).astype(np.float32)
    session = InteractiveSession(ImagePolicy())
    session.start(image, roi=[[0, 8], [0, 12], [0, 16]])
    p0 = session.probability_network
    session.click([[1, 2, 3]])
    first = session.step()
    p1 = session.probability_network
    session.click([[4, 5, 6]])
    session.step()
    assert session.steps_done == 2 and len(session.clicks) == 2

    assert session.undo() is first
    assert session.steps_done == 1 and session.result is first
    np.testing.assert_array_equal(session.clicks, [[1, 2, 3]])
    np.testing.assert_array_equal(session.probability_network, p1)
    session.click([[6, 6, 6]])  # pending clicks are dropped by undo as well
    session.undo()
    assert session.steps_done == 0 and session.result is None and len(session.clicks) == 0
    np.testing.assert_array_equal(session.probability_network, p0)
    assert session.undo() is None  # nothing left to undo

    session.click([[1, 2, 3]])
    again = session.step()
    np.testing.assert_array_equal(again.probability, first.probability)
    session.reset()
    assert session.steps_done == 0 and len(session.clicks) == 0
    np.testing.assert_array_equal(session.probability_network, p0)
    assert len(session.timings) == 3  # every computed step stays timed


def test_hint_map_is_rebuilt_on_undo():
    image = np.random.default_rng(2).normal(size=NET_SHAPE).astype(np.float32)
    policy = ImagePolicy()
    session = InteractiveSession(policy)
    session.start(image, roi=[[0, 8], [0, 12], [0, 16]])
    session.click([[1, 1, 1]])
    session.step()
    hint_one_click = policy.seen[-1][0, 2].clone()
    session.click([[6, 10, 14]])
    session.step()
    session.undo()
    session.step()
    torch.testing.assert_close(policy.seen[-1][0, 2], hint_one_click)


def test_timings_are_recorded_per_step():
    image = np.random.default_rng(3).normal(size=NET_SHAPE).astype(np.float32)
    session = InteractiveSession(ImagePolicy())
    session.start(image, roi=[[0, 8], [0, 12], [0, 16]])
    results = [session.step() for _ in range(3)]
    assert [r.step for r in results] == [1, 2, 3]
    assert len(session.timings) == 3
    for timing, result in zip(session.timings, results):
        assert timing is result.timing
        parts = (timing.policy_ms, timing.confidence_ms, timing.guide_ms, timing.mapping_ms)
        assert all(t >= 0 for t in parts)
        assert timing.total_ms == pytest.approx(sum(parts))


@pytest.mark.parametrize(
    "points, match",
    [
        ([[1, 2, float("nan")]], r"click \(1.0, 2.0, nan\).*NaN"),
        ([[1, 2, 16]], r"click \(1.0, 2.0, 16.0\).*outside the volume"),
        ([[-1, 0, 0]], r"click \(-1.0, 0.0, 0.0\).*outside the volume"),
        ([[1, 2]], r"shape \(K, 3\)"),
    ],
)
def test_bad_clicks_name_the_click(points, match):
    image = np.zeros(NET_SHAPE, np.float32)
    session = InteractiveSession(ImagePolicy())
    session.start(image, roi=[[0, 8], [0, 12], [0, 16]])
    with pytest.raises(ValueError, match=match):
        session.click(points)
    assert len(session.clicks) == 0


def test_bad_images_and_rois(tmp_path):
    session = InteractiveSession(ImagePolicy())
    with pytest.raises(ValueError, match="3D"):
        session.start(np.zeros((8, 12)))
    with pytest.raises(ValueError, match="NaN"):
        session.start(np.full(NET_SHAPE, np.nan))
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 12), np.float32), np.eye(4)), flat)
    with pytest.raises(ValueError, match="flat.nii.gz"):
        session.start(flat)
    with pytest.raises(ValueError, match="missing.nii.gz"):
        session.start(tmp_path / "missing.nii.gz")
    with pytest.raises(ValueError, match="roi"):
        session.start(np.zeros(NET_SHAPE), roi=[[0, 9], [0, 12], [0, 16]])
    with pytest.raises(ValueError, match="roi"):
        session.start(np.zeros(NET_SHAPE), roi=[[3, 3], [0, 12], [0, 16]])
    with pytest.raises(RuntimeError, match="start"):
        session.click([[0, 0, 0]])


def test_module_without_training_shape_is_rejected():
    policy = ImagePolicy()
    policy.model_config = {}
    with pytest.raises(ValueError, match="training shape"):
        InteractiveSession(policy)
    with pytest.raises(ValueError, match="policy_logits"):
        InteractiveSession(nn.Linear(2, 2))


def test_real_module_argmax_is_deterministic_and_sampling_is_seeded(make_tiny_module):
    image = np.random.default_rng(5).normal(size=(10, 14, 18)).astype(np.float32)

    def run(**kwargs):
        session = InteractiveSession(make_tiny_module(NET_SHAPE), **kwargs)
        session.start(image, spacing=(2.0, 1.0, 1.0))
        session.click([[5, 7, 9], [2, 3, 4]])
        session.step()
        return session.probability_network

    argmax = run()
    np.testing.assert_array_equal(argmax, run())
    # One step from p = 0.5 lands exactly on the env's 0.1 grid (MECCA.md §1 action set).
    expected = {np.float32(v) / np.float32(10) for v in (1, 3, 4, 6, 7, 9)}
    assert set(np.unique(argmax)) <= expected
    sampled = run(explore=True, seed=1)
    np.testing.assert_array_equal(sampled, run(explore=True, seed=1))
    assert not np.array_equal(sampled, run(explore=True, seed=2))
    assert not np.array_equal(sampled, argmax)


@pytest.mark.parametrize("box", [[[3, 20], [0, 29], [5, 40]], [[0, 5], [2, 9], [1, 13]]])
def test_roi_grid_resampling_matches_scikit_image_and_brute_force(box):
    from skimage.transform import resize

    from mecca_rllib.data.preprocess import RoiGrid

    grid = RoiGrid(box=np.array(box), shape=NET_SHAPE)  # up- and down-sampling boxes
    size = tuple(grid.size.tolist())
    rng = np.random.default_rng(6)
    maps = rng.random((2, *NET_SHAPE)).astype(np.float32)
    linear = grid.resample_linear(maps)
    for c in range(2):
        expected = resize(maps[c], size, order=1, mode="edge", anti_aliasing=False)
        np.testing.assert_allclose(linear[c], expected, atol=1e-5)
    labels = rng.integers(0, 4, NET_SHAPE).astype(np.uint8)
    nearest = grid.resample_nearest(labels)
    # Brute force: every ROI voxel takes the label of the network voxel nearest to its centre.
    centres = np.stack(np.indices(size), axis=-1).reshape(-1, 3) + grid.box[:, 0]
    source = np.floor((centres - grid.box[:, 0] + 0.5) * np.array(NET_SHAPE) / grid.size).astype(int)
    np.testing.assert_array_equal(nearest.ravel(), labels[tuple(source.T)])
    sizes, centroids = grid.label_centroids(labels, np.array([1, 2, 3]))
    for lab, n, centroid in zip((1, 2, 3), sizes, centroids):
        voxels = np.argwhere(nearest == lab) + grid.box[:, 0]
        assert n == len(voxels)
        np.testing.assert_allclose(centroid, voxels.mean(axis=0))


def test_session_draws_hints_with_the_kernel_the_module_was_trained_with(make_tiny_module):
    module = make_tiny_module(NET_SHAPE)
    module.model_config = {**module.model_config, "hint_kernel": 3}
    assert InteractiveSession(module).hint_kernel == 3
    assert InteractiveSession(module, hint_kernel=5).hint_kernel == 5
    module.model_config = {k: v for k, v in module.model_config.items() if k != "hint_kernel"}
    assert InteractiveSession(module).hint_kernel == 8  # unrecorded: the paper's kernel


def test_split_hint_model_needs_the_click_side_and_keeps_it_through_undo(make_tiny_module):
    module = make_tiny_module(NET_SHAPE, hint_channels=2)
    seen = []
    original = module.policy_logits

    def spy(obs):
        seen.append(obs.clone())
        return original(obs)

    module.policy_logits = spy
    image = np.random.default_rng(2).normal(size=NET_SHAPE).astype(np.float32)
    session = InteractiveSession(module)
    session.start(image, roi=[[0, 8], [0, 12], [0, 16]])
    with pytest.raises(ValueError, match="foreground"):
        session.click([[1, 1, 1]])
    with pytest.raises(ValueError, match="one per click"):
        session.click([[1, 1, 1], [2, 2, 2]], foreground=[True, False, True])
    session.click([[1, 1, 1]], foreground=True)
    session.click([[6, 10, 14]], foreground=False)
    session.step()
    obs = seen[-1][0]
    assert obs.shape == (4, *NET_SHAPE)
    assert obs[2, 1, 1, 1] == 1.0 and obs[3, 1, 1, 1] < 1.0
    assert obs[3, 6, 10, 14] == 1.0 and obs[2, 6, 10, 14] < 1.0
    session.click([[4, 4, 4]], foreground=True)
    session.step()
    session.undo()
    session.step()
    torch.testing.assert_close(seen[-1][0, 2:], obs[2:])  # the sides survive undo


def test_messages_print_plain_numbers():
    """Shapes and boxes in messages read ``(2, 2, 2)``, never ``(np.int64(2), ...)``."""
    session = InteractiveSession(ImagePolicy())
    session.start(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"outside the volume of shape \(2, 2, 2\)$") as err:
        session.click([[5, 0, 0]])
    assert "np." not in str(err.value)
    with pytest.raises(ValueError, match=r"roi \[\[0, 3\], \[0, 2\], \[0, 2\]\] is empty or outside "
                                         r"the volume of shape \(2, 2, 2\)$"):
        session.start(np.zeros((2, 2, 2), np.float32), roi=[[0, 3], [0, 2], [0, 2]])


def test_backend_keyword_defaults_to_fp32_torch_and_refuses_unknown_names(make_tiny_module):
    from mecca_rllib.session import InteractiveSession as Session

    module = make_tiny_module()
    assert Session(module).backend.name == "torch"
    assert Session(module, backend="torch").backend.module is module
    with pytest.raises(ValueError, match="unknown inference backend 'fast'"):
        Session(module, backend="fast")


class UpDownPolicy(ImagePolicy):
    """+0.1 where p <= 0.5, -0.1 elsewhere: every voxel goes 0.5 -> 0.6 -> 0.5 -> 0.6."""

    def policy_logits(self, obs: torch.Tensor) -> torch.Tensor:
        up = (obs[:, 1] <= 0.5).float()
        logits = torch.zeros(obs.shape[0], 6, *obs.shape[2:])
        logits[:, 3], logits[:, 2] = up, 1 - up  # index 3: +0.1, index 2: -0.1
        return logits


@pytest.mark.parametrize("readout", ["threshold", "hold"])
def test_session_reads_out_the_segmentation_like_the_env(oblique_case, readout):
    """At p = 0.5 after 0.6, "hold" keeps the voxel foreground, "threshold" drops it; undo
    goes back to the previous step's segmentation too."""
    image, affine = oblique_case
    session = InteractiveSession(UpDownPolicy(), readout=readout)
    session.start(image, affine=affine, roi=[[0, 8], [0, 16], [0, 12]])
    first = session.step()
    assert first.segmentation.all() and (first.probability == np.float32(0.6)).all()
    second = session.step()
    assert (second.probability == np.float32(0.5)).all()
    assert second.segmentation.all() == (readout == "hold")
    assert second.segmentation.any() == (readout == "hold")
    session.undo()
    again = session.step()
    np.testing.assert_array_equal(again.segmentation, second.segmentation)
    with pytest.raises(ValueError, match="readout must be one of"):
        InteractiveSession(UpDownPolicy(), readout="median")
