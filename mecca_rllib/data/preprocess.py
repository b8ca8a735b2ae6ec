"""Preprocessing as in the paper (MECCA.md §6) and training-time augmentation.

Crop to the label's bounding box widened by a random 1-11 voxels per side (clamped to the
volume), resize to the target shape (default ``(30, 55, 55)``), z-score the intensities
of the crop; the label is resized linearly and thresholded at 0.5. The crop-and-resize is
one invertible object, :class:`RoiGrid`, which inference uses on its region of interest
too (forward for the image and the clicks, back for the maps the network returns).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
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


def points_box(points: np.ndarray, margin: int, shape: Sequence[int]) -> np.ndarray:
    """Bounding box ``(3, 2)`` of ``(K, 3)`` points widened by ``margin`` voxels per side,
    clamped to ``shape``: the inference-time counterpart of :func:`crop_box` (clicks instead
    of a label)."""
    points = np.asarray(points)
    lo = points.min(axis=0) - margin
    hi = points.max(axis=0) + 1 + margin
    return np.stack([np.maximum(lo, 0), np.minimum(hi, np.asarray(shape))], axis=1).astype(np.int64)


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
    grid = RoiGrid(crop_box(label, np.random.default_rng(rng), margin), shape)  # MECCA.md §6
    return Preprocessed(image=grid.crop(image), label=grid.crop_label(label),
                        spacing=grid.spacing(spacing), crop=grid.box)


@dataclass(frozen=True)
class RoiGrid:
    """One invertible crop-and-resize: a box of a ``(D, H, W)`` volume and the network grid
    ``S`` it is resized to, used by training preprocessing (:func:`preprocess`, the box from
    :func:`crop_box`) and by inference (the session's region of interest) alike.

    Forward: :meth:`crop` (image: resize, z-score; MECCA.md §6), :meth:`crop_label`,
    :meth:`to_network` (points). Back: :meth:`resample_linear`, :meth:`resample_nearest`,
    :meth:`to_canonical`, :meth:`label_centroids`. Resampling is voxel-centre aligned in
    both directions (scikit-image ``resize`` and ``torch`` ``align_corners=False``
    conventions): volume coordinate ``c`` and network coordinate ``n`` relate by
    ``n = (c - start + 0.5) * S / size - 0.5``.

    Attributes:
        box: int ``(3, 2)`` ``[start, stop)`` of the box per axis.
        shape: network shape ``S`` ``(D, H, W)``.
    """

    box: np.ndarray
    shape: tuple[int, int, int]

    @property
    def size(self) -> np.ndarray:
        """ROI size in canonical voxels, int ``(3,)``."""
        return self.box[:, 1] - self.box[:, 0]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(int(a), int(b)) for a, b in self.box)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The box of a ``(D, H, W)`` image, resized to ``shape`` and z-scored (MECCA.md §6)."""
        return zscore(resize_image(image[self.slices], self.shape))

    def crop_label(self, label: np.ndarray) -> np.ndarray:
        """The box of a ``(D, H, W)`` label, resized to ``shape`` (:func:`resize_label`)."""
        return resize_label(label[self.slices], self.shape)

    def spacing(self, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
        """Voxel size ``(d, h, w)`` mm on the network grid, from the volume's ``spacing``."""
        return tuple(float(s * n / m) for s, n, m in zip(spacing, self.size, self.shape))

    def to_network(self, points: np.ndarray) -> np.ndarray:
        """Volume ``(K, 3)`` points -> nearest network voxels, int ``(K, 3)`` (clamped)."""
        scale = np.asarray(self.shape) / self.size
        n = (np.asarray(points, float) - self.box[:, 0] + 0.5) * scale - 0.5
        return np.clip(np.rint(n), 0, np.asarray(self.shape) - 1).astype(np.int64)

    def to_canonical(self, points: np.ndarray) -> np.ndarray:
        """Network ``(K, 3)`` coordinates -> volume float ``(K, 3)`` coordinates."""
        scale = self.size / np.asarray(self.shape)
        return (np.asarray(points, float) + 0.5) * scale - 0.5 + self.box[:, 0]

    def contains(self, points: np.ndarray) -> np.ndarray:
        """bool ``(K,)``: volume points inside the box."""
        points = np.asarray(points)
        return np.all((points >= self.box[:, 0]) & (points < self.box[:, 1]), axis=-1)

    @cached_property
    def _linear_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per axis, the ``(size, S)`` matrix of voxel-centre aligned linear interpolation
        (edges clamped): the weights of scikit-image ``resize(order=1, mode="edge")`` and
        torch ``trilinear`` with ``align_corners=False``."""
        mats = []
        for n_out, n_in in zip(self.size.tolist(), self.shape):
            src = ((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5).clip(0, n_in - 1)
            lo = np.floor(src).astype(np.int64)
            hi = np.minimum(lo + 1, n_in - 1)
            frac = src - lo
            mat = np.zeros((n_out, n_in))
            np.add.at(mat, (np.arange(n_out), lo), 1 - frac)
            np.add.at(mat, (np.arange(n_out), hi), frac)
            mats.append(torch.from_numpy(mat.astype(np.float32)))
        return tuple(mats)

    @cached_property
    def _nearest_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per axis, how many ROI voxels take their value from each network voxel under
        nearest resampling (source ``floor((c + 0.5) * S / size)``; 0 when shrinking drops it)."""
        counts = []
        for n, s in zip(self.size.tolist(), self.shape):
            source = np.minimum(((np.arange(n) + 0.5) * (s / n)).astype(np.int64), s - 1)
            counts.append(np.bincount(source, minlength=s))
        return tuple(counts)

    def resample_linear(self, maps: np.ndarray) -> np.ndarray:
        """Network-grid maps ``(C, *S)`` -> float32 ``(C, *size)`` on the ROI box (separable
        linear interpolation as three small matrix products)."""
        d, h, w = self._linear_weights
        x = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
        x = torch.einsum("xw,cdhw->cdhx", w, x)
        x = torch.einsum("yh,cdhw->cdyw", h, x)
        return torch.einsum("zd,cdhw->czhw", d, x).numpy()

    def resample_nearest(self, labels: np.ndarray) -> np.ndarray:
        """A network-grid label map ``S`` -> the ROI box, nearest voxel centre (the source
        indices are non-decreasing, so this is a repeat along each axis)."""
        for axis, counts in enumerate(self._nearest_counts):
            labels = np.repeat(labels, counts, axis=axis)
        return labels

    def label_centroids(self, labels: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Size and volume-grid centroid of each label ``ids`` ``(R,)`` of a network-grid map
        *after* :meth:`resample_nearest`, computed on the network grid: every network voxel
        stands for a box of ROI voxels of known size and coordinate sum.

        Returns ``(sizes (R,) int, centroids (R, 3) float)``; centroids of empty labels are NaN.
        """
        counts = self._nearest_counts
        sums = [np.bincount(np.repeat(np.arange(s), c), weights=np.arange(c.sum()), minlength=s)
                for s, c in zip(self.shape, counts)]  # fmt: skip
        cd, ch, cw = (c.astype(float) for c in counts)
        weights = (
            cd[:, None, None] * ch[None, :, None] * cw[None, None, :],
            sums[0][:, None, None] * ch[None, :, None] * cw[None, None, :],
            cd[:, None, None] * sums[1][None, :, None] * cw[None, None, :],
            cd[:, None, None] * ch[None, :, None] * sums[2][None, None, :],
        )
        flat = labels.ravel()
        n = max(int(flat.max()), int(np.max(ids))) + 1
        size, *coord = (np.bincount(flat, weights=w.ravel(), minlength=n)[ids] for w in weights)
        with np.errstate(invalid="ignore", divide="ignore"):
            centroids = np.stack(coord, axis=1) / size[:, None] + self.box[:, 0]
        return np.rint(size).astype(np.int64), centroids


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
