"""What one interactive step returns (:class:`StepResult`) and how the network's maps get
there: resampled from the network grid onto the ROI box (:class:`~mecca_rllib.data.preprocess.RoiGrid`,
the inverse of the training crop-and-resize) and assembled on the input's original grid
(:class:`~mecca_rllib.data.nifti.Volume`). Used by :class:`mecca_rllib.session.InteractiveSession`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from mecca_rllib.data.nifti import Volume
from mecca_rllib.data.preprocess import RoiGrid
from mecca_rllib.envs.readout import tie_broken
from mecca_rllib.guide import AdviceRegion

__all__ = ["StepResult", "StepTiming", "map_back"]


@dataclass(frozen=True)
class StepTiming:
    """Wall-clock milliseconds of one interaction step, by stage."""

    policy_ms: float  #: policy forward + action choice + probability update
    confidence_ms: float  #: confidence forward of the chosen actions
    guide_ms: float  #: advice regions from the cached supervoxels
    mapping_ms: float  #: results resampled back onto the original grid (inside the ROI)

    @property
    def total_ms(self) -> float:
        return self.policy_ms + self.confidence_ms + self.guide_ms + self.mapping_ms


@dataclass(frozen=True, eq=False)
class StepResult:
    """Results of one interaction step on the original grid ``(I, J, K)``.

    The maps are resampled onto the original grid inside the ROI during the step; the
    full-size arrays (``probability``, ``segmentation``, ``confidence``, ``advice``) are
    assembled on first access and cached, so a step does not pay for filling a large scan
    that nobody reads. Outside the ROI: probability 0, segmentation 0, confidence 1,
    advice 0. The segmentation is p read out by the session's ``readout``
    (:mod:`mecca_rllib.envs.readout`: ``p > 0.5``, with ``"hold"`` a voxel at exactly 0.5
    keeps its previous side), resampled linearly like p. Arrays may be read-only views in the file's axis order.

    Attributes:
        step: interaction steps done so far (1 after the first step).
        regions: the advice regions, ranked; centroid (original voxel coordinates) and size
            (voxels) of each region's voxels in ``advice``.
        affine: the input's 4x4 affine (original voxel indices -> world mm).
        timing: the step's :class:`StepTiming`.
        volume: the session's volume (canonical grid, orientation to the original).
        roi_box: int ``(3, 2)`` canonical ``[start, stop)`` of the ROI.
        roi_probability, roi_confidence: float32 canonical maps inside ``roi_box``.
        roi_segmentation: bool canonical segmentation inside ``roi_box``.
        roi_advice: uint8 canonical advice label map inside ``roi_box``.
    """

    step: int
    regions: tuple[AdviceRegion, ...]
    affine: np.ndarray
    timing: StepTiming
    volume: Volume = field(repr=False)
    roi_box: np.ndarray = field(repr=False)
    roi_probability: np.ndarray = field(repr=False)
    roi_confidence: np.ndarray = field(repr=False)
    roi_advice: np.ndarray = field(repr=False)
    roi_segmentation: np.ndarray = field(repr=False)

    def _full(self, roi_values: np.ndarray, fill: float, dtype: type) -> np.ndarray:
        """Canonical ROI map -> read-only array on the original grid, ``fill`` outside."""
        return self.volume.paste_to_file(roi_values, self.roi_box, fill, dtype)

    @cached_property
    def probability(self) -> np.ndarray:
        """float32 ``(I, J, K)`` foreground probability p in [0, 1]."""
        return self._full(self.roi_probability, 0.0, np.float32)

    @cached_property
    def segmentation(self) -> np.ndarray:
        """uint8 ``(I, J, K)``: the segmentation (``p > 0.5``, read out as the session says)."""
        return self._full(self.roi_segmentation, 0, np.uint8)

    @cached_property
    def confidence(self) -> np.ndarray:
        """float32 ``(I, J, K)`` confidence of the chosen action, in (0, 1)."""
        return self._full(self.roi_confidence, 1.0, np.float32)

    @cached_property
    def advice(self) -> np.ndarray:
        """uint8 ``(I, J, K)`` advice label map (0 = none, r = rank-r region)."""
        return self._full(self.roi_advice, 0, np.uint8)


def map_back(grid: RoiGrid, volume: Volume, p: np.ndarray, confidence: np.ndarray,
             label_map: np.ndarray, regions: Sequence[AdviceRegion],
             segmentation: np.ndarray) -> dict[str, Any]:
    """Network-grid maps ``S`` -> the :class:`StepResult` fields of the ROI box: p and the
    confidence linearly, the segmentation (bool ``S``, the session's readout of p) as its
    :func:`~mecca_rllib.envs.readout.tie_broken` p, linearly, then ``> 0.5``, the advice
    labels ``label_map`` by nearest voxel, and ``regions``
    with the centroid and size of their voxels on the original grid (a region too thin to
    survive nearest resampling keeps its network centroid, mapped continuously, and size 0)."""
    prob, conf, score = grid.resample_linear(np.stack([p, confidence, tie_broken(p, segmentation)]))
    mapped: tuple[AdviceRegion, ...] = ()
    if regions:
        sizes, centroids = grid.label_centroids(label_map, np.array([r.rank for r in regions]))
        continuous = grid.to_canonical(np.array([r.centroid for r in regions]))
        original = volume.dhw_to_file_coords(np.where(sizes[:, None] > 0, centroids, continuous))
        mapped = tuple(r._replace(centroid=tuple(float(v) for v in c), size=int(n))
                       for r, c, n in zip(regions, original, sizes))
    return {"regions": mapped, "roi_box": grid.box.copy(), "roi_probability": prob,
            "roi_confidence": conf, "roi_advice": grid.resample_nearest(label_map),
            "roi_segmentation": score > 0.5}
