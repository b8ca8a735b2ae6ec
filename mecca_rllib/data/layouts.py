"""Dataset folder layouts: Medical Segmentation Decathlon, BraTS and ``images/``+``labels/``.

* ``msd``: ``dataset.json`` (its ``training`` list names image/label pairs, its
  ``modality`` or ``channel_names`` names the channels of 4D images and ``labels`` the
  classes), ``imagesTr/`` and ``labelsTr/``. Without a ``dataset.json`` the two folders are
  paired by file name.
* ``brats``: one folder per case ``<case>/<case>_flair.nii.gz`` + ``<case>_seg.nii.gz``;
  the label is the whole tumour (``seg > 0``).
* ``pairs``: ``images/`` and ``labels/`` holding files with the same names.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mecca_rllib.data.errors import DataError
from mecca_rllib.data.nifti import Volume, load_label, load_volume

LAYOUTS = ("msd", "brats", "pairs")
_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class Case:
    """One image/label pair of a dataset.

    Attributes:
        name: case name (file name without the NIfTI suffix).
        image: path of the image file.
        label: path of the label file.
        channel_names: names of the 4th-axis channels, if the dataset declares them.
        label_names: class name -> label value, if the dataset declares them.
    """

    name: str
    image: Path
    label: Path
    channel_names: tuple[str, ...] | None = None
    label_names: dict[str, int] = field(default_factory=dict)


def _stem(path: Path) -> str | None:
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix) and not path.name.startswith("."):
            return path.name[: -len(suffix)]
    return None


def _nifti_files(folder: Path) -> dict[str, Path]:
    return {stem: p for p in sorted(folder.iterdir()) if p.is_file() and (stem := _stem(p))}


def detect_layout(root: str | os.PathLike) -> str:
    """Name of the layout of ``root``: ``"msd"``, ``"brats"`` or ``"pairs"``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    if (root / "dataset.json").is_file() or (root / "imagesTr").is_dir():
        return "msd"
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return "pairs"
    for sub in root.iterdir():
        if sub.is_dir() and any((sub / f"{sub.name}_flair{s}").is_file() for s in _SUFFIXES):
            return "brats"
    raise DataError(root, "unknown dataset layout: expected dataset.json + imagesTr/ + labelsTr/ "
                          "(MSD), <case>/<case>_flair.nii.gz folders (BraTS) or images/ + labels/")


def _pair_by_name(images: Path, labels: Path) -> list[Case]:
    for folder in (images, labels):
        if not folder.is_dir():
            raise DataError(folder, "folder not found")
    image_files, label_files = _nifti_files(images), _nifti_files(labels)
    missing = sorted(set(image_files) - set(label_files))
    if missing:
        raise DataError(labels, f"no label file for image(s) {missing[:5]}"
                                f"{' ...' if len(missing) > 5 else ''}")
    return [Case(name, image_files[name], label_files[name]) for name in sorted(image_files)]


def _msd_cases(root: Path) -> list[Case]:
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        return _pair_by_name(root / "imagesTr", root / "labelsTr")
    try:
        meta = json.loads(meta_path.read_text())
        entries = meta["training"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(meta_path, f"unreadable dataset.json or no 'training' list ({err})") from err
    channels = meta.get("channel_names") or meta.get("modality")
    channel_names = (tuple(channels[k] for k in sorted(channels, key=int))
                     if isinstance(channels, dict) else None)
    label_names = {str(v): int(k) for k, v in (meta.get("labels") or {}).items()
                   if str(k).lstrip("-").isdigit()}
    cases, missing = [], []
    for entry in entries:
        try:
            image, label = root / entry["image"], root / entry["label"]
        except (KeyError, TypeError) as err:
            raise DataError(meta_path, f"training entry without image/label: {entry!r}") from err
        missing += [str(p.relative_to(root)) for p in (image, label) if not p.is_file()]
        cases.append(Case(_stem(image) or image.name, image, label, channel_names, label_names))
    if missing:
        raise DataError(meta_path, f"names {len(missing)} missing file(s): {missing[:5]}"
                                   f"{' ...' if len(missing) > 5 else ''}")
    return sorted(cases, key=lambda c: c.name)


def _brats_cases(root: Path) -> list[Case]:
    cases = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        flair = next((sub / f"{sub.name}_flair{s}" for s in _SUFFIXES
                      if (sub / f"{sub.name}_flair{s}").is_file()), None)
        if flair is None:
            continue
        seg = next((sub / f"{sub.name}_seg{s}" for s in _SUFFIXES
                    if (sub / f"{sub.name}_seg{s}").is_file()), None)
        if seg is None:
            raise DataError(sub, f"BraTS case without {sub.name}_seg.nii.gz")
        cases.append(Case(sub.name, flair, seg, ("flair",)))
    return cases


def discover_cases(root: str | os.PathLike, layout: str | None = None) -> list[Case]:
    """Image/label pairs of the dataset at ``root``, sorted by name.

    Args:
        layout: one of :data:`LAYOUTS`; detected when None.

    Raises:
        DataError: unknown layout, missing files, or no case at all.
    """
    root = Path(root)
    layout = layout or detect_layout(root)
    if layout not in LAYOUTS:
        raise ValueError(f"layout: must be one of {LAYOUTS}, got {layout!r}")
    finder = {"msd": _msd_cases, "brats": _brats_cases,
              "pairs": lambda r: _pair_by_name(r / "images", r / "labels")}[layout]
    cases = finder(root)
    if not cases:
        raise DataError(root, f"no case found ({layout} layout)")
    return cases


def load_case(case: Case, *, channel: int | str | None = None,
              label_value: int | str | None = None, nonfinite: str = "raise"
              ) -> tuple[Volume, Volume]:
    """Load a case's image (float32) and binary label (uint8) as ``(D, H, W)`` volumes.

    ``label_value`` may be a class name declared in dataset.json ``labels``; None keeps
    every value ``> 0`` (e.g. BraTS whole tumour).
    """
    if isinstance(label_value, str):
        if label_value not in case.label_names:
            raise DataError(case.label, f"no class named {label_value!r}; "
                                        f"known: {sorted(case.label_names) or 'none declared'}")
        label_value = case.label_names[label_value]
    image = load_volume(case.image, channel=channel, channel_names=case.channel_names,
                        nonfinite=nonfinite)
    label = load_label(case.label, label_value=label_value, like=image)
    return image, label
