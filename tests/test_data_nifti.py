"""NIfTI loading to canonical (D, H, W) = (S, A, R), writing back, and bad files."""

import nibabel as nib
import numpy as np
import pytest

from mecca_rllib.data import DataError
from mecca_rllib.data.nifti import dhw_to_nifti, load_label, load_volume, save_like

# File axes: i -> posterior (flipped y), j -> left (flipped x), k -> superior; anisotropic
# 2.5 / 1.2 / 0.8 mm, and rotated 0.2 rad about z (non axis-aligned).
_THETA = 0.2
_ROT = np.array([[np.cos(_THETA), -np.sin(_THETA), 0, 0], [np.sin(_THETA), np.cos(_THETA), 0, 0],
                 [0, 0, 1, 0], [0, 0, 0, 1]])
OBLIQUE = _ROT @ np.array([[0, -1.2, 0, 10], [-2.5, 0, 0, -3], [0, 0, 0.8, 5], [0, 0, 0, 1.0]])


def _write(path, array, affine=OBLIQUE):
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


@pytest.fixture
def file_array():
    return np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)   # unique voxel ids


def test_load_reorients_to_canonical_dhw_with_spacing(tmp_path, file_array):
    vol = load_volume(_write(tmp_path / "img.nii.gz", file_array))
    assert vol.array.shape == (7, 5, 6) and vol.array.dtype == np.float32
    assert vol.spacing == pytest.approx((0.8, 2.5, 1.2))
    # D runs superior, H anterior, W right: dominant world component of each axis column.
    for column, world_axis in zip(range(3), (2, 1, 0)):
        direction = vol.affine[:3, column]
        assert np.argmax(np.abs(direction)) == world_axis and direction[world_axis] > 0
    # Every voxel keeps its world position: same id at the same mm coordinates.
    ijk = np.argwhere(np.ones(file_array.shape, bool))
    dhw = vol.file_index_to_dhw(ijk)
    assert np.array_equal(vol.array[tuple(dhw.T)], file_array[tuple(ijk.T)])
    world = ijk @ OBLIQUE[:3, :3].T + OBLIQUE[:3, 3]
    assert np.allclose(vol.dhw_to_world(dhw), world)
    assert np.array_equal(vol.dhw_to_file_index(dhw), ijk)


def test_save_like_round_trips_to_the_original_grid(tmp_path, file_array):
    src = _write(tmp_path / "img.nii.gz", file_array)
    vol = load_volume(src)
    out = save_like(vol.array, vol, tmp_path / "out" / "copy.nii.gz")
    back = nib.load(out)
    assert np.array_equal(back.get_fdata(dtype=np.float32), file_array)
    assert np.allclose(back.affine, OBLIQUE, atol=1e-5)
    assert np.array_equal(vol.to_file(vol.array), file_array)
    assert np.array_equal(vol.to_dhw(file_array), vol.array)
    mask = (vol.array > 100).astype(np.uint8)
    out = save_like(mask, vol, tmp_path / "mask.nii", dtype=np.uint8)
    written = nib.load(out)
    assert written.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(written.dataobj), (file_array > 100).astype(np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nii.gz", "mask.nii", "out"]


def test_save_like_rejects_wrong_shape_and_writes_nothing(tmp_path, file_array):
    vol = load_volume(_write(tmp_path / "img.nii.gz", file_array))
    with pytest.raises(DataError, match="shape"):
        save_like(np.zeros((2, 2, 2)), vol, tmp_path / "bad.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["img.nii.gz"]


def test_dhw_to_nifti_round_trip(tmp_path):
    array = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    nib.save(dhw_to_nifti(array, (2.0, 1.0, 0.5)), tmp_path / "a.nii.gz")
    vol = load_volume(tmp_path / "a.nii.gz")
    assert np.array_equal(vol.array, array) and vol.spacing == pytest.approx((2.0, 1.0, 0.5))


def test_four_d_image_needs_a_channel(tmp_path):
    data = np.stack([np.full((4, 5, 6), c, np.float32) for c in range(3)], axis=-1)
    path = _write(tmp_path / "multi.nii.gz", data, np.eye(4))
    with pytest.raises(DataError, match=r"multi\.nii\.gz.*3 channels"):
        load_volume(path)
    assert load_volume(path, channel=2).array.max() == 2
    names = {"0": "FLAIR", "1": "T1w", "2": "T2w"}
    assert load_volume(path, channel="t1w", channel_names=names).array.max() == 1
    with pytest.raises(DataError, match="no channel named"):
        load_volume(path, channel="ADC", channel_names=names)


def test_label_value_choice_and_any_foreground(tmp_path):
    seg = np.zeros((4, 5, 6), np.uint8)
    seg[1, 1, 1], seg[2, 2, 2], seg[3, 3, 3] = 1, 2, 4
    img = load_volume(_write(tmp_path / "img.nii.gz", np.ones((4, 5, 6), np.float32)))
    path = _write(tmp_path / "seg.nii.gz", seg)
    assert load_label(path, like=img).array.sum() == 3
    chosen = load_label(path, label_value=2, like=img)
    assert chosen.array.dtype == np.uint8 and chosen.array.sum() == 1
    with pytest.raises(DataError, match=r"seg\.nii\.gz.*empty label"):
        load_label(path, label_value=3, like=img)


# ---- bad input: each names the file and the problem ------------------------------------

def test_not_nifti(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("this is not an image")
    with pytest.raises(DataError, match=r"notes\.nii\.gz.*not a readable NIfTI"):
        load_volume(path)


@pytest.mark.parametrize("name", ["cut.nii.gz", "cut.nii"])
def test_truncated_file(tmp_path, name):
    path = _write(tmp_path / name, np.random.default_rng(0).normal(size=(20, 20, 20)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"{name.replace('.', '[.]')}: .*truncated"):
        load_volume(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"absent\.nii\.gz: file not found"):
        load_volume(tmp_path / "absent.nii.gz")


def test_label_shape_and_affine_mismatch(tmp_path):
    img = load_volume(_write(tmp_path / "img.nii.gz", np.ones((4, 5, 6), np.float32)))
    seg = np.ones((4, 5, 6), np.uint8)
    with pytest.raises(DataError, match=r"small\.nii\.gz.*shape \(4, 5, 5\)"):
        load_label(_write(tmp_path / "small.nii.gz", seg[..., :5]), like=img)
    shifted = OBLIQUE.copy()
    shifted[0, 3] += 1.0
    with pytest.raises(DataError, match=r"moved\.nii\.gz.*affine"):
        load_label(_write(tmp_path / "moved.nii.gz", seg, shifted), like=img)


def test_empty_label(tmp_path):
    img = load_volume(_write(tmp_path / "img.nii.gz", np.ones((4, 5, 6), np.float32)))
    path = _write(tmp_path / "empty.nii.gz", np.zeros((4, 5, 6), np.uint8))
    with pytest.raises(DataError, match=r"empty\.nii\.gz.*empty label"):
        load_label(path, like=img)
    assert load_label(path, like=img, allow_empty=True).array.sum() == 0


def test_nonfinite_image_rejected_by_default_or_cleaned(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    data[0, 0, 0], data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf, -np.inf
    path = _write(tmp_path / "nan.nii.gz", data, np.eye(4))
    with pytest.raises(DataError, match=r"nan\.nii\.gz.*3 NaN/Inf"):
        load_volume(path)
    clean = load_volume(path, nonfinite="clean").array
    finite = data[np.isfinite(data)]
    assert np.isfinite(clean).all()
    assert clean.min() == finite.min() and clean.max() == finite.max()


def test_volume_from_array_matches_loading_the_file(tmp_path, file_array):
    from mecca_rllib.data.nifti import volume_from_array

    loaded = load_volume(_write(tmp_path / "img.nii.gz", file_array))
    built = volume_from_array(file_array, OBLIQUE)
    assert np.array_equal(built.array, loaded.array) and built.spacing == pytest.approx(loaded.spacing)
    assert np.allclose(built.affine, loaded.affine, atol=1e-5)
    save_like(built.array, built, tmp_path / "again.nii.gz")
    assert np.array_equal(nib.load(tmp_path / "again.nii.gz").get_fdata(), file_array)
