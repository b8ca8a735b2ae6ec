"""One browser tab's interactive segmentation: a volume, its clicks, steps and results.

The page works on the *canonical* grid ``(D, H, W)`` of the loaded volume (ARCHITECTURE.md):
it shows slices of it and sends clicks as canonical voxels. :class:`Workspace` converts them
to the file's ``(i, j, k)`` indices for :class:`~mecca_rllib.session.InteractiveSession`
and exports the segmentation on the file's own grid, affine and header (``save_like``).

Clicks made since the last step are *pending*: they reach the session only when Step is
pressed. Before the first step this lets all first clicks define the region of interest
together (their bounding box widened by ``roi_margin``, as in training, MECCA.md §6), and
it makes Undo remove the last click, or, with no pending click, the last step (whose clicks
become pending again). A step that fails leaves everything as it was before the press.

No web framework here: the FastAPI layer (:mod:`mecca_rllib.web.app`) only translates.
"""
from __future__ import annotations

import math
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mecca_rllib.data.errors import DataError
from mecca_rllib.data.layouts import Case
from mecca_rllib.data.nifti import load_label, save_like
from mecca_rllib.metrics import dice
from mecca_rllib.session import InteractiveSession, StepResult

__all__ = ["NotReady", "StepRecord", "Workspace", "WorkspaceError", "display_uint8"]

#: Largest volume accepted (voxels): 2^27 float32 voxels are 512 MiB in memory.
DEFAULT_MAX_VOXELS = 2**27


class WorkspaceError(ValueError):
    """A request the user can fix (bad click, nothing to undo, ...): HTTP 400."""


class NotReady(WorkspaceError):
    """The request needs something not there yet (a volume, a first step): HTTP 409."""


@dataclass(frozen=True)
class StepRecord:
    """What the page's step table shows for one interaction step."""

    step: int  #: 1 for the first step
    clicks: int  #: clicks added for this step
    dice: float | None  #: Dice with the reference label (None without one)
    user_ms: float | None  #: the user's time from the previous result to the Step press
    compute_ms: float  #: server wall time of the step (clicks, ROI set-up, policy, guide)
    model_ms: float  #: policy + confidence + guide + mapping (:class:`StepTiming`)


def display_uint8(array: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Window a float ``(D, H, W)`` image to uint8 between two percentiles (a display
    copy; percentiles from at most ~1M evenly strided voxels)."""
    flat = np.asarray(array).ravel()
    sample = flat[:: max(1, flat.size // 1_000_000)]
    lo, hi = np.percentile(sample, [low, high])
    if not hi > lo:
        hi = lo + 1.0
    scaled = (np.asarray(array, np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(scaled, 0, 255).astype(np.uint8)


@dataclass
class _Loaded:
    """A loaded volume and what is derived from it once."""

    name: str
    source: str  # "data" or "upload"
    session: InteractiveSession
    display: np.ndarray  # uint8 (D, H, W)
    reference: np.ndarray | None  # uint8 {0, 1} (D, H, W)
    reference_name: str | None


class Workspace:
    """The interactive state of one browser tab (thread-safe: one request at a time).

    Args:
        module: the MECCA RLModule, shared by every workspace of the server.
        model_lock: serialises forward passes of the shared module.
        session_kwargs: keyword arguments of :class:`InteractiveSession` (``device``, ...).
        max_voxels: largest volume accepted.
    """

    def __init__(
        self,
        module: Any,
        *,
        model_lock: threading.Lock | None = None,
        session_kwargs: dict[str, Any] | None = None,
        max_voxels: int = DEFAULT_MAX_VOXELS,
    ) -> None:
        self.module = module
        self.model_lock = model_lock or threading.Lock()
        self.session_kwargs = dict(session_kwargs or {})
        self.max_voxels = int(max_voxels)
        self.lock = threading.RLock()
        self._loaded: _Loaded | None = None
        self._pending: list[tuple[int, int, int]] = []  # canonical voxels, oldest first
        self._pending_fg: list[bool] = []  # per pending click: marks foreground (True) or not
        self._history: list[StepRecord] = []

    # ------------------------------------------------------------------ loading
    def load_case(self, case: Case, *, channel: int | str | None = None,
                  label_value: int | None = None) -> None:
        """Load a dataset case (image + reference label). DataError on bad files."""
        if isinstance(channel, str) and case.channel_names:
            names = [n.lower() for n in case.channel_names]
            if channel.lower() not in names:
                raise DataError(case.image, f"no channel named {channel!r}; channels are {list(case.channel_names)}")
            channel = names.index(channel.lower())
        self._load(case.image, case.name, "data", channel=channel,
                   reference=case.label, label_value=label_value)

    def load_upload(self, path: str | Path, name: str) -> None:
        """Load an uploaded NIfTI file; errors name ``name`` (the user's file), not ``path``."""
        self._load(Path(path), name, "upload")

    def set_reference(self, path: str | Path, name: str) -> None:
        """Use an uploaded label file as the reference for Dice (must match the image)."""
        with self.lock:
            loaded = self._require()
            reference = _renamed(name, lambda: load_label(Path(path), like=loaded.session.volume), path)
            loaded.reference = np.ascontiguousarray(reference.array, np.uint8)
            loaded.reference_name = name
            self._history = [
                StepRecord(**{**asdict(r), "dice": None}) for r in self._history
            ]  # earlier steps had no reference: do not pretend they did

    def _load(self, path: Path, name: str, source: str, *, channel: int | str | None = None,
              reference: Path | None = None, label_value: int | None = None) -> None:
        self._check_size(path, name)
        session = InteractiveSession(self.module, **self.session_kwargs)
        _renamed(name, lambda: session.start(path, channel=channel), path)
        volume = session.volume
        ref = None
        if reference is not None:
            ref = load_label(reference, label_value=label_value, like=volume).array
        loaded = _Loaded(name=name, source=source, session=session,
                         display=display_uint8(volume.array), reference=ref,
                         reference_name=None if reference is None else reference.name)
        with self.lock:  # swap in only when everything loaded
            self._loaded, self._pending, self._pending_fg, self._history = loaded, [], [], []

    def _check_size(self, path: Path, name: str) -> None:
        """Refuse a volume larger than ``max_voxels`` from its header, before reading data."""
        try:
            shape = nib.load(path).shape  # header only; a bad file is reported by load_volume
        except Exception:  # noqa: BLE001 - the data layer gives the precise message
            return
        if math.prod(shape[:3]) > self.max_voxels:
            raise DataError(name, f"volume of shape {tuple(shape)} has more than "
                                  f"{self.max_voxels} voxels, the server's limit")

    # ------------------------------------------------------------------ interaction
    def click(self, voxel: tuple[int, int, int] | list[int], foreground: bool = True) -> None:
        """Add a pending click at a canonical voxel ``(d, h, w)``; ``foreground``: the side it
        marks (used by models trained with separate foreground/background hints)."""
        with self.lock:
            loaded = self._require()
            point = np.asarray(voxel)
            shape = np.asarray(loaded.session.volume.shape)
            if point.shape != (3,) or np.any(point < 0) or np.any(point >= shape):
                raise WorkspaceError(f"voxel {list(map(int, point.ravel()))} lies outside the volume "
                                     f"of shape {tuple(shape.tolist())} (d, h, w)")
            grid = loaded.session.roi_grid
            if grid is not None and not grid.contains(point[None])[0]:
                box = grid.box.tolist()
                raise WorkspaceError(
                    f"voxel {point.tolist()} lies outside the region of interest {box} "
                    "(dashed box); undo back to the start to choose a new region")
            self._pending.append(tuple(int(v) for v in point))
            self._pending_fg.append(bool(foreground))

    def undo(self) -> None:
        """Remove the last pending click, or else the last step (its clicks become pending)."""
        with self.lock:
            loaded = self._require()
            session = loaded.session
            if self._pending:
                self._pending.pop()
                self._pending_fg.pop()
                return
            if session.steps_done == 0:
                raise WorkspaceError("nothing to undo")
            before, before_fg = session.clicks, session.click_foreground
            session.undo()
            restored = before[len(session.clicks):]
            self._pending = [tuple(int(v) for v in p) for p in session.volume.file_index_to_dhw(restored)]
            self._pending_fg = before_fg[len(session.clicks):].tolist()
            del self._history[session.steps_done:]

    def step(self, user_ms: float | None = None) -> StepRecord:
        """Run one interaction step with the pending clicks (MECCA.md §1).

        ``user_ms``: the user's time since the previous result was shown (the page's timer).
        On any error the workspace is left exactly as before the call.
        """
        if user_ms is not None and not (math.isfinite(user_ms) and user_ms >= 0):
            raise WorkspaceError(f"user_ms must be a non-negative number of milliseconds, got {user_ms}")
        with self.lock:
            loaded = self._require()
            session = loaded.session
            if session.roi_grid is None and not self._pending:
                raise WorkspaceError("click on the object's boundary first: the first clicks "
                                     "define the region of interest")
            steps_before = session.steps_done
            t0 = time.perf_counter()
            try:
                with self.model_lock:
                    if self._pending:
                        session.click(session.volume.dhw_to_file_index(np.array(self._pending)),
                                      foreground=np.array(self._pending_fg))
                    result = session.step()
                record = StepRecord(
                    step=result.step, clicks=len(self._pending),
                    dice=self._dice(result, loaded.reference),
                    user_ms=None if user_ms is None else float(user_ms),
                    compute_ms=1e3 * (time.perf_counter() - t0),
                    model_ms=result.timing.total_ms,
                )
            except BaseException:
                if session.steps_done > steps_before:
                    session.undo()  # back to the previous step's snapshot (clicks included)
                else:
                    session.discard_clicks()
                raise
            self._pending, self._pending_fg = [], []
            self._history.append(record)
            return record

    # ------------------------------------------------------------------ outputs
    def state(self) -> dict[str, Any]:
        """JSON-ready state of the tab (canonical voxel coordinates throughout)."""
        with self.lock:
            if self._loaded is None:
                return {"loaded": False}
            loaded = self._loaded
            session, volume = loaded.session, loaded.session.volume
            used = volume.file_index_to_dhw(session.clicks).tolist() if len(session.clicks) else []
            grid = session.roi_grid
            return {
                "loaded": True,
                "name": loaded.name,
                "source": loaded.source,
                "shape": list(volume.shape),
                "spacing": list(volume.spacing),
                "original_shape": list(volume.original_shape),
                "reference": loaded.reference_name if loaded.reference is not None else None,
                "clicks": used,
                "pending": [list(p) for p in self._pending],
                "clicks_foreground": session.click_foreground.tolist(),
                "pending_foreground": list(self._pending_fg),
                "split_hints": session.hint_channels == 2,
                "roi": None if grid is None else grid.box.tolist(),
                "steps_done": session.steps_done,
                "result": self._result_state(session.result),
                "history": [asdict(r) for r in self._history],
            }

    def image_bytes(self) -> bytes:
        """The volume windowed to uint8, canonical ``(D, H, W)`` C order."""
        with self.lock:
            return self._require().display.tobytes()

    def reference_bytes(self) -> bytes:
        """The reference label, uint8 {0, 1} canonical ``(D, H, W)``; NotReady without one."""
        with self.lock:
            ref = self._require().reference
            if ref is None:
                raise NotReady("no reference label loaded")
            return ref.tobytes()

    def maps_bytes(self) -> bytes:
        """The current result inside its ROI box (``state()["result"]["box"]``) as uint8
        ``(4, d, h, w)``: probability and confidence scaled to 0..255, advice rank labels
        (0 = none) and the segmentation (exact, not re-thresholded bytes)."""
        with self.lock:
            result = self._require_result()
            return np.stack([
                np.rint(result.roi_probability * 255),
                np.rint(result.roi_confidence * 255),
                result.roi_advice,
                result.roi_segmentation,
            ]).astype(np.uint8).tobytes()

    def export_nifti(self) -> tuple[str, bytes]:
        """``(file name, .nii.gz bytes)`` of the segmentation ``p > 0.5`` on the original
        grid, affine and header of the loaded file (data layer ``save_like``)."""
        with self.lock:
            loaded = self._loaded
            result = self._require_result()
            segmentation = _canonical_segmentation(result)
            with tempfile.TemporaryDirectory(prefix="mecca-export-") as tmp:
                path = save_like(segmentation, loaded.session.volume, Path(tmp) / "seg.nii.gz",
                                 dtype=np.uint8)
                data = path.read_bytes()
            stem = _safe_stem(loaded.name)
            return f"{stem}_segmentation.nii.gz", data

    # ------------------------------------------------------------------ helpers
    def _require(self) -> _Loaded:
        if self._loaded is None:
            raise NotReady("no volume loaded: pick a case or upload a NIfTI file first")
        return self._loaded

    def _require_result(self) -> StepResult:
        result = self._require().session.result
        if result is None:
            raise NotReady("no result yet: click on the image and press Step first")
        return result

    @staticmethod
    def _dice(result: StepResult, reference: np.ndarray | None) -> float | None:
        if reference is None:
            return None
        return float(dice(_canonical_segmentation(result), reference))

    def _result_state(self, result: StepResult | None) -> dict[str, Any] | None:
        if result is None:
            return None
        volume = self._loaded.session.volume
        centroids = np.array([r.centroid for r in result.regions], float).reshape(-1, 3)
        canonical = volume.file_index_to_dhw(centroids) if len(centroids) else np.zeros((0, 3), int)
        canonical = np.clip(canonical, 0, np.asarray(volume.shape) - 1)
        return {
            "step": result.step,
            "box": result.roi_box.tolist(),
            "regions": [
                {"rank": r.rank, "voxel": c.tolist(), "size": r.size,
                 "mean_confidence": r.mean_confidence}
                for r, c in zip(result.regions, canonical)
            ],
        }


def _canonical_segmentation(result: StepResult) -> np.ndarray:
    """uint8 ``(D, H, W)``: the segmentation inside the ROI box, 0 outside."""
    seg = np.zeros(result.volume.shape, np.uint8)
    seg[tuple(slice(int(a), int(b)) for a, b in result.roi_box)] = result.roi_segmentation
    return seg


def _renamed(name: str, load: Callable[[], Any], path: str | Path) -> Any:
    """Run ``load()``; a DataError about ``path`` (maybe a temporary file) is re-raised
    naming ``name`` instead."""
    try:
        return load()
    except DataError as err:
        raise DataError(name, err.problem.replace(str(path), name)) from None


def _safe_stem(name: str) -> str:
    """A file-name-safe stem of a case or upload name (no suffix, no path characters)."""
    stem = name
    for suffix in (".nii.gz", ".nii"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip("._")
    return cleaned or "segmentation"
