"""Preprocessing as in the paper (MECCA.md §6) and training-time augmentation.

Crop to the label's bounding box widened by a random 1-11 voxels per side (clamped to the
volume), resize to the target shape (default ``(30, 55, 55)``), z-score the intensities
of the crop; the label is resized linearly and thresholded at 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from mecca_rllib.data.errors import DataError

Shape3 = tuple[int, int, int]
DEFAULT_SHAPE: Shape3 = (30, 55, 55)
DEFAULT_MARGIN: tuple[int, int] = (1, 11)


@dataclass(frozen=True)
class Preprocessed:
    """One preprocessed variant of a case.

    Attributes:
        image: float32 ``(D, H, W)``, z-scored over the crop.
        label: uint8 ``(D, H, W)`` in {0, 1}.
        spacing: ``(d, h, w)`` voxel size in mm after resizing.
        crop: int ``(3, 2)``: ``[start, stop)`` of the crop in the input's ``(D, H, W)``.
    """

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    crop: np.ndarray


def crop_box(label: np.ndarray, rng: np.random.Generator,
             margin: tuple[int, int] = DEFAULT_MARGIN) -> np.ndarray:
    """Bounding box of ``label > 0`` widened by a random ``margin[0]..margin[1]`` voxels on
    each side, clamped to the volume: int ``(3, 2)`` of ``[start, stop)`` per axis."""
    nonzero = np.nonzero(label)
    if len(nonzero[0]) == 0:
        raise DataError("label", "empty label: no voxel > 0, cannot crop to its bounding box")
    lo, hi = margin
    if not 0 <= lo <= hi:
        raise ValueError(f"margin: need 0 <= low <= high, got {margin}")
    widen = rng.integers(lo, hi + 1, size=(label.ndim, 2))   # MECCA.md §6: random 1-11 voxels
    starts = np.array([idx.min() for idx in nonzero]) - widen[:, 0]
    stops = np.array([idx.max() + 1 for idx in nonzero]) + widen[:, 1]
    return np.stack([np.maximum(starts, 0), np.minimum(stops, label.shape)], axis=1)


def zscore(image: np.ndarray) -> np.ndarray:
    """``(image - mean) / std`` as float32 (std floored at 1e-6 for flat images)."""
    image = image.astype(np.float32, copy=False)
    return ((image - image.mean()) / max(float(image.std()), 1e-6)).astype(np.float32)


def resize_image(image: np.ndarray, shape: Shape3) -> np.ndarray:
    """Linear resize of a ``(D, H, W)`` image to ``shape`` (anti-aliased when shrinking)."""
    shrink = any(s < n for s, n in zip(shape, image.shape))
    return resize(image.astype(np.float32, copy=False), shape, order=1, mode="edge",
                  anti_aliasing=shrink, preserve_range=True).astype(np.float32)


def resize_label(label: np.ndarray, shape: Shape3) -> np.ndarray:
    """Resize a binary ``(D, H, W)`` label to ``shape``: linear, then threshold at 0.5.

    A non-empty label too small to survive keeps one voxel: the one holding its centroid.
    """
    mask = label > 0
    soft = resize(mask.astype(np.float32), shape, order=1, mode="edge",
                  anti_aliasing=False, preserve_range=True)
    out = (soft >= 0.5).astype(np.uint8)
    if not out.any() and mask.any():
        centroid = np.argwhere(mask).mean(0)
        index = (centroid + 0.5) * np.asarray(shape) / np.asarray(mask.shape)
        out[tuple(np.minimum(index.astype(int), np.asarray(shape) - 1))] = 1
    return out


def preprocess(image: np.ndarray, label: np.ndarray, rng: np.random.Generator | int,
               shape: Shape3 = DEFAULT_SHAPE, *,
               spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
               margin: tuple[int, int] = DEFAULT_MARGIN) -> Preprocessed:
    """Crop around the label with a random margin, resize to ``shape``, z-score.

    Args:
        image: ``(D, H, W)`` intensities (finite).
        label: ``(D, H, W)``, foreground = ``> 0``; must not be empty.
        rng: generator or seed drawing the margins.
        shape: target ``(D, H, W)``.
        spacing: input voxel size ``(d, h, w)`` in mm; the output spacing is derived.
        margin: inclusive range of the random widening per side, in input voxels.
    """
    if image.shape != label.shape or image.ndim != 3:
        raise DataError("image/label", f"need two equal 3D shapes, got {image.shape} and {label.shape}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape: need three positive sizes, got {shape}")
    box = crop_box(label, np.random.default_rng(rng), margin)   # MECCA.md §6 preprocessing
    region = tuple(slice(int(a), int(b)) for a, b in box)
    sizes = box[:, 1] - box[:, 0]
    new_spacing = tuple(float(s * n / m) for s, n, m in zip(spacing, sizes, shape))
    return Preprocessed(image=zscore(resize_image(image[region], shape)),
                        label=resize_label(label[region], shape),
                        spacing=new_spacing, crop=box)


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, *,
            small_angle: bool = False, max_angle: float = 10.0
            ) -> tuple[np.ndarray, np.ndarray]:
    """Random flips of each axis and a random in-plane (H, W) rotation, the same transform
    on ``image`` and ``label`` (both ``(D, H, W)``); shapes and dtypes are preserved.

    The rotation is a multiple of 90 degrees when ``H == W``, else 0 or 180 degrees. With
    ``small_angle`` an extra in-plane rotation uniform in ``[-max_angle, max_angle]``
    degrees follows (image linear, label linear + threshold at 0.5, edges replicated).
    """
    if image.shape != label.shape or image.ndim != 3:
        raise ValueError(f"image/label: need two equal 3D shapes, got {image.shape} and {label.shape}")
    image_dtype, label_dtype = image.dtype, label.dtype   # MECCA.md §6: flips and rotations
    flips = tuple(np.nonzero(rng.random(3) < 0.5)[0])
    quarter_turns = int(rng.integers(4)) if image.shape[1] == image.shape[2] else 2 * int(rng.integers(2))
    out = []
    for arr in (image, label):
        arr = np.flip(arr, flips) if flips else arr
        out.append(np.rot90(arr, quarter_turns, axes=(1, 2)))
    image, label = out
    if small_angle:
        angle = float(rng.uniform(-max_angle, max_angle))
        image = ndimage.rotate(image, angle, axes=(1, 2), reshape=False, order=1, mode="nearest")
        soft = ndimage.rotate(label.astype(np.float32), angle, axes=(1, 2), reshape=False,
                              order=1, mode="nearest")
        label = soft >= 0.5
    return (np.array(image, dtype=image_dtype, order="C"),   # always fresh, writable copies
            np.array(label, dtype=label_dtype, order="C"))
