"""Volume sources (synthetic, raw folder, cache) and the preprocessed cache."""
import json

import nibabel as nib
import numpy as np
import pytest

from mecca_rllib.data import DataError, open_source
from mecca_rllib.data.cache import build_cache, read_case, read_manifest
from mecca_rllib.data.phantoms import write_phantom_folder

SHAPE = (8, 16, 16)


@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory):
    return write_phantom_folder(tmp_path_factory.mktemp("ds") / "phantoms", 5, (10, 20, 18),
                                seed=2, spacing=(2.0, 1.0, 1.0))


def test_synthetic_cases_are_deterministic_and_splits_disjoint():
    rng = np.random.default_rng(0)
    train = open_source("synthetic", SHAPE, num_cases=3, split="train", seed=1)
    again = open_source("synthetic", SHAPE, num_cases=5, split="train", seed=1)
    test = open_source("synthetic", SHAPE, num_cases=3, split="test", seed=1)
    both = open_source("synthetic", SHAPE, num_cases=3, split="all", seed=1)
    assert len(train) == len(test) == 3 and len(both) == 6
    image, label = train.get(2, rng)
    assert image.shape == label.shape == SHAPE and image.dtype == np.float32 and label.dtype == np.uint8
    assert np.array_equal(image, again.get(2, rng)[0])       # depends on (seed, split, i) only
    assert train.get(2, rng)[0] is image                      # memoised
    train_ids = {train.get(i, rng)[1].tobytes() for i in range(3)}
    test_ids = {test.get(i, rng)[1].tobytes() for i in range(3)}
    assert not train_ids & test_ids
    assert np.array_equal(both.get(4, rng)[1], test.get(1, rng)[1])
    other_seed = open_source("synthetic", SHAPE, num_cases=3, seed=2)
    assert not np.array_equal(other_seed.get(0, rng)[0], train.get(0, rng)[0])


def test_synthetic_labeled_fraction_and_bad_arguments():
    source = open_source("synthetic", SHAPE, num_cases=8, labeled_fraction=0.25, seed=3)
    assert source.labeled.dtype == bool and source.labeled.sum() == 2
    with pytest.raises(ValueError, match="split"):
        open_source("synthetic", SHAPE, split="validation")
    with pytest.raises(IndexError):
        source.get(8, np.random.default_rng(0))


def test_folder_source_split_and_preprocessing(phantom_folder):
    train = open_source(phantom_folder, SHAPE, split="train", test_fraction=0.4, seed=0, variants=2)
    test = open_source(phantom_folder, SHAPE, split="test", test_fraction=0.4, seed=0, variants=2)
    assert len(train) == 3 and len(test) == 2
    assert sorted(train.names + test.names) == [f"phantom_{i:04d}" for i in range(5)]
    seen = set()
    for seed in range(6):
        image, label = train.get(0, np.random.default_rng(seed))
        assert image.shape == label.shape == SHAPE
        assert abs(image.mean()) < 1e-3 and label.any()
        seen.add(image.tobytes())
    assert len(seen) == 2                                      # rng picks among the variants


def test_cache_round_trip_matches_the_folder_source(phantom_folder, tmp_path, monkeypatch):
    cache = build_cache(phantom_folder, tmp_path / "cache", SHAPE, variants=2, seed=0)
    manifest = read_manifest(cache)
    assert manifest.shape == SHAPE and manifest.variants == 2 and len(manifest.cases) == 5
    stored = read_case(cache, "phantom_0003")
    assert stored.image.shape == (2, *SHAPE) and stored.label.dtype == np.uint8
    assert stored.spacing.shape == (2, 3) and stored.crop.shape == (2, 3, 2)
    folder = open_source(phantom_folder, SHAPE, split="all", variants=2)

    def no_nifti(*args, **kwargs):
        raise AssertionError("a cache read must not parse NIfTI")

    monkeypatch.setattr(nib, "load", no_nifti)
    cached = open_source(cache, SHAPE, split="all")
    assert cached.names == folder.names
    for i in range(5):
        for seed in range(3):
            a, b = cached.get(i, np.random.default_rng(seed)), folder.get(i, np.random.default_rng(seed))
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    monkeypatch.undo()
    for split in ("train", "test"):     # a folder and its cache split the same way
        from_cache = open_source(cache, SHAPE, split=split, test_fraction=0.4, seed=5)
        from_folder = open_source(phantom_folder, SHAPE, split=split, test_fraction=0.4, seed=5,
                                  variants=1)
        assert from_cache.names == from_folder.names


def test_cache_shape_mismatch_and_overwrite_rules(phantom_folder, tmp_path):
    cache = build_cache(phantom_folder, tmp_path / "cache", SHAPE, variants=1)
    with pytest.raises(DataError, match=r"cache.*built at shape \(8, 16, 16\)"):
        open_source(cache, (30, 55, 55))
    build_cache(phantom_folder, cache, (6, 8, 8), variants=1)          # replacing a cache is fine
    assert read_manifest(cache).shape == (6, 8, 8)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match=r"notes.*refusing to overwrite"):
        build_cache(phantom_folder, other, SHAPE)
    assert (other / "keep.txt").read_text() == "mine"


def test_failed_cache_build_leaves_nothing(phantom_folder, tmp_path):
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "labels").mkdir()
    for sub in ("images", "labels"):
        for name in ("phantom_0000.nii.gz", "phantom_0001.nii.gz"):
            (bad / sub / name).write_bytes((phantom_folder / sub / name).read_bytes())
    empty = nib.load(bad / "labels" / "phantom_0001.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(empty.shape, np.uint8), empty.affine),
             bad / "labels" / "phantom_0001.nii.gz")
    with pytest.raises(DataError, match=r"phantom_0001\.nii\.gz.*empty label"):
        build_cache(bad, tmp_path / "cache", SHAPE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_open_source_bad_datasets(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        open_source(tmp_path / "nowhere", SHAPE)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(DataError, match="no case found"):
        open_source(tmp_path, SHAPE)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match=r"manifest\.json.*not a valid cache manifest"):
        open_source(tmp_path / "broken", SHAPE)


def test_nan_in_a_dataset_image_is_rejected_unless_cleaned(phantom_folder, tmp_path):
    root = tmp_path / "nan"
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
        name = "phantom_0000.nii.gz"
        (root / sub / name).write_bytes((phantom_folder / sub / name).read_bytes())
    img = nib.load(root / "images" / "phantom_0000.nii.gz")
    data = img.get_fdata(dtype=np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), root / "images" / "phantom_0000.nii.gz")
    with pytest.raises(DataError, match=r"images/phantom_0000\.nii\.gz.*NaN/Inf"):
        open_source(root, SHAPE, split="all")
    source = open_source(root, SHAPE, split="all", nonfinite="clean", variants=1)
    assert np.isfinite(source.get(0, np.random.default_rng(0))[0]).all()


def test_validation_split_holds_out_training_cases_and_never_a_test_case(phantom_folder):
    kwargs = dict(test_fraction=0.4, seed=0, variants=1)
    test = open_source(phantom_folder, SHAPE, split="test", **kwargs)
    train = open_source(phantom_folder, SHAPE, split="train", **kwargs)
    kept = open_source(phantom_folder, SHAPE, split="train", validation=True, **kwargs)
    val = open_source(phantom_folder, SHAPE, split="test", validation=True, **kwargs)
    assert len(val) >= 1 and sorted(kept.names + val.names) == sorted(train.names)
    assert not set(val.names) & set(test.names) and not set(val.names) & set(kept.names)
    rng = np.random.default_rng(0)
    phantoms = {open_source("synthetic", SHAPE, num_cases=3, split=s, seed=1).get(i, rng)[1].tobytes()
                for s in ("train", "test") for i in range(3)}
    validation = open_source("synthetic", SHAPE, num_cases=3, split="test", seed=1, validation=True)
    assert not {validation.get(i, rng)[1].tobytes() for i in range(3)} & phantoms
    with pytest.raises(ValueError, match="validation"):
        open_source("synthetic", SHAPE, split="all", validation=True)


def test_augmented_source_serves_each_case_under_a_fresh_flip_or_turn():
    from mecca_rllib.data import AugmentedSource
    from mecca_rllib.data.sources import SyntheticSource

    base = SyntheticSource((8, 16, 16), num_cases=2, seed=0, labeled_fraction=0.5)
    source = AugmentedSource(base)
    assert (source.names, source.shape, list(source.labeled)) == (base.names, base.shape, list(base.labeled))
    image, label = base.get(0, np.random.default_rng(0))
    seen = set()
    rng = np.random.default_rng(1)
    for _ in range(8):
        aug_image, aug_label = source.get(0, rng)
        assert aug_image.shape == image.shape and aug_label.dtype == label.dtype
        assert aug_label.sum() == label.sum()  # a rigid transform of the same case
        np.testing.assert_array_equal(np.sort(aug_image, axis=None), np.sort(image, axis=None))
        seen.add(aug_label.tobytes())
    assert len(seen) > 1  # the transform is drawn anew per call
    again = AugmentedSource(base).get(0, np.random.default_rng(1))[1]
    np.testing.assert_array_equal(again, AugmentedSource(base).get(0, np.random.default_rng(1))[1])
