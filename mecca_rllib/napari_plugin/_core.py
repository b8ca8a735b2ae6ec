"""napari-free helpers of the plugin: the affine of a napari layer, click bookkeeping.

Kept apart from the Qt widget so that they read (and can be tested) without a viewer.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from mecca_rllib.data.nifti import dhw_affine

__all__ = ["layer_affine", "new_clicks"]


def layer_affine(scale: Sequence[float], translate: Sequence[float]) -> np.ndarray:
    """4x4 voxel -> world mm affine of a napari 3D layer with ``scale`` and ``translate``.

    napari maps data coordinates to world coordinates axis by axis (``world = data * scale
    + translate``, in the array's axis order). The plugin reads the array's axes as the
    ``(D, H, W)`` of ARCHITECTURE.md (slices first, as napari shows them), so the affine is
    :func:`~mecca_rllib.data.nifti.dhw_affine` of the scale with the translation in RAS order.
    A negative scale (a flipped axis) becomes a flip of the affine; the session reorients
    to canonical and maps its results back onto the layer's own grid.
    """
    scale = [float(s) for s in scale]
    translate = [float(t) for t in translate]
    if len(scale) != 3 or len(translate) != 3:
        raise ValueError(f"a 3D layer has three scales and translations, got {scale} and {translate}")
    if not all(np.isfinite(scale + translate)) or min(abs(s) for s in scale) <= 0:
        raise ValueError(f"layer scale must be finite and non-zero, got {tuple(scale)}")
    affine = dhw_affine(scale)
    affine[:3, 3] = translate[::-1]  # (d, h, w) offsets -> (x = w, y = h, z = d)
    return affine


Click = tuple[int, int, int, bool]


def new_clicks(
    current: Iterable[Click], used: Iterable[Click]
) -> tuple[list[Click], list[Click]]:
    """Split the clicks in the Points layers against those the session already has.

    Both are ``(i, j, k, foreground)`` tuples of rounded voxel indices. Returns
    ``(pending, missing)``: the current clicks the session has not seen yet (layer order
    kept; a repeated voxel counts as often as it occurs) and the used clicks no longer in
    the layers (deleted by the user after a step: they stay in effect until Undo/Reset).
    """
    current = list(current)
    left = Counter(used)
    pending = []
    for click in current:
        if left[click] > 0:
            left[click] -= 1
        else:
            pending.append(click)
    missing = list((Counter(used) - Counter(current)).elements())
    return pending, missing
