"""Interaction guide: SLIC supervoxels and the least-confident advice regions.

MECCA.md §4 (the paper's §3.5, Fig. 5): the image is split into SLIC supervoxels, the
action confidence is averaged per supervoxel, and the ``k`` least confident supervoxels are
shown to the user as the regions where the next click helps most. The simulated user of the
environment can be restricted to these regions ("guided" mode) through :func:`make_advice_fn`.

All arrays are ``(D, H, W)`` in the network's grid; confidences are probabilities in [0, 1].
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from skimage.segmentation import slic

#: Supervoxel count per interaction step (MECCA.md §4: 100 at the first step, fewer later).
#: Steps past the end of the schedule reuse its last entry.
DEFAULT_SCHEDULE: tuple[int, ...] = (100, 80, 60, 40, 20)
#: SLIC parameters of MECCA.md §4.
DEFAULT_SPACING: tuple[float, float, float] = (2.0, 2.0, 2.0)
DEFAULT_COMPACTNESS = 0.1
#: Number of advice regions shown to the user (MECCA.md §4).
DEFAULT_K = 5


def _check_volume(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"{name} must be a 3D (D, H, W) array, got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    return array


def supervoxels(
    image: np.ndarray,
    n_segments: int,
    spacing: Sequence[float] = DEFAULT_SPACING,
    compactness: float = DEFAULT_COMPACTNESS,
) -> np.ndarray:
    """SLIC supervoxels of a single-channel volume (MECCA.md §4).

    Args:
        image: ``(D, H, W)`` intensities (z-scored in this project), finite.
        n_segments: approximate number of supervoxels (SLIC may return a few more or fewer).
        spacing: ``(d, h, w)`` voxel spacing SLIC uses for its spatial distance.
        compactness: SLIC's balance of intensity vs. space (small = follows intensity).

    Returns:
        ``(D, H, W)`` int32 labels ``1..S``; every voxel belongs to a supervoxel.
    """
    image = _check_volume(image, "image")
    if int(n_segments) < 1:
        raise ValueError(f"n_segments must be >= 1, got {n_segments}")
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values; SLIC needs finite intensities")
    labels = slic(
        image.astype(np.float64, copy=False),
        n_segments=int(n_segments),
        compactness=float(compactness),
        spacing=np.asarray(spacing, dtype=np.float64),
        channel_axis=None,
        start_label=1,
    )
    return labels.astype(np.int32, copy=False)


class SupervoxelCache:
    """SLIC supervoxels of one volume, computed at most once per segment count.

    ``cache.for_step(t)`` returns the supervoxels for interaction step ``t`` (0-based) under
    the segment ``schedule``; steps past the schedule's end reuse its last count, so after
    :meth:`warm` no step pays for SLIC again.
    """

    def __init__(
        self,
        image: np.ndarray,
        schedule: Sequence[int] = DEFAULT_SCHEDULE,
        spacing: Sequence[float] = DEFAULT_SPACING,
        compactness: float = DEFAULT_COMPACTNESS,
    ) -> None:
        self.image = _check_volume(image, "image")
        self.schedule = tuple(int(n) for n in schedule)
        if not self.schedule or min(self.schedule) < 1:
            raise ValueError(f"schedule must be a non-empty sequence of counts >= 1, got {schedule!r}")
        self.spacing = tuple(float(s) for s in spacing)
        self.compactness = float(compactness)
        self._labels: dict[int, np.ndarray] = {}

    def segments_for_step(self, step: int) -> int:
        """Supervoxel count used at interaction step ``step`` (0-based)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self.schedule[min(step, len(self.schedule) - 1)]

    def get(self, n_segments: int) -> np.ndarray:
        """``(D, H, W)`` int32 supervoxels for ``n_segments``, computed on first use."""
        n = int(n_segments)
        if n not in self._labels:
            self._labels[n] = supervoxels(self.image, n, self.spacing, self.compactness)
        return self._labels[n]

    def for_step(self, step: int) -> np.ndarray:
        """Supervoxels for interaction step ``step`` (0-based)."""
        return self.get(self.segments_for_step(step))

    def warm(self) -> None:
        """Compute every count of the schedule now (keeps SLIC out of the per-step time)."""
        for n in self.schedule:
            self.get(n)

    def __len__(self) -> int:
        return len(self._labels)


class AdviceRegion(NamedTuple):
    """One advice region: a supervoxel the policy is unsure about."""

    rank: int  #: 1 = least confident
    supervoxel: int  #: label in the supervoxel map
    mean_confidence: float  #: mean action confidence over its voxels, in [0, 1]
    centroid: tuple[float, float, float]  #: centre of mass, ``(d, h, w)`` voxel coordinates
    size: int  #: number of voxels


@dataclass(frozen=True)
class Advice:
    """Advice regions of one step.

    Attributes:
        label_map: ``(D, H, W)`` uint8; 0 outside the advice regions, ``r`` inside the
            region of rank ``r`` (1 = least confident).
        regions: the regions, ordered by rank.
    """

    label_map: np.ndarray
    regions: tuple[AdviceRegion, ...]

    @property
    def mask(self) -> np.ndarray:
        """``(D, H, W)`` bool: inside any advice region."""
        return self.label_map > 0


def advice_regions(
    confidence: np.ndarray, supervoxel_labels: np.ndarray, k: int = DEFAULT_K
) -> Advice:
    """The ``k`` supervoxels with the lowest mean action confidence (MECCA.md §4).

    Args:
        confidence: ``(D, H, W)`` action confidence in [0, 1] (finite).
        supervoxel_labels: ``(D, H, W)`` int labels, same shape; label 0 is ignored
            (not a supervoxel), positive labels need not be contiguous.
        k: number of regions (fewer are returned when there are fewer supervoxels).

    Returns:
        :class:`Advice`. Ranking is by mean confidence, ascending. **Tie-break:** equal means
        rank the larger supervoxel first (more voxels to click in), then the smaller label.
    """
    confidence = _check_volume(confidence, "confidence")
    labels = _check_volume(supervoxel_labels, "supervoxel_labels")
    if confidence.shape != labels.shape:
        raise ValueError(
            f"confidence shape {confidence.shape} differs from supervoxel_labels shape {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError("supervoxel_labels must hold non-negative integers")
    if not 1 <= int(k) <= 255:
        raise ValueError(f"k must be in 1..255 (uint8 label map), got {k}")
    if not np.isfinite(confidence).all():
        raise ValueError("confidence contains NaN or infinite values")

    flat = labels.ravel()
    counts = np.bincount(flat)
    sums = np.bincount(flat, weights=confidence.ravel().astype(np.float64, copy=False))
    ids = np.flatnonzero(counts)
    ids = ids[ids > 0]
    means = sums[ids] / counts[ids]
    # np.lexsort sorts by the last key first: mean ascending, size descending, id ascending.
    order = np.lexsort((ids, -counts[ids], means))[: int(k)]
    chosen, chosen_means = ids[order], means[order]

    lut = np.zeros(counts.size, dtype=np.uint8)
    lut[chosen] = np.arange(1, chosen.size + 1, dtype=np.uint8)
    label_map = lut[labels]
    centroids = ndimage.center_of_mass(np.ones(labels.shape, np.float32), labels, chosen)
    regions = tuple(
        AdviceRegion(
            rank=rank,
            supervoxel=int(sv),
            mean_confidence=float(mean),
            centroid=tuple(float(c) for c in centroid),
            size=int(counts[sv]),
        )
        for rank, (sv, mean, centroid) in enumerate(zip(chosen, chosen_means, centroids), start=1)
    )
    return Advice(label_map=label_map, regions=regions)


class GuidedAdvice:
    """``advice_fn`` for :func:`mecca_rllib.evaluation.evaluate` (guided mode).

    Called as ``fn(obs (3, D, H, W), confidence (D, H, W), step)``; returns the ``(D, H, W)``
    bool mask of the advice regions, which the env's simulated user is restricted to for its
    next clicks (``env.set_advice``). The supervoxels of the current volume (observation
    channel 0) are cached across steps and recomputed only when the volume changes.
    """

    def __init__(
        self,
        schedule: Sequence[int] = DEFAULT_SCHEDULE,
        k: int = DEFAULT_K,
        spacing: Sequence[float] = DEFAULT_SPACING,
        compactness: float = DEFAULT_COMPACTNESS,
    ) -> None:
        if not 1 <= int(k) <= 255:
            raise ValueError(f"k must be in 1..255 (uint8 label map), got {k}")
        self.schedule = tuple(int(n) for n in schedule)
        self.k = int(k)
        self.spacing = tuple(float(s) for s in spacing)
        self.compactness = float(compactness)
        self._cache: SupervoxelCache | None = None

    def cache_for(self, image: np.ndarray) -> SupervoxelCache:
        """The supervoxel cache of ``image`` ``(D, H, W)``, rebuilt when the image changes."""
        if self._cache is None or not np.array_equal(self._cache.image, image):
            self._cache = SupervoxelCache(
                np.array(image, copy=True), self.schedule, self.spacing, self.compactness
            )
        return self._cache

    def __call__(self, obs: np.ndarray, confidence: np.ndarray, step: int) -> np.ndarray:
        obs = np.asarray(obs)
        if obs.ndim != 4:
            raise ValueError(f"obs must be (C, D, H, W), got shape {obs.shape}")
        labels = self.cache_for(obs[0]).for_step(int(step))
        return advice_regions(confidence, labels, self.k).mask


def make_advice_fn(
    schedule: Sequence[int] = DEFAULT_SCHEDULE,
    k: int = DEFAULT_K,
    spacing: Sequence[float] = DEFAULT_SPACING,
    compactness: float = DEFAULT_COMPACTNESS,
) -> GuidedAdvice:
    """An ``advice_fn`` for ``evaluate(..., advice_fn=)``: clicks only inside advice regions."""
    return GuidedAdvice(schedule=schedule, k=k, spacing=spacing, compactness=compactness)
