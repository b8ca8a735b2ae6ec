"""The simulated user who clicks where the segmentation is wrong (MECCA.md §1).

Modes:

- ``"edge"`` (the paper): clicks lie on the ground-truth boundary (voxels of either class with
  a face neighbour of the other class, i.e. the 6-connected morphological gradient of the
  label) where the current segmentation ``p > 0.5`` is wrong. Points are spread out by
  farthest-point sampling from a random first point. When fewer such points exist than
  requested, the remaining clicks go to other wrong voxels (continuing the farthest-point
  sampling), then there are simply fewer clicks.
- ``"largest_error"`` (click-by-click benchmarks): each click is the interior-most voxel
  (maximum of the Euclidean distance transform to the nearest correct voxel, the volume
  border counting as correct) of the largest 6-connected error component. For several
  clicks at once, the ball of that radius around each click is removed from the error
  before the next one is placed, so the clicks cover the error from the largest region down.

In both modes a point is never clicked twice and a label without foreground gets no clicks
at all (there is no object, hence no edge, to click). An optional ``advice`` mask (from the
interaction guide, MECCA.md §4) steers the clicks, as ``advice_mode`` says:

- ``"only"`` (the paper: "the simulated user may be told to click only inside them"):
  clicks go inside the mask only, so there are fewer when it holds fewer wrong voxels;
- ``"first"``: the mask's wrong voxels are clicked first, the remaining clicks go where the
  user would click without advice (a user who looks at the advice, then at the rest).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["ADVICE_MODES", "CLICK_MODES", "SimulatedUser", "boundary_map", "farthest_points",
           "validate_points"]

CLICK_MODES = ("edge", "largest_error")
ADVICE_MODES = ("only", "first")

_FACE = ndimage.generate_binary_structure(3, 1)  # 6-connectivity
_NO_POINTS = np.zeros((0, 3), np.int32)


def validate_points(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Check externally given clicks and return them as an int32 array ``(K, 3)``.

    ``points`` holds ``(d, h, w)`` voxel indices. Raises ``ValueError`` naming the first
    point that is not an integer index inside ``shape``.
    """
    pts = np.asarray(points)
    if pts.size == 0:
        return _NO_POINTS.copy()
    if pts.ndim != 2 or pts.shape[1] != len(shape):
        raise ValueError(f"click points must have shape (K, {len(shape)}), got {pts.shape}")
    if not np.issubdtype(pts.dtype, np.integer):
        raise ValueError(f"click points must be integer voxel indices, got dtype {pts.dtype}")
    bad = np.any((pts < 0) | (pts >= np.asarray(shape)), axis=1)
    if bad.any():
        point = tuple(int(v) for v in pts[np.argmax(bad)])
        raise ValueError(f"click point {point} lies outside the volume of shape "
                         f"{tuple(int(n) for n in shape)}")
    return pts.astype(np.int32)


def boundary_map(label: np.ndarray) -> np.ndarray:
    """Ground-truth boundary of a binary label ``(D, H, W)``: bool ``(D, H, W)``.

    A voxel is on the boundary when one of its 6 face neighbours has the other class
    (dilation minus erosion; outside the volume counts as neither class).
    """
    fg = np.asarray(label, dtype=bool)
    dilated = ndimage.binary_dilation(fg, structure=_FACE, border_value=0)
    eroded = ndimage.binary_erosion(fg, structure=_FACE, border_value=1)
    return dilated & ~eroded


def farthest_points(
    candidates: np.ndarray,
    n: int,
    rng: np.random.Generator,
    existing: np.ndarray | None = None,
) -> np.ndarray:
    """Pick up to ``n`` spread-out rows of ``candidates`` ``(M, 3)`` by farthest-point sampling.

    The first point is random unless ``existing`` points ``(E, 3)`` are given, in which case
    every pick (the first included) maximises the distance to all points picked so far.
    Returns ``(min(n, M), 3)`` int32, in picking order.
    """
    m = len(candidates)
    k = min(int(n), m)
    if k <= 0:
        return _NO_POINTS.copy()
    axes = np.ascontiguousarray(candidates.T, dtype=np.float32)  # (3, M): one pass per axis

    def sq_dist(point: np.ndarray) -> np.ndarray:
        d2 = np.square(axes[0] - point[0])
        for ax, v in zip(axes[1:], point[1:]):
            d2 += np.square(ax - v)
        return d2

    min_d2 = np.full(m, np.inf, np.float32)
    for e in existing if existing is not None else ():
        np.minimum(min_d2, sq_dist(e), out=min_d2)
    idx = int(rng.integers(m)) if existing is None or len(existing) == 0 else int(np.argmax(min_d2))
    picked = np.empty(k, np.int64)
    for j in range(k):
        picked[j] = idx
        if j + 1 < k:
            np.minimum(min_d2, sq_dist(axes[:, idx]), out=min_d2)
            idx = int(np.argmax(min_d2))
    return candidates[picked].astype(np.int32)


def _coords(mask: np.ndarray) -> np.ndarray:
    """Indices of the true voxels of ``mask``, ``(M, ndim)`` (faster than ``np.argwhere``)."""
    return np.column_stack(np.unravel_index(np.flatnonzero(mask), mask.shape))


def _largest_error_points(allowed: np.ndarray, n: int) -> np.ndarray:
    """Interior-most points of the largest error components, largest first (see module doc).

    One labelling and one Euclidean distance transform per call (distance of each error
    voxel to the nearest non-error voxel, the volume border counting as non-error). After
    each click the ball it explains is carved out: distances inside the component become
    ``min(dist, |x - c| - r)`` (the distance to the carved ball, to within a voxel) and only
    that component is relabelled, inside its bounding box.
    """
    components, count = ndimage.label(allowed, structure=_FACE)
    if count == 0:
        return _NO_POINTS.copy()
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    boxes = ndimage.find_objects(components)
    dist = ndimage.distance_transform_edt(np.pad(allowed, 1))[1:-1, 1:-1, 1:-1]
    points = []
    for _ in range(n):
        k = int(np.argmax(sizes))
        if sizes[k] == 0:
            break
        box = boxes[k - 1]
        region, region_dist = components[box], dist[box]  # views into the volume arrays
        inside = region == k
        flat = int(np.argmax(np.where(inside, region_dist, -1.0)))
        local = np.array(np.unravel_index(flat, inside.shape))
        points.append(local + [s.start for s in box])
        radius = float(region_dist.flat[flat])  # 0 once a carved ball's rim is all that is left
        grid = np.ogrid[tuple(slice(0, e) for e in inside.shape)]
        to_ball = np.sqrt(sum((g - c) ** 2.0 for g, c in zip(grid, local))) - radius
        inside &= to_ball >= 0  # carve the open ball
        inside[tuple(local)] = False  # and the point itself, whose ball may be empty
        np.minimum(region_dist, np.where(inside, to_ball, region_dist), out=region_dist)
        region[region == k] = 0
        sizes[k] = 0
        pieces, m = ndimage.label(inside, structure=_FACE)
        if m:
            region[inside] = pieces[inside] + count
            sizes = np.concatenate([sizes, np.bincount(pieces.ravel(), minlength=m + 1)[1:]])
            offset = [s.start for s in box]
            boxes += [
                tuple(slice(sl.start + o, sl.stop + o) for sl, o in zip(piece, offset))
                for piece in ndimage.find_objects(pieces)
            ]
            count += m
    return np.array(points, np.int32).reshape(-1, 3)


class SimulatedUser:
    """Places clicks on one volume at a time and remembers them (oldest first).

    Call :meth:`start` with the label of a new volume, then :meth:`click` with the current
    segmentation whenever the user should interact.
    """

    def __init__(self, mode: str = "edge", advice_mode: str = "only") -> None:
        if mode not in CLICK_MODES:
            raise ValueError(f"click_mode must be one of {CLICK_MODES}, got {mode!r}")
        if advice_mode not in ADVICE_MODES:
            raise ValueError(f"advice_mode must be one of {ADVICE_MODES}, got {advice_mode!r}")
        self.mode = mode
        self.advice_mode = advice_mode
        self._label: np.ndarray | None = None

    def start(self, label: np.ndarray) -> None:
        """Begin a new volume: ``label`` is uint8/bool ``(D, H, W)``; forgets all clicks."""
        self._label = np.asarray(label, dtype=bool)
        self._has_object = bool(self._label.any())
        self._boundary = boundary_map(self._label) if self.mode == "edge" else None
        self._clicked = np.zeros(self._label.shape, bool)
        self._history: list[np.ndarray] = []

    @property
    def clicks(self) -> np.ndarray:
        """All clicks on the current volume, int32 ``(K, 3)`` of ``(d, h, w)``, oldest first."""
        return np.concatenate(self._history) if self._history else _NO_POINTS.copy()

    @property
    def boundary(self) -> np.ndarray | None:
        """Bool ``(D, H, W)`` ground-truth boundary (``edge`` mode), else ``None``."""
        return self._boundary

    def record(self, points: np.ndarray) -> np.ndarray:
        """Add externally placed clicks (e.g. a real user's); validated, returned as int32."""
        pts = validate_points(points, self._require_label().shape)
        self._clicked[tuple(pts.T)] = True
        self._history.append(pts)
        return pts

    def click(
        self,
        pred: np.ndarray,
        n: int,
        rng: np.random.Generator,
        advice: np.ndarray | None = None,
    ) -> np.ndarray:
        """Place up to ``n`` new clicks where ``pred`` (bool ``(D, H, W)``) is wrong.

        ``advice`` (bool ``(D, H, W)`` or ``None``) steers the clicks as ``advice_mode`` says
        (only inside it, or inside it first). Returns the new clicks as int32 ``(k, 3)``,
        ``k <= n`` (fewer when not enough wrong voxels exist).
        """
        label = self._require_label()
        if pred.shape != label.shape:
            raise ValueError(f"segmentation shape {pred.shape} != label shape {label.shape}")
        if n <= 0 or not self._has_object:
            return _NO_POINTS.copy()
        allowed = np.not_equal(pred, label)
        allowed &= ~self._clicked
        if advice is None:
            pts = self._pick(allowed, n, rng)
        else:
            pts = self._pick(allowed & advice, n, rng)
            if self.advice_mode == "first" and len(pts) < n:
                outside = allowed & ~advice
                pts = np.concatenate([pts, self._pick(outside, n - len(pts), rng, existing=pts)])
        self._clicked[tuple(pts.T)] = True
        self._history.append(pts)
        return pts

    def _pick(self, allowed: np.ndarray, n: int, rng: np.random.Generator,
              existing: np.ndarray | None = None) -> np.ndarray:
        """Up to ``n`` clicks among the ``allowed`` voxels (bool ``(D, H, W)``) by the click
        mode; edge clicks are spread away from ``existing`` points ``(E, 3)`` when given."""
        if self.mode != "edge":
            return _largest_error_points(allowed, n)
        on_edge = allowed & self._boundary
        pts = farthest_points(_coords(on_edge), n, rng, existing=existing)
        if len(pts) < n:
            spread = pts if existing is None else np.concatenate([existing, pts])
            more = farthest_points(_coords(allowed & ~on_edge), n - len(pts), rng, existing=spread)
            pts = np.concatenate([pts, more])
        return pts

    def _require_label(self) -> np.ndarray:
        if self._label is None:
            raise RuntimeError("SimulatedUser.start(label) must be called before clicking")
        return self._label
