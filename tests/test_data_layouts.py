"""Dataset layouts: MSD, BraTS, images/+labels/, detection and bad datasets."""
import json

import nibabel as nib
import numpy as np
import pytest

from mecca_rllib.data import DataError
from mecca_rllib.data.layouts import detect_layout, discover_cases, load_case

SHAPE = (6, 7, 8)
FLIPPED = np.array([[-1.5, 0, 0, 9], [0, 1.0, 0, -4], [0, 0, 3.0, 2], [0, 0, 0, 1]])


def _pair(image_path, label_path, seed, channels=None, classes=(1,)):
    rng = np.random.default_rng(seed)
    seg = np.zeros(SHAPE, np.uint8)
    for value, offset in zip(classes, range(len(classes))):
        seg[1 + offset, 2:5, 3:6] = value
    img = rng.normal(size=SHAPE).astype(np.float32) + 5 * (seg > 0)
    if channels:
        img = np.stack([img + 100 * c for c in range(channels)], axis=-1)
    for path, data in ((image_path, img), (label_path, seg)):
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, FLIPPED), path)


def _msd(root, names=("liver_1", "liver_0"), channels=2):
    for i, name in enumerate(names):
        _pair(root / "imagesTr" / f"{name}.nii.gz", root / "labelsTr" / f"{name}.nii.gz", i,
              channels=channels, classes=(1, 2))
    meta = {"name": "toy", "modality": {"0": "FLAIR", "1": "T1w"},
            "labels": {"0": "background", "1": "edema", "2": "tumour"},
            "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"}
                         for n in names]}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_msd_layout_with_channels_and_classes(tmp_path):
    root = _msd(tmp_path / "Task03")
    assert detect_layout(root) == "msd"
    cases = discover_cases(root)
    assert [c.name for c in cases] == ["liver_0", "liver_1"]
    assert cases[0].channel_names == ("FLAIR", "T1w")
    with pytest.raises(DataError, match=r"liver_0\.nii\.gz.*2 channels"):
        load_case(cases[0])
    image, label = load_case(cases[0], channel="T1w", label_value="tumour")
    assert image.array.shape == (8, 7, 6) and image.spacing == pytest.approx((3.0, 1.0, 1.5))
    assert image.array.mean() > 50                        # the T1w channel (+100)
    assert label.array.sum() == 9                         # only class 2
    assert load_case(cases[0], channel=0)[1].array.sum() == 18   # any > 0


def test_msd_without_dataset_json_pairs_by_name(tmp_path):
    root = _msd(tmp_path / "t", channels=None)
    (root / "dataset.json").unlink()
    assert [c.name for c in discover_cases(root)] == ["liver_0", "liver_1"]


def test_dataset_json_naming_missing_files(tmp_path):
    root = _msd(tmp_path / "t")
    (root / "labelsTr" / "liver_1.nii.gz").unlink()
    with pytest.raises(DataError, match=r"dataset\.json.*missing.*labelsTr/liver_1\.nii\.gz"):
        discover_cases(root)


def test_brats_layout_whole_tumour(tmp_path):
    for i, name in enumerate(["BraTS20_Training_002", "BraTS20_Training_001"]):
        _pair(tmp_path / name / f"{name}_flair.nii.gz", tmp_path / name / f"{name}_seg.nii.gz",
              i, classes=(1, 2, 4))
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), FLIPPED),
                 tmp_path / name / f"{name}_t1.nii.gz")
    assert detect_layout(tmp_path) == "brats"
    cases = discover_cases(tmp_path)
    assert [c.name for c in cases] == ["BraTS20_Training_001", "BraTS20_Training_002"]
    assert all(c.image.name.endswith("_flair.nii.gz") for c in cases)
    image, label = load_case(cases[0])
    assert label.array.sum() == 27                        # labels 1, 2 and 4 together
    assert image.array[label.array == 1].mean() > image.array[label.array == 0].mean()


def test_brats_case_without_seg(tmp_path):
    _pair(tmp_path / "c1" / "c1_flair.nii.gz", tmp_path / "c1" / "c1_other.nii.gz", 0)
    with pytest.raises(DataError, match=r"c1.*c1_seg"):
        discover_cases(tmp_path)


def test_images_labels_pairs(tmp_path):
    for i, name in enumerate(["b", "a"]):
        _pair(tmp_path / "images" / f"{name}.nii", tmp_path / "labels" / f"{name}.nii", i)
    assert detect_layout(tmp_path) == "pairs"
    cases = discover_cases(tmp_path)
    assert [c.name for c in cases] == ["a", "b"]
    image, label = load_case(cases[1])
    assert image.array.shape == label.array.shape == (8, 7, 6)


def test_pairs_with_unmatched_image(tmp_path):
    _pair(tmp_path / "images" / "a.nii.gz", tmp_path / "labels" / "a.nii.gz", 0)
    _pair(tmp_path / "images" / "b.nii.gz", tmp_path / "other" / "b.nii.gz", 1)
    with pytest.raises(DataError, match=r"labels.*no label file.*'b'"):
        discover_cases(tmp_path)


def test_unknown_layout_and_empty_dataset(tmp_path):
    (tmp_path / "random").mkdir()
    with pytest.raises(DataError, match="unknown dataset layout"):
        detect_layout(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(DataError, match="no case found"):
        discover_cases(tmp_path)
