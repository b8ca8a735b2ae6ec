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

One :meth:`InteractiveSession.step` is the loop of MECCA.md §1: the clicks form the hint map,
the policy (run by an inference backend) picks one action per voxel (argmax by default),
``p <- clip(p + a, 0, 1)``, the confidence net scores the chosen actions (MECCA.md §2) and the
interaction guide turns the confidence into advice regions (MECCA.md §4).
"""
from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from mecca_rllib.data.nifti import Volume, open_volume
from mecca_rllib.data.preprocess import RoiGrid, points_box
from mecca_rllib.envs import DEFAULT_CONFIG
from mecca_rllib.envs.hints import ClickHints
from mecca_rllib.envs.readout import check_readout, segmentation
from mecca_rllib.envs.rollout import action_values, choose_actions, module_device, probability, step_tenths
from mecca_rllib.guide import (DEFAULT_COMPACTNESS, DEFAULT_K, DEFAULT_SCHEDULE, DEFAULT_SPACING,
                               SupervoxelCache, advice_regions)
from mecca_rllib.inference import load_inference_module, make_backend
from mecca_rllib.policies.checkpoints import training_hint_channels, training_hint_kernel, training_shape
from mecca_rllib.step_result import StepResult, StepTiming, map_back

__all__ = ["DEFAULT_ROI_MARGIN", "InteractiveSession", "StepResult", "StepTiming"]

#: Widening (canonical voxels per side) of the clicks' bounding box when the ROI is derived
#: from the first clicks: the middle of the training crop's random 1-11 voxels (MECCA.md §6).
DEFAULT_ROI_MARGIN = 6


@dataclass(frozen=True)
class _Snapshot:
    """The session right after a step (or at the start): what ``undo`` returns to."""

    tenths: np.ndarray  # int8 (S): p in tenths, exactly on the env's 0.1 grid
    mask: np.ndarray  # bool (S): the segmentation, p read out (envs/readout.py)
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
        module: a ``MECCATorchRLModule`` or an exported ``InferenceNet`` (``policy_logits``,
            ``confidence``, ``model_config["shape"]``).
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
        backend: what runs the two nets (``mecca_rllib.inference``): ``"torch"`` (default,
            fp32), ``"torch-bf16"``, ``"openvino"``, ``"openvino-bf16"`` or ``"auto"``.
        readout: how p becomes the segmentation (:mod:`mecca_rllib.envs.readout`); default:
            the environment's (``DEFAULT_CONFIG["readout"]``), as the benchmark reads it.
    """

    def __init__(
        self,
        module: Any,
        *,
        explore: bool = False,
        seed: int = 0,
        schedule: Sequence[int] = DEFAULT_SCHEDULE,
        k: int = DEFAULT_K,
        hint_kernel: int | None = None,
        roi_margin: int = DEFAULT_ROI_MARGIN,
        device: str | torch.device | None = None,
        memory_format: torch.memory_format = torch.channels_last_3d,
        backend: str = "torch",
        readout: str = str(DEFAULT_CONFIG["readout"]),
    ) -> None:
        for name in ("policy_logits", "confidence"):
            if not callable(getattr(module, name, None)):
                raise ValueError(f"module {type(module).__name__} has no {name}(); not a MECCA module")
        self.shape = training_shape(module)
        if int(roi_margin) < 0:
            raise ValueError(f"roi_margin must be >= 0, got {roi_margin}")
        self.explore = bool(explore)
        self.readout = check_readout(readout)
        self.schedule = tuple(int(n) for n in schedule)
        self.k = int(k)
        self.hint_kernel = training_hint_kernel(module) if hint_kernel is None else int(hint_kernel)
        self.roi_margin = int(roi_margin)
        self.device = torch.device(module_device(module) if device is None else device)
        self.memory_format = memory_format
        self.module = module.to(self.device, memory_format=memory_format).eval()
        self.backend = make_backend(backend, self.module, device=self.device)
        self._generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.hint_channels = training_hint_channels(module)
        self._hints = ClickHints(self.shape, self.hint_kernel, self.hint_channels)
        self.timings: list[StepTiming] = []
        self.volume: Volume | None = None
        self._fixed_roi: np.ndarray | None = None
        self._unset_roi()  # _grid: RoiGrid, _image: (S) z-scored ROI, _image_t, _supervoxels
        self._snapshots: list[_Snapshot] = []
        self._live: _Snapshot | None = None  # the last snapshot plus the clicks made since

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, *, shape: Sequence[int] | None = None, **kwargs: Any
    ) -> InteractiveSession:
        """Load a ``mecca export`` folder (pure torch, no Ray), an Algorithm checkpoint or an
        RLModule folder. ``shape`` (optional) is the network shape the caller expects; another
        raises ``ValueError`` naming both. ``kwargs`` (e.g. ``backend=``) go to ``__init__``.
        """
        module = load_inference_module(path)
        training_shape(module, shape, where=path)
        return cls(module, **kwargs)

    from_export = from_checkpoint

    # ------------------------------------------------------------------ public API
    def start(
        self,
        image: str | os.PathLike | np.ndarray,
        *,
        spacing: Sequence[float] | None = None,
        affine: np.ndarray | None = None,
        roi: np.ndarray | Sequence[Sequence[int]] | None = None,
        channel: int | str | None = None,
        nonfinite: str = "raise",
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
            nonfinite: NaN/Inf in the image: ``"raise"`` (``ValueError``) or ``"clean"``
                (replaced by the finite min/max; ``data.nifti``).
        """
        volume = open_volume(image, spacing=spacing, affine=affine, channel=channel, nonfinite=nonfinite)
        self._fixed_roi = None if roi is None else volume.file_box_to_dhw(roi)
        self.volume = volume
        self._unset_roi()
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
        self._current()
        original = self.volume.file_points(points)
        fg = self._hints.sides(foreground, len(original))
        if len(original) == 0:
            return np.zeros((0, 3), np.int64)
        canonical = self.volume.file_index_to_dhw(original)
        if self._grid is None:
            self._set_roi(points_box(canonical, self.roi_margin, self.volume.shape))
        inside = self._grid.contains(canonical)
        if not inside.all():
            bad = tuple(int(v) for v in original[np.argmin(inside)])
            raise ValueError(
                f"click {bad} lies outside the region of interest {self.roi.tolist()} "
                "(original voxel [start, stop) per axis); start again with a larger roi"
            )
        grid_points = self._grid.to_network(canonical)
        self._hints.add(grid_points.astype(np.int32), foreground=fg)
        live = self._live
        self._live = replace(live, clicks=np.concatenate([live.clicks, original]),
                             grid_clicks=np.concatenate([live.grid_clicks, grid_points]),
                             foreground=np.concatenate([live.foreground, fg]))
        return grid_points

    def step(self) -> StepResult:
        """One interaction step (MECCA.md §1) with the clicks so far; results on the original grid."""
        self._current()
        if self._grid is None:
            raise RuntimeError("no region of interest yet: pass roi= to start() or click first")
        last = self._snapshots[-1]
        t0 = time.perf_counter()
        with torch.inference_mode():
            obs = self._observation(last.tenths)
            logits = self.backend.policy_logits(obs)  # (1, 6, S)
            actions = choose_actions(logits, explore=self.explore, generator=self._generator)
            tenths = step_tenths(torch.from_numpy(last.tenths).to(self.device), actions[0])
            new_tenths = tenths.to(torch.int8).cpu().numpy()  # MECCA.md §1
            new_mask = segmentation(new_tenths, last.mask, self.readout, half=5)
            t1 = time.perf_counter()
            # Confidence of the chosen actions in the state they were chosen in (MECCA.md §2).
            confidence = self.backend.confidence(obs, action_values(actions))[0].float().cpu().numpy()
        t2 = time.perf_counter()
        advice = advice_regions(confidence, self._supervoxels.for_step(last.step), self.k)
        t3 = time.perf_counter()
        mapped = map_back(self._grid, self.volume, probability(new_tenths), confidence,
                          advice.label_map, advice.regions, segmentation=new_mask)
        t4 = time.perf_counter()
        timing = StepTiming(*(1e3 * (b - a) for a, b in ((t0, t1), (t1, t2), (t2, t3), (t3, t4))))
        self.timings.append(timing)
        result = StepResult(step=last.step + 1, affine=self.volume.original_affine.copy(),
                            timing=timing, volume=self.volume, **mapped)
        self._live = replace(self._live, tenths=new_tenths, mask=new_mask, step=last.step + 1, result=result)
        self._snapshots.append(self._live)
        return result

    def undo(self) -> StepResult | None:
        """Return to the state after the previous step: its p and its clicks.

        Undoes the last step together with the clicks made for it and since; with no step
        done, drops the clicks made so far. Returns the now current result (``None`` at the
        start). Timings stay recorded.
        """
        self._current()
        if len(self._snapshots) > 1:
            self._snapshots.pop()
        self._restore(self._snapshots[-1])
        return self._snapshots[-1].result

    def discard_clicks(self) -> None:
        """Forget the clicks added since the last step (or the start); the rest is unchanged."""
        self._current()
        self._restore(self._snapshots[-1])

    def reset(self) -> None:
        """Back to the start of the current volume: no clicks, ``p = 0.5``, no steps."""
        self._current()
        if self._fixed_roi is not None:
            self._set_roi(self._fixed_roi)
        none = np.zeros((0, 3), np.int64)  # p = 0.5 everywhere (MECCA.md §1), no clicks
        start = _Snapshot(np.full(self.shape, 5, np.int8), np.zeros(self.shape, bool), none, none,
                          np.zeros(0, bool))
        self._snapshots = [start]
        self._restore(start)

    # ------------------------------------------------------------------ read-only views
    @property
    def click_foreground(self) -> np.ndarray:
        """Per current click, whether it marks foreground: bool ``(K,)``, oldest first
        (all True for clicks given without a side)."""
        return self._current().foreground.copy()

    @property
    def clicks(self) -> np.ndarray:
        """All current clicks, original voxel indices, int ``(K, 3)``, oldest first."""
        return self._current().clicks.copy()

    @property
    def steps_done(self) -> int:
        """Interaction steps done on the current volume (after undo: fewer)."""
        return self._current().step

    @property
    def result(self) -> StepResult | None:
        """The current step's result (``None`` before the first step)."""
        return self._current().result

    @property
    def roi(self) -> np.ndarray | None:
        """The ROI as int ``(3, 2)`` ``[start, stop)`` per original axis, or ``None``."""
        if self._grid is None:
            return None
        return self.volume.dhw_box_to_file(self._grid.box)

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
        return probability(self._current().tenths)

    # ------------------------------------------------------------------ internals
    def _current(self) -> _Snapshot:
        """The live state: the last snapshot plus the clicks made since (after start() only)."""
        if self.volume is None:
            raise RuntimeError("no volume: call start() first")
        return self._live

    def _restore(self, snapshot: _Snapshot) -> None:
        """Make ``snapshot`` the live state: its clicks, hint map and (maybe) ROI."""
        self._live = snapshot  # its arrays are never written to, only replaced
        if len(snapshot.clicks) == 0 and self._fixed_roi is None:
            self._unset_roi()  # the next first clicks derive the ROI again
        self._hints.reset()
        if len(snapshot.grid_clicks):
            self._hints.add(snapshot.grid_clicks.astype(np.int32), foreground=snapshot.foreground)

    def _set_roi(self, box: np.ndarray) -> None:
        grid = RoiGrid(box=np.asarray(box, np.int64), shape=self.shape)
        if self._grid is not None and np.array_equal(self._grid.box, grid.box):
            return
        self._grid = grid
        self._image = grid.crop(self.volume.array)  # as in training, MECCA.md §6
        self._supervoxels = SupervoxelCache(self._image, self.schedule, DEFAULT_SPACING, DEFAULT_COMPACTNESS)
        self._supervoxels.warm()  # SLIC once per count, never inside a step (MECCA.md §4)
        self._image_t = torch.from_numpy(self._image).to(self.device)

    def _unset_roi(self) -> None:
        self._grid: RoiGrid | None = None
        self._image: np.ndarray | None = None
        self._image_t: torch.Tensor | None = None
        self._supervoxels: SupervoxelCache | None = None

    def _observation(self, tenths: np.ndarray) -> torch.Tensor:
        """``(1, 2 + C, S)`` float32 (image, p, C hint channels) in the session's memory format."""
        p = torch.from_numpy(tenths).to(self.device).float().div_(10)
        hint = torch.from_numpy(self._hints.values).to(self.device)
        obs = torch.cat([self._image_t[None], p[None], hint])[None]
        return obs.contiguous(memory_format=self.memory_format)
