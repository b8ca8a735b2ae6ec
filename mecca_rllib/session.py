"""``InteractiveSession``: a trained MECCA policy on a user's own scan, click by click.

The network works on the training shape ``S = module.model_config["shape"]`` ``(D, H, W)``.
A session maps between three grids:

1. the *original* grid: the voxel array of the input as given (a NIfTI file's ``(i, j, k)``
   array as nibabel returns it, or the caller's array); clicks, the ROI box and all results
   live here, together with the input's affine;
2. the *canonical* grid ``(D, H, W)`` (closest RAS orientation, transposed; ARCHITECTURE.md),
   the orientation the network was trained in;
3. the *network* grid ``S``: the region of interest (ROI) of the canonical volume, resized
   to ``S`` and z-scored exactly like the training data (MECCA.md §6).

One :meth:`InteractiveSession.step` is the loop of MECCA.md §1: the clicks so far form the
hint map, the policy picks one action per voxel (argmax by default),
``p <- clip(p + a, 0, 1)``, the confidence network scores the chosen actions (MECCA.md §2)
and the interaction guide turns the confidence into advice regions (MECCA.md §4).
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mecca_rllib.data.nifti import Volume, load_volume, volume_from_array
from mecca_rllib.data.preprocess import resize_image, zscore
from mecca_rllib.envs.hints import ClickHints
from mecca_rllib.envs.interactive_seg_env import DEFAULT_CONFIG as ENV_DEFAULTS
from mecca_rllib.envs.spaces import ACTION_TENTHS, ACTION_VALUES
from mecca_rllib.guide import (
    DEFAULT_COMPACTNESS,
    DEFAULT_K,
    DEFAULT_SCHEDULE,
    DEFAULT_SPACING,
    AdviceRegion,
    SupervoxelCache,
    advice_regions,
)

if TYPE_CHECKING:
    from mecca_rllib.policies.rl_module import MECCATorchRLModule

__all__ = [
    "DEFAULT_ROI_MARGIN",
    "InteractiveSession",
    "RoiGrid",
    "StepResult",
    "StepTiming",
    "dhw_affine",
    "training_shape",
]

#: Widening (canonical voxels per side) of the clicks' bounding box when the ROI is derived
#: from the first clicks: the middle of the training crop's random 1-11 voxels (MECCA.md §6).
DEFAULT_ROI_MARGIN = 6
_SWAP_DHW = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


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
    advice 0. Arrays may be read-only views in the file's axis order.

    Attributes:
        step: interaction steps done so far (1 after the first step).
        regions: the advice regions, ranked; centroid (original voxel coordinates) and size
            (voxels) of each region's voxels in ``advice``.
        affine: the input's 4x4 affine (original voxel indices -> world mm).
        timing: the step's :class:`StepTiming`.
        volume: the session's volume (canonical grid, orientation to the original).
        roi_box: int ``(3, 2)`` canonical ``[start, stop)`` of the ROI.
        roi_probability, roi_confidence: float32 canonical maps inside ``roi_box``.
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

    def _full(self, roi_values: np.ndarray, fill: float, dtype: type) -> np.ndarray:
        """Canonical ROI map -> read-only array on the original grid, ``fill`` outside."""
        full = np.full(self.volume.shape, fill, dtype) if fill else np.zeros(self.volume.shape, dtype)
        full[tuple(slice(int(a), int(b)) for a, b in self.roi_box)] = roi_values
        out = self.volume.to_file(full)
        out.flags.writeable = False
        return out

    @cached_property
    def probability(self) -> np.ndarray:
        """float32 ``(I, J, K)`` foreground probability p in [0, 1]."""
        return self._full(self.roi_probability, 0.0, np.float32)

    @cached_property
    def segmentation(self) -> np.ndarray:
        """uint8 ``(I, J, K)``: ``p > 0.5``."""
        return self._full(self.roi_probability > 0.5, 0, np.uint8)

    @cached_property
    def confidence(self) -> np.ndarray:
        """float32 ``(I, J, K)`` confidence of the chosen action, in (0, 1)."""
        return self._full(self.roi_confidence, 1.0, np.float32)

    @cached_property
    def advice(self) -> np.ndarray:
        """uint8 ``(I, J, K)`` advice label map (0 = none, r = rank-r region)."""
        return self._full(self.roi_advice, 0, np.uint8)


@dataclass(frozen=True)
class RoiGrid:
    """The ROI box of the canonical volume and its resampling onto the network grid.

    Resampling is voxel-centre aligned in both directions (scikit-image ``resize`` and
    ``torch`` ``align_corners=False`` conventions): canonical coordinate ``c`` and network
    coordinate ``n`` relate by ``n = (c - start + 0.5) * S / size - 0.5``. The forward
    resize of the image is the training preprocessing's (``data.preprocess.resize_image``).

    Attributes:
        box: int ``(3, 2)`` ``[start, stop)`` of the ROI per canonical axis.
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

    def to_network(self, points: np.ndarray) -> np.ndarray:
        """Canonical ``(K, 3)`` points -> nearest network voxels, int ``(K, 3)`` (clamped)."""
        scale = np.asarray(self.shape) / self.size
        n = (np.asarray(points, float) - self.box[:, 0] + 0.5) * scale - 0.5
        return np.clip(np.rint(n), 0, np.asarray(self.shape) - 1).astype(np.int64)

    def to_canonical(self, points: np.ndarray) -> np.ndarray:
        """Network ``(K, 3)`` coordinates -> canonical float ``(K, 3)`` coordinates."""
        scale = self.size / np.asarray(self.shape)
        return (np.asarray(points, float) + 0.5) * scale - 0.5 + self.box[:, 0]

    def contains(self, points: np.ndarray) -> np.ndarray:
        """bool ``(K,)``: canonical points inside the box."""
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
        """Size and canonical centroid of each label ``ids`` ``(R,)`` of a network-grid map
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


def _box_from_points(points: np.ndarray, margin: int, shape: Sequence[int]) -> np.ndarray:
    """Bounding box ``(3, 2)`` of canonical points widened by ``margin``, clamped to ``shape``."""
    lo = points.min(axis=0) - margin
    hi = points.max(axis=0) + 1 + margin
    return np.stack([np.maximum(lo, 0), np.minimum(hi, np.asarray(shape))], axis=1).astype(np.int64)


def _roi_to_canonical(volume: Volume, roi: Any) -> np.ndarray:
    """ROI ``[start, stop)`` per original axis, int ``(3, 2)`` -> the same box on the canonical grid."""
    box = np.asarray(roi, dtype=float)
    shape = np.asarray(volume.original_shape)
    if box.shape != (3, 2) or not np.isfinite(box).all() or np.any(box != np.rint(box)):
        raise ValueError(f"roi must be integer [start, stop) per axis, shape (3, 2); got {roi!r}")
    box = box.astype(np.int64)
    if np.any(box[:, 0] < 0) or np.any(box[:, 1] > shape) or np.any(box[:, 0] >= box[:, 1]):
        raise ValueError(f"roi {box.tolist()} is empty or outside the volume of shape {tuple(shape)}")
    corners = volume.file_index_to_dhw(np.stack([box[:, 0], box[:, 1] - 1]))
    return np.stack([corners.min(0), corners.max(0) + 1], axis=1)


def dhw_affine(spacing: Sequence[float]) -> np.ndarray:
    """4x4 affine of a ``(D, H, W)`` array with ``(d, h, w)`` spacing in mm: index -> RAS mm.

    ``d`` runs along the superior axis, ``h`` anterior and ``w`` right (ARCHITECTURE.md).
    """
    d, h, w = (float(s) for s in spacing)
    return np.diag([w, h, d, 1.0]) @ _SWAP_DHW


def training_hint_kernel(module: Any) -> int:
    """The env's ``hint_kernel`` a MECCA module was trained with (8, the paper's, if unrecorded)."""
    cfg = getattr(module, "model_config", None) or {}
    return int(cfg.get("hint_kernel") or ENV_DEFAULTS["hint_kernel"])


def training_shape(module: Any) -> tuple[int, int, int]:
    """The network shape ``(D, H, W)`` a MECCA module was trained on (``model_config["shape"]``)."""
    cfg = getattr(module, "model_config", None) or {}
    shape = cfg.get("shape")
    if shape is None or len(tuple(shape)) != 3:
        raise ValueError(
            f"module has no training shape (model_config['shape'] = {shape!r}); "
            "it is not a MECCA module trained by mecca-rllib"
        )
    return tuple(int(s) for s in shape)


@dataclass(frozen=True)
class _Snapshot:
    """The session right after a step (or at the start): what ``undo`` returns to."""

    tenths: np.ndarray  # int8 (S): p in tenths, exactly on the env's 0.1 grid
    clicks: np.ndarray  # int64 (K, 3) original voxel indices, oldest first
    grid_clicks: np.ndarray  # int64 (K, 3) network voxels
    foreground: np.ndarray  # bool (K,): the side each click marks (split-hint models)
    step: int = 0
    result: StepResult | None = None


class InteractiveSession:
    """Interactive MECCA segmentation of one volume at a time.

    Typical use::

        session = InteractiveSession.from_checkpoint("runs/exported")
        session.start("scan.nii.gz", roi=[[40, 120], [30, 110], [10, 60]])
        session.click([[80, 70, 35], [60, 90, 30]])
        result = session.step()        # probability, segmentation, confidence, advice
        session.undo()                 # back to before that step and its clicks

    Args:
        module: a ``MECCATorchRLModule`` (``policy_logits``, ``confidence``,
            ``model_config["shape"]``).
        explore: sample actions from the policy instead of taking the argmax.
        seed: seed of the action sampling (``explore=True``).
        schedule: supervoxel count per step for the interaction guide (MECCA.md §4).
        k: number of advice regions.
        hint_kernel: hint Gaussian kernel in network voxels; None (default) = the
            ``hint_kernel`` the module was trained with (``model_config``).
        roi_margin: widening of the first clicks' bounding box when no ROI is given.
        device: torch device; default: the module's.
        memory_format: ``torch.channels_last_3d`` (default, faster on CPU) or
            ``torch.contiguous_format``.
    """

    def __init__(
        self,
        module: MECCATorchRLModule,
        *,
        explore: bool = False,
        seed: int = 0,
        schedule: Sequence[int] = DEFAULT_SCHEDULE,
        k: int = DEFAULT_K,
        hint_kernel: int | None = None,
        roi_margin: int = DEFAULT_ROI_MARGIN,
        device: str | torch.device | None = None,
        memory_format: torch.memory_format = torch.channels_last_3d,
    ) -> None:
        for name in ("policy_logits", "confidence"):
            if not callable(getattr(module, name, None)):
                raise ValueError(f"module {type(module).__name__} has no {name}(); not a MECCA module")
        self.shape = training_shape(module)
        if int(roi_margin) < 0:
            raise ValueError(f"roi_margin must be >= 0, got {roi_margin}")
        self.explore = bool(explore)
        self.schedule = tuple(int(n) for n in schedule)
        self.k = int(k)
        self.hint_kernel = training_hint_kernel(module) if hint_kernel is None else int(hint_kernel)
        self.roi_margin = int(roi_margin)
        if device is None:
            param = next(iter(module.parameters()), None)
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        self.memory_format = memory_format
        self.module = module.to(self.device, memory_format=memory_format).eval()
        self._generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self._action_values = torch.tensor(ACTION_VALUES.tolist(), device=self.device)
        self._action_tenths = torch.tensor(ACTION_TENTHS.tolist(), dtype=torch.int8, device=self.device)
        self.hint_channels = int(getattr(module, "hint_channels", 1))
        self._hints = ClickHints(self.shape, self.hint_kernel, self.hint_channels)
        self.timings: list[StepTiming] = []
        self.volume: Volume | None = None
        self._fixed_roi: np.ndarray | None = None
        self._grid: RoiGrid | None = None
        self._image: np.ndarray | None = None  # (S) float32 z-scored ROI
        self._supervoxels: SupervoxelCache | None = None
        self._image_t: torch.Tensor | None = None
        self._snapshots: list[_Snapshot] = []
        self._clicks = np.zeros((0, 3), np.int64)
        self._grid_clicks = np.zeros((0, 3), np.int64)
        self._foreground = np.zeros(0, bool)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, shape: Sequence[int] | None = None, **kwargs: Any
    ) -> InteractiveSession:
        """Load an Algorithm checkpoint folder or an exported RLModule folder.

        ``shape`` (optional) is the network shape the caller expects; a checkpoint trained
        with another shape raises ``ValueError`` naming both. ``kwargs`` go to ``__init__``.
        """
        from mecca_rllib.policies.checkpoints import load_rl_module

        module = load_rl_module(path)
        trained = training_shape(module)
        if shape is not None and tuple(int(s) for s in shape) != trained:
            raise ValueError(
                f"{path}: checkpoint was trained on shape {trained}, expected {tuple(shape)}"
            )
        return cls(module, **kwargs)

    # ------------------------------------------------------------------ public API
    def start(
        self,
        image: str | os.PathLike | np.ndarray,
        *,
        spacing: Sequence[float] | None = None,
        affine: np.ndarray | None = None,
        roi: np.ndarray | Sequence[Sequence[int]] | None = None,
        channel: int | str | None = None,
    ) -> None:
        """Start on a new volume; forgets the previous one.

        Args:
            image: a NIfTI path, or a 3D array. An array with ``affine`` is treated like a
                NIfTI file's array; without one it must already be ``(D, H, W)``
                (ARCHITECTURE.md) with ``spacing`` ``(d, h, w)`` mm (default 1 mm).
            spacing: only for arrays without ``affine``.
            affine: 4x4 voxel -> world mm of an array input.
            roi: int ``(3, 2)`` ``[start, stop)`` per original axis; ``None``: derived from
                the first clicks (their bounding box widened by ``roi_margin``).
            channel: channel of a 4D NIfTI file.
        """
        volume = self._load(image, spacing, affine, channel)
        fixed = None if roi is None else _roi_to_canonical(volume, roi)
        self.volume = volume
        self._unset_roi()
        self._fixed_roi = fixed
        self.reset()

    def click(
        self,
        points: np.ndarray | Sequence[Sequence[float]],
        foreground: bool | Sequence[bool] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Add clicks in original voxel coordinates ``(K, 3)`` (rounded to the nearest voxel).

        ``foreground`` (a bool, or one per click) says whether a click marks the object
        (True) or the background (False). Models trained with ``hint_channels=2`` need it
        (``ValueError`` otherwise); the paper's one-channel models ignore it.
        The first clicks fix the ROI when none was given (computing the ROI's supervoxels).
        Returns the clicks' network-grid voxels, int ``(K, 3)``. Raises ``ValueError`` naming
        a NaN click, one outside the volume, or one outside the ROI; then nothing is added.
        """
        self._require_volume()
        original = self._check_points(points)
        if foreground is None and self.hint_channels == 2:
            raise ValueError(
                "this model was trained with separate foreground/background hints "
                "(hint_channels=2): pass foreground=True or False for the clicks"
            )
        fg = np.asarray(True if foreground is None else foreground, bool)
        if fg.ndim > 1 or fg.size not in (1, len(original)):
            raise ValueError(f"foreground must be one bool or one per click ({len(original)}), "
                             f"got shape {fg.shape}")
        fg = np.broadcast_to(fg.reshape(-1), (len(original),))
        if len(original) == 0:
            return np.zeros((0, 3), np.int64)
        canonical = self.volume.file_index_to_dhw(original)
        if self._grid is None:
            self._set_roi(_box_from_points(canonical, self.roi_margin, self.volume.shape))
        inside = self._grid.contains(canonical)
        if not inside.all():
            bad = tuple(int(v) for v in original[np.argmin(inside)])
            raise ValueError(
                f"click {bad} lies outside the region of interest {self.roi.tolist()} "
                "(original voxel [start, stop) per axis); start again with a larger roi"
            )
        grid_points = self._grid.to_network(canonical)
        self._hints.add(grid_points.astype(np.int32), foreground=fg)
        self._clicks = np.concatenate([self._clicks, original])
        self._grid_clicks = np.concatenate([self._grid_clicks, grid_points])
        self._foreground = np.concatenate([self._foreground, fg])
        return grid_points

    def step(self) -> StepResult:
        """One interaction step (MECCA.md §1) with the clicks so far; results on the original grid."""
        self._require_volume()
        if self._grid is None:
            raise RuntimeError("no region of interest yet: pass roi= to start() or click first")
        last = self._snapshots[-1]
        t0 = time.perf_counter()
        with torch.inference_mode():
            obs = self._observation(last.tenths)
            logits = self.module.policy_logits(obs)  # (1, 6, S)
            actions = self._choose(logits)  # (1, S) int64
            tenths = torch.from_numpy(last.tenths).to(self.device)
            tenths = (tenths + self._action_tenths[actions[0]]).clamp_(0, 10)  # MECCA.md §1
            new_tenths = tenths.to(torch.int8).cpu().numpy()
            t1 = time.perf_counter()
            # Confidence of the chosen actions in the state they were chosen in (MECCA.md §2).
            confidence = self.module.confidence(obs, self._action_values[actions])[0]
            confidence = confidence.float().cpu().numpy()  # (S)
        t2 = time.perf_counter()
        advice = advice_regions(confidence, self._supervoxels.for_step(last.step), self.k)
        t3 = time.perf_counter()
        mapped = self._map_back(new_tenths, confidence, advice.label_map)
        regions = self._regions_to_original(advice.regions, advice.label_map)
        t4 = time.perf_counter()
        timing = StepTiming(*(1e3 * (b - a) for a, b in ((t0, t1), (t1, t2), (t2, t3), (t3, t4))))
        self.timings.append(timing)
        result = StepResult(
            step=last.step + 1, regions=regions, affine=self.volume.original_affine.copy(),
            timing=timing, volume=self.volume, **mapped,
        )  # fmt: skip
        self._snapshots.append(
            _Snapshot(new_tenths, self._clicks.copy(), self._grid_clicks.copy(),
                      self._foreground.copy(), last.step + 1, result)
        )
        return result

    def undo(self) -> StepResult | None:
        """Return to the state after the previous step: its p and its clicks.

        Undoes the last step together with the clicks made for it and since; with no step
        done, drops the clicks made so far. Returns the now current result (``None`` at the
        start). Timings stay recorded.
        """
        self._require_volume()
        if len(self._snapshots) > 1:
            self._snapshots.pop()
        self._restore(self._snapshots[-1])
        return self._snapshots[-1].result

    def discard_clicks(self) -> None:
        """Forget the clicks added since the last step (or the start); the rest is unchanged."""
        self._require_volume()
        self._restore(self._snapshots[-1])

    def reset(self) -> None:
        """Back to the start of the current volume: no clicks, ``p = 0.5``, no steps."""
        self._require_volume()
        if self._fixed_roi is not None:
            self._set_roi(self._fixed_roi)
        start = _Snapshot(
            tenths=np.full(self.shape, 5, np.int8),  # p = 0.5 everywhere (MECCA.md §1)
            clicks=np.zeros((0, 3), np.int64),
            grid_clicks=np.zeros((0, 3), np.int64),
            foreground=np.zeros(0, bool),
        )
        self._snapshots = [start]
        self._restore(start)

    # ------------------------------------------------------------------ read-only views
    @property
    def click_foreground(self) -> np.ndarray:
        """Per current click, whether it marks foreground: bool ``(K,)``, oldest first
        (all True for clicks given without a side)."""
        self._require_volume()
        return self._foreground.copy()

    @property
    def clicks(self) -> np.ndarray:
        """All current clicks, original voxel indices, int ``(K, 3)``, oldest first."""
        self._require_volume()
        return self._clicks.copy()

    @property
    def steps_done(self) -> int:
        """Interaction steps done on the current volume (after undo: fewer)."""
        self._require_volume()
        return self._snapshots[-1].step

    @property
    def result(self) -> StepResult | None:
        """The current step's result (``None`` before the first step)."""
        self._require_volume()
        return self._snapshots[-1].result

    @property
    def roi(self) -> np.ndarray | None:
        """The ROI as int ``(3, 2)`` ``[start, stop)`` per original axis, or ``None``."""
        if self._grid is None:
            return None
        corners = self.volume.dhw_to_file_index(self._grid.box.T - [[0, 0, 0], [1, 1, 1]])
        return np.stack([corners.min(0), corners.max(0) + 1], axis=1)

    @property
    def roi_grid(self) -> RoiGrid | None:
        """The ROI on the canonical grid and its network resampling, or ``None``."""
        return self._grid

    @property
    def network_image(self) -> np.ndarray | None:
        """The ROI on the network grid, z-scored float32 ``S``, or ``None`` before the ROI."""
        return self._image

    @property
    def probability_network(self) -> np.ndarray:
        """Current p on the network grid, float32 ``S``."""
        self._require_volume()
        return self._snapshots[-1].tenths.astype(np.float32) / np.float32(10)

    # ------------------------------------------------------------------ internals
    def _require_volume(self) -> Volume:
        if self.volume is None:
            raise RuntimeError("no volume: call start() first")
        return self.volume

    def _restore(self, snapshot: _Snapshot) -> None:
        """Make ``snapshot`` the live state: its clicks, hint map and (maybe) ROI."""
        self._clicks = snapshot.clicks.copy()
        self._grid_clicks = snapshot.grid_clicks.copy()
        self._foreground = snapshot.foreground.copy()
        if len(self._clicks) == 0 and self._fixed_roi is None:
            self._unset_roi()  # the next first clicks derive the ROI again
        self._hints.reset()
        if len(self._grid_clicks):
            self._hints.add(self._grid_clicks.astype(np.int32), foreground=self._foreground)

    def _load(self, image, spacing, affine, channel) -> Volume:
        if isinstance(image, (str, os.PathLike)):
            if spacing is not None or affine is not None:
                raise ValueError(f"{image}: spacing/affine come from the NIfTI file; do not pass them")
            return load_volume(Path(image), channel=channel)
        if channel is not None:
            raise ValueError("channel applies to 4D NIfTI files; pass a 3D array instead")
        array = np.asarray(image)
        if array.ndim != 3:
            raise ValueError(f"image array must be 3D, got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
            raise ValueError("image array must be numeric and finite (no NaN/Inf)")
        if affine is None:
            spacing = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
            if len(spacing) != 3 or min(spacing) <= 0:
                raise ValueError(f"spacing must be three positive sizes in mm, got {spacing}")
            affine = dhw_affine(spacing)
        else:
            affine = np.asarray(affine, float)
            if affine.shape != (4, 4) or not np.isfinite(affine).all():
                raise ValueError(f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
            if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
                raise ValueError("affine is singular")
            if spacing is not None:
                raise ValueError("pass either affine or spacing for an array, not both")
        return volume_from_array(array, affine)

    def _check_points(self, points) -> np.ndarray:
        """Original-grid clicks -> int64 ``(K, 3)``; ValueError naming a bad one."""
        pts = np.asarray(points, dtype=float)
        if pts.size == 0:
            return np.zeros((0, 3), np.int64)
        if pts.ndim == 1:
            pts = pts[None]
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"clicks must have shape (K, 3), got {np.shape(points)}")
        shape = np.asarray(self.volume.original_shape)
        for p in pts:  # a handful of clicks: a readable message beats vectorising
            if not np.isfinite(p).all():
                raise ValueError(f"click {tuple(p.tolist())} has a NaN or infinite coordinate")
            idx = np.rint(p)
            if np.any(idx < 0) or np.any(idx >= shape):
                raise ValueError(
                    f"click {tuple(p.tolist())} lies outside the volume of shape {tuple(shape)}"
                )
        return np.rint(pts).astype(np.int64)

    def _set_roi(self, box: np.ndarray) -> None:
        grid = RoiGrid(box=np.asarray(box, np.int64), shape=self.shape)
        if self._grid is not None and np.array_equal(self._grid.box, grid.box):
            return
        self._grid = grid
        crop = self.volume.array[grid.slices]
        self._image = zscore(resize_image(crop, self.shape))  # as in training, MECCA.md §6
        self._supervoxels = SupervoxelCache(self._image, self.schedule, DEFAULT_SPACING, DEFAULT_COMPACTNESS)
        self._supervoxels.warm()  # SLIC once per count, never inside a step (MECCA.md §4)
        self._image_t = torch.from_numpy(self._image).to(self.device)

    def _unset_roi(self) -> None:
        self._grid, self._image, self._image_t, self._supervoxels = None, None, None, None

    def _observation(self, tenths: np.ndarray) -> torch.Tensor:
        """``(1, 2 + C, S)`` float32 (image, p, C hint channels) in the session's memory format."""
        p = torch.from_numpy(tenths).to(self.device).float().div_(10)
        hint = torch.from_numpy(self._hints.values).to(self.device)
        obs = torch.cat([self._image_t[None], p[None], hint])[None]
        return obs.contiguous(memory_format=self.memory_format)

    def _choose(self, logits: torch.Tensor) -> torch.Tensor:
        """Action indices ``(1, S)`` int64: argmax, or a sample (Gumbel-max) when exploring."""
        if self.explore:
            u = torch.rand(logits.shape, generator=self._generator, device=logits.device)
            logits = logits - torch.log(-torch.log(u.clamp_(1e-20, 1.0)))
        return logits.argmax(dim=1)

    def _map_back(self, tenths: np.ndarray, confidence: np.ndarray, advice: np.ndarray) -> dict:
        """Network-grid maps ``S`` -> canonical maps of the ROI box (see StepResult): linear
        for p and the confidence, nearest for the advice labels (:class:`RoiGrid`)."""
        p = tenths.astype(np.float32) / np.float32(10)
        prob, conf = self._grid.resample_linear(np.stack([p, confidence]))
        return {
            "roi_box": self._grid.box.copy(), "roi_probability": prob, "roi_confidence": conf,
            "roi_advice": self._grid.resample_nearest(advice),
        }  # fmt: skip

    def _regions_to_original(
        self, regions: Sequence[AdviceRegion], label_map: np.ndarray
    ) -> tuple[AdviceRegion, ...]:
        """Advice regions with centroid and size of their voxels on the original grid
        (``label_map``: the network-grid advice labels). A region too thin to survive
        nearest resampling keeps its network centroid, mapped continuously, and size 0."""
        if not regions:
            return ()
        sizes, mapped = self._grid.label_centroids(label_map, np.array([r.rank for r in regions]))
        continuous = self._grid.to_canonical(np.array([r.centroid for r in regions]))
        canonical = np.where(sizes[:, None] > 0, mapped, continuous)
        matrix = np.linalg.inv(self.volume.original_affine) @ self.volume.affine
        original = canonical @ matrix[:3, :3].T + matrix[:3, 3]
        return tuple(
            r._replace(centroid=tuple(float(v) for v in c), size=int(n))
            for r, c, n in zip(regions, original, sizes)
        )
