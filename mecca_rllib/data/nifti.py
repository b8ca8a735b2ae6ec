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
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from mecca_rllib.data.atomic import atomic_file
from mecca_rllib.data.errors import DataError

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


def volume_from_array(data: np.ndarray, affine: np.ndarray, *,
                      header: nib.Nifti1Header | None = None, path: Path | None = None,
                      dtype: np.dtype | type = np.float32) -> Volume:
    """A :class:`Volume` of a 3D array on a file-style grid ``(I, J, K)`` with ``affine``
    (file voxel indices -> world mm), exactly as if it had been loaded from a NIfTI file."""
    data = np.asarray(data)
    if data.ndim != 3:
        raise DataError(path or "array", f"expected a 3D array, got shape {data.shape}")
    affine = np.asarray(affine, dtype=float)
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
    if nonfinite not in ("raise", "clean"):
        raise ValueError(f"nonfinite: must be 'raise' or 'clean', got {nonfinite!r}")
    path = Path(path)
    img, data = _read(path)
    data = _select_channel(data, path, channel, channel_names).astype(np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        bad = int((~finite).sum())
        if nonfinite == "raise" or not finite.any():
            raise DataError(path, f"{bad} NaN/Inf voxel(s) in the image (pass nonfinite='clean' "
                                  "to replace them)" if finite.any() else "no finite voxel in the image")
        lo, hi = float(data[finite].min()), float(data[finite].max())
        data = np.nan_to_num(data, nan=lo, posinf=hi, neginf=lo)
    return volume_from_array(data, img.affine, header=img.header, path=path, dtype=np.float32)


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
