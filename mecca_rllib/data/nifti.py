"""NIfTI I/O with nibabel in the project's ``(D, H, W)`` convention.

Arrays are reoriented to the closest canonical RAS orientation and transposed
``(2, 1, 0)``, so ``D`` runs inferior->superior, ``H`` posterior->anterior and ``W``
left->right. A :class:`Volume` keeps the original affine, shape and header so that results
can be mapped back onto the file's grid (:func:`save_like`, index conversions).

Non-finite intensities (NaN/Inf) are rejected with a :class:`DataError` by default;
``nonfinite="clean"`` replaces NaN and -Inf by the smallest finite value and +Inf by the
largest one instead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from mecca_rllib.data.atomic import atomic_file
from mecca_rllib.data.errors import DataError, NonFiniteError

_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)   # identity orientation
_TO_DHW = (2, 1, 0)                                        # RAS (i, j, k) -> (D, H, W)
_SWAP = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D volume in ``(D, H, W)`` (= canonical S, A, R) order.

    Attributes:
        array: ``(D, H, W)``: float32 for images, uint8 in {0, 1} for labels.
        spacing: ``(d, h, w)`` voxel size in mm.
        affine: 4x4 map from ``(d, h, w, 1)`` indices to RAS world mm.
        original_affine: the file's 4x4 affine (file ``(i, j, k)`` indices -> mm).
        original_shape: the file's 3D spatial shape ``(I, J, K)``.
        header: the file's NIfTI header (reused by :func:`save_like`).
        ornt: nibabel orientation ``(3, 2)`` taking file axes to RAS.
        path: the file read, or None.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    original_affine: np.ndarray
    original_shape: tuple[int, int, int]
    header: nib.Nifti1Header
    ornt: np.ndarray
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    def to_dhw(self, file_array: np.ndarray) -> np.ndarray:
        """Array on the file's ``(I, J, K)`` grid -> ``(D, H, W)`` (a view when possible)."""
        return apply_orientation(file_array, self.ornt).transpose(_TO_DHW)

    def to_file(self, array: np.ndarray) -> np.ndarray:
        """``(D, H, W)`` array -> the file's ``(I, J, K)`` grid and axis order."""
        back = ornt_transform(_RAS, self.ornt)
        return apply_orientation(np.asarray(array).transpose(_TO_DHW), back)

    def file_index_to_dhw(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel indices ``(..., 3)`` of the file grid -> ``(..., 3)`` ``(d, h, w)`` indices."""
        return _apply(np.linalg.inv(self.affine) @ self.original_affine, ijk)

    def dhw_to_file_index(self, dhw: np.ndarray) -> np.ndarray:
        """``(..., 3)`` ``(d, h, w)`` indices -> ``(..., 3)`` voxel indices of the file grid."""
        return _apply(np.linalg.inv(self.original_affine) @ self.affine, dhw)

    def dhw_to_world(self, dhw: np.ndarray) -> np.ndarray:
        """``(..., 3)`` ``(d, h, w)`` indices -> ``(..., 3)`` RAS world coordinates in mm."""
        return _apply(self.affine, dhw, integer=False)

    def dhw_to_file_coords(self, dhw: np.ndarray) -> np.ndarray:
        """Continuous ``(..., 3)`` ``(d, h, w)`` coordinates -> file-grid coordinates (floats)."""
        return _apply(np.linalg.inv(self.original_affine) @ self.affine, dhw, integer=False)

    def file_points(self, points: Any) -> np.ndarray:
        """Points ``(K, 3)`` (or one ``(3,)``) on the file grid -> the nearest voxels, int64
        ``(K, 3)``. ``ValueError`` naming the first point that is NaN or outside the volume."""
        pts = np.asarray(points, dtype=float)
        if pts.size == 0:
            return np.zeros((0, 3), np.int64)
        pts = pts[None] if pts.ndim == 1 else pts
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"clicks must have shape (K, 3), got {np.shape(points)}")
        for p in pts:  # a handful of clicks: a readable message beats vectorising
            if not np.isfinite(p).all():
                raise ValueError(f"click {tuple(p.tolist())} has a NaN or infinite coordinate")
            idx = np.rint(p)
            if np.any(idx < 0) or np.any(idx >= self.original_shape):
                raise ValueError(f"click {tuple(p.tolist())} lies outside the volume of shape "
                                 f"{self.original_shape}")
        return np.rint(pts).astype(np.int64)

    def file_box_to_dhw(self, box: Any) -> np.ndarray:
        """A box ``[start, stop)`` per file axis, int ``(3, 2)`` -> the same box on the
        ``(D, H, W)`` grid. ``ValueError`` naming a box that is not integer, empty or outside."""
        arr = np.asarray(box, dtype=float)
        if arr.shape != (3, 2) or not np.isfinite(arr).all() or np.any(arr != np.rint(arr)):
            raise ValueError(f"roi must be integer [start, stop) per axis, shape (3, 2); got {box!r}")
        arr = arr.astype(np.int64)
        if np.any(arr[:, 0] < 0) or np.any(arr[:, 1] > self.original_shape) or np.any(arr[:, 0] >= arr[:, 1]):
            raise ValueError(f"roi {arr.tolist()} is empty or outside the volume of shape "
                             f"{self.original_shape}")
        corners = self.file_index_to_dhw(np.stack([arr[:, 0], arr[:, 1] - 1]))
        return np.stack([corners.min(0), corners.max(0) + 1], axis=1)

    def dhw_box_to_file(self, box: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`file_box_to_dhw`: a ``(D, H, W)`` box -> int ``(3, 2)`` on the file grid."""
        corners = self.dhw_to_file_index(np.asarray(box).T - [[0, 0, 0], [1, 1, 1]])
        return np.stack([corners.min(0), corners.max(0) + 1], axis=1)

    def paste_to_file(self, values: np.ndarray, box: np.ndarray, fill: float, dtype: Any) -> np.ndarray:
        """``values`` of the ``(D, H, W)`` box ``box`` -> a read-only array on the file grid,
        ``fill`` outside the box."""
        full = np.full(self.shape, fill, dtype) if fill else np.zeros(self.shape, dtype)
        full[tuple(slice(int(a), int(b)) for a, b in box)] = values
        out = self.to_file(full)
        out.flags.writeable = False
        return out


def _apply(matrix: np.ndarray, points: np.ndarray, integer: bool = True) -> np.ndarray:
    points = np.asarray(points, dtype=float)
    out = points @ matrix[:3, :3].T + matrix[:3, 3]
    return np.rint(out).astype(np.int64) if integer else out


def _read(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Load a NIfTI image with its data, turning every nibabel/IO failure into DataError."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        img = nib.load(path)
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise DataError(path, f"not a NIfTI file (nibabel read it as {type(img).__name__})")
        data = np.asanyarray(img.dataobj)
    except DataError:
        raise
    except Exception as err:  # nibabel raises many types for junk or truncated files
        raise DataError(path, f"not a readable NIfTI file or truncated ({type(err).__name__}: {err})") from err
    return img, data


def _select_channel(data: np.ndarray, path: Path, channel: int | str | None,
                    channel_names: Sequence[str] | Mapping[str, str] | None) -> np.ndarray:
    """``(I, J, K)`` or ``(I, J, K, C)`` -> ``(I, J, K)`` choosing ``channel``."""
    if data.ndim == 3:
        return data
    if data.ndim == 5 and data.shape[3] == 1:   # NIfTI time axis of length 1
        data = data[:, :, :, 0]
    if data.ndim != 4:
        raise DataError(path, f"expected a 3D or 4D image, got shape {data.shape}")
    count = data.shape[3]
    if isinstance(channel_names, Mapping):
        channel_names = [channel_names[k] for k in sorted(channel_names, key=int)]
    names = list(channel_names or [])
    if channel is None:
        if count == 1:
            return data[..., 0]
        raise DataError(path, f"4D image with {count} channels {names or ''}: choose one "
                              "(channel=<index or name>)")
    if isinstance(channel, str):
        lowered = [n.lower() for n in names]
        if channel.lower() not in lowered:
            raise DataError(path, f"no channel named {channel!r}; channels are {names or 'unnamed'}")
        channel = lowered.index(channel.lower())
    if not -count <= channel < count:
        raise DataError(path, f"channel {channel} out of range for {count} channels")
    return data[..., channel]


def dhw_affine(spacing: Sequence[float]) -> np.ndarray:
    """4x4 affine of a ``(D, H, W)`` array with ``(d, h, w)`` spacing in mm: index -> RAS mm.

    ``d`` runs along the superior axis, ``h`` anterior and ``w`` right (ARCHITECTURE.md).
    """
    d, h, w = (float(s) for s in spacing)
    return np.diag([w, h, d, 1.0]) @ _SWAP


def _checked_affine(where: Any, affine: Any, spacing: Any) -> np.ndarray:
    """The affine of an array input: given (finite 4x4, invertible) or from ``spacing``."""
    if affine is None:
        spacing = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise DataError(where, f"spacing must be three positive sizes in mm, got {spacing}")
        return dhw_affine(spacing)
    if spacing is not None:
        raise DataError(where, "pass either affine or spacing for an array, not both")
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise DataError(where, f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(where, "affine is singular")
    return affine


def _finite(where: Any, data: np.ndarray, nonfinite: str) -> np.ndarray:
    """``data`` with NaN/Inf rejected (``"raise"``) or replaced by the finite min/max (``"clean"``)."""
    if nonfinite not in ("raise", "clean"):
        raise ValueError(f"nonfinite: must be 'raise' or 'clean', got {nonfinite!r}")
    finite = np.isfinite(data)
    if finite.all():
        return data
    if not finite.any():
        raise DataError(where, "no finite voxel in the image (all NaN/Inf)")
    if nonfinite == "raise":
        raise NonFiniteError(where, int((~finite).sum()))
    lo, hi = float(data[finite].min()), float(data[finite].max())
    return np.nan_to_num(data, nan=lo, posinf=hi, neginf=lo)


def volume_from_array(data: np.ndarray, affine: np.ndarray | None = None, *,
                      spacing: Sequence[float] | None = None,
                      header: nib.Nifti1Header | None = None, path: Path | None = None,
                      dtype: np.dtype | type = np.float32, nonfinite: str = "raise") -> Volume:
    """A :class:`Volume` of a 3D array on a file-style grid ``(I, J, K)`` with ``affine``
    (file voxel indices -> world mm), exactly as if it had been loaded from a NIfTI file.

    Without ``affine`` the array is already ``(D, H, W)`` with ``spacing`` ``(d, h, w)`` mm
    (default 1 mm; :func:`dhw_affine`). The array must be numeric; NaN/Inf are rejected or
    cleaned as ``nonfinite`` says (``"raise"``/``"clean"``, see the module docstring).
    Raises :class:`DataError` (a ``ValueError``) naming ``path`` (or "image array").
    """
    where = path or "image array"
    data = np.asarray(data)
    if data.ndim != 3:
        raise DataError(where, f"expected a 3D array, got shape {tuple(int(s) for s in data.shape)}")
    if data.dtype.kind not in "biuf":
        raise DataError(where, f"expected a numeric array, got dtype {data.dtype}")
    if data.dtype.kind == "f":
        data = _finite(where, data, nonfinite)
    affine = _checked_affine(where, affine, spacing)
    if header is None:
        header = nib.Nifti1Header()
        header.set_qform(affine, code=1)
        header.set_sform(affine, code=1)
        header.set_xyzt_units("mm")
    ornt = io_orientation(affine)
    shape = tuple(int(s) for s in data.shape)
    dhw_affine = affine @ inv_ornt_aff(ornt, shape) @ _SWAP
    spacing = tuple(float(s) for s in np.sqrt((dhw_affine[:3, :3] ** 2).sum(0)))
    array = np.ascontiguousarray(apply_orientation(data, ornt).transpose(_TO_DHW), dtype=dtype)
    return Volume(array=array, spacing=spacing, affine=dhw_affine, original_affine=affine.copy(),
                  original_shape=shape, header=header.copy(), ornt=ornt, path=path)


def load_volume(path: str | os.PathLike, *, channel: int | str | None = None,
                channel_names: Sequence[str] | Mapping[str, str] | None = None,
                nonfinite: str = "raise") -> Volume:
    """Load an image as a float32 ``(D, H, W)`` :class:`Volume`.

    Args:
        path: a ``.nii`` / ``.nii.gz`` file.
        channel: for 4D images, the channel index or name (needs ``channel_names``).
        channel_names: names of the 4th-axis channels (e.g. dataset.json ``modality``).
        nonfinite: ``"raise"`` (default) or ``"clean"`` (see the module docstring).

    Raises:
        DataError: unreadable/truncated file, 4D without a channel, NaN/Inf when raising.
    """
    path = Path(path)
    img, data = _read(path)
    data = _select_channel(data, path, channel, channel_names).astype(np.float32)
    return volume_from_array(data, img.affine, header=img.header, path=path, dtype=np.float32,
                             nonfinite=nonfinite)


def open_volume(image: str | os.PathLike | np.ndarray, *, spacing: Sequence[float] | None = None,
                affine: np.ndarray | None = None, channel: int | str | None = None,
                nonfinite: str = "raise") -> Volume:
    """A NIfTI path (:func:`load_volume`) or a 3D array (:func:`volume_from_array`) as a
    :class:`Volume`; ``spacing``/``affine`` only for arrays, ``channel`` only for files."""
    if isinstance(image, (str, os.PathLike)):
        if spacing is not None or affine is not None:
            raise DataError(image, "spacing/affine come from the NIfTI file; do not pass them")
        return load_volume(image, channel=channel, nonfinite=nonfinite)
    if channel is not None:
        raise DataError("image array", "channel applies to 4D NIfTI files; pass a 3D array instead")
    return volume_from_array(image, affine, spacing=spacing, nonfinite=nonfinite)


def load_label(path: str | os.PathLike, *, label_value: int | None = None,
               like: Volume | None = None, allow_empty: bool = False,
               atol: float = 1e-3) -> Volume:
    """Load a segmentation as a uint8 {0, 1} ``(D, H, W)`` :class:`Volume`.

    Args:
        label_value: the class kept as foreground; None keeps every value ``> 0``.
        like: the image it belongs to: shapes and affines (within ``atol`` mm) must match.
        allow_empty: accept a label with no foreground voxel.

    Raises:
        DataError: unreadable file, non-integer/NaN values, a mismatch with ``like``, or an
        empty foreground (unless ``allow_empty``).
    """
    path = Path(path)
    img, data = _read(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(path, f"a label must be 3D, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise DataError(path, "NaN/Inf values in the label")
    if like is not None:
        if data.shape != like.original_shape:
            raise DataError(path, f"label shape {data.shape} differs from image shape "
                                  f"{like.original_shape} ({like.path})")
        if not np.allclose(img.affine, like.original_affine, atol=atol):
            raise DataError(path, f"label affine differs from the image's ({like.path}):\n"
                                  f"{np.round(img.affine, 4)}\nvs\n{np.round(like.original_affine, 4)}")
    mask = data > 0 if label_value is None else np.rint(data) == label_value
    if not allow_empty and not mask.any():
        what = "no voxel > 0" if label_value is None else f"no voxel == {label_value}"
        raise DataError(path, f"empty label ({what})")
    return volume_from_array(mask, img.affine, header=img.header, path=path, dtype=np.uint8)


def dhw_to_nifti(array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
                 ) -> nib.Nifti1Image:
    """A RAS-oriented NIfTI image of a ``(D, H, W)`` array with ``(d, h, w)`` spacing in mm
    (loading it with :func:`load_volume` gives the array back)."""
    d, h, w = (float(s) for s in spacing)
    img = nib.Nifti1Image(np.ascontiguousarray(np.asarray(array).transpose(_TO_DHW)),
                          np.diag([w, h, d, 1.0]))
    img.header.set_xyzt_units("mm")
    return img


def save_like(array: np.ndarray, ref: Volume, path: str | os.PathLike,
              dtype: np.dtype | type | str | None = None) -> Path:
    """Write a ``(D, H, W)`` array in ``ref``'s original orientation, affine and header.

    The file appears atomically (temporary file in the same folder, then ``os.replace``).
    ``dtype`` defaults to the array's dtype.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.shape != ref.shape:
        raise DataError(path, f"array shape {array.shape} does not match the reference volume "
                              f"{ref.shape} ({ref.path})")
    dtype = np.dtype(dtype or array.dtype)
    header = ref.header.copy()
    img = nib.Nifti1Image(np.ascontiguousarray(ref.to_file(array)).astype(dtype), ref.original_affine,
                          header=header)
    img.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0)
    with atomic_file(path) as tmp:
        nib.save(img, tmp)
    return path
