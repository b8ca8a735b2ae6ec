"""A PNG montage that shows whether a dataset loaded the right way round.

One row per case, three columns: the axial (D), coronal (H) and sagittal (W) slices through
the middle of the label's bounding box, drawn with superior/anterior up and physical
aspect ratios from the voxel spacing, with the label's outline in red.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mecca_rllib.data.atomic import atomic_file
from mecca_rllib.data.errors import DataError

_VIEWS = (  # title, axis sliced, (vertical, horizontal) axis names
    ("axial (D)", 0, ("A", "R")),
    ("coronal (H)", 1, ("S", "R")),
    ("sagittal (W)", 2, ("S", "A")),
)


def _load_cases(dataset: Path, count: int, channel: int | str | None,
                label_value: int | str | None, nonfinite: str) -> list[tuple[str, np.ndarray, np.ndarray, tuple]]:
    """``count`` cases as ``(name, image (D,H,W), label (D,H,W), spacing (d,h,w))``."""
    from mecca_rllib.data.cache import is_cache, read_case, read_manifest

    if is_cache(dataset):
        manifest = read_manifest(dataset)
        out = []
        for name in manifest.cases[:count]:
            case = read_case(dataset, name)
            out.append((name, case.image[0], case.label[0], tuple(case.spacing[0])))
        return out
    from mecca_rllib.data.layouts import discover_cases, load_case

    out = []
    for case in discover_cases(dataset)[:count]:
        image, label = load_case(case, channel=channel, label_value=label_value,
                                 nonfinite=nonfinite)
        out.append((case.name, image.array, label.array, image.spacing))
    return out


def render_preview(dataset: str | os.PathLike, out: str | os.PathLike, cases: int = 4, *,
                   channel: int | str | None = None, label_value: int | str | None = None,
                   nonfinite: str = "raise") -> Path:
    """Write the montage of the first ``cases`` cases of a dataset or cache folder to
    ``out`` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if cases < 1:
        raise ValueError(f"cases: need at least 1, got {cases}")
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise DataError(dataset, "dataset folder not found")
    loaded = _load_cases(dataset, cases, channel, label_value, nonfinite)
    fig, axes = plt.subplots(len(loaded), 3, figsize=(9, 3 * len(loaded)), squeeze=False)
    try:
        for row, (name, image, label, spacing) in zip(axes, loaded):
            nonzero = np.nonzero(label)
            centre = [(int(ax.min()) + int(ax.max())) // 2 if len(ax) else n // 2
                      for ax, n in zip(nonzero, label.shape)]
            lo, hi = np.percentile(image, [1, 99])
            for ax, (title, axis, (up, right)) in zip(row, _VIEWS):
                img2d = np.take(image, centre[axis], axis=axis)
                lab2d = np.take(label, centre[axis], axis=axis)
                rest = [s for i, s in enumerate(spacing) if i != axis]
                ax.imshow(img2d, cmap="gray", origin="lower", vmin=lo, vmax=hi,
                          aspect=rest[0] / rest[1], interpolation="nearest")
                if lab2d.any():
                    ax.contour(lab2d, levels=[0.5], colors="red", linewidths=0.8, origin="lower")
                ax.set_title(f"{name}\n{title} {centre[axis]}", fontsize=7)
                ax.set_xlabel(f"{right} \u2192", fontsize=7)
                ax.set_ylabel(f"{up} \u2192", fontsize=7)
                ax.set_xticks([])
                ax.set_yticks([])
        fig.tight_layout()
        with atomic_file(out) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return Path(out)
