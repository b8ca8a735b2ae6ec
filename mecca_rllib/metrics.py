"""Segmentation and interaction metrics (MECCA.md §6): Dice, ASSD, misunderstanding rate, NoC.

All functions take whole volumes (numpy arrays of shape ``(D, H, W)``, or any shape that the
two inputs share) and are vectorized; nothing loops over voxels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["NOC_THRESHOLDS", "dice", "surface", "assd", "misunderstanding_rate", "noc"]

#: The Dice thresholds NoC is reported at (NoC@85, NoC@90; MECCA.md §6).
NOC_THRESHOLDS = (0.85, 0.90)

# 6-connectivity (face neighbours) in 3D; the 2D/1D analogue for other ranks.
_FACE = {rank: ndimage.generate_binary_structure(rank, 1) for rank in (1, 2, 3)}


def _as_masks(pred: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"pred has shape {pred.shape} but label has shape {label.shape}")
    return pred.astype(bool, copy=False), label.astype(bool, copy=False)


def dice(pred: np.ndarray, label: np.ndarray) -> float:
    """Dice overlap ``2 |P & Y| / (|P| + |Y|)`` of two binary masks of the same shape.

    Non-zero entries are foreground. Both masks empty -> 1.0 (a perfect empty prediction).
    """
    pred, label = _as_masks(pred, label)
    total = np.count_nonzero(pred) + np.count_nonzero(label)
    if total == 0:
        return 1.0
    return 2.0 * np.count_nonzero(pred & label) / total


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a binary mask: foreground voxels with a background face neighbour.

    Voxels on the border of the array count as surface (outside the array is background).
    Returns a bool array of the mask's shape.
    """
    mask = np.asarray(mask, dtype=bool)
    structure = _FACE.get(mask.ndim, ndimage.generate_binary_structure(mask.ndim, 1))
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def assd(
    pred: np.ndarray,
    label: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> float:
    """Average symmetric surface distance between two binary masks.

    Distances from every surface voxel of ``pred`` to the nearest surface voxel of ``label``
    and back, pooled and averaged. ``spacing`` is the voxel size per axis (``(d, h, w)``):
    ``(1, 1, 1)`` gives voxels (the paper's unit), the image spacing gives millimetres.

    Edge cases: both masks empty -> 0.0; exactly one empty -> ``inf`` (no surface to measure
    against, the distance is unbounded).
    """
    pred, label = _as_masks(pred, label)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != pred.ndim or min(spacing) <= 0:
        raise ValueError(f"spacing {spacing} must be {pred.ndim} positive voxel sizes")
    surf_p, surf_y = surface(pred), surface(label)
    n_p, n_y = np.count_nonzero(surf_p), np.count_nonzero(surf_y)
    if n_p == 0 and n_y == 0:
        return 0.0
    if n_p == 0 or n_y == 0:
        return float("inf")
    # Distance of every voxel to the nearest surface voxel of the other mask.
    to_y = ndimage.distance_transform_edt(~surf_y, sampling=spacing)
    to_p = ndimage.distance_transform_edt(~surf_p, sampling=spacing)
    return float((to_y[surf_p].sum() + to_p[surf_y].sum()) / (n_p + n_y))


def misunderstanding_rate(p_prev: np.ndarray, p_next: np.ndarray, label: np.ndarray) -> float:
    """Fraction of voxels whose foreground probability moved against their label.

    A voxel is misunderstood when ``p_next < p_prev`` while its label is 1, or
    ``p_next > p_prev`` while its label is 0 (the paper's Definition 1, MECCA.md §1).
    Voxels whose probability did not change (e.g. clipped at 0 or 1) are not counted.
    All three arrays share one shape; returns a value in [0, 1].
    """
    p_prev, p_next, label = np.asarray(p_prev), np.asarray(p_next), np.asarray(label)
    if not (p_prev.shape == p_next.shape == label.shape):
        raise ValueError(
            f"shapes differ: p_prev {p_prev.shape}, p_next {p_next.shape}, label {label.shape}"
        )
    if label.size == 0:
        raise ValueError("misunderstanding_rate of empty arrays is undefined")
    fg = label.astype(bool, copy=False)
    against = np.where(fg, p_next < p_prev, p_next > p_prev)
    return np.count_nonzero(against) / label.size


def noc(dice_per_step: np.ndarray | Sequence[float], threshold: float) -> np.ndarray | int:
    """Number of interactions until Dice first reaches ``threshold`` (NoC@85 -> 0.85).

    ``dice_per_step`` has shape ``(T,)`` or ``(B, T)``; entry ``t`` (0-based) is the Dice
    after interaction ``t + 1``. Returns the 1-based index of the first step with
    ``dice >= threshold``, or ``T + 1`` when the threshold is never reached (a finite
    penalty so that means over cases stay defined). An int for ``(T,)``, an int array of
    shape ``(B,)`` for ``(B, T)``.
    """
    d = np.asarray(dice_per_step, dtype=float)
    if d.ndim not in (1, 2) or d.shape[-1] == 0:
        raise ValueError(f"dice_per_step must have shape (T,) or (B, T) with T > 0, got {d.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold {threshold} must be a Dice value in [0, 1], e.g. 0.9")
    reached = d >= threshold
    steps = np.where(reached.any(axis=-1), reached.argmax(axis=-1) + 1, d.shape[-1] + 1)
    return int(steps) if d.ndim == 1 else steps.astype(np.int64)
